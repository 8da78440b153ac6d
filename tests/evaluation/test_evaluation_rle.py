"""The numpy RLE decoder against pycocotools, and its errors on malformed input."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vidseg.evaluation.rle_runs import (
    RLEError,
    _check_compressed_fast,
    check_compressed,
    check_counts,
    decode_compressed_batch,
)


def _random_masks(rng, n):
    out = []
    for i in range(n):
        h, w = rng.integers(1, 40, 2) if i % 3 else rng.integers(200, 500, 2)
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if i % 5 == 0:  # large runs: multi-character numbers and negative differences
            m = np.zeros((h, w), np.uint8)
            m[rng.integers(h) :, rng.integers(w) :] = 1
        if i % 7 == 0:
            m[:] = 0
        if i % 11 == 0:
            m[:] = 1
        out.append(m)
    return out


def test_decode_matches_pycocotools_counts_and_areas():
    rng = np.random.default_rng(1)
    masks = _random_masks(rng, 120)
    rles = [mask_utils.encode(np.asfortranarray(m)) for m in masks]
    strings = [r["counts"].decode() if i % 2 else r["counts"] for i, r in enumerate(rles)]  # str and bytes
    counts, ptr = decode_compressed_batch(strings)
    area, zero_inside = check_counts(counts, ptr, np.array([m.size for m in masks]))
    assert not zero_inside.any()  # pycocotools never writes a count of 0 after the first
    for i, (m, r) in enumerate(zip(masks, rles)):
        assert area[i] == mask_utils.area(r) == m.sum()
        c = counts[ptr[i] : ptr[i + 1]]
        flat = np.repeat(np.arange(len(c)) % 2, c).astype(np.uint8)
        np.testing.assert_array_equal(flat, m.flatten(order="F"))
        # re-encoding the decoded counts gives back the same string
        back = mask_utils.frPyObjects(
            {"size": list(m.shape), "counts": counts[ptr[i] : ptr[i + 1]].tolist()}, *m.shape
        )
        assert back["counts"] == r["counts"]


def test_decode_empty_strings_and_batch_of_none():
    counts, ptr = decode_compressed_batch([])
    assert len(counts) == 0 and list(ptr) == [0]
    counts, ptr = decode_compressed_batch(["", "52", ""])  # '52' = [5, 2]
    assert counts.tolist() == [5, 2] and ptr.tolist() == [0, 0, 2, 2]


@pytest.mark.parametrize(
    "bad, reason",
    [("0{", "outside"), ("0P", "ends inside"), ("00\u00e9", "non-ASCII"), ("0" + "P" * 9 + "0", "too long")],
)
def test_decode_malformed_names_the_string(bad, reason):
    with pytest.raises(RLEError, match=reason) as e:
        decode_compressed_batch(["52", bad])
    assert e.value.index == 1


def test_counts_that_do_not_fill_the_mask_are_rejected():
    counts, ptr = decode_compressed_batch(["52", "53"])
    with pytest.raises(RLEError, match="add up to 8 pixels") as e:
        check_counts(counts, ptr, np.array([7, 7]))
    assert e.value.index == 1


def test_zero_counts_inside_are_flagged():
    # [0, 3, 2] starts with foreground (first count 0: fine); [3, 0, 2] and [1, 2, 0, 2] have a 0 inside;
    # [2, 3, 0] ends with a 0 (no pixel after it: fine).
    counts = np.array([0, 3, 2, 3, 0, 2, 1, 2, 0, 2, 2, 3, 0])
    ptr = np.array([0, 3, 6, 10, 13])
    area, zero_inside = check_counts(counts, ptr, np.array([5, 5, 5, 5]))
    assert area.tolist() == [3, 0, 4, 3]
    assert zero_inside.tolist() == [False, True, True, False]


def _encode_counts(counts: list[int]) -> str:
    """pycocotools' string format for any int counts (also negative ones, which it never writes itself)."""
    out = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = x != -1 if ch & 0x10 else x != 0
            out.append(chr(48 + (ch | (0x20 if more else 0))))
    return "".join(out)


def test_check_compressed_matches_the_exact_decoder():
    rng = np.random.default_rng(3)
    masks = _random_masks(rng, 90)
    strings = [mask_utils.encode(np.asfortranarray(m))["counts"].decode() for m in masks]
    npix = np.array([m.size for m in masks])
    area = check_compressed(strings, npix)
    assert area.tolist() == [int(m.sum()) for m in masks]
    assert _check_compressed_fast(strings, npix) is not None  # the vectorised path decided, no fallback
    assert (
        _encode_counts([3, 4, 0, 2])
        == mask_utils.frPyObjects({"size": [9, 1], "counts": [3, 4, 0, 2]}, 9, 1)["counts"].decode()
    )


@pytest.mark.parametrize(
    "counts, npix, reason",
    [
        ([5, -3, 14], 16, "negative"),  # adds up, but a count < 0 (C reads 2**32 - 3 and never ends the walk)
        ([0, 5, 2, -1, 10], 16, "negative"),  # a negative count later in a chain
        ([2, 3, 0, 2, 2], 10, "add up to 9"),
        ([2, 3, 0, 2, 4], 10, "add up to 11"),
    ],
)
def test_check_compressed_rejects_like_the_exact_decoder(counts, npix, reason):
    s = _encode_counts(counts)
    assert _check_compressed_fast(["52", s], np.array([7, npix])) is None
    with pytest.raises(RLEError, match=reason) as e:
        check_compressed(["52", s], np.array([7, npix]))
    assert e.value.index == 1


def test_check_compressed_random_strings_agree_with_exact():
    rng = np.random.default_rng(5)
    for _ in range(300):
        n = int(rng.integers(1, 8))
        counts = rng.integers(-3, 12, n).tolist()
        npix = int(sum(counts)) if rng.random() < 0.7 else int(rng.integers(0, 40))
        s = _encode_counts(counts)
        try:
            c, p = decode_compressed_batch([s])
            want = check_counts(c, p, np.array([npix]))[0].tolist()
        except RLEError:
            want = None
        try:
            got = check_compressed([s], np.array([npix])).tolist()
        except RLEError:
            got = None
        assert got == want, counts
