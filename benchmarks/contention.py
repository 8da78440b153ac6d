"""CPU contention: vidseg's thread rule against the old settings, quiet and beside busy processes.

    python benchmarks/contention.py --ddp            # everything below; 10-30 min on 2 shared cores
    python benchmarks/contention.py --busy 0,3 --workloads quickstart --quiet-repeats 1     # shorter
    python benchmarks/contention.py --md /tmp/contention.md             # also write the tables

Workloads, each in a fresh process:

- ``quickstart``: ``vidseg quickstart --method ToyVIS --epochs 2 --no-render`` (synthetic data, ToyVIS
  training, evaluation) in a temporary folder; the figure is the wall time of the whole command.
- ``devis-step``: one training step of the DeVIS image stage (``MODEL.META_ARCHITECTURE DeformableDETRSegm``,
  the CPU-sized ``quickstart/deformable_mask_head_tiny.yaml``: ResNet-18, 2+2 layers, hidden 128; batch 2 at
  160x224) on a synthetic batch; the figure is the median of 3 timed steps after one warm-up step. The DeVIS
  video model does not exist yet, so its image stage stands in for it.

Settings: ``new`` (vidseg's defaults: the thread rule, and ``OMP_WAIT_POLICY=PASSIVE`` when other threads are
runnable at the start, else ``GOMP_SPINCOUNT=10000``), ``passive`` (the rule, always ``PASSIVE``: the first
default), ``old`` (``VIDSEG_THREAD_RULE=off``: torch's own thread count and OpenMP's default spin-then-sleep
wait, as before the rule), ``omp1`` (``OMP_NUM_THREADS=1``), ``spin10k`` / ``spin100k`` (the rule, with
``GOMP_SPINCOUNT`` 10k / 100k: a short spin before a waiting thread sleeps, instead of ``PASSIVE``'s immediate
sleep). Loads: quiet, and beside N busy processes (one pure-Python spin loop each, ``--busy``). Every figure
of one invocation is measured in that run, the settings interleaved, so the ratios share the machine's state.
``--ddp`` also times ``vidseg train --num-gpus 2`` against one process with the same global batch
(``SOLVER.IMS_PER_BATCH 2``), on the quickstart's ToyVIS config (``--ddp-epochs``, default 6).

Every process this script starts (busy loops, workloads) runs in its own process group and is stopped on exit,
also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "new": {},
    "old": {"VIDSEG_THREAD_RULE": "off"},
    "omp1": {"OMP_NUM_THREADS": "1"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},  # the rule with the first wait default (always PASSIVE)
    # The thread rule with a short spin before a waiting thread sleeps, instead of sleeping at once (libgomp
    # counts spin iterations: 10k is some microseconds, 100k some tens; OpenMP's own default is 300k).
    "spin10k": {"GOMP_SPINCOUNT": "10000"},
    "spin100k": {"GOMP_SPINCOUNT": "100000"},
}
_STRIP = ("OMP_", "MKL_", "OPENBLAS_", "GOMP_", "KMP_", "VIDSEG_", "LOCAL_WORLD_SIZE", "WORLD_SIZE", "RANK")
_children: list[subprocess.Popen] = []


def _env(setting: str) -> dict[str, str]:
    """A clean environment (no thread settings inherited from the shell) plus the setting's variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_STRIP)}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONWARNINGS"] = "ignore"
    env.update(SETTINGS[setting])
    return env


def _start(cmd: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    p = subprocess.Popen(cmd, env=env, start_new_session=True, **kw)  # own group: stop it and its children
    _children.append(p)
    return p


def _stop(p: subprocess.Popen) -> None:
    """Kill ``p``'s process group (its own children too: DataLoader workers, spawned ranks)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    p.wait()
    if p in _children:
        _children.remove(p)


def stop_all() -> None:
    for p in list(_children):
        _stop(p)


def _sigterm(signum: int, _frame: object) -> None:
    # Ends the run like Ctrl-C: main's finally stops every process started here.
    raise KeyboardInterrupt


def start_busy(n: int, tag: str) -> list[subprocess.Popen]:
    """``n`` processes that each keep one core busy (pure Python), with ``tag`` as their last argument."""
    return [_start([sys.executable, "-c", "while True: pass", tag]) for _ in range(n)]


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[float, str]:
    """Wall seconds and stdout of ``cmd``; raises with the last stderr line when it fails."""
    t0 = time.perf_counter()
    p = _start(cmd, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(p)
        raise RuntimeError(f"timed out after {timeout:.0f} s: {' '.join(cmd)}") from None
    wall = time.perf_counter() - t0
    _stop(p)
    if p.returncode != 0:
        last = (err.strip().splitlines() or [f"rc={p.returncode}"])[-1]
        raise RuntimeError(f"{' '.join(cmd[:4])} ...: {last}")
    return wall, out


def run_quickstart(setting: str, tmp: Path, timeout: float) -> float:
    out = tempfile.mkdtemp(prefix="qs_", dir=tmp)
    cmd = [sys.executable, "-m", "vidseg", "quickstart", "--method", "ToyVIS", "--epochs", "2", "--no-render"]
    cmd += ["--out", out]
    return _run(cmd, _env(setting), timeout)[0]


def run_devis_step(setting: str, tmp: Path, timeout: float) -> float:
    _, out = _run([sys.executable, __file__, "--devis-worker"], _env(setting), timeout)
    return float(json.loads(out.strip().splitlines()[-1])["step_s"])


def devis_worker() -> int:
    """In a fresh process: the thread rule as the CLI applies it, then median time of 3 training steps."""
    from vidseg.utils.threads import configure_threads, prepare_env

    prepare_env()
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from train_batch import image_batch, train_step

    from vidseg.models import build_model, load_config

    cfg = load_config("quickstart/deformable_mask_head_tiny.yaml", ["MODEL.NUM_CLASSES", "3"])
    configure_threads(cfg_threads=cfg.MODEL.CPU_THREADS, log=False)
    torch.manual_seed(0)
    bundle = build_model(cfg)
    model, criterion = bundle.model.train(), bundle.criterion
    opt = torch.optim.AdamW(bundle.param_groups(model), lr=1e-4)
    batch = image_batch(2, 160, 224)
    train_step(model, criterion, opt, batch)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        train_step(model, criterion, opt, batch)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"step_s": statistics.median(times), "threads": torch.get_num_threads()}))
    return 0


WORKLOADS = {"quickstart": run_quickstart, "devis-step": run_devis_step}


def _write_ddp_config(tmp: Path, timeout: float) -> Path:
    """The quickstart's data and ToyVIS config (one short quickstart run), for the --num-gpus comparison."""
    out = tmp / "ddp_prep"
    cmd = [sys.executable, "-m", "vidseg", "quickstart", "--method", "ToyVIS", "--epochs", "1", "--no-render"]
    cmd += ["--out", str(out)]
    _run(cmd, _env("new"), timeout)
    return out / "run" / "config.yaml"


def run_train(config: Path, procs: int, setting: str, tmp: Path, timeout: float, epochs: int) -> float:
    out = tempfile.mkdtemp(prefix=f"ddp{procs}_", dir=tmp)
    cmd = [sys.executable, "-m", "vidseg", "train", "--config-file", str(config), "--num-gpus", str(procs)]
    cmd += ["--overwrite", "--no-progress", "OUTPUT_DIR", out, "SOLVER.IMS_PER_BATCH", "2"]
    cmd += ["SOLVER.EPOCHS", str(epochs), "SOLVER.STEPS", f"[{epochs}]", "TEST.EVAL_PERIOD", str(epochs)]
    return _run(cmd, _env(setting), timeout)[0]


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _table(title: str, rows: list[list[str]], header: list[str]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def measure_loads(args, busy: list[int], settings: list[str], workloads: list[str], tmp: Path, times, loads):
    """Fill ``times[(workload, setting, busy)]`` (best of the runs) and ``loads[busy]`` (1-min loads)."""
    if "quickstart" in workloads:
        run_quickstart("new", tmp, args.timeout)  # warm-up: file caches, .pyc
    for n in busy:
        hogs = start_busy(n, args.tag)
        time.sleep(1.0 if n else 0.0)
        try:
            for _ in range(args.quiet_repeats if n == 0 else args.repeats):
                for w in workloads:
                    for s in settings:  # interleaved: a change of outside load hits every setting
                        t = WORKLOADS[w](s, tmp, args.timeout)
                        times[(w, s, n)] = min(times.get((w, s, n), float("inf")), t)
                        loads.setdefault(n, []).append(os.getloadavg()[0])
                        print(f"  {w:<11} {s:<5} busy={n}: {t:7.2f} s (load {_load()})", flush=True)
        finally:
            for h in hogs:
                _stop(h)


def measure_ddp(args, settings: list[str], tmp: Path, ddp) -> None:
    """Fill ``ddp[(processes, setting)]``: ``vidseg train --num-gpus 1 / 2``, same global batch, quiet."""
    config = _write_ddp_config(tmp, args.timeout)
    for _ in range(args.ddp_repeats):
        for s in [x for x in ("new", "old") if x in settings] or ["new"]:
            for procs in (1, 2):
                t = run_train(config, procs, s, tmp, args.timeout, args.ddp_epochs)
                ddp[(procs, s)] = min(ddp.get((procs, s), float("inf")), t)
                print(f"  train --num-gpus {procs} {s:<5}: {t:7.2f} s (load {_load()})", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--busy", default="0,1,3", help="comma list of busy-process counts (0 = quiet)")
    p.add_argument("--settings", default="new,old,omp1", help=f"comma list of {', '.join(SETTINGS)}")
    p.add_argument(
        "--workloads", default="quickstart,devis-step", help=f"comma list of {', '.join(WORKLOADS)}"
    )
    p.add_argument("--quiet-repeats", type=int, default=3, help="runs per cell when quiet (best is reported)")
    p.add_argument("--repeats", type=int, default=1, help="runs per cell beside busy processes (best)")
    p.add_argument("--ddp", action="store_true", help="also --num-gpus 2 vs 1 process, same global batch")
    p.add_argument("--ddp-repeats", type=int, default=2)
    p.add_argument(
        "--ddp-epochs", type=int, default=6, help="epochs of the --ddp runs (evaluated at the end)"
    )
    p.add_argument("--timeout", type=float, default=1200, help="seconds per workload run")
    p.add_argument("--md", default="", help="also write the tables to this markdown file")
    p.add_argument("--devis-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tag", default="vidseg-contention-busy", help=argparse.SUPPRESS)  # names the busy loops
    args = p.parse_args(argv)
    if args.devis_worker:
        return devis_worker()

    busy = [int(x) for x in args.busy.split(",")]
    settings = args.settings.split(",")
    workloads = args.workloads.split(",")
    for s in settings:
        if s not in SETTINGS:
            p.error(f"--settings: unknown {s!r}; known: {', '.join(SETTINGS)}")
    for w in workloads:
        if w not in WORKLOADS:
            p.error(f"--workloads: unknown {w!r}; known: {', '.join(WORKLOADS)}")

    signal.signal(signal.SIGTERM, _sigterm)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    head = f"{cores} cores in affinity, {os.cpu_count()} CPUs, load average at start {_load()} (1/5/15 min)"
    print(f"# CPU contention benchmark: {head}", flush=True)
    times: dict[tuple[str, str, int], float] = {}
    loads: dict[int, list[float]] = {}
    ddp: dict[tuple[int, str], float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="vidseg_contention_") as tmp_name:
            try:
                measure_loads(args, busy, settings, workloads, Path(tmp_name), times, loads)
                if args.ddp:
                    measure_ddp(args, settings, Path(tmp_name), ddp)
            finally:
                stop_all()  # before the folder goes: no workload still writes into it
    except KeyboardInterrupt:
        print("interrupted: stopped every process started here", file=sys.stderr)
        return 130
    finally:
        stop_all()

    out = [f"# CPU contention ({head}; at the end {_load()})", ""]
    for w in workloads:
        rows = []
        base_old = times.get((w, "old", 0))
        for n in busy:
            for s in settings:
                t, quiet = times[(w, s, n)], times[(w, s, 0)] if 0 in busy else None
                vs_quiet = f"{t / quiet:.2f}x" if quiet else "-"
                vs_old = f"{t / base_old:.2f}x" if base_old else "-"
                load = f"{statistics.mean(loads[n]):.1f}"
                rows.append([str(n), s, f"{t:.2f}", vs_quiet, vs_old, load])
        what = "wall time of the command" if w == "quickstart" else "median of 3 steps"
        header = ["busy", "setting", "s", "vs same setting quiet", "vs old quiet", "load (1 min)"]
        out += [_table(f"{w} ({what}, best of the runs)", rows, header), ""]
    if ddp:
        rows = []
        for (procs, s), t in sorted(ddp.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            one = ddp.get((1, s))
            rows.append([str(procs), s, f"{t:.2f}", f"{t / one:.2f}x" if one else "-"])
        title = (
            f"vidseg train, quickstart ToyVIS config, {args.ddp_epochs} epochs, "
            "SOLVER.IMS_PER_BATCH 2 (global), quiet, best of the runs"
        )
        out += [_table(title, rows, ["--num-gpus", "setting", "s", "vs 1 process"]), ""]
    text = "\n".join(out)
    print("\n" + text)
    if args.md:
        Path(args.md).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
