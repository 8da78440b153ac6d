"""DATASETS.DATASET_RATIO: ratio-weighted mixing of training sets (VITA's CombinedDataLoader as a map-style
dataset), VITA's per-frame rotation of COCO pseudo-videos, and the builder that puts them together."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidseg.config import get_cfg
from vidseg.data import build_train_dataset, register_dataset, unregister_dataset
from vidseg.data.build import build_augmentation
from vidseg.data.category_maps import YTVIS_2019_CLASSES
from vidseg.data.dataset_ratio import RatioMixedDataset, check_dataset_ratio
from vidseg.data.errors import DatasetError
from vidseg.data.pseudo_video import RotationPseudoVideo, rotation_matrix
from vidseg.models.grattvis.config import add_grattvis_config


class _Tagged:
    """A dataset whose items say where they came from: ``(name, i, repeat)``."""

    def __init__(self, name, n):
        self.name, self.n, self.epochs = name, n, []

    def __len__(self):
        return self.n

    def set_epoch(self, e):
        self.epochs.append(e)

    def draw(self, i, repeat=0):
        return self.name, i, repeat


def test_sources_follow_the_ratio_whatever_the_sizes():
    coco, ovis = _Tagged("coco", 300), _Tagged("ovis", 7)
    ds = RatioMixedDataset([coco, ovis], [1.0, 0.25], length=4000, seed=3)
    items = [ds[i] for i in range(len(ds))]
    share = sum(name == "ovis" for name, _, _ in items) / len(items)
    assert abs(share - 0.2) < 0.03  # 0.25 / 1.25; 4000 draws: sd 0.0063
    # each source walks through fresh permutations: every OVIS video is used floor or ceil(uses / 7) times,
    # and the r-th use of an item says r (its own random draws)
    ovis_uses = Counter(i for name, i, _ in items if name == "ovis")
    assert set(ovis_uses) == set(range(7)) and max(ovis_uses.values()) - min(ovis_uses.values()) <= 1
    for i in range(7):
        reps = sorted(r for name, j, r in items if name == "ovis" and j == i)
        assert reps == list(range(len(reps)))


def test_mixing_is_a_pure_function_of_seed_epoch_and_position():
    a = RatioMixedDataset([_Tagged("a", 5), _Tagged("b", 5)], [1.0, 1.0], seed=1)
    b = RatioMixedDataset([_Tagged("a", 5), _Tagged("b", 5)], [1.0, 1.0], seed=1)
    assert len(a) == 10  # default: the sum of the lengths
    first = [a[i] for i in range(10)]
    assert [b[i] for i in reversed(range(10))] == first[::-1]  # any access order
    a.set_epoch(1)
    assert [a[i] for i in range(10)] != first
    assert a.datasets[0].epochs == [1]  # set_epoch reaches the parts
    a.set_epoch(0)
    assert [a[i] for i in range(10)] == first
    with pytest.raises(IndexError):
        a[10]


def test_a_zero_weight_source_is_never_drawn():
    ds = RatioMixedDataset([_Tagged("a", 3), _Tagged("b", 3)], [0.0, 1.0], length=50)
    assert {ds[i][0] for i in range(50)} == {"b"}


def test_ratio_errors_name_the_key():
    with pytest.raises(DatasetError, match=r"DATASETS.DATASET_RATIO \[1.0\] has 1 weights for 2"):
        check_dataset_ratio([1.0], ["coco2ovis_train", "ovis_train"])
    with pytest.raises(DatasetError, match="DATASETS.DATASET_RATIO"):
        check_dataset_ratio([1.0, -0.5], ["a", "b"])
    assert check_dataset_ratio([1, 0.25], ["a", "b"]) == [1.0, 0.25]


def test_rotation_matrix_turns_counter_clockwise_about_the_centre():
    m = rotation_matrix(60, 80, 90.0, (40.0, 30.0))
    x, y, _ = m @ np.array([50.0, 30.0, 1.0])  # 10 px right of the centre -> 10 px above it
    assert (x, y) == pytest.approx((40.0, 20.0))
    assert (m @ np.array([40.0, 30.0, 1.0]))[:2] == pytest.approx((40.0, 30.0))


def test_rotation_pseudo_video_sorted_angles_one_centre_masks_follow():
    rot = RotationPseudoVideo()
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rot.angles(5, rng)
        assert np.all((a >= -15) & (a <= 15))
        assert np.all(np.diff(a) >= 0) or np.all(np.diff(a) <= 0)
    h, w = 60, 80
    mask = torch.zeros(1, 5, h, w, dtype=torch.bool)
    mask[0, :, 10:20, 50:75] = True  # an off-centre bar: rotation moves it
    frames = mask[0, :, None].expand(5, 3, h, w).float() * 255
    out_f, out_m = rot(frames, mask, np.random.default_rng(1))
    assert out_f.shape == frames.shape and out_m.shape == mask.shape and out_m.dtype == torch.bool
    centroids = [tuple(torch.nonzero(out_m[0, t]).float().mean(0).tolist()) for t in range(5)]
    assert len({(round(y), round(x)) for y, x in centroids}) > 1  # every frame has its own angle
    # the image follows its mask (same warp; bilinear vs nearest differ on the border pixels only), and the
    # area survives a rotation within the image
    img = out_f[:, 0] > 127
    iou = (img & out_m[0]).sum((1, 2)).float() / (img | out_m[0]).sum((1, 2)).float()
    assert iou.min() > 0.85
    assert (out_m[0].sum((1, 2)).float() / mask[0, 0].sum() - 1).abs().max() < 0.15


# --------------------------------------------------------------------------------------------- the builder
def _image(path, rng, h=64, w=96):
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def _tiny_sets(tmp_path):
    """A COCO file (2 images with a person) and a YouTube-VIS-2019-classed video file (2 videos of 8
    frames), both 64x96."""
    rng = np.random.default_rng(0)
    images, anns = [], []
    for iid in (1, 2):
        _image(tmp_path / f"{iid}.jpg", rng)
        images.append({"id": iid, "file_name": f"{iid}.jpg", "height": 64, "width": 96})
        poly = [20.0, 12.0, 70.0, 12.0, 70.0, 40.0, 20.0, 40.0]
        anns.append({"id": iid, "image_id": iid, "category_id": 1, "segmentation": [poly], "area": 1400.0,
                     "bbox": [20, 12, 50, 28], "iscrowd": 0})  # fmt: skip
    coco = tmp_path / "coco.json"
    cats = [{"id": 1, "name": "person", "supercategory": "person"}]
    coco.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    videos, vanns = [], []
    for vid in (1, 2):
        names = []
        for t in range(8):
            names.append(f"v{vid}_{t}.jpg")
            _image(tmp_path / names[-1], rng)
        videos.append({"id": vid, "width": 96, "height": 64, "length": 8, "file_names": names})
        poly = [[10.0, 20.0, 40.0, 20.0, 40.0, 50.0, 10.0, 50.0]]
        vanns.append({"id": vid, "video_id": vid, "category_id": 1, "iscrowd": 0, "segmentations": [poly] * 8,
                      "areas": [900.0] * 8, "bboxes": [[10, 20, 30, 30]] * 8})  # fmt: skip
    vcats = [{"id": i + 1, "name": n} for i, n in enumerate(YTVIS_2019_CLASSES)]
    video = tmp_path / "videos.json"
    video.write_text(json.dumps({"videos": videos, "annotations": vanns, "categories": vcats}))
    return coco, video


@pytest.fixture
def gratt_cfg(tmp_path):
    coco, video = _tiny_sets(tmp_path)
    register_dataset("ratio_test_coco", coco, tmp_path, kind="coco", coco_target="ytvis_2019")
    register_dataset("ratio_test_video", video, tmp_path, kind="ytvis")
    cfg = get_cfg("Grattvis", lambda c, _: add_grattvis_config(c))
    cfg.DATASETS.TRAIN = ("ratio_test_coco", "ratio_test_video")
    cfg.DATASETS.DATASET_RATIO = [1.0, 0.75]
    cfg.INPUT.SAMPLER, cfg.INPUT.NUM_FRAMES, cfg.INPUT.SAMPLING_FRAME_RANGE = "reference_range", 5, 6
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (64,), 96
    cfg.INPUT.PSEUDO.MIN_SIZE_TRAIN, cfg.INPUT.PSEUDO.MAX_SIZE_TRAIN = (48,), 72
    cfg.INPUT.CROP.ENABLED = cfg.INPUT.PSEUDO.CROP.ENABLED = False
    cfg.INPUT.RANDOM_FLIP = "none"
    yield cfg
    unregister_dataset("ratio_test_coco")
    unregister_dataset("ratio_test_video")


def test_builder_mixes_by_ratio_with_vita_pseudo_videos(gratt_cfg):
    ds = build_train_dataset(gratt_cfg)
    assert isinstance(ds, RatioMixedDataset) and len(ds) == 4
    coco, video = ds.datasets
    assert isinstance(coco.pseudo_video, RotationPseudoVideo) and video.pseudo_video is None
    # the pseudo-videos take the INPUT.PSEUDO sizes, without photometric distortion
    assert coco.augmentation.min_sizes == (48,) and coco.augmentation.max_size == 72
    assert not coco.augmentation.photometric and video.augmentation.min_sizes == (64,)
    item = coco[0]
    assert item["frames"].shape[:2] == (5, 3) and item["frames"].shape[-2] == 48
    assert item["targets"].labels.tolist() == [0]  # COCO person -> YouTube-VIS 2019 person
    boxes = {tuple(round(v, 3) for v in b.tolist()) for b in item["targets"].boxes[0]}
    assert len(boxes) > 1  # rotated differently in each frame
    assert video[0]["frames"].shape[-2] == 64
    # a repeated use of an item in the epoch gets its own random draws
    assert not torch.equal(coco.draw(0, 1)["frames"], coco[0]["frames"])
    assert torch.equal(coco.draw(0, 0)["frames"], coco[0]["frames"])


def test_builder_rejects_a_ratio_of_the_wrong_length(gratt_cfg):
    gratt_cfg.DATASETS.DATASET_RATIO = [1.0]
    with pytest.raises(DatasetError, match="DATASETS.DATASET_RATIO"):
        build_train_dataset(gratt_cfg)


def test_without_ratio_the_sets_are_concatenated(gratt_cfg):
    gratt_cfg.DATASETS.DATASET_RATIO = []
    ds = build_train_dataset(gratt_cfg)
    assert not isinstance(ds, RatioMixedDataset) and len(ds) == 4


@pytest.mark.parametrize("value, flips", [("flip_by_clip", True), ("horizontal", True), ("none", False)])
def test_vitas_flip_by_clip_is_the_per_clip_flip(value, flips):
    cfg = get_cfg("Grattvis", lambda c, _: add_grattvis_config(c))
    cfg.INPUT.RANDOM_FLIP = value
    assert build_augmentation(cfg).flip is flips
    cfg.INPUT.RANDOM_FLIP = "vertical"
    with pytest.raises(DatasetError, match="INPUT.RANDOM_FLIP"):
        build_augmentation(cfg)


def test_mixed_pseudo_and_video_clips_batch_through_the_engine_sampler(gratt_cfg):
    """The shipped recipe's moving crops on (sizes scaled down): the engine's resumable sampler and the
    collate make batches of COCO pseudo-videos and video clips of different sizes."""
    from torch.utils.data import DataLoader

    from vidseg.data import build_collate_fn
    from vidseg.engine.batch_sampler import ResumableBatchSampler

    cfg = gratt_cfg
    cfg.INPUT.CROP.ENABLED = cfg.INPUT.PSEUDO.CROP.ENABLED = True
    cfg.INPUT.CROP.RESIZE_SIZES, cfg.INPUT.CROP.SIZE, cfg.INPUT.PSEUDO.CROP.SIZE = (80,), (40, 60), (40, 60)
    ds = build_train_dataset(cfg)
    assert ds.datasets[0].augmentation.crop and ds.datasets[0].augmentation.moving_crop
    sampler = ResumableBatchSampler(len(ds), 2, seed=cfg.SEED)
    batches = list(DataLoader(ds, batch_sampler=sampler, collate_fn=build_collate_fn(cfg)))
    assert len(batches) == 2
    for b in batches:
        assert b.frames.shape[:3] == (2, 5, 3) and b.frames.shape[-1] % 32 == 0


def test_the_official_names_coco2ovis_and_ovis_train_under_the_official_layout(tmp_path):
    """DATASETS.TRAIN of the OVIS config on a data root in the official layout: coco2ovis_train reads the
    plain COCO train2017 JSON and maps person -> Person, car -> Vehical, drops unmapped classes."""
    from vidseg.data.category_maps import OVIS_CLASSES

    rng = np.random.default_rng(1)
    (tmp_path / "coco/annotations").mkdir(parents=True)
    (tmp_path / "coco/train2017").mkdir()
    _image(tmp_path / "coco/train2017/1.jpg", rng)

    def box_poly(k):
        x0, x1 = 10.0 + 20 * k, 28.0 + 20 * k
        return [[x0, 10.0, x1, 10.0, x1, 40.0, x0, 40.0]]

    anns = [
        {"id": k + 1, "image_id": 1, "category_id": c, "segmentation": box_poly(k), "area": 540.0,
         "bbox": [10 + 20 * k, 10, 18, 30], "iscrowd": 0}
        for k, c in enumerate((1, 3, 10))
    ]  # fmt: skip
    cats = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 10, "name": "traffic light"}]
    coco = {"images": [{"id": 1, "file_name": "1.jpg", "height": 64, "width": 96}], "annotations": anns,
            "categories": cats}  # fmt: skip
    (tmp_path / "coco/annotations/instances_train2017.json").write_text(json.dumps(coco))
    (tmp_path / "ovis/annotations").mkdir(parents=True)
    (tmp_path / "ovis/train/v").mkdir(parents=True)
    for t in range(3):
        _image(tmp_path / f"ovis/train/v/{t}.jpg", rng)
    poly = [[10.0, 20.0, 40.0, 20.0, 40.0, 50.0, 10.0, 50.0]]
    ovis = {
        "videos": [{"id": 1, "width": 96, "height": 64, "length": 3,
                    "file_names": [f"v/{t}.jpg" for t in range(3)]}],
        "annotations": [{"id": 1, "video_id": 1, "category_id": 2, "iscrowd": 0, "segmentations": [poly] * 3,
                         "areas": [900.0] * 3, "bboxes": [[10, 20, 30, 30]] * 3}],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(OVIS_CLASSES)],
    }  # fmt: skip
    (tmp_path / "ovis/annotations/train.json").write_text(json.dumps(ovis))
    cfg = get_cfg("Grattvis", lambda c, _: add_grattvis_config(c))
    cfg.DATASETS.ROOT = str(tmp_path)
    cfg.DATASETS.TRAIN, cfg.DATASETS.DATASET_RATIO = ("coco2ovis_train", "ovis_train"), [1.0, 0.25]
    cfg.INPUT.NUM_FRAMES, cfg.INPUT.RANDOM_FLIP = 5, "none"
    cfg.INPUT.CROP.ENABLED = cfg.INPUT.PSEUDO.CROP.ENABLED = False
    cfg.INPUT.MIN_SIZE_TRAIN = cfg.INPUT.PSEUDO.MIN_SIZE_TRAIN = (64,)
    ds = build_train_dataset(cfg)
    coco_part, ovis_part = ds.datasets
    assert sorted(coco_part[0]["targets"].labels.tolist()) == [
        0,
        24,
    ]  # Person, Vehical; traffic light dropped
    assert ovis_part[0]["targets"].labels.tolist() == [1]  # Bird
    assert ovis_part[0]["frames"].shape[0] == 5  # 5 frames drawn from a 3-frame video, with replacement


@pytest.mark.slow
def test_vidseg_train_mixes_coco_pseudo_videos_into_the_tiny_grattvis_run(tmp_path):
    """``vidseg train`` of the tiny GRAtt-VIS on a COCO-format set (the first frames of synthetic videos) and
    the videos, mixed 80/20 by DATASETS.DATASET_RATIO: it trains, and the log says how the sets are mixed."""
    from vidseg.cli import main
    from vidseg.data import generate_synthetic_dataset

    kw = dict(height=64, width=96, num_classes=2, max_instances=2, progress=False)
    d = generate_synthetic_dataset(
        tmp_path / "a", seed=0, num_videos_train=2, num_videos_val=1, num_frames=3, **kw
    )
    v = json.loads(Path(d["train_json"]).read_text())
    images = [
        {"id": x["id"], "file_name": x["file_names"][0], "height": x["height"], "width": x["width"]}
        for x in v["videos"]
    ]
    anns = [
        {"id": a["id"], "image_id": a["video_id"], "category_id": a["category_id"], "iscrowd": 0,
         "segmentation": a["segmentations"][0], "area": a["areas"][0], "bbox": a["bboxes"][0]}
        for a in v["annotations"] if a["segmentations"][0] is not None
    ]  # fmt: skip
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": images, "annotations": anns, "categories": v["categories"]}))
    register_dataset("mix_e2e_coco", coco, d["train_images"], kind="coco")
    register_dataset("mix_e2e_video", d["train_json"], d["train_images"], kind="ytvis")
    out = tmp_path / "run"
    try:
        rc = main([
            "train", "--config-file", "quickstart/grattvis_tiny.yaml", "--no-progress",
            "OUTPUT_DIR", str(out),
            "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2",
            "DATASETS.TRAIN", '("mix_e2e_coco", "mix_e2e_video")', "DATASETS.DATASET_RATIO", "[1.0, 0.25]",
            "DATASETS.TEST", "()", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
            "INPUT.PSEUDO.MIN_SIZE_TRAIN", "(64,)", "INPUT.PSEUDO.MAX_SIZE_TRAIN", "96",
            "INPUT.CROP.ENABLED", "False", "INPUT.PSEUDO.CROP.ENABLED", "False",
            "SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "(3,)", "SOLVER.BATCH_SIZE", "2",
        ])  # fmt: skip
    finally:
        unregister_dataset("mix_e2e_coco")
        unregister_dataset("mix_e2e_video")
    log = (out / "log.txt").read_text()
    assert rc == 0, log[-3000:]
    assert (
        "DATASETS.DATASET_RATIO [1.0, 0.25]: mix_e2e_coco 80% (2 items), mix_e2e_video 20% (2 items)" in log
    )
    assert (out / "checkpoint.pth").is_file()
