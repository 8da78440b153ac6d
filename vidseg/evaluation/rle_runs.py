"""Run-length masks as foreground runs, decoded in batches with numpy.

The metric only needs, per frame mask, its area and the areas of its intersections with other masks of the
same
size. Both follow from the foreground runs ``[start, start + length)`` in the column-major pixel order of COCO
RLE,
so masks are never expanded to ``H x W`` bitmaps. A compressed RLE string (pycocotools' ``rleToString``
format) is
decoded here with vectorised numpy over a whole batch of strings at once; it gives exactly the counts that
pycocotools' ``rleFrString`` gives for every well-formed string, and raises :class:`RLEError` naming the
offending
string for malformed ones (which the C code would silently misread).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_MAX_CHARS_PER_COUNT = 7  # 7 x 5 bits = 35 bits: enough for any uint32 count (and a sign)


class RLEError(ValueError):
    """A malformed RLE. ``index`` is the position of the bad mask in the batch that was decoded."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason


def _odd_positions(ptr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the odd-numbered counts (the foreground runs) of each segment of ``ptr`` [N+1].

    Returns ``(idx, run_ptr)``: ``idx`` int64 [R] into the concatenated counts, ``run_ptr`` int64 [N+1]."""
    per = np.diff(ptr) // 2
    run_ptr = np.zeros(len(per) + 1, dtype=np.int64)
    np.cumsum(per, out=run_ptr[1:])
    idx = np.repeat(ptr[:-1] + 1 - 2 * run_ptr[:-1], per) + 2 * np.arange(run_ptr[-1], dtype=np.int64)
    return idx, run_ptr


def decode_compressed_batch(strings: Sequence[str | bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Decode compressed RLE count strings.

    Args:
        strings: N count strings (``rle["counts"]`` of compressed RLEs), ``str`` or ``bytes``.

    Returns:
        ``(counts, ptr)``: ``counts`` int64 [C], the counts of all strings concatenated; ``ptr`` int64 [N+1],
        the
        counts of string i are ``counts[ptr[i]:ptr[i+1]]``.

    Raises:
        RLEError: a character outside the RLE alphabet, a string that ends inside a number, a count that does
        not
        fit in uint32 or is negative.
    """
    n = len(strings)
    char_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter((len(s) for s in strings), dtype=np.int64, count=n), out=char_ptr[1:])
    if char_ptr[-1] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(n + 1, dtype=np.int64)
    if all(isinstance(s, str) for s in strings):
        try:
            buf = "".join(strings).encode("ascii")
        except UnicodeEncodeError as e:
            raise RLEError(
                _string_of(char_ptr, e.start), "compressed RLE counts contain a non-ASCII character"
            ) from None
    else:
        buf = b"".join(
            s.encode("latin-1", errors="replace") if isinstance(s, str) else bytes(s) for s in strings
        )
    c = np.frombuffer(buf, dtype=np.uint8) - np.uint8(48)  # characters below '0' wrap to > 63
    bad = c > 63
    if bad.any():
        raise RLEError(
            _string_of(char_ptr, np.argmax(bad)), "compressed RLE counts contain a character outside '0'..'o'"
        )
    more = (c & 0x20) != 0
    last = char_ptr[1:][np.diff(char_ptr) > 0] - 1
    if more[last].any():
        raise RLEError(
            _string_of(char_ptr, last[np.argmax(more[last])]), "compressed RLE ends inside a number"
        )
    # One number per run of characters ending at a character without the continuation bit (5 bits per char).
    term = np.flatnonzero(~more)
    starts = np.empty(len(term), dtype=np.int64)
    starts[0] = 0
    starts[1:] = term[:-1] + 1
    nchar = term - starts + 1
    longest = int(nchar.max())
    if longest > _MAX_CHARS_PER_COUNT:
        i = _string_of(char_ptr, starts[np.argmax(nchar > _MAX_CHARS_PER_COUNT)])
        raise RLEError(i, "compressed RLE count too long to be a uint32")
    low = c & 0x1F
    x = low[starts].astype(np.int64)
    sel = np.flatnonzero(nchar > 1)  # numbers of 2+ characters: usually only the first counts of a mask
    for j in range(1, longest):
        x[sel] += low[starts[sel] + j].astype(np.int64) << (5 * j)
        sel = sel[nchar[sel] > j + 1]
    # Sign bit of the last character: x |= -1 << 5 * nchar, i.e. x -= 2 ** (5 * nchar) as x < 2 ** (5 *
    # nchar).
    x -= ((c[term] & 0x10) != 0).astype(np.int64) << (5 * nchar)
    ptr = np.searchsorted(term, char_ptr, side="left").astype(np.int64)

    # Counts from the third on are stored as differences to the count two places before. Both chains (odd and
    # even positions) of every string are prefix sums along a stride-2 cumulative sum over all strings, minus
    # the value reached just before the chain starts.
    nonempty = np.diff(ptr) > 0
    heads = ptr[:-1][nonempty]
    z = x.copy()
    z[heads] = 0  # the first count is not part of a chain
    acc = np.empty_like(z)
    acc[0::2] = np.cumsum(z[0::2])
    acc[1::2] = np.cumsum(z[1::2])
    acc_pad = np.concatenate([[0], acc])  # acc_pad[i + 1] = acc[i], acc_pad[0] = 0 (before everything)
    per = np.diff(ptr)
    base = np.repeat(acc_pad[np.minimum(ptr[:-1] + 1, len(acc))], per)  # even chain: acc[head] (z[head] = 0)
    odd, _ = _odd_positions(ptr)
    base[odd] = np.repeat(acc_pad[ptr[:-1]], per // 2)  # odd chain: the value just before the head
    counts = acc - base
    counts[heads] = x[heads]
    bad = (counts < 0) | (counts > 0xFFFFFFFF)
    if bad.any():
        i = int(np.searchsorted(ptr, np.argmax(bad), side="right") - 1)
        raise RLEError(i, "compressed RLE decodes to a negative or too large count")
    return counts, ptr


def _string_of(char_ptr: np.ndarray, pos: int) -> int:
    return int(np.searchsorted(char_ptr, pos, side="right") - 1)


@dataclass
class FrameRuns:
    """Foreground runs of N frame masks laid end to end on one pixel axis (mask i occupies
    ``[region_start[i], region_start[i + 1])``, its pixels in column-major order).

    Attributes:
        region_start: int64 [N+1], exclusive cumulative sum of the masks' ``h * w``.
        run_ptr: int64 [N+1]; the runs of mask i are ``run_start/run_len[run_ptr[i]:run_ptr[i+1]]``.
        run_start: int64 [R], first pixel of each run on the common axis (sorted).
        run_len: int64 [R], run lengths (may be 0).
        area: int64 [N], foreground pixels of each mask.
    """

    region_start: np.ndarray
    run_ptr: np.ndarray
    run_start: np.ndarray
    run_len: np.ndarray
    area: np.ndarray


def runs_from_counts(counts: np.ndarray, ptr: np.ndarray, num_pixels: np.ndarray) -> FrameRuns:
    """Foreground runs of N masks given as concatenated RLE counts.

    Args:
        counts: int64 [C], counts of all masks (background first, then alternating).
        ptr: int64 [N+1], segment pointers into ``counts``.
        num_pixels: int64 [N], ``h * w`` of each mask; the counts of a mask must add up to it.

    Raises:
        RLEError: counts that do not add up to ``h * w``.
    """
    cum = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=cum[1:])
    region_start = cum[ptr]  # the counts add up to h * w (checked), so this is where each mask begins
    totals = np.diff(region_start)
    bad = totals != num_pixels
    if bad.any():
        i = int(np.argmax(bad))
        raise RLEError(
            i, f"RLE counts add up to {int(totals[i])} pixels, but its size gives {int(num_pixels[i])}"
        )
    odd, run_ptr = _odd_positions(ptr)
    run_len = counts[odd]
    run_start = cum[odd]
    area_cum = np.zeros(len(run_len) + 1, dtype=np.int64)
    np.cumsum(run_len, out=area_cum[1:])
    area = area_cum[run_ptr[1:]] - area_cum[run_ptr[:-1]]
    return FrameRuns(
        region_start=region_start, run_ptr=run_ptr, run_start=run_start, run_len=run_len, area=area
    )


def polygons_to_compressed(polygons: list, height: int, width: int) -> bytes:
    """Rasterise a GT polygon list the way the official ``YTVOS.annToRLE`` does (pycocotools ``frPyObjects``
    with
    the video's size, then the union ``merge``); returns the compressed count string."""
    from pycocotools import mask as mask_utils

    rles = mask_utils.frPyObjects(polygons, height, width)
    return mask_utils.merge(rles)["counts"]
