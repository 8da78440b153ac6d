"""Benchmark of the heads/losses pieces: mask head (MDC vs plain convs), matcher (batched vs per image),
criterion.

Each table row is timed in this run and compared with a baseline measured in the same run:

- mask head forward: the plain-conv head is the baseline, the modulated-deformable-conv head (DeVIS default)
  is compared with it, with the former (``method="legacy"``) and the current ``deform_conv2d`` path;
- matcher: one-by-one matching (one cost matrix per image) is the baseline for the batched cost matrix;
- criterion: forward+backward of the full 6-layer loss (mask losses at the final layer and aux layer 2).

    python benchmarks/heads.py                          # 384x640 input, 10 instances (fits a shared CPU)
    python benchmarks/heads.py --size 800 1333 --instances 50 --device cuda
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from vidseg.models.devis.clip_matcher import pad_matched_queries
from vidseg.models.devis.criterion import build_weight_dict, focal_set_criterion
from vidseg.models.devis.mask_head import MaskHeadConv, MultiScaleMHAttentionMap, run_mask_head
from vidseg.models.set_prediction.matcher import HungarianMatcher
from vidseg.ops import ModulatedDeformConv2d


def _time(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_mask_head(h: int, w: int, n: int, c4: int, repeats: int, device: str) -> list[tuple[str, float]]:
    hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
    q = torch.randn(1, n, 256, device=device)
    mems = [torch.randn(1, 256, hp // s, wp // s, device=device) for s in (32, 16, 8)]
    feats = [*mems, torch.randn(1, c4, hp // 4, wp // 4, device=device)]
    rows = []
    variants = (
        ("mask head, plain convs (baseline)", False, None),
        ("mask head, MDC, former whole-batch grid_sample path", True, "legacy"),
        ("mask head, MDC", True, "auto"),
    )
    for name, mdc, method in variants:
        att = MultiScaleMHAttentionMap(256, 256, 8, 3).to(device).eval()
        head = MaskHeadConv(256, (256, 256, c4), 8, 3, use_mdc=mdc).to(device).eval()
        for m in head.modules():
            if isinstance(m, ModulatedDeformConv2d):
                m.method = method
                # Non-zero offsets/modulation (zero-initialised) so the deformable sampling is exercised.
                torch.nn.init.normal_(m.offset_conv.weight, std=0.02)
                torch.nn.init.normal_(m.offset_conv.bias, std=1.0)
                torch.nn.init.normal_(m.modulator_conv.weight, std=0.02)
        with torch.no_grad():
            rows.append(
                (
                    name,
                    _time(lambda a=att, m=head: run_mask_head(a, m, q, mems, None, feats), repeats, device),
                )
            )
    return rows


def _rand_boxes(shape, device):
    return torch.cat(
        [torch.rand(*shape, 2, device=device) * 0.6 + 0.2, torch.rand(*shape, 2, device=device) * 0.3 + 0.05],
        -1,
    )


def bench_matcher(bs: int, q: int, k: int, g: int, repeats: int, device: str) -> list[tuple[str, float]]:
    m = HungarianMatcher()
    out = {"pred_logits": torch.randn(bs, q, k, device=device), "pred_boxes": _rand_boxes((bs, q), device)}
    tgts = [
        {"labels": torch.randint(0, k, (g,), device=device), "boxes": _rand_boxes((g,), device)}
        for _ in range(bs)
    ]

    def one_by_one():
        for b in range(bs):
            m({key: v[b : b + 1] for key, v in out.items()}, tgts[b : b + 1])

    return [
        (f"matcher one-by-one, B={bs} Q={q} G={g} (baseline)", _time(one_by_one, repeats, device)),
        (f"matcher batched, B={bs} Q={q} G={g}", _time(lambda: m(out, tgts), repeats, device)),
    ]


def bench_criterion(
    h: int, w: int, q: int, k: int, g: int, repeats: int, device: str
) -> list[tuple[str, float]]:
    matcher = HungarianMatcher()
    weights = build_weight_dict(class_coef=2, bbox_coef=5, giou_coef=2, mask_coef=8, dice_coef=8)
    crit = focal_set_criterion(k, matcher, weights, mask_aux_layers=(2,))
    hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
    tgts = [
        {
            "labels": torch.randint(0, k, (g,), device=device),
            "boxes": _rand_boxes((g,), device),
            "masks": torch.rand(g, hp, wp, device=device) > 0.5,
        }
        for _ in range(2)
    ]

    def layer(with_masks):
        o = {
            "pred_logits": torch.randn(2, q, k, device=device, requires_grad=True),
            "pred_boxes": _rand_boxes((2, q), device).requires_grad_(True),
        }
        if with_masks:
            idx = matcher(o, tgts)
            o["indices"] = idx
            qi, _ = pad_matched_queries(idx, q)
            o["pred_masks"] = torch.randn(2, qi.shape[1], hp // 4, wp // 4, device=device, requires_grad=True)
        return o

    def step():
        out = layer(True)
        out["aux_outputs"] = [layer(i == 2) for i in range(5)]
        crit.weighted_total(crit(out, tgts)).backward()

    return [(f"criterion fwd+bwd, 6 layers, B=2 Q={q} G={g}, {hp}x{wp}", _time(step, repeats, device))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, nargs=2, default=(384, 640), metavar=("H", "W"))
    p.add_argument("--instances", type=int, default=10, help="queries given to the mask head")
    p.add_argument("--c4", type=int, default=256, help="backbone /4 channels (R50 256, Swin-L 192)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="1 is steadier on a shared machine")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w = args.size
    print(f"device {args.device}; torch {torch.__version__}; {platform.processor() or platform.machine()}; "
          f"threads {torch.get_num_threads()}; median of {args.repeats}")  # fmt: skip
    groups = [
        bench_mask_head(h, w, args.instances, args.c4, args.repeats, args.device),
        bench_matcher(2, 300, 91, 20, args.repeats, args.device),
        bench_criterion(h, w, 300, 91, 10, args.repeats, args.device),
    ]
    print(f"\n| {'case':<58} | {'ms':>9} | {'vs baseline':>11} |")
    print(f"|{'-' * 60}|{'-' * 11}|{'-' * 13}|")
    for rows in groups:
        base = rows[0][1]
        for name, t in rows:
            ratio = f"{t / base:.2f}x" if len(rows) > 1 else "-"
            print(f"| {name:<58} | {t * 1e3:>9.1f} | {ratio:>11} |")


if __name__ == "__main__":
    main()
