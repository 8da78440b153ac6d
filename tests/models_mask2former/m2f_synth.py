"""Synthetic video frames for the Mask2Former training tests: moving squares and discs on noise, class = shape
and colour, in clips of T frames (every frame is one image for the detector)."""

from __future__ import annotations

import torch

from vidseg.structures.clip_batch import ClipBatch, ClipTargets

COLOURS = torch.tensor([[2.0, -1.0, -1.0], [-1.0, 2.0, -1.0], [-1.0, -1.0, 2.0]])  # normalised-space RGB


def _shape(k: int, h: int, w: int, cy: float, cx: float, r: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    if k == 1:  # disc
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return ((yy - cy).abs() <= r) & ((xx - cx).abs() <= r)


def make_clips(batch: int, frames: int = 2, size: int = 64, seed: int = 0, max_objects: int = 2) -> ClipBatch:
    """``ClipBatch`` of ``batch`` clips ``[T, 3, size, size]`` with 1..max_objects moving objects each.

    Labels: 0 red square, 1 green disc, 2 blue square.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, frames, 3, size, size, generator=g) * 0.3
    targets, meta = [], []
    for b in range(batch):
        n = int(torch.randint(1, max_objects + 1, (1,), generator=g))
        labels = torch.randint(0, 3, (n,), generator=g)
        masks = torch.zeros(n, frames, size, size, dtype=torch.bool)
        boxes = torch.zeros(n, frames, 4)
        for i in range(n):
            r = float(torch.randint(size // 10, size // 5, (1,), generator=g))
            cy, cx = (
                float(torch.randint(int(r) + 1, size - int(r) - 1, (1,), generator=g)) for _ in range(2)
            )
            vy, vx = (float(torch.randint(-3, 4, (1,), generator=g)) for _ in range(2))
            for t in range(frames):
                py = min(max(cy + vy * t, r + 1), size - r - 2)
                px = min(max(cx + vx * t, r + 1), size - r - 2)
                m = _shape(int(labels[i]) % 2, size, size, py, px, r)
                masks[i, t] = m
                x[b, t][:, m] = COLOURS[labels[i]][:, None]
                ys, xs = m.nonzero(as_tuple=True)
                x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
                boxes[i, t] = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]) / size
        # Later objects are painted over earlier ones: keep the visible part only.
        for i in range(n - 1):
            masks[i] &= ~masks[i + 1 :].any(0)
        valid = masks.flatten(2).any(-1)
        targets.append(
            ClipTargets(labels=labels, ids=torch.arange(1, n + 1), masks=masks, boxes=boxes, valid=valid,
                        iscrowd=torch.zeros(n, dtype=torch.bool))
        )  # fmt: skip
        meta.append({"video_id": seed * 1000 + b, "orig_size": (size, size), "image_size": (size, size)})
    pad = torch.zeros(batch, frames, size, size, dtype=torch.bool)
    return ClipBatch(frames=x, pad_mask=pad, targets=targets, meta=meta)
