"""A synthetic training batch for the image model benchmarks (``models.py --train``, ``contention.py``).

Rectangles on noise, one to three per image, with masks and boxes as the data pipeline gives them: a T=1
:class:`ClipBatch` (``frames [B, 1, 3, H, W]``), so the DeVIS image-stage criterion and matcher run for real.
"""

from __future__ import annotations

import torch

from vidseg.structures.clip_batch import ClipBatch, ClipTargets


def image_batch(batch: int, h: int, w: int, num_classes: int = 3, seed: int = 0) -> ClipBatch:
    """``batch`` images of ``h x w`` with 1..3 rectangles each (labels in ``0..num_classes-1``)."""
    g = torch.Generator().manual_seed(seed)

    def draw(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi, (1,), generator=g))

    frames = torch.randn(batch, 1, 3, h, w, generator=g) * 0.3
    targets = []
    for b in range(batch):
        n = draw(1, 4)
        masks = torch.zeros(n, 1, h, w, dtype=torch.bool)
        boxes = torch.zeros(n, 1, 4)
        for i in range(n):
            bh, bw = draw(h // 6, h // 2), draw(w // 6, w // 2)
            y0, x0 = draw(0, h - bh), draw(0, w - bw)
            masks[i, 0, y0 : y0 + bh, x0 : x0 + bw] = True
            frames[b, 0, :, y0 : y0 + bh, x0 : x0 + bw] += 1.5
            boxes[i, 0] = torch.tensor([(x0 + bw / 2) / w, (y0 + bh / 2) / h, bw / w, bh / h])
        targets.append(
            ClipTargets(
                labels=torch.randint(0, num_classes, (n,), generator=g),
                ids=torch.arange(n),
                masks=masks,
                boxes=boxes,
                valid=torch.ones(n, 1, dtype=torch.bool),
                iscrowd=torch.zeros(n, dtype=torch.bool),
            )
        )
    meta = [{"orig_size": (h, w), "image_size": (h, w)} for _ in range(batch)]
    return ClipBatch(
        frames=frames, pad_mask=torch.zeros(batch, 1, h, w, dtype=torch.bool), targets=targets, meta=meta
    )


def train_step(model: torch.nn.Module, criterion: torch.nn.Module, optimizer, batch: ClipBatch) -> float:
    """One optimizer step (forward, weighted loss, backward, clip, step); the total loss."""
    losses = criterion(model(batch), batch.targets)
    total = sum(criterion.weight_dict[k] * v for k, v in losses.items() if k in criterion.weight_dict)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
    optimizer.step()
    return float(total.detach())
