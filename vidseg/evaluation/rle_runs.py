"""Run-length masks: compressed RLE strings decoded in batches with numpy, and checks of their counts.

A compressed RLE string (pycocotools' ``rleToString`` format) is decoded here with vectorised numpy over a
whole batch of strings at once; it gives exactly the counts that pycocotools' ``rleFrString`` gives for every
well-formed string, and raises :class:`RLEError` naming the offending string for malformed ones (which the C
code would silently misread, or never finish walking: see ``video_iou``). Masks are never expanded to
``H x W`` bitmaps.
"""

from __future__ import annotations

from collections.abc import Sequence

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
        the counts of string i are ``counts[ptr[i]:ptr[i+1]]``.

    Raises:
        RLEError: a character outside the RLE alphabet, a string that ends inside a number, a count that does
            not fit in uint32 or is negative.
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


_ALPHABET = bytes(range(48, 112))  # '0'..'o': the characters of compressed RLE counts


def readable_strings(data: bytes, lens: np.ndarray) -> np.ndarray:
    """bool [N]: string i of ``data`` (the strings end to end, ``lens`` int64 [N] bytes each) has only the
    characters '0'..'o' and does not end inside a number (continuation bit 0x20 on its last character), so
    pycocotools' C parser cannot read past it. No copy of ``data``: ``bytes.translate`` keeps only the bad
    characters (usually none)."""
    ends = np.cumsum(lens)
    ok = np.ones(len(lens), dtype=bool)
    if data.translate(None, _ALPHABET):  # rare: find the strings holding them
        bad = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) - np.uint8(48) > 63)
        ok[np.searchsorted(ends, bad, side="right")] = False
    nonempty = np.flatnonzero(lens > 0)
    last = np.frombuffer(data, dtype=np.uint8)[ends[nonempty] - 1]
    ok[nonempty[((last - np.uint8(48)) & 0x20) != 0]] = False
    return ok


def _string_of(char_ptr: np.ndarray, pos: int) -> int:
    return int(np.searchsorted(char_ptr, pos, side="right") - 1)


def check_counts(
    counts: np.ndarray, ptr: np.ndarray, num_pixels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Check N masks given as concatenated RLE counts and return their areas.

    Args:
        counts: int64 [C], counts of all masks (background first, then alternating), all >= 0.
        ptr: int64 [N+1], segment pointers into ``counts``.
        num_pixels: int64 [N], ``h * w`` of each mask; the counts of a mask must add up to it.

    Returns:
        ``(area, zero_inside)``: int64 [N] foreground pixels (the sum of the odd-numbered counts, as
        pycocotools' ``area``); bool [N] masks with a count of 0 at position >= 1 that is followed by pixels
        (pycocotools' C walk over two such masks can stop there, see ``video_iou``).

    Raises:
        RLEError: counts that do not add up to ``h * w``.
    """
    n = len(ptr) - 1
    cum = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=cum[1:])
    totals = cum[ptr[1:]] - cum[ptr[:-1]]
    bad = totals != num_pixels
    if bad.any():
        i = int(np.argmax(bad))
        raise RLEError(
            i, f"RLE counts add up to {int(totals[i])} pixels, but its size gives {int(num_pixels[i])}"
        )
    per = np.diff(ptr)
    # odd position within its mask: global parity differs from the parity of the mask's first count
    first = np.repeat(ptr[:-1], per)
    odd = ((np.arange(len(counts), dtype=np.int64) - first) & 1).astype(bool)
    area_cum = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.where(odd, counts, 0), out=area_cum[1:])
    area = area_cum[ptr[1:]] - area_cum[ptr[:-1]]
    zero_inside = np.zeros(n, dtype=bool)
    z = np.flatnonzero(counts == 0)
    if len(z):
        owner = np.searchsorted(ptr, z, side="right") - 1
        inside = (z > ptr[owner]) & (cum[z] < cum[ptr[owner + 1]])  # not first, pixels after it
        zero_inside[owner[inside]] = True
    return area, zero_inside


def polygons_to_compressed(polygons: list, height: int, width: int) -> bytes:
    """Rasterise a GT polygon list the way the official ``YTVOS.annToRLE`` does (pycocotools ``frPyObjects``
    with the video's size, then the union ``merge``); returns the compressed count string."""
    from pycocotools import mask as mask_utils

    rles = mask_utils.frPyObjects(polygons, height, width)
    return mask_utils.merge(rles)["counts"]


_MAX_FAST_CHARS = 6  # numbers of up to 6 characters (30 bits) are read alike by numpy here and by C


def check_compressed(strings: Sequence[str | bytes], num_pixels: np.ndarray) -> np.ndarray:
    """Check compressed RLE strings and return their areas, without building their counts.

    A string passes when its counts are well-formed, all >= 0 and add up to ``num_pixels`` (what
    pycocotools' C walk over two masks needs to end). Counts from the third on are stored as differences to
    the count two places before, so each mask's odd and even counts are running sums along two chains; for
    each string this computes the chains' sums and minima with one strided cumulative sum over the whole
    batch and ``reduceat`` over each string's part of it, never materialising the counts themselves.

    Args:
        strings: N compressed count strings (all ``str`` or all ``bytes``; else the exact path decides).
        num_pixels: int64 [N], ``h * w`` of each mask.

    Returns:
        int64 [N], the foreground areas (as pycocotools' ``area``).

    Raises:
        RLEError: as :func:`decode_compressed_batch` and :func:`check_counts` (any failure here re-runs the
        exact path, which gives the message).
    """
    num_pixels = np.asarray(num_pixels, dtype=np.int64)
    area = _check_compressed_fast(strings, num_pixels)
    if area is None:
        counts, ptr = decode_compressed_batch(strings)
        area, _ = check_counts(counts, ptr, num_pixels)
    return area


def _check_compressed_fast(strings: Sequence, num_pixels: np.ndarray) -> np.ndarray | None:
    """The vectorised check of :func:`check_compressed`; None when the exact path must decide."""
    n = len(strings)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if (num_pixels >= 2**31).any():
        return None
    kinds = set(map(type, strings))
    lens = np.fromiter(map(len, strings), dtype=np.int64, count=n)
    if kinds == {str}:
        try:
            buf = "".join(strings).encode("ascii")
        except UnicodeEncodeError:
            return None
    elif kinds == {bytes}:  # e.g. taken from a results buffer (non-ASCII bytes fail the check below)
        buf = b"".join(strings)
    else:
        return None
    if not len(buf):
        return None if (num_pixels != 0).any() else np.zeros(n, dtype=np.int64)
    c = np.frombuffer(buf, dtype=np.uint8) - np.uint8(48)
    if (c > 63).any():
        return None
    more = (c & 0x20).astype(bool)
    char_end = np.cumsum(lens)
    nonempty = lens > 0
    if more[char_end[nonempty] - 1].any():  # a string ends inside a number
        return None
    lo = c & 0x1F
    v = lo.astype(np.int32)
    v -= (lo & 0x10).astype(np.int32) << 1  # one-character numbers: 5-bit two's complement
    cont = np.flatnonzero(more)  # characters of longer numbers (usually only the first counts of a mask)
    if len(cont):
        first = cont[np.concatenate([[True], np.diff(cont) > 1])]
        nchar = np.searchsorted(cont, first, side="left")
        end_run = np.concatenate([nchar[1:], [len(cont)]])
        nchar = end_run - nchar + 1  # continuation characters + the terminating one
        if nchar.max() > _MAX_FAST_CHARS:
            return None
        val = np.zeros(len(first), dtype=np.int64)
        for j in range(int(nchar.max())):
            sel = nchar > j
            val[sel] += lo[first[sel] + j].astype(np.int64) << (5 * j)
        last = lo[first + nchar - 1]
        val -= ((last & 0x10) != 0).astype(np.int64) << (5 * nchar)
        v[first + nchar - 1] = val  # fits: |val| < 2**29 with at most 6 characters
    term = ~more
    x = v[term].astype(np.int64)
    ntok = np.zeros(n, dtype=np.int64)
    ntok[nonempty] = np.add.reduceat(term, (char_end - lens)[nonempty], dtype=np.int64)
    # Running sums are bounded by sum(|x|), a segment's sum of them by that times its length: keep int64.
    if int(np.abs(x).sum()) * max(int(ntok.max()), 1) >= 2**62:
        return None
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(ntok, out=ptr[1:])
    heads = ptr[:-1][nonempty]
    head_val = np.zeros(n, dtype=np.int64)
    head_val[nonempty] = x[heads]
    x[heads] = 0  # the first count is not part of a chain; it is added back below
    total = head_val.copy()
    area = np.zeros(n, dtype=np.int64)
    ok = head_val >= 0
    for par in (0, 1):  # global parity: each string's tokens of that parity are one segment of the view
        acc = np.cumsum(x[par::2])
        lo_s = (ptr[:-1] - par + 1) >> 1  # first view index at or after each string's start
        hi_s = (ptr[1:] - par + 1) >> 1
        seg = hi_s > lo_s
        base = np.concatenate([[0], acc])[lo_s]  # the running sum just before each string's segment
        seg_sum = np.zeros(n, dtype=np.int64)
        seg_min = np.zeros(n, dtype=np.int64)
        seg_sum[seg] = np.add.reduceat(acc, lo_s[seg])
        seg_min[seg] = np.minimum.reduceat(acc, lo_s[seg])
        sums = np.where(seg, seg_sum - base * (hi_s - lo_s), 0)
        ok &= ~seg | (seg_min >= base)  # every count of the chain >= 0
        total += sums
        odd_chain = (ptr[:-1] & 1) != par  # the chain of the 2nd, 4th, ... counts: the foreground runs
        area += np.where(odd_chain, sums, 0)
    if not ok.all() or (total != num_pixels).any():
        return None
    return area
