"""DeVIS COCO joint training: images -> moving pseudo-videos (warps, blur, shuffle, maps, builder)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vidseg.data import build_train_dataset, register_dataset, unregister_dataset
from vidseg.data.category_maps import COCO_TO_YT19_CATEGORY_MAP, COCO_TO_YTVIS_2019
from vidseg.data.pseudo_video import (
    PseudoVideoAugmentation,
    affine_matrix,
    motion_blur_kernel,
    perspective_matrix,
    warp,
)
from vidseg.models import get_cfg
from vidseg.structures.box_ops import masks_to_boxes


def _square(h=60, w=80, box=(20, 15, 50, 40)):
    m = torch.zeros(h, w, dtype=torch.bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


def _still() -> PseudoVideoAugmentation:
    """Geometry only: no photometric shift, no blur (frame pixels can be compared with the masks)."""
    return PseudoVideoAugmentation(brightness=(0, 0), hue_saturation=(0, 0), motion_blur_prob=0.0)


def test_affine_translation_moves_the_box_by_the_fraction():
    m = _square()[None].float()
    out = warp(m, affine_matrix(60, 80, 0.0, (0.1, -0.1)), mode="nearest") > 0.5
    assert masks_to_boxes(out).tolist() == [[28.0, 9.0, 58.0, 34.0]]  # (20, 15, 50, 40) + (8, -6) px
    torch.testing.assert_close(warp(m, np.eye(3)), m)


def test_rotation_keeps_the_centre_and_area():
    m = _square(box=(30, 20, 50, 40))[None].float()  # centred on the image centre (40, 30)
    out = warp(m, affine_matrix(60, 80, 20.0, (0.0, 0.0)), mode="nearest")[0] > 0.5
    assert abs(int(out.sum()) - 400) < 30 and not torch.equal(out, m[0] > 0.5)
    ys, xs = out.nonzero(as_tuple=True)
    assert abs(xs.float().mean() - 39.5) < 0.6 and abs(ys.float().mean() - 29.5) < 0.6


def test_perspective_stretches_an_inner_quad_onto_the_image():
    rng = np.random.default_rng(0)
    p = perspective_matrix(60, 80, 0.08, rng)
    # The image corners go outwards (the inner quad fills the output), so the centre region is magnified.
    corners = np.array([[0, 0, 1], [80, 0, 1], [80, 60, 1], [0, 60, 1]], dtype=np.float64) @ p.T
    xy = corners[:, :2] / corners[:, 2:]
    assert (xy[0] <= 0).all() and xy[1, 0] >= 80 and (xy[2] >= [80, 60]).all() and xy[3, 1] >= 60
    big = warp(_square()[None].float(), p, mode="nearest") > 0.5
    assert int(big.sum()) > 30 * 25


def test_motion_blur_kernel_is_a_normalised_line():
    k = motion_blur_kernel(9, 0.0)
    assert k.sum().item() == pytest.approx(1.0)
    assert (k[4] > 0).all() and k[:4].sum() == 0 and k[5:].sum() == 0  # horizontal line through the centre
    d = motion_blur_kernel(11, 45.0)
    # A rotated line (as imgaug rotates its horizontal kernel): on the diagonal only, corners cut off.
    assert (torch.diagonal(d)[2:-2] > 0).all() and d.sum().item() == pytest.approx(1.0)
    assert (d - torch.diag(torch.diagonal(d))).abs().sum() == 0


def test_pseudo_video_frames_move_with_their_masks_and_are_shuffled():
    img = torch.full((3, 60, 80), 10.0)
    sq = _square()
    img[:, sq] = 250.0
    t = 6
    frames, masks = img.expand(t, -1, -1, -1).clone(), sq.expand(1, t, -1, -1).clone()
    out_f, out_m = _still()(frames, masks, np.random.default_rng(1))
    assert out_f.shape == (t, 3, 60, 80) and out_m.shape == (1, t, 60, 80) and out_m.dtype == torch.bool
    # The original image is one of the frames, not always the first (frames shuffled).
    orig = [k for k in range(t) if torch.equal(out_f[k], img)]
    assert len(orig) == 1
    starts = {[k for k in range(t) if torch.equal(x[k], img)][0] for x in [
        _still()(frames, masks, np.random.default_rng(s))[0] for s in range(8)
    ]}
    assert len(starts) > 1
    boxes = masks_to_boxes(out_m[0])
    assert len({tuple(b.tolist()) for b in boxes}) == t  # every frame moved differently
    for k in range(t):  # the bright pixels are where the mask is (same warp for image and mask)
        bright = out_f[k, 0] > 130
        inter = (bright & out_m[0, k]).sum().item()
        union = (bright | out_m[0, k]).sum().item()
        assert inter / union > 0.9, k
    # Same generator state -> same clip.
    again = _still()(frames, masks, np.random.default_rng(1))
    assert torch.equal(again[0], out_f) and torch.equal(again[1], out_m)


def test_photometric_shift_and_blur_stay_in_range():
    img = torch.rand(3, 40, 50) * 255
    aug = PseudoVideoAugmentation(motion_blur_prob=1.0)
    f, m = aug.move(img, torch.zeros(0, 40, 50, dtype=torch.bool), np.random.default_rng(3))
    assert f.shape == img.shape and m.shape == (0, 40, 50)
    assert f.min() >= 0 and f.max() <= 255 and not torch.equal(f, img)


def test_devis_category_maps_differ_from_vita_where_devis_does():
    assert 35 in COCO_TO_YTVIS_2019 and 35 not in COCO_TO_YT19_CATEGORY_MAP  # skis
    assert {k: v for k, v in COCO_TO_YTVIS_2019.items() if k != 35} == COCO_TO_YT19_CATEGORY_MAP


def _coco_fixture(tmp_path):
    """A COCO instances file (polygons, as COCO ships them): image 1 has a person and skis, image 2 has 26
    people (over DeVIS's 25-instance limit)."""
    rng = np.random.default_rng(0)
    images, anns = [], []
    for iid, n in ((1, 2), (2, 26)):
        Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(tmp_path / f"{iid}.jpg")
        images.append({"id": iid, "file_name": f"{iid}.jpg", "height": 64, "width": 96})
        for k in range(n):
            x, y = 10 + 3 * (k % 10), 10 + 3 * (k // 10)
            poly = [x, y, x + 30, y, x + 30, y + 25, x, y + 25]
            anns.append({
                "id": len(anns) + 1, "image_id": iid, "category_id": 35 if (iid, k) == (1, 1) else 1,
                "segmentation": [[float(v) for v in poly]], "area": 750.0, "bbox": [x, y, 30, 25],
                "iscrowd": 0,
            })
    cats = [{"id": 1, "name": "person", "supercategory": "person"},
            {"id": 35, "name": "skis", "supercategory": "sports"}]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


@pytest.mark.parametrize("joint", [True, False])
def test_builder_makes_pseudo_videos_with_devis_map(tmp_path, joint):
    path = _coco_fixture(tmp_path)
    register_dataset("pv_test_coco", path, tmp_path, kind="coco", coco_target="ytvis_2019_devis")
    try:
        cfg = get_cfg("DeVIS")
        cfg.DATASETS.TRAIN = ("pv_test_coco",)
        cfg.DATASETS.DEVIS.COCO_JOINT_TRAINING = joint
        cfg.INPUT.NUM_FRAMES = 4
        cfg.INPUT.SCALE_FACTOR_TRAIN = 1.0
        cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (64,), 96
        cfg.INPUT.CROP.ENABLED = False
        cfg.INPUT.RANDOM_FLIP = "none"
        ds = build_train_dataset(cfg)
        assert len(ds) == (1 if joint else 2)  # the 26-instance image is left out of joint training
        assert (ds.pseudo_video is not None) == joint and ds.augmentation.photometric != joint
        item = ds[0]
        tg = item["targets"]
        assert tg.labels.tolist() == [0]  # person kept, skis unmapped under DeVIS's YT-19 map
        assert item["frames"].shape[:2] == (4, 3)
        distinct = {tuple(b.tolist()) for b in tg.boxes[0]}
        assert (len(distinct) > 1) == joint  # moving vs static frames
    finally:
        unregister_dataset("pv_test_coco")
