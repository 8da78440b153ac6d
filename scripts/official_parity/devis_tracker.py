"""Official DeVIS clip-tracker results on hand-made per-clip results (issue 14).

Feeds ``src/models/tracker.py:Tracker`` (with ``src/models/matcher.py:HungarianInferenceMatcher``) of the
official DeVIS repository a fake model that returns prepared per-clip results, and saves the inputs and the
final tracks (order, score, category, per-frame RLE) to ``tests/fixtures/official_parity/devis_tracker.pt``.

Each case is one video: its length n (clips of T = 6 with stride S = 4: several clips, a last clip that
overlaps more, a video shorter than T), the tracker settings (per-class matching on / off, each IoU variant,
the score and category policies, the thresholds, the centre cost) and, per clip, k candidates with per-frame
scores, labels, boxes, normalised centres and mask logits at the original size for u unique slots
(``inverse_idxs``). The candidates follow a few moving objects in a shuffled order, with noise, so that the
stitching has something to decide; some change class between clips so that per-class matching kills and
starts tracks.

Usage (needs the official mirror, never committed):
``PYTHONPATH=. python scripts/official_parity/devis_tracker.py``
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _official import AssignmentMargins, extract, save_fixture, stub_packages  # noqa: E402

REPO = "acaelles97+DeVIS"
T, S, H, W = 6, 4, 16, 20
BASE = {
    "mask_cost": 1.0, "class_cost": 1.0, "score_cost": 1.0, "center_cost": 0.0, "per_class_matching": False,
    "binary_mask_iou": False, "frame_average_iou": False, "final_class_policy": "most_common",
    "final_score_policy": "mean", "min_frame_score": 0.001, "min_detections": 1, "min_track_score": 0.002,
}  # fmt: skip
CASES = {
    # name: (video length, k candidates, number of objects, overrides)
    "soft_volumetric": (12, 4, 4, {}),
    "binary_volumetric": (12, 4, 4, {"binary_mask_iou": True}),
    "soft_frame_average": (12, 4, 4, {"frame_average_iou": True}),
    "binary_frame_average": (12, 4, 4, {"binary_mask_iou": True, "frame_average_iou": True}),
    "long_center_median": (22, 5, 4, {"center_cost": 1.0, "final_score_policy": "median"}),
    "score_weighting_thresholds": (
        14, 5, 3, {"final_class_policy": "score_weighting", "min_frame_score": 0.25, "min_track_score": 0.5,
                   "min_detections": 5}),
    "category_tie": (12, 2, 2, {}),  # hand-made: a track with as many frames of class 11 as of class 3
    "short_video": (4, 4, 3, {}),
    "per_class": (16, 5, 4, {"per_class_matching": True}),
    "per_class_binary": (18, 6, 5, {"per_class_matching": True, "binary_mask_iou": True}),
    "per_class_frame_average": (
        12, 4, 4, {"per_class_matching": True, "frame_average_iou": True, "center_cost": 0.5}),
}  # fmt: skip
CLASSES = (3, 11, 19, 5, 27, 1)  # ids that collide in a small Python set: the official iterates sets


def official_clips(n: int) -> tuple[list[list[int]], int, int | None]:
    """``VISValDataset.parse_video_into_clips`` for one video: (clips, last_real_idx, real_video_length)."""
    names = list(range(n))
    if n < T:
        frames, j = list(names), 1
        while len(frames) < T:
            frames.extend(names[::-1][1:] if j % 2 else names[1:])
            j += 1
        return [frames[:T]], 0, n
    if n == T:
        return [names], 0, None
    clips = [names[:T]]
    start = T - (T - S)
    while start + T < n:
        clips.append(names[start : start + T])
        start += S
    return clips + [names[-T:]], start - (n - 1 - T) - 1, None


def make_clip(g: torch.Generator, frames: list[int], k: int, num_objects: int, clip_index: int) -> dict:
    """k candidates of one clip: objects (moving discs) in a shuffled order, one duplicate slot."""
    yy, xx = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    obj = torch.arange(k) % num_objects
    obj = obj[torch.randperm(k, generator=g)]
    f = torch.tensor(frames).float()[:, None]  # [T, 1]
    cx = (3 + 4 * obj.float())[None] + 0.6 * f + 0.5 * torch.randn(len(frames), k, generator=g)
    cy = (4 + 2 * obj.float())[None] + 0.3 * f + 0.5 * torch.randn(len(frames), k, generator=g)
    radius = 3 + torch.rand(k, generator=g)
    dist = ((xx[None, None] - cx[..., None, None]) ** 2 + (yy[None, None] - cy[..., None, None]) ** 2).sqrt()
    logits = 2.0 * (radius[None, :, None, None] - dist) + 0.7 * torch.randn(dist.shape, generator=g)
    # slot 1 shares slot 0's mask (one (slot, class) pair gives two candidates: the ``inverse_idxs``)
    inverse = torch.arange(k)
    inverse[1] = 0
    unique, inverse = torch.unique(inverse, return_inverse=True)
    masks = logits[:, unique]  # [T, u, H, W]
    scores = torch.rand(len(frames), k, generator=g) * (0.3 + 0.7 * torch.rand(k, generator=g))
    label_of = torch.tensor(CLASSES)[obj]
    flip = torch.rand(k, generator=g) < 0.3 * (clip_index > 0)
    label_of = torch.where(flip, torch.tensor(CLASSES)[(obj + 1) % len(CLASSES)], label_of)
    labels = label_of[None].expand(len(frames), k).clone()
    boxes = torch.stack([cx - radius, cy - radius, cx + radius, cy + radius], -1)  # [T, k, 4] pixels
    centers = torch.stack([cx / W, cy / H], -1)
    return {
        "scores": scores, "labels": labels, "boxes": boxes, "masks": masks, "center_points": centers,
        "inverse_idxs": inverse,
    }  # fmt: skip


def tie_clips() -> list[dict]:
    """Two far-apart discs over 3 clips; track 0 ends with 6 frames of class 11 and 6 of class 3.

    Clip 0 (frames 0-5) says 11 at 0.5; clip 1 (4-9) says 3 at 0.9 and wins frames 4-5; clip 2 (6-11, the
    last clip, overlapping 4 frames) says 11 at 0.1 on its overlap (loses) and 0.5 on frames 10-11.
    """
    yy, xx = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    disc = torch.stack([3.0 - ((xx - cx) ** 2 + (yy - 8) ** 2).sqrt() for cx in (4.0, 15.0)])  # [2, H, W]
    clips = []
    for labels0, scores0 in ((11, [0.5] * T), (3, [0.9] * T), (11, [0.1] * 4 + [0.5] * 2)):
        scores = torch.tensor([scores0, [0.6] * T]).t().contiguous()  # [T, 2]
        centers = torch.tensor([[4 / W, 0.5], [15 / W, 0.5]])[None].repeat(T, 1, 1)
        clips.append({
            "scores": scores, "labels": torch.tensor([[labels0, 5]] * T),
            "boxes": torch.tensor([[1.0, 5, 7, 11], [12, 5, 18, 11]])[None].repeat(T, 1, 1),
            "masks": disc[None].repeat(T, 1, 1, 1).contiguous(), "center_points": centers,
            "inverse_idxs": torch.arange(2),
        })  # fmt: skip
    return clips


def run_official(tracker_mod, matcher_mod, n: int, clips: list[dict], settings: dict) -> list[dict]:
    clip_frames, last_real_idx, real_len = official_clips(n)
    clip_length = T if real_len is None else real_len
    cut = [{key: (v if key == "inverse_idxs" else v[:clip_length]) for key, v in c.items()} for c in clips]

    class FakeModel:
        """Returns the prepared result of the next clip (the official model's output dict)."""

        def __init__(self) -> None:
            self.calls = 0

        def __call__(self, frames, video_info):
            assert video_info["clip_length"] == clip_length
            out = cut[self.calls]
            self.calls += 1
            return out

    class FakeVideo(torch.utils.data.Dataset):
        """``VideoClip`` with a dummy frame tensor per clip and the attributes the tracker reads."""

        video_id, cat_names, original_size, images_folder = 1, None, (H, W), ""

        def __init__(self) -> None:
            self.final_video_length, self.real_video_length = n, real_len
            self.last_real_idx, self.video_clips = last_real_idx, clip_frames

        def __len__(self) -> int:
            return len(clip_frames)

        def __getitem__(self, i: int):
            return torch.zeros(T, 3, 2, 2)

    matcher = matcher_mod.HungarianInferenceMatcher(
        overlap_window=T - S, cost_class=settings["class_cost"], cost_mask_iou=settings["mask_cost"],
        score_cost=settings["score_cost"], center_distance_cost=settings["center_cost"],
        use_frame_average_iou=settings["frame_average_iou"], use_binary_mask_iou=settings["binary_mask_iou"],
    )  # fmt: skip
    tracker_cfg = {
        "per_class_matching": settings["per_class_matching"],
        "track_min_detection_score": settings["min_frame_score"],
        "track_min_score": settings["min_track_score"],
        "track_min_detections": settings["min_detections"],
        "final_class_policy": settings["final_class_policy"],
        "final_score_policy": settings["final_score_policy"],
    }
    viz = {"out_viz_path": "", "save_clip_viz": False, "merge_tracks": False}
    model = FakeModel()
    tracker = tracker_mod.Tracker(model, matcher, tracker_cfg, viz, True, T, T - S, True, 0)
    with AssignmentMargins(matcher_mod) as margins:
        tracks, _ = tracker(FakeVideo(), "cpu", [])
    assert model.calls == len(clip_frames)
    return tracks, margins.smallest


def main() -> None:
    root, commit = extract(REPO)
    stub_packages(root, "src", "src.models", "src.util")
    # src/util/misc.py and viz_utils.py import torchvision / visdom / cv2: only these names are used
    misc = types.ModuleType("src.util.misc")
    misc.nested_dict_to_namespace = lambda d: types.SimpleNamespace(**d)
    viz = types.ModuleType("src.util.viz_utils")
    for what in ("tracks_independently", "clips_after_processing", "results_merged"):
        setattr(viz, f"visualize_{what}", lambda *a, **k: None)
    box_ops = types.ModuleType("src.util.box_ops")  # imported by matcher.py, unused by the inference matcher
    box_ops.box_cxcywh_to_xyxy = box_ops.generalized_box_iou = box_ops.multi_giou = None
    sys.modules.update({"src.util.misc": misc, "src.util.viz_utils": viz, "src.util.box_ops": box_ops})
    import src.models.matcher as matcher_mod  # noqa: PLC0415 (the official code, from the temp copy)
    import src.models.tracker as tracker_mod  # noqa: PLC0415

    g = torch.Generator().manual_seed(0)
    data: dict = {"T": T, "S": S, "H": H, "W": W, "cases": {}}
    for name, (n, k, num_objects, overrides) in CASES.items():
        settings = {**BASE, **overrides}
        clip_frames, _, _ = official_clips(n)
        clips = [make_clip(g, frames, k, num_objects, i) for i, frames in enumerate(clip_frames)]
        if name == "category_tie":
            clips = tie_clips()
        tracks, margin = run_official(tracker_mod, matcher_mod, n, clips, settings)
        data["cases"][name] = {
            "n": n, "settings": settings, "clips": clips, "tracks": tracks, "assignment_margin": margin,
        }  # fmt: skip
        print(f"{name}: {len(clip_frames)} clips, {len(tracks)} tracks, assignment margin {margin:.4f}")
    save_fixture("devis_tracker.pt", data, commit, REPO)


if __name__ == "__main__":
    main()
