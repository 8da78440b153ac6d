"""Large-scale jitter (LSJ): Mask2Former's COCO instance training augmentation, one draw per clip.

Mask2Former's ``coco_instance_lsj`` mapper (``INPUT.DATASET_MAPPER_NAME``) and VITA's ``INPUT.LSJ_AUG`` apply,
in this order:

1. a horizontal flip with p=0.5;
2. ``ResizeScale``: draw ``s ~ U(min_scale, max_scale)``, then resize (aspect kept) by
   ``min(S*s / h, S*s / w)`` with ``S`` the image size (1024), so that the image fits an ``S*s`` square;
   the output sides are rounded;
3. ``FixedSizeCrop(S)``: where the resized image is larger than ``S``, an ``S``-sided window is cut at offset
   ``round(u * (side - S))`` per axis, with one ``u ~ U(0, 1)`` shared by both axes (detectron2 draws a
   single scalar); then the bottom and right are padded up to ``S x S`` with the value 128 (masks with
   False).

The output is always ``S x S``. Here the flip, the scale and the crop offset are drawn once per clip, so every
frame gets the same geometry (VITA's ``*Clip`` variants do the same for pseudo-videos). Masks are resized with
nearest neighbour; the targets' boxes are recomputed from the masks afterwards (``build_clip_targets``, as
the official mapper does with ``get_bounding_boxes``), and an instance cropped out of every frame is dropped
there. Frames are ``[T, 3, H, W]`` float RGB 0..255, masks ``[N, T, H, W]`` bool, as in
:mod:`vidseg.data.transforms`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vidseg.data.transforms import resize_clip

__all__ = ["LargeScaleJitter", "LSJDraw"]


@dataclass(frozen=True)
class LSJDraw:
    """One clip's random geometry.

    Attributes:
        flip: horizontal flip. scale: the drawn ``s``. resized: ``(h, w)`` after ``ResizeScale``.
        offset: ``(y, x)`` top-left corner of the crop in the resized image. valid: ``(h, w)`` of the image
            inside the ``S x S`` output (the rest is padding).
    """

    flip: bool
    scale: float
    resized: tuple[int, int]
    offset: tuple[int, int]
    valid: tuple[int, int]


@dataclass
class LargeScaleJitter:
    """Flip -> ``ResizeScale(min_scale, max_scale, image_size)`` -> ``FixedSizeCrop(image_size)``, padded.

    Attributes:
        image_size: ``S``, the side of the square output (``INPUT.IMAGE_SIZE``, 1024).
        min_scale, max_scale: the range of ``s`` (0.1, 2.0).
        flip: horizontal flip with p=0.5 (``INPUT.RANDOM_FLIP "horizontal"``).
        pad_value: the pixel value of the padding (detectron2's ``FixedSizeCrop`` default, 128).

    ``aug(frames, masks, rng)`` returns ``(frames [T, 3, S, S], masks [N, T, S, S], valid (h, w))``: the image
    occupies the top-left ``valid`` region, the rest is padding.
    """

    image_size: int = 1024
    min_scale: float = 0.1
    max_scale: float = 2.0
    flip: bool = True
    pad_value: float = 128.0

    def __post_init__(self) -> None:
        if self.image_size <= 0 or not 0 < self.min_scale <= self.max_scale:
            raise ValueError(
                "large-scale jitter needs IMAGE_SIZE > 0 and 0 < MIN_SCALE <= MAX_SCALE, got "
                f"{self.image_size}, {self.min_scale}, {self.max_scale}"
            )

    def draw(self, h: int, w: int, rng: np.random.Generator) -> LSJDraw:
        """The geometry for an ``h x w`` clip (the order of the draws: flip, scale, crop offset)."""
        flip = self.flip and bool(rng.random() < 0.5)
        scale = float(rng.uniform(self.min_scale, self.max_scale))
        s = self.image_size
        factor = min(s * scale / h, s * scale / w)
        rh, rw = max(1, int(np.round(h * factor))), max(1, int(np.round(w * factor)))
        u = float(rng.uniform(0.0, 1.0))
        oy, ox = int(np.round(max(rh - s, 0) * u)), int(np.round(max(rw - s, 0) * u))
        return LSJDraw(flip, scale, (rh, rw), (oy, ox), (min(rh, s), min(rw, s)))

    def apply(
        self, frames: torch.Tensor, masks: torch.Tensor, d: LSJDraw
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Apply the draw ``d`` to ``frames [T, 3, H, W]`` and ``masks [N, T, H, W]``."""
        if d.flip:
            frames, masks = frames.flip(-1), masks.flip(-1)
        frames, masks = resize_clip(frames, masks, d.resized)
        (oy, ox), (vh, vw) = d.offset, d.valid
        frames = frames[..., oy : oy + vh, ox : ox + vw]
        masks = masks[..., oy : oy + vh, ox : ox + vw]
        pad = (0, self.image_size - vw, 0, self.image_size - vh)  # right, bottom
        frames = F.pad(frames, pad, value=self.pad_value)
        masks = F.pad(masks, pad, value=False)
        return frames, masks, d.valid

    def __call__(
        self, frames: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """``frames [T, 3, H, W]`` float 0..255, ``masks [N, T, H, W]`` bool -> the same at ``S x S``, and the
        ``(h, w)`` of the image region inside it."""
        return self.apply(frames, masks, self.draw(*frames.shape[-2:], rng))
