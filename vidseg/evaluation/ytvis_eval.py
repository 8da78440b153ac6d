"""The YouTube-VIS / OVIS video instance segmentation metric, numerically identical to the official code.

Official code: ``youtubevos/cocoapi`` ``ytvoseval.py`` (YouTube-VIS 2019/2021/2022) and ``qjy981010/cocoapi``
``oviseval.py`` (OVIS, with occlusion ranges). Every quirk is kept (``docs/evaluation.md`` lists them): frame
lists compared up to the shorter one, the GT ``areas`` field deciding the size range, GT id 0 counting as a
false positive, stable score ordering, crowd GT, the exact ``np.linspace`` thresholds, categories without GT
left out.

Usage::

    res = evaluate_ytvis("valid_sub.json", "results.json")   # paths, or a loaded dict / list
    res.stats["AP"], res.per_category_ap

Videos are processed a few at a time (read, IoU, matching), so peak memory does not grow with the number of
videos; accumulation is vectorised over IoU thresholds and detections.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from vidseg.evaluation.forked import can_fork, resolve_workers, run_dynamic
from vidseg.evaluation.video_iou import decode_packed_tracks, decode_tracks, pair_ious
from vidseg.evaluation.ytvis_data import (
    DTTrack,
    EvalInputError,
    GroundTruth,
    GTTrack,
    load_ground_truth,
    load_results,
    warn_unusual_results,
    without_gc,
)

# Exactly the official thresholds: np.linspace gives 0.8999999999999999 for the 9th IoU threshold.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)
# YouTube-VIS size ranges use 128^2 / 256^2 (not COCO's 32^2 / 96^2); both bounds inclusive.
AREA_RANGES = {
    "all": (0.0, 1e10),
    "small": (0.0, 128.0**2),
    "medium": (128.0**2, 256.0**2),
    "large": (256.0**2, 1e10),
}
_AREA_LO = np.array([lo for lo, _ in AREA_RANGES.values()])
_AREA_HI = np.array([hi for _, hi in AREA_RANGES.values()])
OCCLUSION_RANGES = {"all": (0.0, 1.0), "light": (0.0, 0.25), "medium": (0.25, 0.5), "heavy": (0.5, 1.0)}

YTVIS_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
OVIS_STATS = YTVIS_STATS[:6] + ("AP_light", "AP_medium", "AP_heavy") + YTVIS_STATS[6:]
OVIS_STATS = OVIS_STATS + ("AR_light", "AR_medium", "AR_heavy")

_VIDEO_BATCH = 16  # videos read, checked and compared together (amortises numpy's per-call overhead)
_MIN_BATCHES_PER_WORKER = 4  # below this a forked worker costs more than it saves

# stat name -> (is AP, IoU threshold or None, area label, occlusion label, maxDets)
_STAT_DEFS = {
    "AP": (True, None, "all", "all", 100),
    "AP50": (True, 0.5, "all", "all", 100),
    "AP75": (True, 0.75, "all", "all", 100),
    "APs": (True, None, "small", "all", 100),
    "APm": (True, None, "medium", "all", 100),
    "APl": (True, None, "large", "all", 100),
    "AP_light": (True, None, "all", "light", 100),
    "AP_medium": (True, None, "all", "medium", 100),
    "AP_heavy": (True, None, "all", "heavy", 100),
    "AR1": (False, None, "all", "all", 1),
    "AR10": (False, None, "all", "all", 10),
    "AR100": (False, None, "all", "all", 100),
    "ARs": (False, None, "small", "all", 100),
    "ARm": (False, None, "medium", "all", 100),
    "ARl": (False, None, "large", "all", 100),
    "AR_light": (False, None, "all", "light", 100),
    "AR_medium": (False, None, "all", "medium", 100),
    "AR_heavy": (False, None, "all", "heavy", 100),
}


@dataclass
class EvalResult:
    """Output of the metric.

    Attributes:
        stats: stat name -> value in [0, 1] as the official ``stats`` array (12 names of ``YTVIS_STATS``, or
            the 18 of ``OVIS_STATS`` with occlusion labels); -1 where undefined (no GT in any category).
        precision: float64 [T=10, R=101, K, A=4, O, M=3]; O = 4 occlusion ranges for OVIS stats, else 1.
        recall: float64 [T, K, A, O, M].
        category_ids: the K category ids (sorted), the K axis of precision/recall.
        category_names: category id -> name.
        per_category_ap: category id -> AP (IoU .50:.95, all areas, 100 dets); -1 for a category without GT.
        timings: wall seconds of ``load_s`` (reading and checking both inputs) and ``evaluate_s``.
    """

    stats: dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    category_ids: list
    category_names: dict
    per_category_ap: dict
    timings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready summary ``{"stats": {...}, "per_category": [{"id", "name", "AP"}]}``: fractions, -1
        where undefined."""
        return {
            "stats": dict(self.stats),
            "per_category": [
                {"id": c, "name": self.category_names.get(c, str(c)), "AP": self.per_category_ap[c]}
                for c in self.category_ids
            ],
        }


@without_gc
def evaluate_ytvis(
    gt: str | os.PathLike | Mapping | GroundTruth,
    results: str | os.PathLike | Sequence[Mapping] | Sequence[DTTrack],
    *,
    ovis: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> EvalResult:
    """Score results against a ground truth with the official YouTube-VIS metric (OVIS variant with ``ovis``).

    Args:
        gt: GT JSON path, loaded dict, or :class:`GroundTruth`.
        results: results JSON path, list of result dicts, or already loaded :class:`DTTrack` list (which may
            hold predictions for videos outside ``gt``; they are skipped, as in the YT-VIS 2022 server
            script).
        ovis: OVIS rules: prediction and GT frame lists must have equal lengths, and with occlusion labels in
            the GT the 18 OVIS stats are computed.
        progress: show a tqdm bar over videos.
        workers: processes for the per-video work (forked; this one works too). None: one per available
            CPU (at most 8), fewer for small inputs; 1: no fork. Results are identical for any value.
    """
    t0 = time.perf_counter()
    import pycocotools.mask  # noqa: F401 - imported before any fork, so that the workers inherit it

    background = None
    if _load_results_in_background(gt, results, workers):
        from vidseg.evaluation.results_fork import start_results_load

        background = start_results_load(results)  # the results file is read while the GT is
    try:
        gt = gt if isinstance(gt, GroundTruth) else load_ground_truth(gt)
        if not gt.has_annotations:
            raise EvalInputError(f"{gt.source}: has no 'annotations'; there is nothing to score against")
        is_loaded = isinstance(results, list) and results and isinstance(results[0], DTTrack)
        if background is not None:
            dts = background.get(gt)
        else:
            dts = results if is_loaded else load_results(results, gt)
        if not is_loaded:  # loaded tracks were checked by whoever loaded them
            warn_unusual_results(dts, gt)
    finally:
        if background is not None:
            background.close()
    occlusion = ovis and gt.has_occlusion
    if ovis and not occlusion:
        warnings.warn(
            f"{gt.source}: no occlusion labels; computing the 12 YouTube-VIS stats (as "
            f"VITA/Mask2Former evaluate "
            "OVIS locally)",
            stacklevel=2,
        )
    t1 = time.perf_counter()
    out = _Evaluation(gt, dts, ovis=ovis, occlusion=occlusion).run(progress, workers)
    out.timings = {"load_s": t1 - t0, "evaluate_s": time.perf_counter() - t1}
    return out


_BACKGROUND_MIN_BYTES = 4 << 20  # smaller results files load faster than a fork pays off


def _load_results_in_background(gt: object, results: object, workers: int | None) -> bool:
    """Whether to read a results file in a forked process while the GT file is read here: both are paths,
    more than one worker is allowed, and (automatic mode) the results file is large enough to gain."""
    if workers == 1 or isinstance(gt, GroundTruth) or not isinstance(results, (str, os.PathLike)):
        return False
    if not can_fork() or not os.path.isfile(results):
        return False
    return workers is not None or os.path.getsize(results) >= _BACKGROUND_MIN_BYTES


def evaluate_ytvis2022(
    gt_full: str | os.PathLike | Mapping | GroundTruth,
    gt_short: str | os.PathLike | Mapping | GroundTruth,
    gt_long: str | os.PathLike | Mapping | GroundTruth,
    results: str | os.PathLike | Sequence[Mapping],
    *,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, EvalResult | float]:
    """YouTube-VIS 2022 server protocol: results checked against the full GT, then scored separately on the
    short-video and the long-video GT; ``mAP = (AP_S + AP_L) / 2``. ``workers`` as :func:`evaluate_ytvis`.

    Returns:
        ``{"short": EvalResult, "long": EvalResult, "mAP": float}``.
    """
    full = gt_full if isinstance(gt_full, GroundTruth) else load_ground_truth(gt_full)
    dts = load_results(results, full)
    warn_unusual_results(dts, full)
    short = evaluate_ytvis(gt_short, dts, progress=progress, workers=workers)
    long_ = evaluate_ytvis(gt_long, dts, progress=progress, workers=workers)
    return {"short": short, "long": long_, "mAP": (short.stats["AP"] + long_.stats["AP"]) / 2}


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None


def _progress_bar(total: int, enabled: bool):
    """A tqdm bar over videos, or a no-op one (tqdm is then not even imported: it takes ~35 ms)."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="evaluate", unit="video", leave=False)


@dataclass
class _Entry:
    """Matching outcome of one (video, category, area range, occlusion range), as the official
    ``evaluateVid``. ``scores`` [D] in score order (top 100); ``tp``/``ignored`` bool [T, D]; ``npig``
    non-ignored GT count."""

    scores: np.ndarray
    tp: np.ndarray
    ignored: np.ndarray
    npig: int


@dataclass
class _Packed:
    """The ``_Entry`` list of one (category, area range, occlusion range) of a batch, concatenated (what a
    worker sends back): ``scores`` [D], ``tp``/``ignored`` bool [T, D], ``rank`` [D] position within its
    (video, category) in score order, ``npig`` the non-ignored GT count."""

    scores: np.ndarray
    tp: np.ndarray
    ignored: np.ndarray
    rank: np.ndarray
    npig: int


def _pack(entries: list[_Entry]) -> _Packed | None:
    if not entries:
        return None
    return _Packed(
        scores=np.concatenate([e.scores for e in entries]),
        tp=np.concatenate([e.tp for e in entries], axis=1),
        ignored=np.concatenate([e.ignored for e in entries], axis=1),
        rank=np.concatenate([np.arange(len(e.scores)) for e in entries]),
        npig=sum(e.npig for e in entries),
    )


class _Evaluation:
    def __init__(self, gt: GroundTruth, dts: Sequence[DTTrack], *, ovis: bool, occlusion: bool) -> None:
        self.gt = gt
        self.ovis = ovis
        self.occ_labels = list(OCCLUSION_RANGES) if occlusion else ["all"]
        self.cat_index = {c: k for k, c in enumerate(gt.category_ids)}
        videos = set(gt.video_ids)
        self.dts_by_video: dict = defaultdict(list)
        for d in dts:  # file order within a video, as the official index
            if d.video_id in videos and d.category_id in self.cat_index:
                self.dts_by_video[d.video_id].append(d)
        self.gts_by_video: dict = defaultdict(dict)
        for (vid, cat), trs in gt.tracks.items():
            self.gts_by_video[vid][cat] = trs
        # entries[k][a][o]: per-video entries in ascending video order
        na, no = len(AREA_RANGES), len(self.occ_labels)
        self.entries = [[[[] for _ in range(no)] for _ in range(na)] for _ in gt.category_ids]

    def run(self, progress: bool, workers: int | None = 1) -> EvalResult:
        vids = self.gt.video_ids
        batches = [vids[i : i + _VIDEO_BATCH] for i in range(0, len(vids), _VIDEO_BATCH)]
        nproc = resolve_workers(workers, len(batches), _MIN_BATCHES_PER_WORKER)
        with _progress_bar(len(vids), progress) as bar:
            # each batch's entries come back separately and are merged in video order below
            parts = run_dynamic(
                len(batches),
                lambda i: self._run_batch(batches[i]),
                nproc,
                on_progress=bar.update,
                units=lambda i: len(batches[i]),
            )
        precision, recall = self._accumulate(parts)
        return self._summarize(precision, recall)

    def _run_batch(self, batch: Sequence) -> list:
        """Evaluate one batch of videos; returns its entries packed per (category, area range, occlusion
        range) as ``_Packed`` (or None where there are none), indexed ``[k][a][o]``."""
        na, no = len(AREA_RANGES), len(self.occ_labels)
        self.entries = [[[[] for _ in range(no)] for _ in range(na)] for _ in self.gt.category_ids]
        self._evaluate_videos(batch)
        return [[[_pack(es) for es in per_a] for per_a in per_k] for per_k in self.entries]

    # ---------------------------------------------------------------- per batch of videos
    def _evaluate_videos(self, vids: Sequence) -> None:
        """Match the predictions of a few consecutive videos: their masks are read, checked and compared in
        one pass (numpy bookkeeping per batch rather than per video; one C ``iou`` call per video)."""
        groups, dts_of, gts_of = [], [], []  # (video, category) groups in video, then category order
        for vid in vids:
            gts_by_cat = self.gts_by_video.get(vid, {})
            dts_by_cat: dict = defaultdict(list)
            for d in self.dts_by_video.get(vid, []):
                dts_by_cat[d.category_id].append(d)
            for c in sorted(set(gts_by_cat) | set(dts_by_cat), key=self.cat_index.__getitem__):
                # Detections: stable sort by -score, keep the top 100 (maxDets[-1]) per (video, category).
                ds = dts_by_cat.get(c, [])
                order = np.argsort(-np.array([d.score for d in ds], dtype=np.float64), kind="mergesort")
                groups.append((vid, c))
                dts_of.append([ds[i] for i in order[: MAX_DETS[-1]]])
                gts_of.append(gts_by_cat.get(c, []))
        if not groups:
            return
        all_dt = [d for ds in dts_of for d in ds]
        all_gt = [g for gs in gts_of for g in gs]
        packed = all(g.present_t is not None for g in all_gt)  # predictions always are (DTTrack)
        if not packed and len(vids) > 1:  # GT polygons or in-memory masks: video by video (sizes differ)
            for vid in vids:
                self._evaluate_videos([vid])
            return
        ng = len(groups)
        dt_group = np.repeat(np.arange(ng), [len(ds) for ds in dts_of])
        gt_group = np.repeat(np.arange(ng), [len(gs) for gs in gts_of])
        video_of = {v: i for i, v in enumerate(vids)}
        group_video = np.array([video_of[v] for v, _ in groups], dtype=np.int64)
        src_dt = all_dt[0].source if all_dt else "<results>"

        def dt_error(n: int, t: int, reason: str) -> Exception:
            return EvalInputError(f"{src_dt}: entry {all_dt[n].index}: segmentations[{t}]: {reason}")

        def gt_error(n: int, t: int, reason: str) -> Exception:
            return EvalInputError(
                f"{self.gt.source}: annotations[{all_gt[n].index}]: segmentations[{t}]: {reason}"
            )

        # Only prediction frames that meet a GT frame of their group are checked and compared; the rest
        # need only an area.
        dt_len = np.array([len(d.frames) for d in all_dt], dtype=np.int64)
        gt_len = np.array([len(g.frames) for g in all_gt], dtype=np.int64)
        tmax = int(max(dt_len.max(initial=0), gt_len.max(initial=0)))
        gt_frames = np.zeros((ng, tmax), dtype=bool)
        for j, g in zip(gt_group.tolist(), all_gt):
            if g.present_t is not None:
                gt_frames[j, g.present_t] = True
            else:
                gt_frames[j, : len(g.frames)] |= [f is not None for f in g.frames]
        need = gt_frames[dt_group] & (np.arange(tmax)[None, :] < dt_len[:, None])
        dm = decode_packed_tracks(  # indexed by the loaders: no loop over frames
            dt_len, [d.present_t for d in all_dt], [d.sizes for d in all_dt], [d.given for d in all_dt],
            dt_error, need_runs=need, find_zero_counts=False,
            known_areas=[d.areas for d in all_dt],
        )  # fmt: skip
        if all(g.present_t is not None for g in all_gt):
            gm = decode_packed_tracks(
                gt_len, [g.present_t for g in all_gt], [g.sizes for g in all_gt], [g.given for g in all_gt],
                gt_error,
            )  # fmt: skip
        else:
            size = self.gt.video_sizes.get(vids[0], (None, None))  # a single video here (see above)
            gm = decode_tracks([g.frames for g in all_gt], gt_error, size)
        # Detection "area": mean of the non-zero frame areas (0 if none), as loadRes.
        dt_areas = dm.area
        nz = (dt_areas > 0).sum(axis=1)
        dt_avg = np.where(nz > 0, dt_areas.sum(axis=1) / np.maximum(nz, 1), 0.0)

        # All (detection, GT) pairs of the same group, in one vectorised IoU pass.
        d0 = g0 = 0
        spans, pd, pg = [], [], []
        for ds, gs in zip(dts_of, gts_of):
            nd, ngt = len(ds), len(gs)
            spans.append((d0, nd, g0, ngt))
            if nd and ngt:
                dd, gg = np.meshgrid(np.arange(d0, d0 + nd), np.arange(g0, g0 + ngt), indexing="ij")
                pd.append(dd.ravel())
                pg.append(gg.ravel())
            d0, g0 = d0 + nd, g0 + ngt
        pd_a = np.concatenate(pd) if pd else np.zeros(0, np.int64)
        pg_a = np.concatenate(pg) if pg else np.zeros(0, np.int64)
        if self.ovis:
            bad = np.nonzero(dm.length[pd_a] != gm.length[pg_a])[0]
            if len(bad):
                d, g = all_dt[pd_a[bad[0]]], all_gt[pg_a[bad[0]]]
                raise EvalInputError(
                    f"{src_dt}: entry {d.index}: field 'segmentations' has {len(d.frames)} frames but GT "
                    f"annotations[{g.index}] has {len(g.frames)} (OVIS requires equal lengths)"
                )
        ious = pair_ious(dm, gm, pd_a, pg_a, dt_group, gt_group, group_video[dt_group], group_video[gt_group])
        pos = 0
        for (_, c), (d0, nd, _g0, ngt), ds, gs in zip(groups, spans, dts_of, gts_of):
            iou = ious[pos : pos + nd * ngt].reshape(nd, ngt)
            pos += nd * ngt
            self._evaluate_group(c, ds, dt_avg[d0 : d0 + nd], gs, iou)

    def _evaluate_group(
        self, cat: object, dts: list[DTTrack], dt_avg: np.ndarray, gts: list[GTTrack], ious: np.ndarray
    ) -> None:
        k = self.cat_index[cat]
        scores = np.array([d.score for d in dts], dtype=np.float64)
        nd = len(dts)
        # [A, D]: outside each area range, both bounds inclusive
        dt_out = (dt_avg[None, :] < _AREA_LO[:, None]) | (dt_avg[None, :] > _AREA_HI[:, None])
        if not gts:  # detections only (often): all unmatched, ignored where outside the area range
            none = np.zeros((len(IOU_THRESHOLDS), nd), dtype=bool)
            outs = np.repeat(dt_out[:, None, :], len(IOU_THRESHOLDS), axis=1)  # [A, T, D]
            for a in range(len(AREA_RANGES)):
                for o in range(len(self.occ_labels)):
                    self.entries[k][a][o].append(_Entry(scores, none, outs[a], 0))
            return
        cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        g_area = np.array([g.avg_area for g in gts], dtype=np.float64)
        # [A, G]: GT outside each area range (also crowd GT)
        g_out = (g_area[None, :] < _AREA_LO[:, None]) | (g_area[None, :] > _AREA_HI[:, None])
        g_out |= np.array([g.ignore for g in gts], dtype=bool)[None, :]
        if len(self.occ_labels) > 1:
            g_occ = np.array([g.occ_score for g in gts], dtype=np.float64)
        for a in range(len(AREA_RANGES)):
            for o, olab in enumerate(self.occ_labels):
                out = g_out[a]
                if olab != "all":
                    olo, ohi = OCCLUSION_RANGES[olab]
                    out = out | (g_occ < olo) | (g_occ > ohi)
                flags = tuple(out.tolist())
                if flags not in cache:  # matching depends on the area/occlusion range only through these
                    cache[flags] = _match(ious, gts, flags, nd)
                tp, ig = cache[flags]
                ignored = ig | (~tp & dt_out[a][None, :])
                npig = len(flags) - int(out.sum())
                self.entries[k][a][o].append(_Entry(scores, tp, ignored, npig))

    # ---------------------------------------------------------------- accumulate / summarize
    def _accumulate(self, parts: Sequence[list]) -> tuple[np.ndarray, np.ndarray]:
        """Precision [T, R, K, A, O, M] and recall [T, K, A, O, M] from the batches' packed entries (in video
        order)."""
        T, R, K = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(self.gt.category_ids)
        A, O, M = len(AREA_RANGES), len(self.occ_labels), len(MAX_DETS)
        precision = -np.ones((T, R, K, A, O, M))
        recall = -np.ones((T, K, A, O, M))
        for k in range(K):
            for a in range(A):
                for o in range(O):
                    ps = [p[k][a][o] for p in parts if p[k][a][o] is not None]
                    if not ps:
                        continue
                    npig = sum(p.npig for p in ps)
                    if npig == 0:
                        continue
                    scores = np.concatenate([p.scores for p in ps])
                    tp = np.concatenate([p.tp for p in ps], axis=1)
                    ig = np.concatenate([p.ignored for p in ps], axis=1)
                    rank = np.concatenate([p.rank for p in ps])
                    for m, max_det in enumerate(MAX_DETS):
                        keep = rank < max_det
                        p, r = _precision_recall(scores[keep], tp[:, keep], ig[:, keep], npig)
                        precision[:, :, k, a, o, m] = p
                        recall[:, k, a, o, m] = r
        return precision, recall

    def _summarize(self, precision: np.ndarray, recall: np.ndarray) -> EvalResult:
        names = OVIS_STATS if len(self.occ_labels) > 1 else YTVIS_STATS
        area_idx = {lab: i for i, lab in enumerate(AREA_RANGES)}
        occ_idx = {lab: i for i, lab in enumerate(self.occ_labels)}
        stats = {}
        for name in names:
            is_ap, thr, area, occ, max_det = _STAT_DEFS[name]
            s = precision if is_ap else recall
            if thr is not None:
                s = s[np.where(thr == IOU_THRESHOLDS)[0]]
            m = MAX_DETS.index(max_det)
            s = s[..., area_idx[area], occ_idx[occ], m]
            valid = s[s > -1]
            stats[name] = float(np.mean(valid)) if len(valid) else -1.0
        per_cat = {}
        for k, c in enumerate(self.gt.category_ids):
            p = precision[:, :, k, 0, 0, -1]
            per_cat[c] = float(np.mean(p[p > -1])) if (p > -1).any() else -1.0
        return EvalResult(
            stats=stats,
            precision=precision,
            recall=recall,
            category_ids=list(self.gt.category_ids),
            category_names=dict(self.gt.category_names),
            per_category_ap=per_cat,
        )


def _match(ious: np.ndarray, gts: list[GTTrack], flags: tuple, nd: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of ``evaluateVid`` at every IoU threshold.

    Args:
        ious: float64 [D, G], detections in score order, GT in file order.
        flags: per GT, ignored in this area/occlusion range.

    Returns:
        ``(tp, ignored)`` bool [T, D]: matched to a GT with non-zero id (a match to id 0 is stored as 0 and
        counts as a false positive), and ignored because matched to an ignored GT.
    """
    T = len(IOU_THRESHOLDS)
    tp = np.zeros((T, nd), dtype=bool)
    ig = np.zeros((T, nd), dtype=bool)
    ng = len(gts)
    if nd == 0 or ng == 0:
        return tp, ig
    if ng == 1:  # the usual case, without the loops: the first detection at or above a threshold takes it
        hit = ious[:, 0][None, :] >= np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[:, None]
        if not gts[0].crowd:  # a matched regular GT is skipped by the later detections
            hit &= np.cumsum(hit, axis=1) == 1
        return hit & (gts[0].ann_id != 0), hit & bool(flags[0])
    order = np.argsort(np.array(flags, dtype=np.int64), kind="mergesort")  # non-ignored GT first, stable
    g_ig = [flags[j] for j in order]
    g_crowd = [gts[j].crowd for j in order]
    g_nonzero = [gts[j].ann_id != 0 for j in order]
    rows = ious[:, order].tolist()
    for ti, thr in enumerate(IOU_THRESHOLDS.tolist()):
        matched = [False] * ng
        for di in range(nd):
            best, m = min(thr, 1 - 1e-10), -1
            row = rows[di]
            for gi in range(ng):
                if matched[gi] and not g_crowd[gi]:
                    continue
                if m > -1 and not g_ig[m] and g_ig[gi]:
                    break  # already matched a regular GT; the rest are ignored ones
                if row[gi] < best:
                    continue
                best, m = row[gi], gi  # equal IoU: the later GT wins, as the official loop
            if m == -1:
                continue
            ig[ti, di] = g_ig[m]
            tp[ti, di] = g_nonzero[m]
            matched[m] = True
    return tp, ig


def _precision_recall(
    scores: np.ndarray, tp: np.ndarray, ignored: np.ndarray, npig: int
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated precision at the 101 recall thresholds [T, R] and final recall [T] of one (k, a, o, m)."""
    T, R = tp.shape[0], len(RECALL_THRESHOLDS)
    nd = len(scores)
    if nd == 0:
        return np.zeros((T, R)), np.zeros(T)
    inds = np.argsort(-scores, kind="mergesort")  # ties: earlier video first, then score order within a video
    tp, ignored = tp[:, inds], ignored[:, inds]
    tp_sum = np.cumsum(tp & ~ignored, axis=1).astype(np.float64)
    fp_sum = np.cumsum(~tp & ~ignored, axis=1).astype(np.float64)
    rc = tp_sum / npig
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # precision envelope (same values as the loop)
    q = np.zeros((T, R))
    for t in range(T):
        idx = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
        ok = idx < nd
        q[t, ok] = pr[t, idx[ok]]
    return q, rc[:, -1]
