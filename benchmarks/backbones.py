"""Backbone forward time per image on CPU (and GPU when available), with ratios against ResNet-50.

OMP_NUM_THREADS=2 python benchmarks/backbones.py --size 360 640 --names resnet50 resnet18 swin_t_p4w7
"""

from __future__ import annotations

import argparse
import time

import torch

from vidseg.backbones import build_backbone


def time_forward(name: str, size: tuple[int, int], device: str, repeats: int) -> tuple[float, float]:
    bb = build_backbone(name, train_backbone=False).to(device).eval()
    x = torch.randn(1, 3, *size, device=device)
    with torch.inference_mode():
        bb(x)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            bb(x)
        if device == "cuda":
            torch.cuda.synchronize()
    params = sum(p.numel() for p in bb.parameters()) / 1e6
    return (time.perf_counter() - start) / repeats, params


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, nargs=2, default=(360, 640), metavar=("H", "W"))
    p.add_argument("--names", nargs="+", default=["resnet50", "resnet18", "resnet101", "swin_t_p4w7"])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        print(f"\ndevice={device} input={args.size[0]}x{args.size[1]} threads={torch.get_num_threads()}")
        print(f"{'backbone':<16}{'params (M)':>12}{'ms/image':>12}{'vs ' + args.names[0]:>14}")
        base = None
        for name in args.names:
            sec, params = time_forward(name, tuple(args.size), device, args.repeats)
            base = base or sec
            print(f"{name:<16}{params:>12.1f}{sec * 1e3:>12.1f}{sec / base:>13.2f}x")


if __name__ == "__main__":
    main()
