"""Large-scale jitter (Mask2Former's ``coco_instance_lsj``, VITA's ``LSJ_AUG``): geometry, targets, config."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidseg.data import (
    ClipTrainDataset,
    DatasetError,
    build_augmentation,
    build_collate_fn,
    build_train_dataset,
    collate_clips,
)
from vidseg.data.clip_dataset import build_clip_targets
from vidseg.data.large_scale_jitter import LargeScaleJitter, LSJDraw
from vidseg.data.transforms import ClipAugmentation
from vidseg.data.ytvis import load_ytvis_json
from vidseg.models import build_model, load_config
from vidseg.structures.box_ops import box_cxcywh_to_xyxy

RED = ((10, 30), (15, 50))  # (y0, y1), (x0, x1) of the red instance
BLUE = ((45, 58), (70, 88))  # near the bottom-right corner


def _clip(t=3, h=60, w=90):
    """Identical frames: a red and a blue rectangle (the two masks) on a horizontal green gradient."""
    img = torch.zeros(3, h, w)
    img[1] = torch.linspace(0, 120, w)[None, :].expand(h, w)
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    for n, ((y0, y1), (x0, x1)) in enumerate((RED, BLUE)):
        masks[n, y0:y1, x0:x1] = True
        img[:, masks[n]] = torch.tensor([[255.0], [0.0], [0.0]] if n == 0 else [[0.0], [0.0], [255.0]])
    return img.expand(t, 3, h, w).clone(), masks[:, None].expand(2, t, h, w).clone()


def _color(frames, channel):
    """``[T, H, W]`` pixels that are (close to) pure red (channel 0) or pure blue (channel 2)."""
    others = [c for c in range(3) if c != channel]
    return (frames[:, channel] > 160) & (frames[:, others[0]] < 90) & (frames[:, others[1]] < 90)


def _edge(m):
    """``[T, H, W]`` bool: the pixels within one pixel of the boundary of ``m``."""
    x = m.float()[:, None]
    dilated = F.max_pool2d(x, 3, 1, 1)[:, 0] > 0
    eroded = -F.max_pool2d(-x, 3, 1, 1)[:, 0] > 0
    return dilated & ~eroded


def _targets(masks):
    n = masks.shape[0]
    return build_clip_targets(masks, torch.arange(n), torch.arange(n), torch.zeros(n, dtype=torch.bool))


def test_scale_is_drawn_in_range_and_the_resized_image_fits_the_scaled_square():
    aug = LargeScaleJitter(image_size=128, min_scale=0.1, max_scale=2.0)
    rng = np.random.default_rng(0)
    scales = []
    for h, w in [(60, 90), (90, 60), (100, 100), (30, 200)] * 50:
        d = aug.draw(h, w, rng)
        scales.append(d.scale)
        assert 0.1 <= d.scale <= 2.0
        side = 128 * d.scale
        # Aspect kept; the image fits the side x side square and touches it on one axis (up to rounding).
        assert max(d.resized[0] / side, d.resized[1] / side) == pytest.approx(1.0, abs=1.0 / min(d.resized))
        assert d.resized[0] / d.resized[1] == pytest.approx(h / w, rel=0.1)
        # Offsets stay inside the resized image; the valid region is the part that fits the output.
        assert 0 <= d.offset[0] <= max(d.resized[0] - 128, 0) and 0 <= d.offset[1] <= max(
            d.resized[1] - 128, 0
        )
        assert d.valid == (min(d.resized[0], 128), min(d.resized[1], 128))
    # The draws cover the range (zoom-out and zoom-in both happen).
    assert min(scales) < 0.2 and max(scales) > 1.9 and 0.9 < float(np.mean(scales)) < 1.2


@pytest.mark.parametrize("seed", range(6))
def test_output_is_always_the_fixed_square_padded_with_128_and_the_same_on_every_frame(seed):
    frames, masks = _clip()
    aug = LargeScaleJitter(image_size=96)
    out, out_masks, valid = aug(frames, masks, np.random.default_rng(seed))
    assert out.shape == (3, 3, 96, 96) and out_masks.shape == (2, 3, 96, 96)
    vh, vw = valid
    pad = torch.ones(96, 96, dtype=torch.bool)
    pad[:vh, :vw] = False
    assert torch.all(out[..., pad] == 128.0)
    assert not out_masks[..., pad].any()
    # One draw per clip: identical input frames stay identical.
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])
    assert torch.equal(out_masks[:, 0], out_masks[:, 2])


@pytest.mark.parametrize("seed", range(8))
def test_masks_and_boxes_follow_the_pixels(seed):
    frames, masks = _clip()
    out, out_masks, _ = LargeScaleJitter(image_size=96, min_scale=0.5)(
        frames, masks, np.random.default_rng(seed)
    )
    tg = _targets(out_masks)
    for n, channel in ((0, 0), (1, 2)):
        color = _color(out, channel)
        if not (tg.ids == n).any():  # cropped away: no pixel of that colour is left either
            assert color.sum() <= 4
            continue
        m = tg.masks[int(torch.nonzero(tg.ids == n))]
        # The mask is its rectangle's pixels: they differ only on the mask's resampled edge.
        assert (m & color).sum() > 0.5 * m.sum()
        assert not ((m ^ color) & ~_edge(m)).any(), seed
        # Its box (normalised cxcywh w.r.t. the 96x96 output) is the box of those pixels.
        ys, xs = torch.nonzero(color[0], as_tuple=True)
        box = box_cxcywh_to_xyxy(tg.boxes[int(torch.nonzero(tg.ids == n)), 0]) * 96
        ref = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        assert torch.allclose(box, ref, atol=2.0), (box, ref)


def test_flip_mirrors_image_and_masks_together():
    frames, masks = _clip(t=1)
    aug = LargeScaleJitter(image_size=90)
    plain = aug.apply(frames, masks, LSJDraw(False, 1.0, (60, 90), (0, 0), (60, 90)))
    flipped = aug.apply(frames, masks, LSJDraw(True, 1.0, (60, 90), (0, 0), (60, 90)))
    assert torch.equal(flipped[0][..., :60, :], plain[0][..., :60, :].flip(-1))
    assert torch.equal(flipped[1][..., :60, :], plain[1][..., :60, :].flip(-1))
    assert flipped[1][0, 0, RED[0][0], 90 - RED[1][0] - 1] and not flipped[1][0, 0, RED[0][0], RED[1][0]]


def test_an_instance_cropped_out_of_the_window_is_dropped_from_the_targets():
    frames, masks = _clip()
    aug = LargeScaleJitter(image_size=64)
    # Zoom in 2x (120x180) and keep the top-left 64x64 window: red is inside, blue (bottom right) is not.
    out, out_masks, valid = aug.apply(frames, masks, LSJDraw(False, 2.0, (120, 180), (0, 0), (64, 64)))
    assert valid == (64, 64) and out.shape[-2:] == (64, 64)
    tg = _targets(out_masks)
    assert tg.ids.tolist() == [0] and tg.masks.shape == (1, 3, 64, 64)
    assert tg.masks[0, 0, 2 * RED[0][0], 2 * RED[1][0]] and not _color(out, 2).any()
    # The window moved to the bottom right keeps blue and loses red.
    out, out_masks, _ = aug.apply(frames, masks, LSJDraw(False, 2.0, (120, 180), (56, 116), (64, 64)))
    assert _targets(out_masks).ids.tolist() == [1] and not _color(out, 0).any()


def test_bad_scales_are_refused():
    with pytest.raises(ValueError, match="MIN_SCALE <= MAX_SCALE"):
        LargeScaleJitter(min_scale=2.0, max_scale=0.5)


# ------------------------------------------------------------------------------------------ config selection
def test_mask2former_coco_configs_select_lsj_with_the_official_sizes_and_the_video_frame_configs_do_not():
    for name in ("maskformer2_R50_bs16_50ep.yaml", "maskformer2_swin_large_IN21k_384_bs16_100ep.yaml"):
        aug = build_augmentation(load_config(f"mask2former/{name}"))
        assert aug == LargeScaleJitter(image_size=1024, min_scale=0.1, max_scale=2.0, flip=True), name
    for name in ("frames_R50_ovis.yaml", "frames_R50_ytvis19.yaml"):
        assert isinstance(build_augmentation(load_config(f"mask2former/{name}")), ClipAugmentation), name
        on = load_config(f"mask2former/{name}", ["INPUT.LSJ_AUG.ENABLED", "True"])
        assert build_augmentation(on) == LargeScaleJitter(image_size=768), name  # VITA's video LSJ size
    # Without the keys (a method that does not add them) and by default: the clip pipeline.
    assert isinstance(build_augmentation(load_config("quickstart/mask2former_tiny.yaml")), ClipAugmentation)
    assert isinstance(build_augmentation(load_config("quickstart/toyvis_synth.yaml")), ClipAugmentation)


def test_vita_lsj_aug_keys_select_lsj_and_win_over_the_mapper_name():
    base = "quickstart/mask2former_tiny.yaml"
    aug = build_augmentation(
        load_config(
            base,
            [
                "INPUT.LSJ_AUG.ENABLED",
                "True",
                "INPUT.LSJ_AUG.IMAGE_SIZE",
                "768",
                "INPUT.RANDOM_FLIP",
                "none",
            ],
        )
    )
    assert aug == LargeScaleJitter(image_size=768, min_scale=0.1, max_scale=2.0, flip=False)
    both = load_config(
        base,
        [
            "INPUT.DATASET_MAPPER_NAME",
            "coco_instance_lsj",
            "INPUT.IMAGE_SIZE",
            "512",
            "INPUT.LSJ_AUG.ENABLED",
            "True",
        ],
    )
    assert build_augmentation(both).image_size == 1024  # LSJ_AUG.IMAGE_SIZE
    m2f = load_config(base, ["INPUT.DATASET_MAPPER_NAME", "coco_instance_lsj", "INPUT.MIN_SCALE", "0.5"])
    assert build_augmentation(m2f) == LargeScaleJitter(1024, 0.5, 2.0)
    plain = load_config(base, ["INPUT.DATASET_MAPPER_NAME", "mask_former_instance"])
    assert isinstance(build_augmentation(plain), ClipAugmentation)


def test_bad_lsj_keys_are_one_clear_dataset_error():
    base = "quickstart/mask2former_tiny.yaml"
    with pytest.raises(
        DatasetError, match="INPUT.DATASET_MAPPER_NAME must be 'coco_instance_lsj'.*'panoptic'"
    ):
        build_augmentation(load_config(base, ["INPUT.DATASET_MAPPER_NAME", "panoptic"]))
    with pytest.raises(DatasetError, match=r"INPUT.LSJ_AUG: .*MIN_SCALE <= MAX_SCALE, got 1024, 3.0, 2.0"):
        build_augmentation(
            load_config(base, ["INPUT.LSJ_AUG.ENABLED", "True", "INPUT.LSJ_AUG.MIN_SCALE", "3.0"])
        )


# ------------------------------------------------------------------------------------------ dataset and batch
def test_dataset_items_are_fixed_size_with_their_pad_mask_and_the_batch_keeps_it(synth_dir):
    recs = load_ytvis_json(synth_dir / "train" / "instances.json", synth_dir / "train" / "JPEGImages")[0]
    ds = ClipTrainDataset(recs, 2, augmentation=LargeScaleJitter(image_size=64, min_scale=0.2, max_scale=1.0))
    items = [ds[i] for i in range(4)]
    for it in items:
        assert it["frames"].shape == (2, 3, 64, 64)
        vh, vw = it["meta"]["image_size"]
        assert vh <= 64 and vw <= 64 and (vh, vw) != (64, 64)  # scale <= 1: the image never fills the square
        assert it["pad_mask"].shape == (2, 64, 64) and not it["pad_mask"][:, :vh, :vw].any()
        assert it["pad_mask"][:, vh:].all() and it["pad_mask"][:, :, vw:].all()
        assert it["targets"].masks.shape[-2:] == (64, 64) and not it["targets"].masks[..., vh:, :].any()
    batch = collate_clips(items, size_divisibility=32)
    assert batch.frames.shape == (4, 2, 3, 64, 64)
    assert torch.equal(batch.pad_mask, torch.stack([it["pad_mask"] for it in items]))
    # Items of the other augmentations carry no pad_mask of their own.
    assert "pad_mask" not in ClipTrainDataset(recs, 2, augmentation=None)[0]


def test_lsj_config_trains_the_tiny_mask2former_on_fixed_size_batches(synth_dir):
    """Config -> dataset -> collate -> model -> loss, with ``coco_instance_lsj`` at a CPU size."""
    torch.manual_seed(0)
    cfg = load_config(
        "quickstart/mask2former_tiny.yaml",
        [
            "DATASETS.TRAIN", "('custom_train',)",
            "DATASETS.CUSTOM_TRAIN_JSON", str(synth_dir / "train" / "instances.json"),
            "DATASETS.CUSTOM_TRAIN_IMAGES", str(synth_dir / "train" / "JPEGImages"),
            "INPUT.NUM_FRAMES", "2",
            "INPUT.DATASET_MAPPER_NAME", "coco_instance_lsj",
            "INPUT.IMAGE_SIZE", "64",
        ],
    )  # fmt: skip
    ds = build_train_dataset(cfg)
    batch = build_collate_fn(cfg)([ds[0], ds[1]])
    assert batch.frames.shape[-2:] == (64, 64) and batch.pad_mask.any()
    bundle = build_model(cfg)
    losses = bundle.criterion(bundle.model.train()(batch), batch.targets)
    total = bundle.criterion.criterion.weighted_total(losses)
    assert torch.isfinite(total)
    total.backward()
