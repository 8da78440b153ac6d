"""Benchmark multi-scale deformable attention: forward and forward+backward time and peak memory.

Shapes:
  devis  DeVIS YT-19 encoder layer: T=6 frames of 360x640, 4 levels at strides 8/16/32/64 (4,820 tokens per
         frame), 8 heads x 32 channels, 4 current-frame points + 4 points in each of the 5 other frames
         per level.
  ddetr  Deformable-DETR / Mask2Former pixel decoder: 1 image of 800x1333, 4 levels (strides 8..64) or 3
         levels (--ddetr-levels 3, strides 8..32), 4 points, queries = tokens.
Implementations:
  per-level  the official fallback's formulation (``ms_deform_attn_core_pytorch``): one grid_sample per level;
             for the temporal op a Python loop over frames with the other frames stacked as extra levels.
             The baseline.
  torch      vidseg's pure-PyTorch path as dispatched (on CPU: the sampling as a sparse matrix, one MKL
             product per query chunk; the backward is a scatter and an SDDMM of the bilinear taps).
  torch-grid vidseg's pure-PyTorch grid_sample formulation (one grid_sample per level for the whole clip; the
             path on GPU and for bf16/fp16), forced on CPU for comparison (--impls ...,torch-grid).
  triton     vidseg's fused kernels (CUDA only).
Peak memory: on CUDA ``max_memory_allocated`` above the inputs; on CPU the growth of the peak RSS of a fresh
worker process above its RSS once the inputs exist (every measurement runs in its own process).

Usage:
  python benchmarks/msda.py --quick                 # CPU, smaller frames (180x320 / 400x667)
  python benchmarks/msda.py --device cuda           # GPU, full sizes, adds the triton rows and a bf16 check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

SHAPES = {
    # (frame H, W) -> levels at strides 8, 16, 32, 64 (ceil division, as a ResNet's stride-2 convs give)
    "devis": (360, 640),
    "devis-quick": (180, 320),
    "ddetr": (800, 1333),
    "ddetr-quick": (400, 667),
}


def level_shapes(h: int, w: int, n_levels: int) -> list[tuple[int, int]]:
    out = []
    for i in range(n_levels):
        s = 8 * 2**i
        out.append((-(-h // s), -(-w // s)))
    return out


def make_case(name: str, n_levels: int, device: str, dtype: torch.dtype, seed: int = 0) -> dict:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    h, w = SHAPES[name]
    shapes = level_shapes(h, w, n_levels)
    ss = torch.tensor(shapes, dtype=torch.long, device=device)
    start = torch.cat((ss.new_zeros(1), ss.prod(1).cumsum(0)[:-1]))
    S = int(ss.prod(1).sum())
    M, D, L = 8, 32, n_levels
    kw = dict(generator=g, device=device)
    if name.startswith("devis"):
        T, Kc, Kt = 6, 4, 4
        return dict(
            kind="temporal",
            shapes=ss,
            start=start,
            S=S,
            T=T,
            tensors=dict(
                value=torch.randn(T, S, M, D, **kw).to(dtype),
                cur_locations=torch.rand(T, S, M, L, Kc, 2, **kw).to(dtype),
                cur_weights=torch.rand(T, S, M, L, Kc, **kw).to(dtype),
                tmp_locations=torch.rand(T, S, M, T - 1, L, Kt, 2, **kw).to(dtype),
                tmp_weights=torch.rand(T, S, M, T - 1, L, Kt, **kw).to(dtype),
            ),
        )
    return dict(
        kind="spatial",
        shapes=ss,
        start=start,
        S=S,
        T=1,
        tensors=dict(
            value=torch.randn(1, S, M, D, **kw).to(dtype),
            sampling_locations=torch.rand(1, S, M, L, 4, 2, **kw).to(dtype),
            attention_weights=torch.rand(1, S, M, L, 4, **kw).to(dtype),
        ),
    )


def op_fn(case: dict, impl: str):
    import vidseg.ops.msda_torch as msda_torch_mod
    from vidseg.ops import ms_deform_attn, temporal_frame_table, temporal_ms_deform_attn
    from vidseg.ops.msda_per_level import ms_deform_attn_per_level, temporal_ms_deform_attn_per_frame

    if impl == "torch-grid":  # the grid_sample formulation on CPU (each measurement is its own process)
        msda_torch_mod.SPARSE_CPU = "never"
        impl = "torch"

    ss, start = case["shapes"], case["start"]
    if case["kind"] == "temporal":
        frames = temporal_frame_table(case["T"], device=ss.device)
        if impl == "per-level":
            return lambda t: temporal_ms_deform_attn_per_frame(spatial_shapes=ss, frames=frames, **t)
        return lambda t: temporal_ms_deform_attn(
            spatial_shapes=ss, level_start_index=start, frames=frames, impl=impl, **t
        )
    if impl == "per-level":
        return lambda t: ms_deform_attn_per_level(
            t["value"], ss, t["sampling_locations"], t["attention_weights"]
        )
    return lambda t: ms_deform_attn(
        t["value"], ss, start, t["sampling_locations"], t["attention_weights"], impl=impl
    )


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(name: str, n_levels: int, impl: str, mode: str, device: str, dtype: str, repeats: int) -> dict:
    """One measurement in this process: median time (s) and peak extra memory (bytes)."""
    dt = getattr(torch, dtype)
    case = make_case(name, n_levels, device, dt)
    fn = op_fn(case, impl)
    cuda = device.startswith("cuda")

    def once() -> float:
        ts = {k: v.detach().requires_grad_(mode == "fwd+bwd") for k, v in case["tensors"].items()}
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if mode == "fwd":
            with torch.no_grad():
                out = fn(ts)
        else:
            out = fn(ts)
            out.backward(torch.ones_like(out))
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    if cuda:
        once()  # warm-up (kernel compilation)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        times = [once() for _ in range(repeats)]
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = _rss_bytes()
        times = [once() for _ in range(repeats)]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return dict(time=statistics.median(times), peak=max(peak, 0))


def run_worker(args: argparse.Namespace, name: str, impl: str, mode: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        json.dumps(
            dict(
                name=name,
                n_levels=args.levels(name),
                impl=impl,
                mode=mode,
                device=args.device,
                dtype=args.dtype,
                repeats=args.repeats,
            )
        ),
    ]
    res = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    )
    if res.returncode != 0:
        return dict(
            error=res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"rc={res.returncode}"
        )
    return json.loads(res.stdout.strip().splitlines()[-1])


def bf16_check(args: argparse.Namespace) -> None:
    from vidseg.ops import multi_frame_ms_deform_attn

    case = make_case("devis", 4, args.device, torch.float32)
    t = case["tensors"]
    T, S = case["T"], case["S"]
    loc = torch.rand(1, T * 100, 8, 4, 24, 2, device=args.device)
    attn = torch.softmax(torch.randn(1, T * 100, 8, 4 * 24, device=args.device), -1).view(
        1, T * 100, 8, 4, 24
    )
    fidx = torch.randint(0, T, (T * 100, 24), device=args.device)
    v = t["value"][None]
    o32 = multi_frame_ms_deform_attn(v, case["shapes"], case["start"], loc, attn, fidx, impl="triton")
    o16 = multi_frame_ms_deform_attn(
        v.bfloat16(), case["shapes"], case["start"], loc, attn.bfloat16(), fidx, impl="triton"
    )
    rel = ((o16.float() - o32).norm() / o32.norm()).item()
    print(f"\nbf16 vs fp32 (triton, DeVIS shape, {S} tokens/frame): relative error {rel:.2e} (target < 1e-2)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--quick", action="store_true", help="smaller frames (180x320 / 400x667), for a shared CPU"
    )
    p.add_argument("--shapes", default="devis,ddetr", help="comma list of devis, ddetr")
    p.add_argument("--ddetr-levels", type=int, default=4, choices=(3, 4))
    p.add_argument("--impls", default=None, help="comma list (default: per-level,torch[,triton on cuda])")
    p.add_argument("--modes", default="fwd,fwd+bwd")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    p.add_argument("--repeats", type=int, default=1, help="timed calls per worker process (median)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--dtype", default="float32")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
        print(json.dumps(measure(**json.loads(args.worker))))
        return 0

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("--device cuda requested but CUDA is not available", file=sys.stderr)
        return 2
    impls = args.impls.split(",") if args.impls else ["per-level", "torch"] + (["triton"] if cuda else [])
    args.levels = lambda name: 4 if name.startswith("devis") else args.ddetr_levels
    names = [s + ("-quick" if args.quick else "") for s in args.shapes.split(",")]
    modes = args.modes.split(",")
    where = f"{args.device}, {args.threads} threads, {args.dtype}"
    print(f"# MSDA benchmark ({where}); ratios against per-level measured in the same run")
    print(f"# median of {args.rounds} interleaved rounds x {args.repeats} calls, each in a fresh process\n")
    print("| shape | impl | mode | time (ms) | speed-up | peak extra MiB | memory vs per-level |")
    print("|---|---|---|---:|---:|---:|---:|")
    from tqdm import tqdm

    # Rounds interleave the implementations so that a change of load on a shared machine hits all of them.
    jobs = [(n, m, i) for n in names for m in modes for i in impls]
    runs: dict = {}
    for _, (n, m, i) in tqdm(
        [(r, j) for r in range(args.rounds) for j in jobs], desc="msda benchmark", file=sys.stderr
    ):
        runs.setdefault((n, m, i), []).append(run_worker(args, n, i, m))
    results = {}
    for key, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            results[key] = rs[0]
            continue
        results[key] = dict(
            time=statistics.median(r["time"] for r in ok), peak=statistics.median(r["peak"] for r in ok)
        )
    for n, m, i in jobs:
        r, b = results[(n, m, i)], results.get((n, m, "per-level"), {})
        h, w = SHAPES[n]
        label = f"{n} ({h}x{w}, {args.levels(n)} lvl)"
        if "error" in r:
            print(f"| {label} | {i} | {m} | error: {r['error'][:80]} | | | |")
            continue
        sp = f"{b['time'] / r['time']:.2f}x" if "time" in b else "-"
        mr = f"{r['peak'] / b['peak']:.2f}" if b.get("peak") else "-"
        print(f"| {label} | {i} | {m} | {r['time'] * 1e3:.1f} | {sp} | {r['peak'] / 2**20:.0f} | {mr} |")
    if cuda and "triton" in impls:
        bf16_check(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
