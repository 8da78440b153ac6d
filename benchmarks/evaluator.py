"""Benchmark of the YouTube-VIS metric: vidseg's evaluator against the official youtubevos/cocoapi code.

Generates a synthetic case in the exact official formats (GT with uncompressed RLE, Mask2Former-style results
with compressed RLE), then times each implementation in its own subprocess (so peak RSS is per
implementation): JSON loading separately from the evaluation, and checks that both give the same 12 stats.

    python benchmarks/evaluator.py --official-api /tmp/official_ytvis     # full size: 300 videos x 36 x
    720x1280
    python benchmarks/evaluator.py --videos 30                             # reduced scale, vidseg only

``--official-api DIR``: a directory holding the official ``ytvos.py`` / ``ytvoseval.py`` with the numpy fixes
(``np.float`` -> ``np.float64``, integer ``np.linspace`` counts, no ``unicode``,
``from pycocotools import mask``); they are never part of this repository.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def _ellipse_counts(h: int, w: int, cx: float, cy: float, rx: float, ry: float) -> list[int]:
    """Uncompressed column-major RLE counts of a filled ellipse, built from per-column runs (no bitmap)."""
    xs = np.arange(max(0, int(cx - rx)), min(w, int(cx + rx) + 1))
    half = ry * np.sqrt(np.clip(1 - ((xs - cx) / max(rx, 1e-6)) ** 2, 0, None))
    y0 = np.clip(np.round(cy - half), 0, h).astype(np.int64)
    y1 = np.clip(np.round(cy + half), 0, h).astype(np.int64)
    keep = y1 > y0
    xs, y0, y1 = xs[keep], y0[keep], y1[keep]
    starts, ends = xs * h + y0, xs * h + y1
    # Canonical RLE (as pycocotools writes it): runs of adjacent columns that touch are one run. Counts of 0
    # inside a mask would make the official code's C rleMerge miscount (small images, masks filling columns).
    if len(starts):
        touch = starts[1:] == ends[:-1]
        starts = starts[np.concatenate([[True], ~touch])]
        ends = ends[np.concatenate([~touch, [True]])]
    bounds = np.stack([starts, ends], axis=1).ravel()
    counts = np.diff(np.concatenate([[0], bounds, [h * w]]))
    return [int(c) for c in counts]


def generate(
    out_dir: str, videos: int, frames: int, height: int, width: int, classes: int, preds: int
) -> None:
    """Write ``gt.json`` and ``results.json``: ~2.3 GT tracks per video, ``preds`` predictions per video."""
    from pycocotools import mask as mask_utils
    from tqdm import tqdm

    rng = np.random.default_rng(0)
    vids, anns, results = [], [], []
    for v in tqdm(range(videos), desc="generate", unit="video"):
        vid = v + 1
        vids.append({"id": vid, "width": width, "height": height, "length": frames,
                     "file_names": [f"{vid:05d}/{t:05d}.jpg" for t in range(frames)]})  # fmt: skip
        tracks = []
        for _ in range(int(rng.choice([1, 2, 3, 4], p=[0.3, 0.3, 0.2, 0.2]))):
            cat = int(rng.integers(1, classes + 1))
            c0 = rng.uniform([0, 0], [width, height])
            vel = rng.normal(0, 6, 2)
            r0 = rng.uniform(20, 260, 2)
            start, end = sorted(rng.integers(0, frames + 1, 2)) if rng.random() < 0.3 else (0, frames)
            shapes = [
                (*(c0 + vel * t), *(r0 * (1 + 0.01 * t))) if start <= t < max(end, start + 1) else None
                for t in range(frames)
            ]
            size = [height, width]
            segs = [
                None if s is None else {"size": size, "counts": _ellipse_counts(height, width, *s)}
                for s in shapes
            ]
            areas = [None if s is None else sum(s["counts"][1::2]) or None for s in segs]
            ann = {"id": len(anns) + 1, "video_id": vid, "category_id": cat, "iscrowd": 0, "width": width}
            ann.update(height=height, length=frames, segmentations=segs, areas=areas, bboxes=[None] * frames)
            anns.append(ann)
            tracks.append((cat, shapes))
        for p in range(preds):
            if tracks and p < 2 * len(tracks):
                cat, shapes = tracks[p % len(tracks)]
                if p >= len(tracks) and rng.random() < 0.5:
                    cat = int(rng.integers(1, classes + 1))
                jit = rng.normal(0, 4 + 20 * rng.random(), 4)
                scale = 1 + jit[2:] / 100
                shapes = [
                    None if s is None else (s[0] + jit[0], s[1] + jit[1], s[2] * scale[0], s[3] * scale[1])
                    for s in shapes
                ]
            else:
                cat = int(rng.integers(1, classes + 1))
                c0, r0 = rng.uniform([0, 0], [width, height]), rng.uniform(10, 200, 2)
                shapes = [(*c0, *r0)] * frames
            segs = []
            for s in shapes:
                if s is None:
                    segs.append(None)
                    continue
                ucounts = {"size": [height, width], "counts": _ellipse_counts(height, width, *s)}
                rle = mask_utils.frPyObjects(ucounts, height, width)
                segs.append({"size": [height, width], "counts": rle["counts"].decode("ascii")})
            results.append(
                {"video_id": vid, "score": float(rng.random()), "category_id": cat, "segmentations": segs}
            )
    with open(os.path.join(out_dir, "gt.json"), "w") as f:
        json.dump({"videos": vids, "annotations": anns,
                   "categories": [{"id": c, "name": f"class{c}", "supercategory": "object"}
                                  for c in range(1, classes + 1)]}, f)  # fmt: skip
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f)
    print(f"generated {len(vids)} videos, {len(anns)} GT tracks, {len(results)} predictions in {out_dir}")


def _child(impl: str, data: str, api_dir: str | None, workers: int | None = None) -> dict:
    """Runs in a subprocess: time one implementation, return timings, stats and peak RSS."""
    gt_path, res_path = os.path.join(data, "gt.json"), os.path.join(data, "results.json")
    c0 = time.process_time()
    t0 = time.perf_counter()
    if impl == "vidseg":
        import inspect

        from vidseg.evaluation import evaluate_ytvis, load_ground_truth, load_results

        if "workers" in inspect.signature(evaluate_ytvis).parameters:
            # the whole pipeline through the public entry point (the results file may be read in a forked
            # process while the GT is read: the load/evaluation split comes from the result's timings)
            res = evaluate_ytvis(gt_path, res_path, progress=False, workers=workers)
            t1 = t0 + res.timings["load_s"]
        else:  # an earlier vidseg (--baseline-src): one process
            gt = load_ground_truth(gt_path)
            dts = load_results(res_path, gt)
            t1 = time.perf_counter()
            res = evaluate_ytvis(gt, dts, progress=False)
        stats = list(res.stats.values())
        api_dir = os.path.dirname(os.path.dirname(os.path.dirname(evaluate_ytvis.__code__.co_filename)))
    else:
        import contextlib
        import io

        sys.path.insert(0, api_dir)
        from ytvos import YTVOS
        from ytvoseval import YTVOSeval

        with contextlib.redirect_stdout(io.StringIO()):
            gt = YTVOS(gt_path)
            with open(res_path) as f:
                res_list = json.load(f)
            t1 = time.perf_counter()  # loadRes also computes mask areas: counted as evaluation
            res = gt.loadRes(res_list)
            e = YTVOSeval(gt, res, "segm")
            e.evaluate()
            e.accumulate()
            e.summarize()
        stats = [float(s) for s in e.stats]
    t2 = time.perf_counter()
    cpu = time.process_time() - c0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu += kids.ru_utime + kids.ru_stime  # forked workers
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest forked worker
    out = {"load_s": t1 - t0, "eval_s": t2 - t1, "total_s": t2 - t0, "cpu_s": cpu, "peak_rss_mib": rss}
    out["child_rss_mib"] = child_rss
    return {**out, "stats": stats, "json_parser": _parser_note(impl), "code": api_dir}


def _parser_note(impl: str) -> str:
    if impl == "official":
        return "json"
    return "json + numpy counts-list parser (vidseg.evaluation.rle_json)"


def _run_child(
    impl: str, data: str, api_dir: str | None, src: str | None = None, workers: int | None = None
) -> dict:
    cmd = [sys.executable, __file__, "--child", impl, "--data", data] + (
        ["--official-api", api_dir] if api_dir else []
    )
    cmd += ["--workers", str(workers)] if workers else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if src:  # another copy of vidseg (e.g. an exported earlier commit) first on the path
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=300)
    p.add_argument("--frames", type=int, default=36)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--classes", type=int, default=40)
    p.add_argument("--preds-per-video", type=int, default=10)
    p.add_argument(
        "--official-api", metavar="DIR", help="directory with the (numpy-patched) official ytvos*.py"
    )
    p.add_argument("--data", help="reuse/generate the case in this directory (default: a temporary one)")
    p.add_argument(
        "--baseline-src",
        metavar="DIR",
        help="also time the vidseg in DIR (`git archive <commit> vidseg | tar -x -C DIR`) as 'before'",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="alternate the implementations this many times, keep each one's fastest run (shared machines)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes for vidseg (default: time both 1 and the automatic choice)",
    )
    p.add_argument("--child", choices=["vidseg", "official"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.data, args.official_api, args.workers)))
        return 0
    data = args.data or tempfile.mkdtemp(prefix="vidseg_evalbench_")
    os.makedirs(data, exist_ok=True)
    if not os.path.isfile(os.path.join(data, "results.json")):
        generate(data, args.videos, args.frames, args.height, args.width, args.classes, args.preds_per_video)
    sizes = {n: os.path.getsize(os.path.join(data, n)) / 2**20 for n in ("gt.json", "results.json")}
    print(f"case: {data} (gt.json {sizes['gt.json']:.0f} MiB, results.json {sizes['results.json']:.0f} MiB)")
    from vidseg.evaluation.forked import available_cpus

    if args.workers:
        impls = [(f"vidseg, {args.workers} process(es)", "vidseg", None, None, args.workers)]
    else:
        impls = [("vidseg, 1 process", "vidseg", None, None, 1)]
        impls.append((f"vidseg, auto ({available_cpus()} CPUs)", "vidseg", None, None, None))
    if args.baseline_src:
        impls.insert(0, ("vidseg before", "vidseg", None, os.path.abspath(args.baseline_src), None))
    if args.official_api:
        impls.append(("official", "official", os.path.abspath(args.official_api), None, None))
    runs: dict[str, dict] = {}
    totals: dict[str, list[float]] = {}
    for _ in range(max(1, args.repeat)):  # alternating, so that all see the same changes of machine load
        for name, impl, api, src, workers in impls:
            r = _run_child(impl, data, api, src, workers)
            totals.setdefault(name, []).append(r["total_s"])
            if name not in runs or r["total_s"] < runs[name]["total_s"]:
                runs[name] = r
    base = runs.get("official")
    print(f"\nfastest of {max(1, args.repeat)} alternating runs each")
    print(
        "| implementation | JSON load (s) | evaluation (s) | total (s) | vs official | CPU (s) "
        "| CPU vs official | peak RSS (MiB) | largest worker RSS (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in runs.items():
        ratio = f"{r['total_s'] / base['total_s']:.3f}x" if base else "n/a"
        cpu_ratio = f"{r['cpu_s'] / base['cpu_s']:.3f}x" if base else "n/a"
        cells = [
            name,
            f"{r['load_s']:.2f}",
            f"{r['eval_s']:.2f}",
            f"{r['total_s']:.2f}",
            ratio,
            f"{r['cpu_s']:.2f}",
            cpu_ratio,
            f"{r['peak_rss_mib']:.0f}",
            f"{r.get('child_rss_mib', 0):.0f}" if r.get("child_rss_mib") else "-",
        ]
        print("| " + " | ".join(cells) + " |")
    med = {n: float(np.median(t)) for n, t in totals.items()}
    base_med = med.get("official")
    cells = [f"{n} {m:.2f}" + (f" ({m / base_med:.3f}x)" if base_med else "") for n, m in med.items()]
    print("\nmedian total (s) over the runs: " + ", ".join(cells))
    for name, r in runs.items():
        print(f"JSON parsing ({name}): {r['json_parser']}; code from {r['code']}")
    mine = [n for n in runs if n.startswith("vidseg,")]
    if base:
        for n in mine:
            diff = np.abs(np.array(runs[n]["stats"]) - np.array(base["stats"])).max()
            print(f"\nmax |stat difference| {n} vs official over the 12 stats: {diff:.3g}")
    print("stats (vidseg):", ", ".join(f"{s:.4f}" for s in runs[mine[0]]["stats"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
