"""The official YouTube-VIS / OVIS results file, written for the CodaLab servers and read back for drawing.

``results.json`` is a list of ``{"video_id", "score", "category_id", "segmentations": [RLE | null per
frame]}`` with compressed RLE (string ``counts``) and dataset category ids. The servers want ``results.json``
at the top level of a zip archive, which :func:`write_results` also writes as ``results.zip``.
:func:`read_results` turns such a file back into one :class:`VideoResult` per video (what the renderer
draws); the metric has its own fast reader (``evaluation.ytvis_data``).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vidseg.structures.results import Track, VideoResult
from vidseg.utils.atomic import atomic_path, atomic_write_text


def _plain_rle(seg: Any) -> Any:
    """RLE with ``str`` counts and int size (pycocotools gives ``bytes`` counts, numpy ints)."""
    if not seg:
        return None
    counts = seg["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(seg["size"][0]), int(seg["size"][1])], "counts": counts}


def official_entries(
    video_results: Iterable[VideoResult], label_to_category_id: Sequence[int] | Mapping[int, int]
) -> list[dict]:
    """Official results entries of several videos, contiguous labels mapped to dataset category ids."""
    out = []
    for vr in video_results:
        for e in vr.to_official(label_to_category_id):
            e["segmentations"] = [_plain_rle(s) for s in e["segmentations"]]
            out.append(e)
    return out


def write_results(entries: Sequence[Mapping], output_dir: str | os.PathLike) -> tuple[str, str]:
    """Write ``results.json`` and ``results.zip`` (holding ``results.json``) into ``output_dir``.

    Returns:
        the two paths. Files are written to a temporary name first, so a crash never leaves a truncated file.
    """
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, "results.json")
    zip_path = os.path.join(output_dir, "results.zip")
    text = json.dumps([dict(e, segmentations=[_plain_rle(s) for s in e["segmentations"]]) for e in entries])
    atomic_write_text(json_path, text)
    with atomic_path(zip_path, durable=False) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("results.json", text)
    return json_path, zip_path


class ResultsFileError(ValueError):
    """A results file that is not a list of official entries; the message names the file and the entry."""


def read_results(
    path: str | os.PathLike,
    videos: Mapping[int, tuple[int, int]],
    category_id_to_label: Mapping[int, int],
) -> dict[int, VideoResult]:
    """The tracks of a results file, per video.

    Args:
        videos: video id -> ``(height, width)`` of the videos the file may name.
        category_id_to_label: dataset category id -> contiguous label (unknown ids get label -1).
    Returns:
        video id -> ``VideoResult`` whose tracks are sorted by score, best first, with track ids 1, 2, ...
        in that order. Videos without entries are absent.
    Raises:
        ResultsFileError: not a list, an entry without the official keys, or a video id not in ``videos``.
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ResultsFileError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(data, list):
        raise ResultsFileError(f"{path}: a results JSON must be a list of tracks")
    entries: dict[int, list[dict]] = {}
    for i, r in enumerate(data):
        if not isinstance(r, dict) or not {"video_id", "category_id", "score", "segmentations"} <= set(r):
            raise ResultsFileError(f"{path}: entry {i} needs video_id, category_id, score and segmentations")
        if r["video_id"] not in videos:
            raise ResultsFileError(
                f"{path}: entry {i}: field 'video_id' {r['video_id']} is not a known video"
            )
        entries.setdefault(int(r["video_id"]), []).append(r)
    out = {}
    for vid, rs in entries.items():
        h, w = videos[vid]
        tracks = [
            Track(
                score=float(r["score"]),
                label=int(category_id_to_label.get(r["category_id"], -1)),
                masks=r["segmentations"],
                track_id=k + 1,
            )
            for k, r in enumerate(sorted(rs, key=lambda r: -float(r["score"])))
        ]
        out[vid] = VideoResult(vid, int(h), int(w), tracks)
    return out
