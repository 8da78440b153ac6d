"""COCO images as T-frame pseudo-videos: random geometric motion per frame.

Two recipes: DeVIS's (:class:`PseudoVideoAugmentation`, below) and VITA / GenVIS / GRAtt-VIS's per-frame
rotation (:class:`RotationPseudoVideo`, at the end of this module, applied after the clip's resize / crop /
flip as the official ``build_pseudo_augmentation`` orders them).

DeVIS (spec devis.md §3.8, after SeqFormer) turns a COCO image into a clip: frame 0 is the image, each other
frame is the image under its own random draw of [brightness and/or hue-saturation shift] -> perspective
(corner jitter ~ |N(0, 0.08)| of the side) -> affine (rotation U(-20, 20) deg about the centre, translation
U(-10%, 10%) per axis, scale 1) -> motion blur with p=0.25 (kernel 9 or 11, random angle); then the frames are
shuffled. Masks go through the same perspective and affine warp (nearest neighbour), so boxes recomputed from
them (``build_clip_targets``) follow the motion. An instance warped out of view is invalid in that frame.

DeVIS draws these with imgaug; here they are plain torch ops (homography + ``grid_sample``), with all
randomness from the ``np.random.Generator`` argument. Frames are ``[T, 3, H, W]`` float RGB 0..255, masks
``[N, T, H, W]`` bool, as in :mod:`vidseg.data.transforms`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vidseg.data.transforms import _hsv_to_rgb, _rgb_to_hsv

__all__ = [
    "perspective_matrix",
    "affine_matrix",
    "warp",
    "motion_blur_kernel",
    "PseudoVideoAugmentation",
    "RotationPseudoVideo",
    "rotation_matrix",
]


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 matrix mapping four points ``src [4, 2]`` onto ``dst [4, 2]`` (direct linear transform)."""
    a = []
    for (x, y), (u, v) in zip(src, dst):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    _, _, vt = np.linalg.svd(np.asarray(a, dtype=np.float64))
    m = vt[-1].reshape(3, 3)
    return m / m[2, 2]


def perspective_matrix(h: int, w: int, magnitude: float, rng: np.random.Generator) -> np.ndarray:
    """A random perspective warp ``[3, 3]`` (pixel coordinates, input -> output) of an ``h x w`` image.

    Each corner moves inwards by ``|N(0, magnitude)|`` of the side along each axis; the quadrilateral they
    span is stretched onto the whole image (the output keeps its size), as imgaug's PerspectiveTransform.
    """
    jit = np.abs(rng.normal(0.0, magnitude, size=(4, 2))) * np.array([w, h])
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)
    return _homography(corners + inward * jit, corners)


def affine_matrix(h: int, w: int, rotation: float, translate: tuple[float, float]) -> np.ndarray:
    """Rotation by ``rotation`` degrees about the image centre, then a shift of ``translate`` (fractions of
    ``(w, h)``); ``[3, 3]`` in pixel coordinates, input -> output."""
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    cx, cy = w / 2.0, h / 2.0
    rot = np.array([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy], [0, 0, 1]])
    shift = np.array([[1, 0, translate[0] * w], [0, 1, translate[1] * h], [0, 0, 1]])
    return shift @ rot


def warp(x: torch.Tensor, matrix: np.ndarray, mode: str = "bilinear") -> torch.Tensor:
    """Warp ``x [C, H, W]`` (float) by ``matrix [3, 3]`` (input -> output pixel coordinates); pixels that come
    from outside the image are 0. ``mode="nearest"`` for masks."""
    c, h, w = x.shape
    inv = torch.from_numpy(np.linalg.inv(matrix)).float()
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3) @ inv.T
    src = pts[:, :2] / pts[:, 2:].clamp_min(1e-8)
    # grid_sample's (-1, 1) spans the pixel edges with align_corners=False.
    grid = (src / torch.tensor([w, h]) * 2 - 1).reshape(1, h, w, 2)
    out = F.grid_sample(x[None], grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out[0]


def motion_blur_kernel(size: int, angle: float) -> torch.Tensor:
    """``[size, size]`` kernel: a line through the centre at ``angle`` degrees, summing to 1."""
    k = torch.zeros(size, size)
    r = (size - 1) / 2.0
    dx, dy = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    for t in np.linspace(-r, r, 4 * size):
        k[int(round(r + t * dy)), int(round(r + t * dx))] = 1.0
    return k / k.sum()


def _blur(frame: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    p = kernel.shape[-1] // 2
    x = F.pad(frame[None], (p, p, p, p), mode="reflect")
    return F.conv2d(x, kernel.expand(3, 1, -1, -1), groups=3)[0]


@dataclass
class PseudoVideoAugmentation:
    """Turn a clip of T copies of one image into a pseudo-video (DeVIS's values by default).

    Attributes:
        perspective_magnitude: sigma of the corner jitter, as a fraction of the side.
        rotation: rotation range in degrees. translate: translation range as a fraction of the side, per axis.
        motion_blur_prob, motion_blur_sizes: motion blur probability and its kernel sizes (one drawn).
        brightness: range of the value added to every channel. hue_saturation: range of the value added to
            hue (on imgaug's 0..255 hue circle) and saturation (0..255); one of the two photometric shifts or
            both is applied to each moved frame.
        shuffle: shuffle the T frames (and their masks) after the motion.
    """

    perspective_magnitude: float = 0.08
    rotation: tuple[float, float] = (-20.0, 20.0)
    translate: tuple[float, float] = (-0.1, 0.1)
    motion_blur_prob: float = 0.25
    motion_blur_sizes: Sequence[int] = (9, 11)
    brightness: tuple[float, float] = (-40.0, 40.0)
    hue_saturation: tuple[float, float] = (-5.0, 5.0)
    shuffle: bool = True

    def _photometric(self, frame: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        # imgaug SomeOf((1, None)): one of the two shifts or both, in random order.
        ops = [self._brightness, self._hue_saturation]
        k = int(rng.integers(1, 3))
        for j in rng.permutation(2)[:k]:
            frame = ops[int(j)](frame, rng)
        return frame

    def _brightness(self, frame: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        return (frame + float(rng.integers(self.brightness[0], self.brightness[1] + 1))).clamp(0, 255)

    def _hue_saturation(self, frame: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        v = float(rng.integers(self.hue_saturation[0], self.hue_saturation[1] + 1))
        hsv = _rgb_to_hsv(frame.clamp(0, 255))
        hsv[0] = torch.remainder(hsv[0] + v * 360.0 / 255.0, 360.0)
        hsv[1] = (hsv[1] + v / 255.0).clamp(0, 1)
        return _hsv_to_rgb(hsv).clamp(0, 255)

    def move(
        self, frame: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One moved frame: ``frame [3, H, W]`` float 0..255, ``masks [N, H, W]`` bool -> the same."""
        h, w = frame.shape[-2:]
        m = affine_matrix(
            h,
            w,
            float(rng.uniform(*self.rotation)),
            (float(rng.uniform(*self.translate)), float(rng.uniform(*self.translate))),
        ) @ perspective_matrix(h, w, self.perspective_magnitude, rng)
        out = warp(self._photometric(frame, rng), m)
        if rng.random() < self.motion_blur_prob:
            size = int(rng.choice(np.asarray(self.motion_blur_sizes)))
            out = _blur(out, motion_blur_kernel(size, float(rng.uniform(0, 360))))
        if masks.shape[0]:
            masks = warp(masks.float(), m, mode="nearest") > 0.5
        return out.clamp(0, 255), masks

    def __call__(
        self, frames: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``frames [T, 3, H, W]``, ``masks [N, T, H, W]`` (frame 0 is used) -> the pseudo-video."""
        t = frames.shape[0]
        outs, outm = [frames[0]], [masks[:, 0]]
        for _ in range(t - 1):
            f, m = self.move(frames[0], masks[:, 0], rng)
            outs.append(f)
            outm.append(m)
        order = rng.permutation(t) if self.shuffle else np.arange(t)
        frames = torch.stack([outs[k] for k in order])
        masks = torch.stack([outm[k] for k in order], 1)
        return frames, masks


def rotation_matrix(h: int, w: int, angle: float, center: tuple[float, float]) -> np.ndarray:
    """Rotation by ``angle`` degrees counter-clockwise (as displayed, y pointing down) about ``center``
    ``(x, y)`` in pixels; ``[3, 3]``, input -> output (OpenCV's ``getRotationMatrix2D``, which detectron2's
    ``RotationTransform`` uses). ``h, w`` are unused but keep the signature of the other matrices."""
    del h, w
    a, b = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    cx, cy = center
    return np.array([[a, b, (1 - a) * cx - b * cy], [-b, a, b * cx + (1 - a) * cy], [0.0, 0.0, 1.0]])


@dataclass
class RotationPseudoVideo:
    """VITA's ``RandomRotationClip`` on a clip of T copies of one image (``INPUT.PSEUDO.AUGMENTATIONS
    ["rotation"]``, grattvis.md §4.2): one angle per frame from ``U(angle_range)``, sorted (the order reversed
    with p=``reverse_prob``), so the object turns steadily through the clip; one centre per clip, uniform in
    ``center_range`` (fractions of ``(w, h)``); the image keeps its size (``expand=False``) and what comes
    from outside it is 0. Masks are rotated with nearest-neighbour sampling.

    ``after_augmentation``: :class:`~vidseg.data.clip_dataset.ClipTrainDataset` applies it after the clip's
    resize / crop / flip (the official order), where DeVIS's pseudo-videos come before.
    """

    angle_range: tuple[float, float] = (-15.0, 15.0)
    center_range: tuple[tuple[float, float], tuple[float, float]] = ((0.4, 0.4), (0.6, 0.6))
    reverse_prob: float = 0.5
    after_augmentation: bool = True

    def angles(self, t: int, rng: np.random.Generator) -> np.ndarray:
        """The ``[t]`` angles of one clip (sorted ascending, or descending with p=``reverse_prob``)."""
        angle = np.sort(rng.uniform(self.angle_range[0], self.angle_range[1], size=t))
        return angle[::-1].copy() if rng.random() < self.reverse_prob else angle

    def __call__(
        self, frames: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``frames [T, 3, H, W]`` float 0..255, ``masks [N, T, H, W]`` bool -> the same, rotated."""
        t, _, h, w = frames.shape
        (x0, y0), (x1, y1) = self.center_range
        center = (float(rng.uniform(x0, x1)) * w, float(rng.uniform(y0, y1)) * h)
        outs, outm = [], []
        for k, angle in enumerate(self.angles(t, rng)):
            if float(angle) % 360 == 0:  # detectron2 returns a no-op for these
                outs.append(frames[k])
                outm.append(masks[:, k])
                continue
            m = rotation_matrix(h, w, float(angle), center)
            outs.append(warp(frames[k], m).clamp(0, 255))
            outm.append(warp(masks[:, k].float(), m, mode="nearest") > 0.5 if masks.shape[0] else masks[:, k])
        return torch.stack(outs), torch.stack(outm, 1)
