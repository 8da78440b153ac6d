"""Random small YouTube-VIS cases that exercise the metric's quirks (shared by the evaluation tests)."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def encode(m: np.ndarray) -> dict:
    """Compressed RLE with str counts, as result files hold."""
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")}


def uncompressed(m: np.ndarray) -> dict:
    """Uncompressed RLE (list counts), as official GT files hold."""
    flat = m.flatten(order="F").astype(np.int8)
    change = np.nonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1] if len(flat) else 0]])))[0]
    counts = np.diff(np.concatenate([[0], change])).tolist()
    if not counts or sum(counts) < flat.size:
        counts.append(flat.size - sum(counts))
    return {"size": list(m.shape), "counts": [int(c) for c in counts]}


def _blob(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    y0, x0 = rng.integers(0, h), rng.integers(0, w)
    m[y0 : y0 + rng.integers(1, h + 1), x0 : x0 + rng.integers(1, w + 1)] = 1
    if rng.random() < 0.3:
        m ^= (rng.random((h, w)) < 0.1).astype(np.uint8)
    return m


def random_case(
    seed: int, n_videos: int = 4, n_cats: int = 4, quirks: bool = True, ovis: bool = False
) -> tuple[dict, list]:
    """A GT dict and a results list. With ``quirks``: None frames, shorter/longer frame lists, GT id 0, crowd
    GT, frames of another size, tied scores, empty masks, compressed and polygon GT frames, a category without
    GT, ``areas`` that disagree with the masks, and tracks whose areas straddle the 128^2 boundary (scaled
    sizes). With ``ovis``: GT occlusion labels, and result frame lists as long as the video (OVIS asserts
    it)."""
    rng = np.random.default_rng(seed)
    videos, anns, results = [], [], []
    cats = [{"id": c + 1, "name": f"c{c + 1}", "supercategory": "x"} for c in range(n_cats + 1)]
    ann_id = 0 if quirks and rng.random() < 0.5 else 1
    for v in range(n_videos):
        vid = v * 3 + 2
        h, w = int(rng.integers(4, 24)), int(rng.integers(4, 24))
        n = int(rng.integers(1, 6))
        videos.append(
            {
                "id": vid,
                "height": h,
                "width": w,
                "length": n,
                "file_names": [f"{vid}/{t}.jpg" for t in range(n)],
            }
        )
        gt_masks = []
        for _ in range(int(rng.integers(0, 4))):
            cat = int(rng.integers(1, n_cats + 1))  # category n_cats + 1 never has GT
            masks = [_blob(rng, h, w) if rng.random() < 0.8 else None for _ in range(n)]
            segs, areas = [], []
            for m in masks:
                if m is None:
                    segs.append(None)
                    areas.append(None)
                    continue
                kind = rng.random() if quirks else 0.0
                if kind < 0.6:
                    segs.append(uncompressed(m))
                elif kind < 0.8:
                    segs.append(encode(m))
                else:  # polygon of the blob's bounding box
                    ys, xs = np.nonzero(m)
                    if len(ys) == 0:
                        segs.append(None)
                        areas.append(None)
                        continue
                    x0, y0, x1, y1 = (
                        float(xs.min()),
                        float(ys.min()),
                        float(xs.max() + 1),
                        float(ys.max() + 1),
                    )
                    segs.append([[x0, y0, x1, y0, x1, y1, x0, y1]])
                a = int(m.sum())
                scale = rng.choice([1.0, 300.0, 900.0, 3000.0]) if quirks else 1.0
                areas.append(a * scale if not (quirks and rng.random() < 0.1) else 0)
            anns.append(
                {
                    "id": ann_id,
                    "video_id": vid,
                    "category_id": cat,
                    "iscrowd": int(quirks and rng.random() < 0.1),
                    "segmentations": segs,
                    "areas": areas,
                    "bboxes": [None] * n,
                }
            )
            if ovis:
                levels = ["no_occlusion", "slight_occlusion", "severe_occlusion", None]
                occ = [levels[i] for i in rng.integers(0, 4, n)]
                occ[int(rng.integers(n))] = levels[int(rng.integers(3))]
                anns[-1]["occlusion"] = occ
            ann_id += 1
            gt_masks.append((cat, masks))
        for _ in range(int(rng.integers(0, 7))):
            if gt_masks and rng.random() < 0.7:  # perturbed copy of a GT track
                cat, masks = gt_masks[rng.integers(len(gt_masks))]
                if rng.random() < 0.3:
                    cat = int(rng.integers(1, n_cats + 2))
                noise = float(rng.choice([0.0, 0.02, 0.15]))
                masks = [
                    None if m is None or rng.random() < 0.1 else m ^ (rng.random(m.shape) < noise)
                    for m in masks
                ]
            else:
                cat = int(rng.integers(1, n_cats + 2))
                masks = [_blob(rng, h, w) if rng.random() < 0.8 else None for _ in range(n)]
            if quirks and not ovis and rng.random() < 0.2:
                masks = (
                    masks[: int(rng.integers(1, n + 1))] if rng.random() < 0.5 else masks + [_blob(rng, h, w)]
                )
            segs = []
            for m in masks:
                if m is None:
                    segs.append(None)
                elif quirks and rng.random() < 0.05:
                    segs.append(encode(np.ones((h + 1, w), np.uint8)))  # frame of another size
                elif quirks and rng.random() < 0.05:
                    segs.append(encode(np.zeros((h, w), np.uint8)))  # present but empty
                else:
                    segs.append(encode(m))
            score = float(rng.choice([0.5, 0.9])) if quirks and rng.random() < 0.3 else float(rng.random())
            results.append({"video_id": vid, "category_id": cat, "score": score, "segmentations": segs})
    gt = {"videos": videos, "categories": cats, "annotations": anns}
    return gt, results
