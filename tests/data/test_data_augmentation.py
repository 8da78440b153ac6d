"""Clip-consistent augmentation and the targets built from it."""

import numpy as np
import torch

from vidseg.data.clip_dataset import build_clip_targets
from vidseg.data.transforms import ClipAugmentation, photometric_distort, shortest_edge_size
from vidseg.structures.box_ops import box_cxcywh_to_xyxy, masks_to_boxes


def _static_clip(t=4, h=60, w=90):
    """A clip whose frames are identical: a red rectangle (the mask) on a horizontal gradient."""
    img = torch.zeros(3, h, w)
    img[1] = torch.linspace(0, 200, w)[None, :].expand(h, w)
    img[2] = 60
    m = torch.zeros(h, w, dtype=torch.bool)
    m[10:30, 15:50] = True
    img[0][m], img[1][m], img[2][m] = 255.0, 0.0, 0.0
    return img.expand(t, 3, h, w).clone(), m.expand(1, t, h, w).clone()


def _red(frames):
    return (frames[:, 0] > 160) & (frames[:, 1] < 90) & (frames[:, 2] < 90)  # [T, H, W]


def test_shortest_edge_size():
    assert shortest_edge_size(720, 1280, 360, 640) == (360, 640)
    assert shortest_edge_size(480, 640, 360, 640) == (360, 480)
    # Capped by the long side; the DETR rule rounds the short side first, so the cap can be passed slightly.
    assert shortest_edge_size(100, 1000, 360, 768) == (77, 770)
    assert shortest_edge_size(300, 200, 100, None) == (150, 100)


def test_static_crop_flip_resize_same_on_every_frame_and_masks_follow_pixels():
    frames, masks = _static_clip()
    aug = ClipAugmentation(
        min_sizes=(48, 64, 80),
        max_size=200,
        crop_resize_sizes=(70, 90),
        crop_size=(40, 70),
        photometric=False,
    )
    flips = set()
    for seed in range(12):
        f, m = aug(frames, masks, np.random.default_rng(seed))
        assert f.shape[0] == 4 and m.shape[:2] == (1, 4) and f.shape[-2:] == m.shape[-2:]
        for t in range(1, 4):  # one geometric draw per clip
            torch.testing.assert_close(f[t], f[0])
            assert torch.equal(m[0, t], m[0, 0])
        if m.any():
            red = _red(f)
            agree = (red == m[0]).float().mean()
            assert agree > 0.97, (seed, agree)
        # The gradient runs left->right; a flipped clip runs right->left.
        row = f[0, 1, -1]
        flips.add(bool(row[0] > row[-1]))
    assert flips == {True, False}


def test_moving_crop_moves_and_masks_follow():
    frames, masks = _static_clip(t=5, h=80, w=120)
    aug = ClipAugmentation(
        min_sizes=(60,), max_size=None, crop=True, crop_resize_sizes=(80,), crop_size=(50, 60),
        moving_crop=True, photometric=False, flip=False,
    )  # fmt: skip
    moved = 0
    for seed in range(16):
        f, m = aug(frames, masks, np.random.default_rng(seed))
        if not torch.equal(f[0], f[-1]):
            moved += 1
        for t in range(5):
            if m[0, t].sum() > 20:
                assert (_red(f[t : t + 1])[0] == m[0, t]).float().mean() > 0.97
    assert moved >= 4  # the crop branch is taken with p=0.5, and then the window moves


def test_photometric_is_per_frame_and_bounded():
    frames, _ = _static_clip()
    rng = np.random.default_rng(1)
    out = torch.stack([photometric_distort(fr, rng) for fr in frames])
    assert out.min() >= 0 and out.max() <= 255
    assert any(not torch.equal(out[0], out[t]) for t in range(1, 4))


def test_targets_validity_boxes_and_dropped_instances():
    h, w = 20, 30
    masks = torch.zeros(3, 2, h, w, dtype=torch.bool)
    masks[0, 0, 2:6, 3:9] = True  # valid in frame 0
    masks[0, 1, 0, 0:2] = True  # 2 pixels: invalid (area <= 2)
    masks[1, :, 10:12, 10:12] = True  # 4 pixels in both frames
    masks[2, 0, 0, 0] = True  # never valid: dropped
    tg = build_clip_targets(
        masks, torch.tensor([0, 1, 2]), torch.tensor([11, 12, 13]), torch.zeros(3, dtype=torch.bool)
    )
    assert tg.ids.tolist() == [11, 12] and tg.labels.tolist() == [0, 1]
    assert tg.valid.tolist() == [[True, False], [True, True]]
    assert not tg.masks[0, 1].any() and torch.equal(tg.boxes[0, 1], torch.zeros(4))
    xyxy = box_cxcywh_to_xyxy(tg.boxes[tg.valid]) * torch.tensor([w, h, w, h])
    torch.testing.assert_close(xyxy, masks_to_boxes(tg.masks[tg.valid]))
    torch.testing.assert_close(xyxy[0], torch.tensor([3.0, 2.0, 9.0, 6.0]))


def test_vistr_chain_ends_at_its_output_size_with_masks_following():
    frames, masks = _static_clip(t=3, h=120, w=180)
    aug = ClipAugmentation(
        min_sizes=(160, 192), max_size=300, crop_resize_sizes=(140,), crop_size=(100, 130),
        photometric=False, flip=False, vistr=True, out_size=60, out_max_size=90,
    )
    sizes, checked = set(), 0
    for seed in range(6):
        f, m = aug(frames, masks, np.random.default_rng(seed))
        h, w = f.shape[-2:]
        assert min(h, w) <= 60 and max(h, w) <= 91 and m.shape[-2:] == (h, w)  # always the last resize
        red = _red(f)
        if m[0].flatten(1).sum(1).min() > 20:  # one crop region for image and mask (edges blur at this scale)
            diff = (masks_to_boxes(red) - masks_to_boxes(m[0])).abs()
            assert diff.max() <= 2, diff
            assert torch.equal(m[0, 0], m[0, 2])  # same crop on every frame
            checked += 1
        sizes.add((h, w))
    assert checked >= 3 and len(sizes) > 1  # the crop's aspect ratio varies
