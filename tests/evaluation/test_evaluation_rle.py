"""The numpy RLE decoder against pycocotools, and its errors on malformed input."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vidseg.evaluation.rle_runs import RLEError, decode_compressed_batch, runs_from_counts


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


def test_decode_matches_pycocotools_counts_runs_and_areas():
    rng = np.random.default_rng(1)
    masks = _random_masks(rng, 120)
    rles = [mask_utils.encode(np.asfortranarray(m)) for m in masks]
    strings = [r["counts"].decode() if i % 2 else r["counts"] for i, r in enumerate(rles)]  # str and bytes
    counts, ptr = decode_compressed_batch(strings)
    runs = runs_from_counts(counts, ptr, np.array([m.size for m in masks]))
    for i, (m, r) in enumerate(zip(masks, rles)):
        assert runs.area[i] == mask_utils.area(r)
        flat = np.zeros(m.size, np.uint8)
        sl = slice(runs.run_ptr[i], runs.run_ptr[i + 1])
        for s, n in zip(runs.run_start[sl] - runs.region_start[i], runs.run_len[sl]):
            flat[s : s + n] = 1
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
        runs_from_counts(counts, ptr, np.array([7, 7]))
    assert e.value.index == 1
