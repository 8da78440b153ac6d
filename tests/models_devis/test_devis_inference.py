"""Per-clip inference of the video model: top-k trajectories of a clip; videos longer or shorter than T."""

from types import SimpleNamespace

import torch

from vidseg.data.frame_sampling import overlapping_clips
from vidseg.models import load_config
from vidseg.models.devis.build import build_devis
from vidseg.models.devis.clip_inference import new_positions
from vidseg.models.devis.clip_postprocess import clip_topk
from vidseg.structures.masks import decode_segmentation


def test_clip_topk_scores_trajectories_on_the_real_frames():
    t, nq, k = 3, 4, 2
    logits = torch.full((t, nq, k), -6.0)
    logits[:2, 1, 0] = 3.0  # slot 1 is class 0 in the two real frames
    logits[2, 3, 1] = 8.0  # slot 3 fires only in the padded third frame
    boxes = torch.rand(t * nq, 4)
    top = clip_topk(logits.view(t * nq, k), boxes, t, 2, num_valid_frames=2)
    assert (top["slots"][0].item(), top["labels"][0].item()) == (1, 0)
    assert top["scores"][0].item() == torch.sigmoid(torch.tensor(3.0)).item()
    assert top["frame_scores"].shape == (t, 2) and top["boxes"].shape == (t, 2, 4)
    assert torch.equal(top["boxes"][:, 0], boxes.view(t, nq, 4)[:, 1])
    every = clip_topk(logits.view(t * nq, k), boxes, t, 1)  # all three frames count
    assert every["slots"][0].item() == 1  # mean over 3 frames: slot 1 still first (2 high frames of 3)


def test_new_positions_cover_each_frame_once():
    for n in (2, 3, 7, 9):
        clips = overlapping_clips(n, 3, 3)
        covered = [c.indices[p] for i, c in enumerate(clips) for p in new_positions(c, i, 3, 3)]
        assert covered == list(range(n)), n


class _Frames:
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.x[i]


def test_videos_longer_and_shorter_than_a_clip():
    torch.manual_seed(0)
    cfg = load_config("quickstart/devis_tiny.yaml", ["MODEL.NUM_CLASSES", "2", "TEST.NUM_OUT", "4"])
    bundle = build_devis(cfg)
    model = bundle.model.eval()
    for n in (7, 2):
        video = SimpleNamespace(
            video_id=3,
            frames=_Frames(torch.randn(n, 3, 40, 56)),
            orig_size=(80, 112),
            image_size=(40, 56),
            length=n,
        )
        result = bundle.inference(model, video)
        # stitched by the clip tracker (T=3, STRIDE 2): NUM_OUT video tracks whatever the number of clips
        assert len(result.tracks) == 4
        per_frame = [sum(tr.masks[f] is not None for tr in result.tracks) for f in range(n)]
        assert all(0 < c <= 4 for c in per_frame)  # a frame below MIN_FRAME_SCORE may be dropped
        assert len(result.tracks[0].masks) == n
        tr = result.tracks[0]
        f = next(i for i, m in enumerate(tr.masks) if m is not None)
        assert decode_segmentation(tr.masks[f], 80, 112).shape == (80, 112)
        assert tr.frame_scores[f] is not None and len(tr.boxes[f]) == 4
        x, y, w, h = tr.boxes[f]
        assert 0 <= x <= x + w <= 112 and 0 <= y <= y + h <= 80  # clamped to the original size


def test_inference_counts_frames_for_the_fps():
    torch.manual_seed(0)
    cfg = load_config("quickstart/devis_tiny.yaml", ["MODEL.NUM_CLASSES", "2", "TEST.NUM_OUT", "2"])
    bundle = build_devis(cfg)
    video = SimpleNamespace(
        video_id=1, frames=_Frames(torch.randn(5, 3, 32, 32)), orig_size=(32, 32), image_size=(32, 32),
        length=5,
    )
    bundle.inference(bundle.model, video)
    bundle.inference(bundle.model, video)
    assert bundle.inference.timing["frames"] == 10
    assert bundle.inference.timing["model_s"] > 0 and bundle.inference.fps > 0


def test_clips_reach_the_model_unpadded():
    """The official VIS test set feeds each clip at its resized size (no size divisibility padding)."""
    torch.manual_seed(0)
    cfg = load_config("quickstart/devis_tiny.yaml", ["MODEL.NUM_CLASSES", "2", "TEST.NUM_OUT", "2"])
    bundle = build_devis(cfg)
    seen = []
    hook = bundle.model.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].frames.shape)))
    video = SimpleNamespace(
        video_id=1, frames=_Frames(torch.randn(4, 3, 37, 50)), orig_size=(74, 100), image_size=(37, 50),
        length=4,
    )
    result = bundle.inference(bundle.model, video)
    hook.remove()
    assert seen and all(s[-2:] == (37, 50) for s in seen)
    assert decode_segmentation(result.tracks[0].masks[0], 74, 100).shape == (74, 100)
