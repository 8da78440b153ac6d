"""Writing predictions in the official YouTube-VIS / OVIS results format, ready for the CodaLab servers.

``results.json`` is a list of ``{"video_id", "score", "category_id", "segmentations": [RLE | null per
frame]}``
with compressed RLE (string ``counts``) and dataset category ids. The servers want ``results.json`` at the top
level of a zip archive, which :func:`write_results` also writes as ``results.zip``.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vidseg.structures.results import VideoResult
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
