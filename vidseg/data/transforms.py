"""Clip-consistent augmentation: one geometric draw per clip, photometric distortion per frame.

DeVIS (spec devis.md §3.2): flip p=0.5 -> per-frame SSD photometric distortion -> RandomSelect p=0.5 between
(a) shortest-edge resize to a size from ``min_sizes`` (long side <= ``max_size``) and (b) resize to a size
from ``crop_resize_sizes`` -> random crop with sides in ``crop_size`` (same region on every frame) -> (a).
GRAtt-VIS/VITA (grattvis.md §4.2): the same with ``moving_crop=True``: the crop window's top-left corner moves
linearly between two random positions over the clip (direction reversed with p=0.5), simulating camera motion.
VisTR (DeVIS ablations, ``INPUT.DEVIS.MULTI_SCALE_TRAIN False``, devis.md §3.2), ``vistr=True``: flip ->
resize to one of ``min_sizes`` (480..768, long side <= 800) -> photometric -> resize to ``crop_resize_sizes``
-> crop (always) -> resize the shorter side to ``out_size`` (300, long side <= ``out_max_size`` 540).

Frames are float tensors ``[T, 3, H, W]`` in 0..255 (RGB); masks are bool ``[N, T, H, W]``. All randomness
comes from the ``np.random.Generator`` argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["shortest_edge_size", "resize_image", "resize_clip", "photometric_distort", "ClipAugmentation"]


def shortest_edge_size(h: int, w: int, size: int, max_size: int | None) -> tuple[int, int]:
    """Output ``(h, w)``: shorter side ``size``, longer side at most ``max_size`` (the DETR rule)."""
    if max_size is not None:
        lo, hi = float(min(h, w)), float(max(h, w))
        if hi / lo * size > max_size:
            size = int(round(max_size * lo / hi))
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The official test-time frame resize: ``uint8 [H, W, 3]`` -> ``uint8 [h, w, 3]`` with PIL bilinear.

    DeVIS ``src/datasets/vis.py:make_val_vis_transforms`` -> ``vis_transforms.py:resize_clip`` calls
    torchvision ``F.resize`` on each PIL frame, i.e. PIL ``Image.resize(..., BILINEAR)`` (an antialiased
    triangle filter when shrinking, uint8 after each of its two passes); detectron2's ``ResizeTransform``
    (GRAtt-VIS, VITA, Mask2Former) does the same on uint8 frames. ``resize_clip`` on float frames differs from
    it by up to 1 grey level (mean 0.3, docs/inference.md), so inference resizes with PIL. A frame already at
    ``size`` is returned as it is (PIL's resize to the own size is a copy).
    """
    if tuple(image.shape[:2]) == tuple(size):
        return image
    h, w = size
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), Image.BILINEAR))


def resize_clip(
    frames: torch.Tensor, masks: torch.Tensor | None, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Bilinear (antialiased, like PIL) resize of ``frames [T,3,H,W]``; nearest for ``masks [N,T,H,W]``."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames, masks
    frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)
    if masks is not None and masks.numel():
        n, t = masks.shape[:2]
        m = F.interpolate(masks.reshape(n * t, 1, *masks.shape[-2:]).float(), size=size, mode="nearest")
        masks = m.reshape(n, t, *size) > 0.5
    elif masks is not None:
        masks = masks.new_zeros((*masks.shape[:2], *size))
    return frames, masks


# ------------------------------------------------------------------------------------------ photometric
def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """``[3, H, W]`` RGB 0..255 -> HSV with H in degrees [0, 360), S in [0, 1], V in 0..255."""
    r, g, b = x
    maxc, _ = x.max(0)
    minc, _ = x.min(0)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(
        maxc == r,
        torch.remainder((g - b) / safe, 6.0),
        torch.where(maxc == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    h = torch.where(delta > 0, h * 60.0, torch.zeros_like(h))
    s = torch.where(
        maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc)
    )
    return torch.stack([h, s, maxc])


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x
    c = v * s
    hp = torch.remainder(h, 360.0) / 60.0
    xx = c * (1 - torch.abs(torch.remainder(hp, 2.0) - 1))
    z = torch.zeros_like(c)
    sector = torch.floor(hp).long().clamp(0, 5)
    choices = [(c, xx, z), (xx, c, z), (z, c, xx), (z, xx, c), (xx, z, c), (c, z, xx)]
    out = torch.zeros_like(x)
    for k, (r, g, b) in enumerate(choices):
        sel = sector == k
        out[0] = torch.where(sel, r, out[0])
        out[1] = torch.where(sel, g, out[1])
        out[2] = torch.where(sel, b, out[2])
    return out + (v - c)


def photometric_distort(frame: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """SSD-style distortion of one frame ``[3, H, W]`` (0..255), as DeVIS draws it per frame.

    With p=0.5 order A [contrast U(0.5, 1.3), saturation x U(0.7, 1.3), hue +- U(8 deg)] else order B
    [saturation, hue, contrast U(0.5, 1.5)]; each op fires with p=0.5; then a random channel permutation with
    p=0.25. Brightness is off, as in DeVIS. Values are clipped to 0..255 (DeVIS casts to uint8 without
    clipping, which wraps around; we fix that on purpose).
    """
    x = frame.clone()
    order_a = rng.random() < 0.5

    def contrast(img: torch.Tensor, hi: float) -> torch.Tensor:
        return img * float(rng.uniform(0.5, hi)) if rng.random() < 0.5 else img

    if order_a:
        x = contrast(x, 1.3)
    hsv = _rgb_to_hsv(x.clamp(0, 255))
    if rng.random() < 0.5:
        hsv[1] = (hsv[1] * float(rng.uniform(0.7, 1.3))).clamp(0, 1)
    if rng.random() < 0.5:
        hsv[0] = torch.remainder(hsv[0] + float(rng.uniform(-8.0, 8.0)), 360.0)
    x = _hsv_to_rgb(hsv)
    if not order_a:
        x = contrast(x, 1.5)
    if rng.random() < 0.5 and rng.random() < 0.5:
        x = x[torch.from_numpy(rng.permutation(3))]
    return x.clamp(0, 255)


# ------------------------------------------------------------------------------------------ the pipeline
@dataclass
class ClipAugmentation:
    """The training augmentation of one clip.

    Attributes:
        min_sizes: shortest-edge sizes, one drawn per clip; ``max_size``: cap on the long side.
        flip: horizontal flip with p=0.5 per clip.
        crop: enable the crop branch (taken with p=0.5): resize to one of ``crop_resize_sizes`` (no cap), crop
            with height and width drawn from ``crop_size`` ``(min, max)``, then the regular resize.
        moving_crop: the GRAtt-VIS/VITA crop whose window moves linearly across the clip.
        photometric: per-frame SSD photometric distortion.
        vistr: VisTR's fixed chain instead of the random select (see the module docstring); the last resize
            goes to ``out_size`` with the long side at most ``out_max_size``.
    """

    min_sizes: Sequence[int] = (288, 320, 352, 392, 416, 448, 480, 512)
    max_size: int | None = 768
    flip: bool = True
    crop: bool = True
    crop_resize_sizes: Sequence[int] = (400, 500, 600)
    crop_size: tuple[int, int] = (384, 600)
    moving_crop: bool = False
    photometric: bool = True
    vistr: bool = False
    out_size: int = 300
    out_max_size: int | None = 540

    def __call__(
        self, frames: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``frames [T,3,H,W]`` float 0..255, ``masks [N,T,H,W]`` bool -> the same, augmented."""
        if self.flip and rng.random() < 0.5:
            frames, masks = frames.flip(-1), masks.flip(-1)
        if self.vistr:
            return self._vistr(frames, masks, rng)
        if self.photometric:
            frames = torch.stack([photometric_distort(f, rng) for f in frames])
        if self.crop and rng.random() < 0.5:
            h, w = frames.shape[-2:]
            size = int(rng.choice(np.asarray(self.crop_resize_sizes)))
            frames, masks = resize_clip(frames, masks, shortest_edge_size(h, w, size, None))
            frames, masks = self._crop(frames, masks, rng)
        h, w = frames.shape[-2:]
        size = int(rng.choice(np.asarray(self.min_sizes)))
        return resize_clip(frames, masks, shortest_edge_size(h, w, size, self.max_size))

    def _vistr(
        self, frames: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        def resize(f: torch.Tensor, m: torch.Tensor, size: int, max_size: int | None) -> tuple:
            return resize_clip(f, m, shortest_edge_size(*f.shape[-2:], size, max_size))

        frames, masks = resize(frames, masks, int(rng.choice(np.asarray(self.min_sizes))), self.max_size)
        if self.photometric:
            frames = torch.stack([photometric_distort(f, rng) for f in frames])
        frames, masks = resize(frames, masks, int(rng.choice(np.asarray(self.crop_resize_sizes))), None)
        frames, masks = self._crop(frames, masks, rng)
        return resize(frames, masks, self.out_size, self.out_max_size)

    def _crop(
        self, frames: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t, (h, w) = frames.shape[0], frames.shape[-2:]
        lo, hi = self.crop_size
        ch = int(rng.integers(min(lo, h), min(h, hi) + 1))
        cw = int(rng.integers(min(lo, w), min(w, hi) + 1))
        y0, x0 = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        if not self.moving_crop:
            return frames[..., y0 : y0 + ch, x0 : x0 + cw], masks[..., y0 : y0 + ch, x0 : x0 + cw]
        y1, x1 = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        if rng.random() < 0.5:
            (y0, x0), (y1, x1) = (y1, x1), (y0, x0)
        out_f, out_m = [], []
        for k in range(t):
            a = k / max(1, t - 1)
            yy = int(math.floor(y0 + (y1 - y0) * a + 0.5))
            xx = int(math.floor(x0 + (x1 - x0) * a + 0.5))
            out_f.append(frames[k, :, yy : yy + ch, xx : xx + cw])
            out_m.append(masks[:, k, yy : yy + ch, xx : xx + cw])
        return torch.stack(out_f), torch.stack(out_m, 1) if masks.shape[0] else masks[..., :ch, :cw]
