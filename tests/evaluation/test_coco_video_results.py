"""COCO evaluation of the engine's one-frame VideoResults: perfect predictions give AP 100, shifted ones less,
the results file is valid COCO results JSON, bad input names the image, ranks are gathered once per image."""

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from gloo_ranks import run_ranks
from pycocotools.coco import COCO

from vidseg.data.records import InstanceRecord, VideoRecord
from vidseg.evaluation import COCOEvaluator
from vidseg.evaluation.coco_eval import RESULTS_FILE
from vidseg.evaluation.coco_results import coco_gt_from_records, video_result_to_coco
from vidseg.structures.results import Track, VideoResult

# images (id, h, w); objects (image_id, category_id, x0, y0, x1, y1); labels: category 2 -> 0, 7 -> 1
IMAGES = [(11, 48, 64), (12, 40, 40), (15, 64, 48)]
OBJECTS = [(11, 2, 4, 6, 30, 40), (11, 7, 36, 10, 60, 30), (12, 7, 5, 5, 25, 20), (15, 2, 10, 8, 40, 60)]
LABEL_TO_CAT = [2, 7]
SIZES = {i: (h, w) for i, h, w in IMAGES}


def _mask(img, x0, y0, x1, y1):
    m = np.zeros(SIZES[img], dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode()}


def _polygon(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _gt_dict(annotations=True):
    anns = [
        {"id": k + 1, "image_id": img, "category_id": cat, "bbox": [x0, y0, x1 - x0, y1 - y0],
         "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0, "segmentation": _polygon(x0, y0, x1, y1)}
        for k, (img, cat, x0, y0, x1, y1) in enumerate(OBJECTS)
    ]  # fmt: skip
    data = {
        "images": [{"id": i, "height": h, "width": w, "file_name": f"{i}.jpg"} for i, h, w in IMAGES],
        "categories": [{"id": 2, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    if annotations:
        data["annotations"] = anns
    return data


@pytest.fixture
def gt_file(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(_gt_dict()))
    return path


def _results(shift=0, images=None):
    out = []
    for img, h, w in IMAGES:
        if images is not None and img not in images:
            continue
        vr = VideoResult(video_id=img, height=h, width=w)
        for k, (_, cat, x0, y0, x1, y1) in enumerate(o for o in OBJECTS if o[0] == img):
            mask = _mask(img, x0 + shift, y0, x1 + shift, y1)
            vr.tracks.append(Track(score=0.9 - 0.1 * k, label=LABEL_TO_CAT.index(cat), masks=[_rle(mask)]))
        out.append(vr)
    return out


def _inputs(results):
    return [{"video_id": r.video_id, "height": r.height, "width": r.width} for r in results]


def test_perfect_video_results_give_ap_100_and_a_valid_results_file(gt_file, tmp_path):
    ev = COCOEvaluator(gt_file, output_dir=tmp_path / "out", label_to_category=LABEL_TO_CAT)
    ev.reset()
    res = _results()
    ev.process(_inputs(res[:2]), res[:2])  # the engine's call pattern: inputs dicts + list[VideoResult]
    ev.process(None, res[2])
    metrics = ev.evaluate()
    assert set(metrics) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        assert set(metrics[task]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
        assert metrics[task]["AP"] == pytest.approx(100.0)
        assert metrics[task]["AP75"] == pytest.approx(100.0)
    saved = json.loads((tmp_path / "out" / RESULTS_FILE).read_text())
    assert not list((tmp_path / "out").glob("*.tmp"))
    assert len(saved) == len(OBJECTS)
    for entry in saved:
        assert set(entry) == {"image_id", "category_id", "score", "bbox", "segmentation"}
        assert isinstance(entry["segmentation"]["counts"], str) and len(entry["bbox"]) == 4
    assert {e["category_id"] for e in saved} == {2, 7}
    first = next(e for e in saved if e["image_id"] == 11 and e["category_id"] == 2)
    assert first["bbox"] == [4.0, 6.0, 26.0, 34.0]  # the mask's tight box, xywh
    gt = COCO(str(gt_file))
    assert len(gt.loadRes(str(tmp_path / "out" / RESULTS_FILE)).anns) == len(OBJECTS)  # pycocotools reads it


def test_shifted_masks_score_lower(gt_file):
    ev = COCOEvaluator(gt_file, label_to_category=LABEL_TO_CAT)
    ev.process(None, _results(shift=5))
    metrics = ev.evaluate()
    for task in ("bbox", "segm"):
        assert 0 < metrics[task]["AP"] < 90
        assert metrics[task]["AP50"] == pytest.approx(100.0)  # IoU still > 0.5 for every object
    assert metrics["segm"]["AP75"] < 100


def test_track_box_is_used_when_present(gt_file):
    (vr,) = _results(images={12})
    vr.tracks[0].boxes = [[5.0, 5.0, 20.0, 15.0]]  # what an inference that keeps boxes stores
    vr.tracks[0].masks = [None]  # a box without a mask still counts for bbox AP
    entries, skipped = video_result_to_coco(vr, {0: 2, 1: 7})
    assert skipped == 0 and entries[0]["bbox"] == [5.0, 5.0, 20.0, 15.0]
    assert mask_util.area(entries[0]["segmentation"]) == 0
    vr.tracks.append(Track(score=0.1, label=0, masks=[None]))  # no mask, no box: dropped
    assert video_result_to_coco(vr, {0: 2, 1: 7})[1] == 1


def test_duplicate_images_count_once(gt_file):
    ev = COCOEvaluator(gt_file, label_to_category=LABEL_TO_CAT)
    ev.process(None, _results())
    ev.process(None, _results(shift=10))  # the same images again (a padded sampler): ignored
    assert ev.evaluate()["segm"]["AP"] == pytest.approx(100.0)


def test_bad_predictions_name_the_image(gt_file):
    ev = COCOEvaluator(gt_file, label_to_category=LABEL_TO_CAT)
    res = _results(images={11})
    res[0].video_id = 999
    ev.process(None, res)
    with pytest.raises(KeyError, match=r"999.*instances.json"):
        ev.evaluate()
    # a mask at another size than the GT image
    ev.reset()
    (vr,) = _results(images={12})
    vr.height, vr.width = 48, 64
    vr.tracks = [Track(score=0.5, label=0, masks=[_rle(np.zeros((48, 64), bool))])]
    ev.process(None, [vr])
    with pytest.raises(ValueError, match=r"image 12: predicted mask size \[48, 64\].*\[40, 40\]"):
        ev.evaluate()
    # a mask that disagrees with its own result's size, several frames, an unknown label
    ev.reset()
    (vr,) = _results(images={12})
    vr.width = 41
    with pytest.raises(ValueError, match=r"image 12: track 0: mask size"):
        ev.process(None, [vr])
    (vr,) = _results(images={12})
    vr.tracks[0].masks = vr.tracks[0].masks * 2
    with pytest.raises(ValueError, match="image 12: track 0 has 2 frames"):
        ev.process(None, [vr])
    (vr,) = _results(images={12})
    vr.tracks[0].label = 5
    with pytest.raises(KeyError, match="image 12: track 0: label 5"):
        ev.process(None, [vr])
    with pytest.raises(ValueError, match="2 results for 1 inputs"):
        ev.process([{"video_id": 11}], _results(images={11, 12}))


def test_ground_truth_without_annotations_only_writes(tmp_path):
    path = tmp_path / "image_info.json"
    path.write_text(json.dumps(_gt_dict(annotations=False)))
    with pytest.raises(ValueError, match="image_info.json: missing field 'annotations'"):
        COCOEvaluator(path)
    ev = COCOEvaluator(
        path, output_dir=tmp_path / "out", label_to_category=LABEL_TO_CAT, allow_unannotated=True
    )
    ev.process(None, _results())
    assert ev.evaluate() == {}
    assert len(json.loads((tmp_path / "out" / RESULTS_FILE).read_text())) == len(OBJECTS)


def test_ground_truth_from_records_in_another_label_space():
    # the records of a COCO set mapped into a video label space: categories 2 -> 5, 7 -> 1
    remap = {2: 5, 7: 1}
    records = []
    for img, h, w in IMAGES:
        insts = [
            InstanceRecord(id=1, category_id=remap[cat], label=0 if remap[cat] == 1 else 1,
                           segmentations=[_polygon(x0, y0, x1, y1)], bboxes=[None], areas=[None])
            for i, cat, x0, y0, x1, y1 in OBJECTS if i == img
        ]  # fmt: skip
        records.append(
            VideoRecord(video_id=img, file_names=[f"{img}.jpg"], height=h, width=w, instances=insts)
        )
    gt = coco_gt_from_records(records, ["dog", "cat"], [1, 5])
    assert len(gt.anns) == len(OBJECTS) and len({a["id"] for a in gt.anns.values()}) == len(OBJECTS)
    ann = next(a for a in gt.anns.values() if a["image_id"] == 12)
    assert ann["bbox"] == [5.0, 5.0, 20.0, 15.0] and ann["area"] == 300.0
    ev = COCOEvaluator(gt, label_to_category=[5, 1])  # label 0 was category 2, now 5
    ev.process(None, _results())
    assert ev.evaluate()["segm"]["AP"] == pytest.approx(100.0)


def _gather_worker(rank, port, gt_path, out_dir, queue):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        ev = COCOEvaluator(gt_path, output_dir=out_dir, label_to_category=LABEL_TO_CAT)
        # rank 0: images 11, 15; rank 1: 12 and 11 again, shifted (padding): rank 0's copy counts
        mine = {11, 15} if rank == 0 else {12}
        res = _results(images=mine) + ([] if rank == 0 else _results(shift=10, images={11}))
        ev.process(_inputs(res), res)
        queue.put((rank, ev.evaluate()))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_gather_on_rank_0(gt_file, tmp_path):
    out = str(tmp_path / "out")
    results = run_ranks(_gather_worker, lambda r, port, queue: (r, port, str(gt_file), out, queue))
    assert results[1] == {}
    assert results[0]["bbox"]["AP"] == pytest.approx(100.0) and results[0]["segm"]["AP"] == pytest.approx(
        100.0
    )
    saved = json.loads((tmp_path / "out" / RESULTS_FILE).read_text())
    assert sorted({e["image_id"] for e in saved}) == [11, 12, 15] and len(saved) == len(OBJECTS)
