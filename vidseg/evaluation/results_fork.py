"""Load a YouTube-VIS results file in a forked child while the parent does other work (the GT JSON).

The child parses the JSON, checks that every entry has the usual form (what every results writer produces:
int/str ids, a number score, per frame null or ``{"size": [h, w], "counts": str}``), and computes the
pycocotools ``area`` of every given frame after the cheap character check of
:func:`vidseg.evaluation.video_iou._areas_only`. It hands the lot back in a compact form, never as pickled
``DTTrack`` objects (unpickling those costs as much as parsing the JSON again): an anonymous memory file holds
a small pickled header (ids, the odd non-ASCII count string), numpy arrays per entry and per given frame, and
ONE blob of all count strings; a pipe carries only a fixed-size "done" message (with the header's length).
The parent makes the ``DTTrack`` list from that; their frames stay spans of the mapped file
(:mod:`vidseg.evaluation.blob_frames`) until something reads them.

Anything unusual (a missing file, invalid JSON, an entry or frame not in the usual form, an empty list, a
video not in the GT, the child raising, being killed or taking too long) makes :meth:`ResultsLoad.get` call
:func:`~vidseg.evaluation.ytvis_data.load_results` in the parent instead, so errors, warnings and results are
those of the serial code by construction.

Layout of the memory file (all arrays little-endian native, 8-byte aligned; the strings come first, written
a batch at a time while they are checked, so that no joined copy of all of them is ever made)::

    [blob: G count strings, ASCII][pad][scores f8 E][nframes i8 E][ngiven i8 E][pad]
    [present_t i8 G][sizes i8 G*2][areas i8 G][lengths i8 G][pickled header]

E = entries of the results list, G = given (non-null) frames over all entries. ``areas`` is -1 for every
frame of an entry with a string that fails the character check (the ``DTTrack.areas`` form).
"""

from __future__ import annotations

import gc
import json
import mmap
import os
import pickle
import select
import signal
import struct
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vidseg.evaluation.blob_frames import BlobTrack, LazyFrames, LazyGiven
from vidseg.evaluation.rle_runs import readable_strings
from vidseg.evaluation.ytvis_data import (
    DTTrack,
    GroundTruth,
    _frame_length_warning,
    load_results,
    without_gc,
)

_AREA_CHUNK = 255  # pycocotools' area() fails on lists longer than 255 with numpy 2
_MSG = struct.Struct("<2sqq")  # status, header length, total length (or reason length)
_OK, _FALLBACK = b"OK", b"FB"
_ARRAYS = (  # name, dtype, elements per entry (E) or per given frame (G)
    ("scores", np.float64, "E"),
    ("nframes", np.int64, "E"),
    ("ngiven", np.int64, "E"),
    ("present_t", np.int64, "G"),
    ("sizes", np.int64, "G2"),
    ("areas", np.int64, "G"),
    ("lengths", np.int64, "G"),
)


class _Unusual(Exception):
    """The results file is not in the usual form: the parent loads it serially (same messages)."""


def _layout(blob_len: int, n_entries: int, n_frames: int) -> tuple[dict[str, tuple[int, int]], int]:
    """Byte offset and element count of each array (after the blob, 8-byte aligned), and the header's
    offset."""
    per = {"E": n_entries, "G": n_frames, "G2": 2 * n_frames}
    out, off = {}, blob_len
    for name, dtype, kind in _ARRAYS:
        off = (off + 7) // 8 * 8
        out[name] = (off, per[kind])
        off += per[kind] * np.dtype(dtype).itemsize
    return out, off


# ----------------------------------------------------------------------------------------------- child side


def _collect(results: Any) -> tuple[dict, list, list]:
    """Check the usual form of every entry; returns (per-entry lists, given frame dicts, their count strings).

    Raises:
        _Unusual: anything :func:`load_results` might treat differently from the usual entry.
    """
    if type(results) is not list or not results:
        raise _Unusual("not a non-empty JSON list")
    vids, cats, scores, nframes, ngiven, ts, given_all = [], [], [], [], [], [], []
    for r in results:
        if type(r) is not dict:
            raise _Unusual("an entry is not a JSON object")
        try:
            vid, cat, score, segs = r["video_id"], r["category_id"], r["score"], r["segmentations"]
        except KeyError:
            raise _Unusual("an entry lacks a field") from None
        # exact types: bools, floats, lists... as ids take the serial path
        if (type(vid) is not int and type(vid) is not str) or (type(cat) is not int and type(cat) is not str):
            raise _Unusual("an id is neither an int nor a string")
        if (type(score) is not float and type(score) is not int) or type(segs) is not list:
            raise _Unusual("score or segmentations of an unusual type")
        present_t = [t for t, s in enumerate(segs) if s]
        given = segs if len(present_t) == len(segs) else [segs[t] for t in present_t]
        if given and (set(map(type, given)) != {dict} or set(map(len, given)) != {2}):
            raise _Unusual("a frame is not a {'size', 'counts'} dict")
        vids.append(vid)
        cats.append(cat)
        scores.append(float(score))  # OverflowError for huge ints: serial path
        nframes.append(len(segs))
        ngiven.append(len(given))
        ts.extend(present_t)
        given_all.extend(given)
    try:
        counts = [s["counts"] for s in given_all]
        sizes = [s["size"] for s in given_all]
    except KeyError:
        raise _Unusual("a frame lacks 'size' or 'counts'") from None
    if given_all and (set(map(type, counts)) != {str} or set(map(type, sizes)) != {list}):
        raise _Unusual("a frame's counts is not a string or its size not a list")
    if given_all and (set(map(len, sizes)) != {2} or {type(v) for z in sizes for v in z} != {int}):
        raise _Unusual("a frame's size is not two ints")
    lists = {"vids": vids, "cats": cats, "scores": scores, "nframes": nframes, "ngiven": ngiven, "ts": ts}
    lists["sizes"] = sizes
    return lists, given_all, counts


_WRITE_BATCH = 2048  # count strings joined and written at a time (about 1 MB)


def _write_strings(fd: int, counts: list) -> tuple[int, np.ndarray, dict[int, str], np.ndarray]:
    """Write the count strings one after the other at the start of ``fd``, a batch at a time (no joined
    copy of all of them), with the character check of :func:`~vidseg.evaluation.rle_runs.readable_strings`.

    Returns:
        ``(blob_len, lens, extras, ok)``: bytes written; int64 [G] each string's length in the blob (0 for
        the non-ASCII ones, kept in ``extras`` {index: string} instead); bool [G] the string is readable.
    """
    n = len(counts)
    lens = np.fromiter(map(len, counts), dtype=np.int64, count=n)
    ok = np.ones(n, dtype=bool)
    extras: dict[int, str] = {}
    off = 0
    for lo in range(0, n, _WRITE_BATCH):
        batch = counts[lo : lo + _WRITE_BATCH]
        joined = "".join(batch)
        if not joined.isascii():  # rare: such a string fails the check anyway; sent as it is
            batch = list(batch)
            for k, x in enumerate(batch):
                if not x.isascii():
                    extras[lo + k] = x
                    batch[k] = ""
                    lens[lo + k] = 0
                    ok[lo + k] = False
            joined = "".join(batch)
        data = joined.encode("ascii")
        ok[lo : lo + len(batch)] &= readable_strings(data, lens[lo : lo + len(batch)])
        _pwrite_all(fd, data, off)
        off += len(data)
    return off, lens, extras, ok


def _frame_areas(given_all: list, frame_ok: np.ndarray) -> np.ndarray:
    """int64 [G], pycocotools ``area`` of the frames marked in ``frame_ok``, -1 ("not measured") elsewhere."""
    from pycocotools import mask as mask_utils

    area = np.full(len(given_all), -1, dtype=np.int64)
    sel = np.flatnonzero(frame_ok)
    segs = given_all if len(sel) == len(given_all) else [given_all[i] for i in sel.tolist()]
    if segs:
        vals = [mask_utils.area(segs[i : i + _AREA_CHUNK]) for i in range(0, len(segs), _AREA_CHUNK)]
        area[sel] = np.concatenate(vals).astype(np.int64)
    return area


def _pwrite_all(fd: int, data: Any, offset: int) -> None:
    view = memoryview(data).cast("B")
    while len(view):
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _child_work(path: str, out_fd: int, t0: float) -> tuple[int, int]:
    """Parse, check and measure; write the memory file. Returns (header length, total length)."""
    try:
        with open(path, "rb") as f:
            results = json.loads(f.read())
    except (OSError, ValueError) as e:  # the serial path gives the message (missing file, invalid JSON)
        raise _Unusual(f"cannot read: {e}") from None
    lists, given_all, counts = _collect(results)
    del results
    blob_len, lens, extras, frame_ok = _write_strings(out_fd, counts)
    del counts
    ngiven = np.asarray(lists["ngiven"], dtype=np.int64)
    gptr = np.zeros(len(ngiven) + 1, dtype=np.int64)
    np.cumsum(ngiven, out=gptr[1:])
    bad_cum = np.zeros(len(frame_ok) + 1, dtype=np.int64)
    np.cumsum(~frame_ok, out=bad_cum[1:])
    entry_ok = bad_cum[gptr[1:]] == bad_cum[gptr[:-1]]
    areas = _frame_areas(given_all, np.repeat(entry_ok, ngiven))
    try:
        sizes = np.array(lists["sizes"], dtype=np.int64).reshape(-1, 2)
    except OverflowError:
        raise _Unusual("a size does not fit int64") from None
    if len(sizes) and sizes.min() < 0:
        raise _Unusual("a negative size")
    arrays = {
        "scores": np.asarray(lists["scores"], dtype=np.float64),
        "nframes": np.asarray(lists["nframes"], dtype=np.int64),
        "ngiven": ngiven,
        "present_t": np.asarray(lists["ts"], dtype=np.int64),
        "sizes": sizes,
        "areas": areas,
        "lengths": lens,
    }
    header = {
        "n_entries": len(ngiven),
        "n_frames": len(lens),
        "blob_len": blob_len,
        "vids": lists["vids"],
        "cats": lists["cats"],
        "extras": extras,
        "child_s": time.perf_counter() - t0,
    }
    head = pickle.dumps(header, protocol=5)
    offsets, head_off = _layout(blob_len, header["n_entries"], header["n_frames"])
    total = head_off + len(head)
    os.ftruncate(out_fd, total)
    for name, dtype, _ in _ARRAYS:
        _pwrite_all(out_fd, np.ascontiguousarray(arrays[name], dtype=dtype), offsets[name][0])
    _pwrite_all(out_fd, head, head_off)
    return len(head), total


def _child_main(path: str, w_fd: int, out_fd: int) -> None:
    """Body of the forked child; never returns. ``os._exit``: no atexit handlers, no flushing of buffers
    inherited from the parent; any exception becomes a fallback message."""
    code = 0
    try:
        t0 = time.perf_counter()
        gc.disable()  # as load_results: nothing it builds is in a reference cycle
        try:
            head_len, total = _child_work(path, out_fd, t0)
            msg = _MSG.pack(_OK, head_len, total)
        except BaseException as e:  # noqa: BLE001 - everything goes back to the parent as a message
            reason = f"{type(e).__name__}: {e}".encode("utf-8", "replace")[:2000]
            msg = _MSG.pack(_FALLBACK, 0, len(reason)) + reason
        os.write(w_fd, msg)  # < PIPE_BUF bytes: one atomic write that never blocks
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        os._exit(code)


# ---------------------------------------------------------------------------------------------- parent side


@dataclass
class ResultsLoad:
    """A results file being loaded by a forked child; :meth:`get` returns the ``DTTrack`` list.

    Attributes:
        path, source: as given to :func:`start_results_load`.
        fallback_reason: why :meth:`get` loaded serially (None while the child's result was used).
        timings: seconds: ``child`` (the child's own total), ``wait`` (parent blocked on the child),
            ``rebuild`` (parent turning the compact form into ``DTTrack`` objects).
    """

    path: str
    source: str | None
    timeout: float
    pid: int | None = None
    fallback_reason: str | None = None
    timings: dict = field(default_factory=dict)
    _r_fd: int | None = None
    _out: Any = None  # the memory file: an fd (memfd) or a temporary file object
    _owner: int = field(default_factory=os.getpid)  # a process forked from the owner never reaps or kills

    @without_gc
    def get(self, gt: GroundTruth) -> list[DTTrack]:
        """Exactly ``load_results(path, gt, source=source)``, with ``areas`` measured; loads serially on
        anything unusual."""
        try:
            got = self._receive()
            built = self._rebuild(*got, gt) if got is not None else None
        finally:
            self.close()
        if built is None:
            return load_results(self.path, gt, source=self.source)
        out, n_unknown_cat, n_len_bad, _ = built
        source = self.source or self.path
        if n_unknown_cat:  # the warnings of load_results, same text, same order, pointing at the caller
            warnings.warn(
                f"{source}: {n_unknown_cat} entries have a category_id that is not a GT category; left out",
                stacklevel=2,
            )
        _frame_length_warning(n_len_bad, "result entries", source)
        return out

    def close(self) -> None:
        """Reap the child (killed first if still running) and release the pipe and memory file; idempotent."""
        pid, self.pid = self.pid, None
        if pid is not None and os.getpid() == self._owner:
            try:
                if os.waitpid(pid, os.WNOHANG) == (0, 0):
                    os.kill(pid, signal.SIGKILL)  # our own child, not yet reaped: the pid is still ours
                    os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        if self._r_fd is not None:
            os.close(self._r_fd)
            self._r_fd = None
        if self._out is not None:
            out, self._out = self._out, None
            out.close() if hasattr(out, "close") else os.close(out)

    def __enter__(self) -> ResultsLoad:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _fallback(self, reason: str) -> None:
        if self.fallback_reason is None:
            self.fallback_reason = reason

    def _receive(self) -> tuple[dict, mmap.mmap] | None:
        """Wait for the child's message; returns (header, the memory file mapped read-only) or None."""
        if self.pid is None or self._r_fd is None:
            self._fallback(self.fallback_reason or "no child")
            return None
        t0 = time.perf_counter()
        msg, deadline = b"", t0 + self.timeout
        while True:  # until EOF: the child writes once, then exits
            left = deadline - time.perf_counter()
            if left <= 0 or not select.select([self._r_fd], [], [], left)[0]:
                self._fallback(f"child took more than {self.timeout:.0f} s")
                return None
            chunk = os.read(self._r_fd, 65536)
            if not chunk:
                break
            msg += chunk
        self.timings["wait"] = time.perf_counter() - t0
        if len(msg) < _MSG.size:
            self._fallback("child ended without a message")
            return None
        status, head_len, total = _MSG.unpack_from(msg)
        if status != _OK:
            self._fallback(msg[_MSG.size :].decode("utf-8", "replace") or "child failed")
            return None
        fd = self._out if isinstance(self._out, int) else self._out.fileno()
        if os.fstat(fd).st_size != total:
            self._fallback("memory file of the wrong size")
            return None
        mm = mmap.mmap(fd, total, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        header = pickle.loads(mm[total - head_len : total])
        self.timings["child"] = header["child_s"]
        return header, mm

    def _rebuild(self, header: dict, mm: mmap.mmap, gt: GroundTruth) -> tuple[list[DTTrack], int, int] | None:
        """``DTTrack`` objects from the child's compact form, with the GT checks of ``load_results``; also
        the numbers of entries with an unknown category and with a frame list of another length than the
        video's (for the warnings). None: load serially. The tracks keep ``mm`` (their count strings) mapped;
        it is closed here only when no track uses it."""
        built = None
        try:
            built = self._rebuild_from(header, mm, gt)
            return built
        finally:
            if built is None or not built[3]:
                mm.close()

    def _rebuild_from(self, header: dict, mm: mmap.mmap, gt: GroundTruth) -> tuple | None:
        t0 = time.perf_counter()
        vids, cats = header["vids"], header["cats"]
        if not set(gt.video_ids).issuperset(vids):
            self._fallback("a video not in the GT")  # load_results raises, naming the first such entry
            return None
        offsets, _ = _layout(header["blob_len"], header["n_entries"], header["n_frames"])
        # private copies of the arrays (small next to the strings, which stay in the mapping)
        arr = {
            name: np.frombuffer(mm, dtype=dtype, count=offsets[name][1], offset=offsets[name][0]).copy()
            for name, dtype, _ in _ARRAYS
        }
        lengths = gt.video_lengths
        nframes = arr["nframes"].tolist()
        n_len_bad = 0
        for v, n in zip(vids, nframes):
            length = lengths.get(v)
            n_len_bad += length is not None and n != length
        gt_cats = set(gt.category_ids)
        keep = [i for i, c in enumerate(cats) if c in gt_cats]
        ends = np.cumsum(arr["lengths"])  # the blob starts the file
        starts = ends - arr["lengths"]
        sizes = arr["sizes"].reshape(-1, 2)
        present_t, areas = arr["present_t"], arr["areas"]
        gptr = np.zeros(len(nframes) + 1, dtype=np.int64)
        np.cumsum(arr["ngiven"], out=gptr[1:])
        gp = gptr.tolist()
        scores = arr["scores"].tolist()
        extras = header["extras"]  # given frame -> a non-ASCII count string (not in the blob)
        eager = set((np.searchsorted(gptr, list(extras), side="right") - 1).tolist()) if extras else set()
        source = self.source or self.path
        out, uses_mm = [], False
        for i in keep:
            a, b = gp[i], gp[i + 1]
            if i in eager:  # rare: this entry's frames as plain dicts, the odd strings put back
                given = [
                    {"size": z, "counts": extras.get(a + k) or mm[lo:hi].decode("ascii")}
                    for k, (z, lo, hi) in enumerate(zip(sizes[a:b].tolist(), starts[a:b], ends[a:b]))
                ]
                frames = [None] * nframes[i]
                for t, g in zip(present_t[a:b].tolist(), given):
                    frames[t] = g
            else:  # the strings stay in the mapping until the evaluation (or a caller) asks for them
                track = BlobTrack(mm, starts[a:b], ends[a:b], sizes[a:b], present_t[a:b], nframes[i])
                frames, given = LazyFrames(track), LazyGiven(track)
                uses_mm = True
            out.append(
                DTTrack(
                    index=i,
                    video_id=vids[i],
                    category_id=cats[i],
                    score=scores[i],
                    frames=frames,
                    source=source,
                    present_t=present_t[a:b],
                    sizes=sizes[a:b],
                    given=given,
                    areas=areas[a:b],
                )
            )
        self.timings["rebuild"] = time.perf_counter() - t0
        return out, len(vids) - len(keep), n_len_bad, uses_mm


def _default_timeout(path: str) -> float:
    try:
        size_mib = os.path.getsize(path) / 2**20
    except OSError:
        size_mib = 0.0
    return 60.0 + 2.0 * size_mib  # generous: a child past it is killed and the file loaded serially


def start_results_load(
    path: str | os.PathLike, *, source: str | None = None, timeout: float | None = None
) -> ResultsLoad:
    """Fork a child that loads the results file ``path`` now; :meth:`ResultsLoad.get` collects it.

    Without ``fork`` (or for a missing file) nothing starts and ``get`` loads serially. ``timeout``: seconds
    ``get`` waits for the child before killing it and loading serially (default 60 s + 2 s per MiB).
    """
    path = os.fspath(path)
    load = ResultsLoad(
        path=path, source=source, timeout=_default_timeout(path) if timeout is None else timeout
    )
    if not hasattr(os, "fork"):
        load.fallback_reason = "fork is not available"
        return load
    if not os.path.isfile(path):
        load.fallback_reason = "no such file"  # load_results raises its usual FileNotFoundError
        return load
    from pycocotools import mask as _  # noqa: F401 - imported before the fork, never inside the child

    if hasattr(os, "memfd_create"):
        out: Any = os.memfd_create("vidseg-results", os.MFD_CLOEXEC)
    else:
        out = tempfile.TemporaryFile()
    r_fd, w_fd = os.pipe()
    out_fd = out if isinstance(out, int) else out.fileno()
    try:
        pid = os.fork()
    except OSError as e:
        os.close(r_fd)
        os.close(w_fd)
        out.close() if hasattr(out, "close") else os.close(out)
        load.fallback_reason = f"fork failed ({e})"
        return load
    if pid == 0:
        _child_main(path, w_fd, out_fd)  # never returns
    os.close(w_fd)  # only the child holds the write end: its exit (or death) is EOF here
    load.pid, load._r_fd, load._out = pid, r_fd, out
    return load
