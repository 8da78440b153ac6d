"""Forward time / FPS of the DeVIS image model (Deformable DETR + mask head, R50) and its parameter counts;
with ``--devis`` the DeVIS video model at the YT-19 R50 setting (T=6, 60 queries).

    python benchmarks/models.py                      # CPU, 800x1333 (the COCO test size)
    python benchmarks/models.py --devis              # DeVIS R50 YT-19: training step, peak memory, forward,
                                                     # near-online FPS on a 14-frame video (--video-frames)
                                                     # time per clip at 360x640 (CPU, or --device cuda)
    python benchmarks/models.py --quick              # CPU, 400x667, fewer repetitions (shared machines)
    python benchmarks/models.py --device cuda        # GPU FPS, against DeVIS's 12.1 FPS for this model
    python benchmarks/models.py --quick --mdc-legacy # also time the former modulated-deformable-conv path
    python benchmarks/models.py --model mask2former  # GRAtt-VIS's per-frame detector (R50), 360x640 frames
    python benchmarks/models.py --model grattvis [--full] [--train]  # GRAtt-VIS online FPS at 360x640 (tiny;
                                                     # --full: also R50 OVIS), peak memory at 100 vs 1,000
                                                     # frames; --train: an OVIS R50 training step
    python benchmarks/models.py --device cuda --size 360 640 --train   # + training step time, peak memory

The baseline measured in the same run is the ResNet-50 backbone alone on the same input; the table gives each
measurement's ratio to it. With CUDA the full model is timed with both deformable-attention backends. With
``--mdc-legacy`` the full model is also timed with the mask head's former deformable-conv formulation
(``vidseg.ops.deform_conv2d(method="legacy")``: one whole-batch grid_sample, separate offset/modulator convs),
so before/after figures come from the same run and machine state; the outputs of both are compared. With
``--train`` one training step (forward, DeVIS image-stage loss with the Hungarian matcher, backward, AdamW) is
timed on a synthetic batch (``benchmarks/train_batch.py``) of ``--train-batch`` images at that size; on CUDA
the peak memory of inference and of training is reported (``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from vidseg.models import load_config
from vidseg.models.devis.build import build_deformable_detr_segm
from vidseg.ops import ModulatedDeformConv2d

OFFICIAL_PARAMS_M = 42.5  # devis.md §8: COCO R50 mask-head model, 655 state-dict entries
OFFICIAL_FPS = 12.1  # DeVIS README, COCO R50 image model (GPU not stated)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step_time(cfg, device: torch.device, h: int, w: int, batch: int, warmup: int, iters: int):
    """Median seconds of one training step and the peak bytes allocated during the steps (CUDA; else 0)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from train_batch import image_batch, train_step

    from vidseg.models import build_model

    torch.manual_seed(0)
    bundle = build_model(cfg)
    model, criterion = bundle.model.to(device).train(), bundle.criterion.to(device)
    opt = torch.optim.AdamW(bundle.param_groups(model), lr=cfg.SOLVER.BASE_LR)
    data = image_batch(batch, h, w, num_classes=cfg.MODEL.NUM_CLASSES).to(device)
    for _ in range(max(1, warmup)):
        train_step(model, criterion, opt, data)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(iters):
        _sync(device)
        t0 = time.perf_counter()
        train_step(model, criterion, opt, data)
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return statistics.median(times), peak


@torch.no_grad()
def time_fn(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def set_mdc_method(model: torch.nn.Module, method: str) -> None:
    """Switch every modulated deformable conv of ``model`` to ``vidseg.ops.deform_conv2d(method=...)``."""
    for m in model.modules():
        if isinstance(m, ModulatedDeformConv2d):
            m.method = method


def param_table(model: torch.nn.Module) -> list[tuple[str, float]]:
    """Unique parameters (millions) per part; frozen-BN statistics are buffers and not counted (as
    officially)."""
    parts = {
        "backbone": model.def_detr.backbone,
        "input_proj": model.def_detr.input_proj,
        "transformer (incl. box heads)": model.def_detr.transformer,
        "class_embed": model.def_detr.class_embed,
        "query_embed": model.def_detr.query_embed,
        "bbox_attention + mask_head": torch.nn.ModuleList([model.bbox_attention, model.mask_head]),
    }
    rows = [(k, sum(p.numel() for p in m.parameters()) / 1e6) for k, m in parts.items()]
    rows.append(("total (parameters)", sum(p.numel() for p in model.parameters()) / 1e6))
    # The official figure counts the state dict's tensors once each, so frozen-BN buffers are included.
    seen, total = set(), 0
    for v in model.state_dict().values():
        if v.data_ptr() not in seen:
            seen.add(v.data_ptr())
            total += v.numel()
    rows.append(("total (state dict, unique tensors)", total / 1e6))
    return rows


SEED_TRAIN_MEMORY_GB = 18.0  # DeVIS README: max GPU memory training YT-19 R50 (one clip per GPU)
SEED_FPS_YT19 = 18.4  # DeVIS README: YT-19 R50 inference (T=6, stride 4), GPU not stated


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _synthetic_clip(t: int, h: int, w: int, num_classes: int, device: torch.device):
    """A ClipBatch of one clip with 3 moving boxes (targets for the training step)."""
    from vidseg.structures.box_ops import box_xyxy_to_cxcywh, masks_to_boxes
    from vidseg.structures.clip_batch import ClipBatch, ClipTargets

    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(3, t, h, w, dtype=torch.bool)
    for i in range(3):
        for f in range(t):
            y0, x0 = 20 + 40 * i + 3 * f, 30 + 90 * i + 5 * f
            masks[i, f, y0 : y0 + h // 4, x0 : x0 + w // 5] = True
    boxes = box_xyxy_to_cxcywh(masks_to_boxes(masks.flatten(0, 1))).view(3, t, 4)
    boxes = boxes / torch.tensor([w, h, w, h], dtype=torch.float32)
    target = ClipTargets(
        labels=torch.randint(0, num_classes, (3,), generator=g),
        ids=torch.arange(1, 4),
        masks=masks,
        boxes=boxes,
        valid=torch.ones(3, t, dtype=torch.bool),
    )
    batch = ClipBatch(
        frames=torch.randn(1, t, 3, h, w, generator=g),
        pad_mask=torch.zeros(1, t, h, w, dtype=torch.bool),
        targets=[target],
        meta=[{"image_size": (h, w)}],
    )
    return batch.to(device)


def bench_devis(args, device: torch.device) -> int:
    """DeVIS R50 YT-19: training step (forward, losses, backward, AdamW step) and its peak memory per clip at
    the train size, forward time per clip at 360x640 (eval, top-20 masks). Baseline: the backbone alone on
    the clip's 6 frames at 360x640."""
    from vidseg.models.devis.build import build_devis

    cfg = load_config("devis/YT-19/devis_R_50_YT-19.yaml", ["MODEL.DEFORM_ATTN_IMPL", "torch"])
    torch.manual_seed(0)
    bundle = build_devis(cfg)
    model = bundle.model.to(device)
    t = int(cfg.MODEL.DEVIS.NUM_FRAMES)
    th, tw = args.size or (360, 640)
    iters = args.iters or (1 if device.type == "cpu" else 10)
    warmup = args.warmup if args.warmup is not None else (0 if device.type == "cpu" else 3)
    opt = torch.optim.AdamW(bundle.param_groups(model), lr=1e-4, weight_decay=1e-4)
    batch = _synthetic_clip(t, th, tw, int(cfg.MODEL.NUM_CLASSES), device)
    crit = bundle.criterion.to(device)

    def step() -> None:
        losses = crit(model(batch), batch.targets)
        total = sum(crit.weight_dict[k] * v for k, v in losses.items() if k in crit.weight_dict)
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()

    model.train()
    rss0 = _peak_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.enable_grad():
        for _ in range(warmup):
            step()
        times = []
        for _ in range(iters):
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - t0)
    train_t = statistics.median(times)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        mem = f"peak GPU memory {peak:.2f} GiB (allocated) vs the seed's {SEED_TRAIN_MEMORY_GB} GB"
    else:
        mem = f"peak RSS {_peak_rss_mb() / 1024:.2f} GiB (process; {rss0 / 1024:.2f} GiB before the step)"

    model.eval()
    eh, ew = 360, 640
    x = torch.randn(1, t, 3, eh, ew, device=device)
    from vidseg.structures.clip_batch import ClipBatch

    clip = ClipBatch(frames=x, pad_mask=torch.zeros(1, t, eh, ew, dtype=torch.bool, device=device))
    base = time_fn(lambda: model.def_detr.backbone[0](x[0]), device, warmup, iters)
    fwd = time_fn(lambda: model(clip), device, warmup, iters)
    print(f"\n## DeVIS R50 YT-19 (T={t}, {cfg.MODEL.NUM_QUERIES} queries), {device.type}, median of {iters}")
    if device.type == "cpu":
        print(f"torch threads: {torch.get_num_threads()}")
    else:
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    print("| what | s/clip | frames/s | x baseline |")
    print("|---|---|---|---|")
    print(f"| ResNet-50 backbone on the 6 frames, 360x640 (baseline) | {base:.2f} | {t / base:.2f} | 1.00 |")
    print(f"| DeVIS forward per clip, 360x640, top-20 masks | {fwd:.2f} | {t / fwd:.2f} | {fwd / base:.2f} |")
    print(
        f"| DeVIS training step per clip, {th}x{tw} (fwd+loss+bwd+AdamW) | {train_t:.2f} | {t / train_t:.2f} "
        f"| {train_t / base:.2f} |"
    )
    print(mem)
    if device.type == "cuda":
        print(
            f"forward {t / fwd:.1f} frames/s vs the seed's {SEED_FPS_YT19} FPS (with stride 4 it processes "
            f"{4 / fwd:.1f} new frames/s)"
        )
    video_fps(bundle, model, device, args.video_frames, t)
    return 0


def video_fps(bundle, model: torch.nn.Module, device: torch.device, n: int, t: int) -> None:
    """Near-online FPS as the spec defines it: frames / (model + stitching time) of ``bundle.inference``
    (clips of T with TEST.CLIP_TRACKING.STRIDE, the multi-cue tracker) on a random ``n``-frame video at
    360x640."""
    from types import SimpleNamespace

    if n <= 0:
        return
    frames = torch.randn(n, 3, 360, 640)

    class _Frames:
        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int) -> torch.Tensor:
            return frames[i]

    video = SimpleNamespace(
        video_id=0, frames=_Frames(), orig_size=(360, 640), image_size=(360, 640), length=n
    )
    inference = bundle.inference
    inference.timing.update(frames=0, model_s=0.0, stitch_s=0.0)
    inference(model, video)
    tm = inference.timing
    print(
        f"near-online video, {n} frames, 360x640, stride {inference.stride}: {inference.fps:.2f} FPS = "
        f"frames / (model {tm['model_s']:.1f} s + stitching {tm['stitch_s']:.2f} s), vs the seed's "
        f"{SEED_FPS_YT19} FPS ({device.type})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--quick", action="store_true", help="400x667 input and fewer repetitions")
    ap.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"))
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 1 CPU, 10 GPU)")
    ap.add_argument("--mdc-legacy", action="store_true", help="also time the former MDC path (before/after)")
    ap.add_argument("--devis", action="store_true", help="the DeVIS video model (R50 YT-19) instead")
    ap.add_argument(
        "--model",
        default="devis",
        choices=["devis", "mask2former", "grattvis"],
        help="devis (the image stage; --devis: the video model), mask2former (the GRAtt-VIS detector) or "
        "grattvis (online inference: benchmarks/grattvis_bench.py)",
    )
    ap.add_argument("--full", action="store_true", help="grattvis: also the R50 OVIS config")
    ap.add_argument("--fps-frames", type=int, default=None, help="grattvis: frames of the FPS video")
    ap.add_argument(
        "--mem-frames", type=int, nargs="+", default=[100, 1000], help="grattvis: video lengths for memory"
    )
    ap.add_argument(
        "--mem-size", type=int, nargs=2, default=[96, 160], metavar=("H", "W"), help="grattvis: memory frames"
    )
    ap.add_argument("--train", action="store_true", help="also time one training step (and its peak memory)")
    ap.add_argument("--train-batch", type=int, default=2, help="images per training step (default 2)")
    ap.add_argument(
        "--video-frames", type=int, default=14, help="--devis: video length for the near-online FPS"
    )
    args = ap.parse_args(argv)
    if args.model == "mask2former":
        from mask2former_bench import run_mask2former

        return run_mask2former(args)
    if args.model == "grattvis":
        from grattvis_bench import run_grattvis

        return run_grattvis(args)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA requested but not available", file=sys.stderr)
        return 2
    if args.devis:
        return bench_devis(args, device)
    h, w = args.size or ((400, 667) if args.quick else (800, 1333))
    iters = args.iters or (3 if args.quick and device.type == "cpu" else (5 if device.type == "cpu" else 50))
    warmup = args.warmup if args.warmup is not None else (1 if device.type == "cpu" else 10)

    cfg = load_config(
        "deformable_mask_head/deformable_mask_head_R_50.yaml", ["MODEL.DEFORM_ATTN_IMPL", "torch"]
    )
    torch.manual_seed(0)
    model = build_deformable_detr_segm(cfg, cfg.MODEL.NUM_CLASSES).to(device).eval()
    # Non-zero offsets and modulation (they are zero-initialised) so that the deformable sampling is exercised
    # and the before/after comparison of the MDC path means something.
    for m in model.modules():
        if isinstance(m, ModulatedDeformConv2d):
            torch.nn.init.normal_(m.offset_conv.weight, std=0.02)
            torch.nn.init.normal_(m.offset_conv.bias, std=1.0)
            torch.nn.init.normal_(m.modulator_conv.weight, std=0.02)
    x = torch.randn(1, 3, h, w, device=device)
    mask = torch.zeros(1, h, w, dtype=torch.bool, device=device)

    rows: list[tuple[str, float]] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = time_fn(lambda: model.def_detr.backbone[0](x), device, warmup, iters)
    rows.append(("ResNet-50 backbone only (baseline)", base))
    impls = ["torch", "triton"] if device.type == "cuda" else ["torch"]
    mdc_methods = ["legacy", "auto"] if args.mdc_legacy else ["auto"]
    masks = {}
    for impl in impls:
        for m in model.modules():
            if hasattr(m, "impl") and isinstance(m.impl, str):
                m.impl = impl
        for method in mdc_methods:
            set_mdc_method(model, method)
            t = time_fn(lambda: model(x, mask), device, warmup, iters)
            label = "former MDC path" if method == "legacy" else "MDC"
            rows.append(
                (f"DeformableDETRSegm R50 forward (MSDA {impl}, {label}, top-{cfg.TEST.NUM_OUT} masks)", t)
            )
            if impl == "torch":
                with torch.no_grad():
                    masks[method] = model(x, mask)["pred_masks"]

    print(f"\n## Forward time per image, {h}x{w}, batch 1, {device.type}, median of {iters}")
    if device.type == "cpu":
        print(f"torch threads: {torch.get_num_threads()}")
    else:
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    print(f"| {'what':<62} | {'ms/img':>9} | {'FPS':>6} | {'x baseline':>10} |")
    print(f"|{'-' * 64}|{'-' * 11}|{'-' * 8}|{'-' * 12}|")
    for name, t in rows:
        print(f"| {name:<62} | {t * 1e3:9.1f} | {1 / t:6.2f} | {t / base:10.2f} |")
    if len(masks) == 2:
        diff = (masks["legacy"] - masks["auto"]).abs().max().item()
        legacy_t = next(t for n, t in rows if "former" in n)
        new_t = next(t for n, t in rows if "former" not in n and "MSDA torch" in n)
        print(f"MDC before/after: {legacy_t / new_t:.2f}x faster; max |mask logit difference| {diff:.2e}")
    if device.type == "cuda":
        fps = 1 / min(t for _, t in rows[1:])
        print(f"best FPS {fps:.2f} vs DeVIS README {OFFICIAL_FPS} FPS (ratio {fps / OFFICIAL_FPS:.2f})")
        print(f"peak memory, inference: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")

    print("\n## Parameters (millions)")
    print(f"| {'part':<40} | {'ours':>8} | {'official':>8} |")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 10}|")
    for name, n in param_table(model):
        off = f"{OFFICIAL_PARAMS_M:8.1f}" if name == "total (parameters)" else f"{'':8}"
        print(f"| {name:<40} | {n:8.2f} | {off} |")
    if args.train:
        del model, masks
        if device.type == "cuda":
            torch.cuda.empty_cache()
        impl = "triton" if device.type == "cuda" else "torch"
        tcfg = load_config(
            "deformable_mask_head/deformable_mask_head_R_50.yaml",
            ["MODEL.DEFORM_ATTN_IMPL", impl],
        )
        step, peak = train_step_time(tcfg, device, h, w, args.train_batch, warmup, iters)
        print(
            f"\n## Training step, DeformableDETRSegm R50 (MSDA {impl}), batch {args.train_batch} at {h}x{w}"
        )
        print(f"| {'what':<40} | {'value':>10} |")
        print(f"|{'-' * 42}|{'-' * 12}|")
        print(f"| {'step time (median of ' + str(iters) + '), ms':<40} | {step * 1e3:10.1f} |")
        print(f"| {'images per second':<40} | {args.train_batch / step:10.2f} |")
        if device.type == "cuda":
            print(f"| {'peak memory, MiB':<40} | {peak / 2**20:10.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
