"""Per-frame segmentation encodings of YouTube-VIS / OVIS / COCO JSON and their conversion to masks.

A frame's segmentation is one of:
- compressed RLE ``{"size": [h, w], "counts": str | bytes}``;
- uncompressed RLE ``{"size": [h, w], "counts": [int, ...]}`` (what the official YT-VIS GT files store): run
  lengths over the column-major (Fortran) flattened mask, starting with a run of zeros;
- polygons ``[[x1, y1, x2, y2, ...], ...]`` (their union);
- absent: ``None``, ``[]`` or ``{}`` (the official API tests ``if segm:``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from pycocotools import mask as mask_util

RLE = dict[str, Any]


def is_absent(segm: Any) -> bool:
    """True for the falsy entries the official API treats as "object not in this frame"."""
    return not segm


def encode_uncompressed_rle(mask: np.ndarray) -> RLE:
    """Bool/uint8 mask ``[H, W]`` -> uncompressed RLE ``{"size": [H, W], "counts": [int, ...]}``.

    Same runs as pycocotools' encoder: column-major order, the first run counts zeros (possibly 0).
    """
    h, w = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    # Run boundaries: positions where the value changes, plus both ends.
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    if not flat.size:
        runs = [0]
    return {"size": [int(h), int(w)], "counts": [int(r) for r in runs]}


def encode_rle(mask: np.ndarray) -> RLE:
    """Bool/uint8 mask ``[H, W]`` -> compressed RLE with ``counts`` as a utf-8 string (results format)."""
    rle = mask_util.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def to_compressed_rle(segm: Any, height: int, width: int) -> RLE | None:
    """Any segmentation encoding -> compressed RLE (bytes counts, as pycocotools returns), None when absent.

    Raises:
        ValueError: the segmentation is neither RLE nor polygons, or its size is not ``(height, width)``.
    """
    if is_absent(segm):
        return None
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise ValueError(f"RLE must have 'size' and 'counts', got keys {sorted(segm)}")
        size = [int(s) for s in segm["size"]]
        if size != [int(height), int(width)]:
            raise ValueError(f"RLE size {size} differs from the video size {[height, width]}")
        counts = segm["counts"]
        if isinstance(counts, list):
            if sum(int(c) for c in counts) != height * width:
                raise ValueError(f"uncompressed RLE counts sum to {sum(counts)}, expected {height * width}")
            return mask_util.frPyObjects(segm, height, width)
        if isinstance(counts, str):
            return {"size": size, "counts": counts.encode("utf-8")}
        if isinstance(counts, bytes):
            return {"size": size, "counts": counts}
        raise ValueError(f"RLE counts must be a list, str or bytes, got {type(counts).__name__}")
    if isinstance(segm, list):
        polys = [p for p in segm if isinstance(p, list) and len(p) >= 6]
        if len(polys) != len(segm):
            raise ValueError("polygons must be lists of at least 3 (x, y) points")
        return mask_util.merge(mask_util.frPyObjects(polys, height, width))
    raise ValueError(f"unknown segmentation type {type(segm).__name__}")


def decode_segmentation(segm: Any, height: int, width: int) -> np.ndarray | None:
    """Any segmentation encoding -> bool mask ``[height, width]``, or None when the frame entry is absent."""
    rle = to_compressed_rle(segm, height, width)
    if rle is None:
        return None
    with warnings.catch_warnings():
        # pycocotools 2.0.x + numpy 2 warn about __array__(copy=...) on every decode; the result is correct.
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_util.decode(rle).astype(bool)


def mask_to_xywh(mask: np.ndarray) -> list[float] | None:
    """Tight box ``[x, y, w, h]`` (pixel edges) of a bool mask ``[H, W]``, None when the mask is empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return None
    x0, y0 = int(xs[0]), int(ys[0])
    return [float(x0), float(y0), float(xs[-1] + 1 - x0), float(ys[-1] + 1 - y0)]
