"""Prediction frames kept as spans of one shared buffer of count strings, turned into dicts only when asked.

A results file of 3000 predictions holds about 100,000 frame masks. The metric reads the count strings of the
third of them that meet a GT frame and only the (precomputed) areas of the rest, so building a Python dict
and string for every frame (and copying them again in every forked worker) is wasted work: a
:class:`BlobTrack` holds the frames of one prediction as ``(start, end)`` spans of a buffer shared by all
predictions (the memory file written by :mod:`vidseg.evaluation.results_fork`). ``DTTrack.frames`` and
``DTTrack.given`` are then :class:`LazyFrames` / :class:`LazyGiven` sequences that behave like the lists
:func:`~vidseg.evaluation.ytvis_data.load_results` builds (same dicts, equal to those lists), made on first
use; the evaluation takes the strings it needs straight from the buffer (:meth:`BlobTrack.counts_at`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


class BlobTrack:
    """The given frames of one prediction.

    Attributes:
        buf: bytes-like buffer (``bytes`` or a read-only ``mmap``) holding ASCII count strings.
        starts, ends: int64 [F], the span of each given frame's string in ``buf``.
        sizes: int64 [F, 2], each given frame's ``(height, width)``.
        present_t: int64 [F], the frame index of each given frame.
        length: the length of the prediction's frame list (given frames and nulls).
    """

    __slots__ = ("buf", "starts", "ends", "sizes", "present_t", "length", "_dicts", "_frames")

    def __init__(
        self,
        buf: Any,
        starts: np.ndarray,
        ends: np.ndarray,
        sizes: np.ndarray,
        present_t: np.ndarray,
        length: int,
    ) -> None:
        self.buf = buf
        self.starts, self.ends, self.sizes, self.present_t = starts, ends, sizes, present_t
        self.length = int(length)
        self._dicts: list | None = None
        self._frames: list | None = None

    def counts_at(self, idx: Sequence[int]) -> list[bytes]:
        """The count strings of given frames ``idx`` as ``bytes`` (pycocotools reads them as they are)."""
        buf, s, e = self.buf, self.starts, self.ends
        return [buf[s[i] : e[i]] for i in idx]

    def dicts(self) -> list[dict]:
        """``[{"size": [h, w], "counts": str}, ...]`` of the given frames, made once."""
        if self._dicts is None:
            buf = self.buf
            self._dicts = [
                {"size": z, "counts": buf[a:b].decode("ascii")}
                for z, a, b in zip(self.sizes.tolist(), self.starts.tolist(), self.ends.tolist())
            ]
        return self._dicts

    def frames(self) -> list:
        """The frame list: the given dicts at their frame indices, None elsewhere."""
        if self._frames is None:
            out: list = [None] * self.length
            for t, d in zip(self.present_t.tolist(), self.dicts()):
                out[t] = d
            self._frames = out
        return self._frames

    def __getstate__(self) -> dict:
        # the shared buffer may be an mmap (not picklable): keep a copy of this track's own bytes only
        lo = int(self.starts.min()) if len(self.starts) else 0
        hi = int(self.ends.max()) if len(self.ends) else 0
        state = {k: getattr(self, k) for k in ("sizes", "present_t", "length")}
        return {**state, "buf": bytes(self.buf[lo:hi]), "starts": self.starts - lo, "ends": self.ends - lo}

    def __setstate__(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
        self._dicts = self._frames = None


class _LazyList(Sequence):
    """A read-only list made by ``self._make()`` on first use; compares equal to an equal list."""

    __slots__ = ("track",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, track: BlobTrack) -> None:
        self.track = track

    def _make(self) -> list:
        raise NotImplementedError

    def __getitem__(self, i):  # type: ignore[override]
        return self._make()[i]

    def __iter__(self) -> Iterator:
        return iter(self._make())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _LazyList):
            other = other._make()
        return self._make() == other if isinstance(other, list) else NotImplemented

    def __repr__(self) -> str:
        return repr(self._make())


class LazyGiven(_LazyList):
    """``DTTrack.given`` of a :class:`BlobTrack`: the F given frame dicts."""

    __slots__ = ()

    def _make(self) -> list:
        return self.track.dicts()

    def __len__(self) -> int:
        return len(self.track.starts)


class LazyFrames(_LazyList):
    """``DTTrack.frames`` of a :class:`BlobTrack`: the frame list with None where absent."""

    __slots__ = ()

    def _make(self) -> list:
        return self.track.frames()

    def __len__(self) -> int:
        return self.track.length


def shared_blob(segs: Sequence) -> tuple[Any, np.ndarray, np.ndarray] | None:
    """``(buf, starts, ends)`` over all given frames (concatenated in track order) when every entry of
    ``segs`` is a :class:`LazyGiven` over the same buffer; None otherwise."""
    if not segs or not all(type(s) is LazyGiven for s in segs):
        return None
    buf = segs[0].track.buf
    if not all(s.track.buf is buf for s in segs):
        return None
    starts = np.concatenate([s.track.starts for s in segs])
    ends = np.concatenate([s.track.ends for s in segs])
    return buf, starts, ends
