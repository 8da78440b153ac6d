"""Training/inference datasets, determinism, collate, catalog and builders, bad frames, video I/O."""

import json
import shutil

import numpy as np
import pytest
import torch

from vidseg.data import (
    ClipTrainDataset,
    DatasetError,
    build_test_dataset,
    build_train_dataset,
    collate_clips,
    get_dataset_metadata,
    get_dataset_spec,
    load_dataset,
    register_dataset,
    unregister_dataset,
    video_item_from_source,
)
from vidseg.data.frame_sampling import consecutive_clip
from vidseg.data.transforms import ClipAugmentation
from vidseg.data.video_io import open_frame_source, read_video_frames, write_video
from vidseg.data.ytvis import load_ytvis_json
from vidseg.models import get_cfg
from vidseg.structures.masks import decode_segmentation


def _small_aug():
    return ClipAugmentation(min_sizes=(64, 80, 96), max_size=200, crop_resize_sizes=(90,), crop_size=(60, 90))


def _train_records(synth_dir):
    return load_ytvis_json(synth_dir / "train" / "instances.json", synth_dir / "train" / "JPEGImages")[0]


def _same(a, b):
    assert torch.equal(a["frames"], b["frames"]) and a["meta"] == b["meta"]
    ta, tb = a["targets"], b["targets"]
    for k in ("labels", "ids", "masks", "boxes", "valid"):
        assert torch.equal(getattr(ta, k), getattr(tb, k)), k


@pytest.mark.parametrize("sampler", ["consecutive", "reference_range"])
def test_item_depends_only_on_seed_epoch_index(synth_dir, sampler):
    recs = _train_records(synth_dir)
    ds = ClipTrainDataset(recs, 4, sampler=sampler, frame_range=2, augmentation=_small_aug(), seed=3)
    ds2 = ClipTrainDataset(recs, 4, sampler=sampler, frame_range=2, augmentation=_small_aug(), seed=3)
    ds.set_epoch(2)
    ds2.set_epoch(2)
    a = ds[1]
    np.random.seed(123)  # global RNG state must not matter
    torch.manual_seed(123)
    _ = ds2[0], ds2[3]  # nor the order of access
    _same(a, ds2[1])
    changed = []
    for i in range(len(ds)):
        x = ds[i]
        ds.set_epoch(3)
        y = ds[i]
        ds.set_epoch(2)
        changed.append(x["frames"].shape != y["frames"].shape or not torch.equal(x["frames"], y["frames"]))
    assert any(changed)  # another epoch draws other augmentations


def test_epoch_length_and_targets(synth_dir):
    recs = _train_records(synth_dir)
    ds = ClipTrainDataset(recs, 4, augmentation=None)
    assert len(ds) == sum(max(1, r.length - 4 + 1) for r in recs)
    s = ds[0]
    tg = s["targets"]
    t, (h, w) = s["frames"].shape[0], s["frames"].shape[-2:]
    assert t == 4 and tg.masks.shape[1:] == (4, h, w) and (h, w) == (96, 160)
    assert len(tg) > 0 and tg.valid.any(1).all() and tg.ids.min() > 0
    rec = recs[ds.items[0][0]]
    assert s["meta"]["frame_indices"] == consecutive_clip(rec.length, 0, 4)
    # Without augmentation the clip's masks are the GT masks of those frames.
    inst = next(i for i in rec.instances if i.id == int(tg.ids[0]))
    for k, t in enumerate(s["meta"]["frame_indices"]):
        gt = decode_segmentation(inst.segmentations[t], rec.height, rec.width)
        if gt is not None and gt.sum() > 2:
            assert torch.equal(tg.masks[0, k], torch.from_numpy(gt))
    # Normalised frames: roughly zero-mean.
    assert s["frames"].mean().abs() < 2
    # SAMPLE_EACH_FRAME: one item per frame; the last one starts on the last frame and reflects back.
    each = ClipTrainDataset(recs, 4, augmentation=None, sample_each_frame=True)
    assert len(each) == sum(r.length for r in recs)
    last = each[recs[0].length - 1]
    n = recs[0].length
    assert n >= 3 and last["meta"]["frame_indices"][:3] == [n - 1, n - 2, n - 3]
    assert last["frames"].shape[0] == 4


def test_collate_pads_to_divisibility(synth_dir):
    recs = _train_records(synth_dir)
    ds = ClipTrainDataset(recs, 3, augmentation=_small_aug(), seed=1)
    samples = [ds[i] for i in range(4)]
    batch = collate_clips(samples, size_divisibility=32)
    b, t, c, h, w = batch.frames.shape
    assert (b, t, c) == (4, 3, 3) and h % 32 == 0 and w % 32 == 0
    for k, s in enumerate(samples):
        sh, sw = s["frames"].shape[-2:]
        assert not batch.pad_mask[k, :, :sh, :sw].any() and batch.pad_mask[k, :, sh:, :].all()
        assert batch.pad_mask[k, :, :, sw:].all()
        torch.testing.assert_close(batch.frames[k, :, :, :sh, :sw], s["frames"])
        assert batch.frames[k, :, :, sh:, :].abs().sum() == 0
        tg = batch.targets[k]
        assert tg.masks.shape[-2:] == (h, w) and torch.equal(tg.masks[..., :sh, :sw], s["targets"].masks)
        assert torch.equal(tg.boxes, s["targets"].boxes)  # normalised to the unpadded size
        assert batch.meta[k]["image_size"] == (sh, sw)


def test_catalog_builders_and_custom_keys(synth_dir, tmp_path, monkeypatch):
    cfg = get_cfg()
    cfg.DATASETS.CUSTOM_TRAIN_JSON = str(synth_dir / "train" / "instances.json")
    cfg.DATASETS.CUSTOM_TRAIN_IMAGES = str(synth_dir / "train" / "JPEGImages")
    cfg.DATASETS.TRAIN = ("custom_train",)
    cfg.INPUT.NUM_FRAMES = 3
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MAX_SIZE_TRAIN = 160
    cfg.INPUT.CROP.RESIZE_SIZES = (80,)
    cfg.INPUT.CROP.SIZE = (48, 80)
    ds = build_train_dataset(cfg)
    ds.set_epoch(1)
    assert min(ds[0]["frames"].shape[-2:]) <= 64 and hasattr(ds, "set_epoch")
    # Registered from Python, used as an inference set.
    register_dataset(
        "synth_val_test", synth_dir / "valid" / "instances.json", synth_dir / "valid" / "JPEGImages"
    )
    try:
        cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 48, 100
        vd = build_test_dataset(cfg, "synth_val_test")
        item = vd[0]
        assert item.orig_size == (96, 160) and item.image_size == (48, 80)
        assert item.frames.all().shape == (item.length, 3, 48, 80)
        clips = list(item.clips(3, 2))
        assert all(f.shape == (3, 3, 48, 80) for _, f in clips)
        assert clips[-1][0].indices[-1] == item.length - 1
        torch.testing.assert_close(clips[0][1][1], item.frames[1])
        assert get_dataset_metadata("synth_val_test").classes[0] == "ellipse"
    finally:
        unregister_dataset("synth_val_test")
    # A standard name under the data root, in the DeVIS layout; env var used when DATASETS.ROOT is empty.
    root = tmp_path / "root"
    (root / "OVIS").mkdir(parents=True)
    shutil.copy(synth_dir / "valid" / "instances.json", root / "OVIS" / "annotations_valid.json")
    monkeypatch.setenv("VIDSEG_DATASETS", str(root))
    spec = get_dataset_spec("ovis_val", get_cfg())
    assert spec.json_file.endswith("OVIS/annotations_valid.json") and spec.image_root.endswith("OVIS/valid")
    assert len(load_dataset("ovis_val", get_cfg())[0]) == 2
    # Metadata of a standard dataset whose file is absent comes from the built-in tables.
    assert get_dataset_metadata("ytvis_2021_val", get_cfg()).classes[2] == "bird"
    with pytest.raises(DatasetError, match="annotation file not found"):
        load_dataset("ytvis_2019_train", get_cfg())
    with pytest.raises(DatasetError, match="unknown dataset 'nope'"):
        get_dataset_spec("nope")
    with pytest.raises(DatasetError, match="CUSTOM_VAL_JSON"):
        get_dataset_spec("custom_val", get_cfg())


def test_missing_or_wrong_frame_is_a_dataset_error(synth_dir, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(synth_dir / "train", copy)
    recs, _ = load_ytvis_json(copy / "instances.json", copy / "JPEGImages")
    rec = recs[0]
    (copy / "JPEGImages" / rec.file_names[1].split("JPEGImages/")[1]).unlink()
    ds = ClipTrainDataset([rec], 2)
    with pytest.raises(DatasetError, match=rf"video {rec.video_id} .*frame file not found: .*00005\.jpg"):
        ds[0]
    rec.height = 50  # the JSON size disagrees with the image
    with pytest.raises(DatasetError, match="but the JSON says 160x50"):
        ClipTrainDataset([rec], 1)[0]


def test_bad_segmentation_size_is_named(synth_dir, tmp_path):
    data = json.loads((synth_dir / "train" / "instances.json").read_text())
    ann = data["annotations"][0]
    t = next(i for i, s in enumerate(ann["segmentations"]) if s)
    ann["segmentations"][t]["size"] = [10, 10]
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data))
    recs, _ = load_ytvis_json(p, synth_dir / "train" / "JPEGImages")
    rec = next(r for r in recs if r.video_id == ann["video_id"])
    ds = ClipTrainDataset([rec], rec.length)
    with pytest.raises(
        DatasetError, match=rf"annotation {ann['id']}: field 'segmentations'\[{t}\]: RLE size"
    ):
        ds[0]


def test_video_write_read_round_trip(tmp_path):
    yy, xx = np.mgrid[0:48, 0:64]
    frames = np.stack(
        [np.stack([(xx * 3 + 12 * t) % 256, yy * 4, np.full_like(xx, 100)], -1) for t in range(5)]
    ).astype(np.uint8)
    for ext in ("mp4", "gif"):
        p = write_video(tmp_path / f"v.{ext}", frames, fps=5)
        back = read_video_frames(p)
        assert back.shape == frames.shape, ext
        assert np.abs(back.astype(int) - frames).mean() < 6, ext
    src = open_frame_source(tmp_path / "v.mp4")
    assert len(src) == 5 and src[2].shape == (48, 64, 3)
    item = video_item_from_source(str(tmp_path / "v.mp4"), min_size=24, max_size=None)
    assert item.orig_size == (48, 64) and item.frames.get([0, 4]).shape == (2, 3, 24, 32)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(DatasetError, match="broken.mp4"):
        read_video_frames(tmp_path / "broken.mp4")
    with pytest.raises(DatasetError, match="not found"):
        open_frame_source(tmp_path / "nothing_here")
