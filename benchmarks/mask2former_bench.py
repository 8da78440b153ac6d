"""``benchmarks/models.py --model mask2former``: the per-frame detector of GRAtt-VIS (Mask2Former R50, OVIS
classes) on 360x640 frames (padded to 384x640, as the model pads to 32).

- forward time per frame, against the ResNet-50 backbone alone in the same run;
- parameters per part against the spec (grattvis.md: backbone 23.45 M, pixel decoder 6.04 M, transformer
  decoder 14.47 M);
- on a GPU: the pixel decoder in fp32 (the official setting: its CUDA op has no half kernel) against bf16
  autocast on the Triton MSDA, with the speed-up and the largest difference in the mask logits.
"""

from __future__ import annotations

import sys

import torch

from vidseg.models import build_model, load_config

SPEC_PARAMS_M = {"backbone": 23.45, "pixel decoder": 6.04, "transformer decoder": 14.47}


def _time(fn, device, warmup, iters):
    from models import time_fn

    return time_fn(fn, device, warmup, iters)


def _millions(m: torch.nn.Module) -> float:
    return sum(p.numel() for p in m.parameters()) / 1e6


def build(impl: str = "torch", fp32: bool = True):
    cfg = load_config(
        "mask2former/frames_R50_ovis.yaml",
        [
            "MODEL.WEIGHTS",
            "",
            "MODEL.DEFORM_ATTN_IMPL",
            impl,
            "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_FP32",
            str(fp32),
        ],
    )
    torch.manual_seed(0)
    return build_model(cfg).model.eval()


@torch.no_grad()
def compare_pixel_decoder(
    model, x: torch.Tensor, impl: str, warmup: int, iters: int
) -> tuple[float, float, float]:
    """The pixel decoder in fp32 against bf16 autocast on the ``impl`` MSDA: ``(s fp32, s bf16, max |mask
    logit difference|)``; the transformer decoder runs in fp32 on both outputs."""
    device = x.device
    feats = model.backbone(x)
    dec = model.sem_seg_head.pixel_decoder
    for m in dec.modules():
        if hasattr(m, "impl") and isinstance(m.impl, str):
            m.impl = impl

    def pix(fp32: bool) -> dict:
        dec.force_fp32 = fp32
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return dec(feats)

    try:
        t32 = _time(lambda: pix(True), device, warmup, iters)
        t16 = _time(lambda: pix(False), device, warmup, iters)
        high, low = pix(True), pix(False)
    finally:
        dec.force_fp32 = True
    pred = model.sem_seg_head.predictor
    ref = pred(high["multi_scale_features"], high["mask_features"])
    out = pred([f.float() for f in low["multi_scale_features"]], low["mask_features"].float())
    return t32, t16, (ref["pred_masks"] - out["pred_masks"]).abs().max().item()


def run_mask2former(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA requested but not available", file=sys.stderr)
        return 2
    h, w = args.size or (360, 640)
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    cpu = device.type == "cpu"
    iters = args.iters or (3 if cpu else 30)
    warmup = args.warmup if args.warmup is not None else (1 if cpu else 10)
    model = build("torch").to(device)
    x = torch.randn(1, 3, ph, pw, device=device)
    rows = [("ResNet-50 backbone only (baseline)", _time(lambda: model.backbone(x), device, warmup, iters))]
    impls = ["torch", "triton"] if device.type == "cuda" else ["torch"]
    for impl in impls:
        for m in model.modules():
            if hasattr(m, "impl") and isinstance(m.impl, str):
                m.impl = impl
        rows.append(
            (f"Mask2Former R50 forward (MSDA {impl}, fp32)", _time(lambda: model(x), device, warmup, iters))
        )
    base = rows[0][1]
    print(
        f"\n## Mask2Former (GRAtt-VIS detector) forward per frame, {h}x{w} (padded {ph}x{pw}), {device.type}"
    )
    print(
        f"torch threads: {torch.get_num_threads()}" if cpu else f"GPU: {torch.cuda.get_device_name(device)}"
    )
    print(f"| {'what':<46} | {'ms/frame':>9} | {'FPS':>6} | {'x baseline':>10} |")
    print(f"|{'-' * 48}|{'-' * 11}|{'-' * 8}|{'-' * 12}|")
    for name, t in rows:
        print(f"| {name:<46} | {t * 1e3:9.1f} | {1 / t:6.2f} | {t / base:10.2f} |")

    if device.type == "cuda":
        t32, t16, diff = compare_pixel_decoder(model, x, "triton", warmup, iters)
        print("\n## Pixel decoder: fp32 (official) vs bf16 autocast, Triton MSDA")
        print(
            f"fp32 {t32 * 1e3:.2f} ms, bf16 {t16 * 1e3:.2f} ms: speed-up {t32 / t16:.2f}x; "
            f"max |mask logit difference| {diff:.3e} (decoder in fp32 on both)"
        )

    print("\n## Parameters (millions)")
    parts = {
        "backbone": model.backbone,
        "pixel decoder": model.sem_seg_head.pixel_decoder,
        "transformer decoder": model.sem_seg_head.predictor,
    }
    print(f"| {'part':<22} | {'ours':>8} | {'spec':>8} |")
    print(f"|{'-' * 24}|{'-' * 10}|{'-' * 10}|")
    for name, m in parts.items():
        print(f"| {name:<22} | {_millions(m):8.2f} | {SPEC_PARAMS_M[name]:8.2f} |")
    print(f"| {'total':<22} | {_millions(model):8.2f} | {sum(SPEC_PARAMS_M.values()):8.2f} |")
    return 0
