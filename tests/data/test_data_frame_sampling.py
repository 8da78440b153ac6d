"""Clip samplers at video boundaries."""

import numpy as np
import pytest

from vidseg.data.frame_sampling import (
    consecutive_clip,
    consecutive_items,
    overlapping_clips,
    pingpong_indices,
    reference_range_clip,
)


def test_pingpong():
    assert pingpong_indices(3, 8) == [0, 1, 2, 1, 0, 1, 2, 1]
    assert pingpong_indices(1, 4) == [0, 0, 0, 0]
    assert pingpong_indices(2, 5) == [0, 1, 0, 1, 0]


def test_consecutive_items_cover_every_start():
    items = consecutive_items([6, 10, 3], 6)
    assert len(items) == 1 + 5 + 1  # sum(len - T + 1), short video: one item
    assert items[0] == (0, 0) and items[1:6] == [(1, s) for s in range(5)] and items[-1] == (2, 0)
    assert consecutive_clip(10, 4, 6) == [4, 5, 6, 7, 8, 9]  # last valid start ends on the last frame
    assert consecutive_clip(3, 0, 6) == [0, 1, 2, 1, 0, 1]  # short video: ping-pong


def _devis_each_frame_clip(n, f, t):
    """DeVIS's SAMPLE_EACH_FRAME indices (VISTrainDataset), restated: forward from f to the end, then
    bouncing between the ends without repeating them."""
    out, k, step = [f], f, 1
    while len(out) < t:
        if not 0 <= k + step < n:
            step = -step
        k += step
        out.append(k)
    return out


def test_sample_each_frame_starts_everywhere_with_a_reflected_tail():
    items = consecutive_items([6, 10, 3], 6, each_frame=True)
    assert len(items) == 6 + 10 + 3 and items[6:16] == [(1, s) for s in range(10)]
    assert consecutive_clip(10, 7, 6) == [7, 8, 9, 8, 7, 6]
    assert consecutive_clip(5, 3, 6) == [3, 4, 3, 2, 1, 0]
    for n in (2, 3, 5, 9):
        for f in range(n):
            assert consecutive_clip(n, f, 6) == _devis_each_frame_clip(n, f, 6), (n, f)


def test_reference_range_stays_in_range_and_sorted():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 40):
        for _ in range(20):
            idx = reference_range_clip(n, 5, 3, rng)
            assert len(idx) == 5 and idx == sorted(idx) and 0 <= idx[0] and idx[-1] < n
            assert idx[-1] - idx[0] <= 6
    shuffled = [reference_range_clip(40, 5, 10, rng, shuffle=True) for _ in range(20)]
    assert any(s != sorted(s) for s in shuffled)


@pytest.mark.parametrize(
    "n, starts, last_real",
    [(3, [0], 0), (6, [0], 0), (10, [0, 4], 0), (11, [0, 4, 5], 3), (12, [0, 4, 6], 2), (14, [0, 4, 8], 0)],
)
def test_overlapping_clips(n, starts, last_real):
    clips = overlapping_clips(n, 6, 4)
    assert [c.start for c in clips] == starts
    assert all(len(c.indices) == 6 for c in clips)
    if n >= 6:
        assert clips[-1].indices == list(range(n - 6, n))  # the last clip is the last T frames
    assert clips[-1].last_real_idx == last_real
    covered = sorted({i for c in clips for i in c.indices})
    assert covered == list(range(n))
    if n < 6:
        assert clips[0].num_real == n and clips[0].indices == pingpong_indices(n, 6)
    with pytest.raises(ValueError):
        overlapping_clips(n, 6, 7)
