"""Tiny synthetic image set for the Deformable DETR tests: coloured rectangles on noise, class = colour."""

from __future__ import annotations

import torch

from vidseg.structures.clip_batch import ClipBatch, ClipTargets

COLOURS = torch.tensor([[2.0, -1.0, -1.0], [-1.0, 2.0, -1.0], [-1.0, -1.0, 2.0]])  # normalised-space RGB


def make_batch(
    batch: int, size: tuple[int, int] = (128, 128), max_objects: int = 2, seed: int = 0, pad_right: int = 0
) -> ClipBatch:
    """A T=1 ClipBatch: ``frames [B,1,3,H,W]``, masks/boxes for 1..max_objects rectangles per image."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    frames = torch.randn(batch, 1, 3, h, w, generator=g) * 0.3
    pad = torch.zeros(batch, 1, h, w, dtype=torch.bool)
    targets = []
    for b in range(batch):
        wv = w - pad_right if b == batch - 1 else w  # the last image is padded on the right
        pad[b, 0, :, wv:] = True
        frames[b, 0, :, :, wv:] = 0
        n = int(torch.randint(1, max_objects + 1, (1,), generator=g))
        labels, masks, boxes = [], [], []
        for _ in range(n):
            c = int(torch.randint(0, len(COLOURS), (1,), generator=g))
            bh, bw = (int(torch.randint(h // 5, h // 2, (1,), generator=g)) for _ in range(2))
            bw = min(bw, wv // 2)
            y0 = int(torch.randint(0, h - bh, (1,), generator=g))
            x0 = int(torch.randint(0, wv - bw, (1,), generator=g))
            m = torch.zeros(h, w, dtype=torch.bool)
            m[y0 : y0 + bh, x0 : x0 + bw] = True
            frames[b, 0][:, m] = COLOURS[c][:, None]
            labels.append(c)
            masks.append(m)
            boxes.append([(x0 + bw / 2) / wv, (y0 + bh / 2) / h, bw / wv, bh / h])
        targets.append(
            ClipTargets(
                labels=torch.tensor(labels),
                ids=torch.arange(n),
                masks=torch.stack(masks)[:, None],
                boxes=torch.tensor(boxes, dtype=torch.float32)[:, None],
                valid=torch.ones(n, 1, dtype=torch.bool),
                iscrowd=torch.zeros(n, dtype=torch.bool),
            )
        )
    meta = [
        {"orig_size": (h, w - (pad_right if b == batch - 1 else 0)), "image_size": (h, w)}
        for b in range(batch)
    ]
    for b in range(batch):
        meta[b]["image_size"] = meta[b]["orig_size"]
    return ClipBatch(frames=frames, pad_mask=pad, targets=targets, meta=meta)
