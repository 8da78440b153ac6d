"""COCO evaluation on a tiny hand-made COCO json: perfect predictions give AP 100; errors name file/field."""

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
import torch.distributed as dist

from vidseg.evaluation.coco_eval import RESULTS_FILE, COCOEvaluator, load_coco_gt
from vidseg.models.devis.postprocess import ImagePostProcessor

# (image_id, h, w) and rectangles (image_id, category_id, x0, y0, x1, y1) in pixels
IMAGES = [(1, 40, 50), (2, 30, 30)]
OBJECTS = [(1, 1, 5, 5, 20, 25), (1, 3, 30, 10, 45, 35), (2, 3, 2, 4, 20, 12)]


def _mask(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _write_gt(path):
    sizes = {i: (h, w) for i, h, w in IMAGES}
    anns = []
    for k, (img, cat, x0, y0, x1, y1) in enumerate(OBJECTS):
        rle = mask_util.encode(np.asfortranarray(_mask(*sizes[img], x0, y0, x1, y1).astype(np.uint8)))
        rle["counts"] = rle["counts"].decode()
        anns.append(
            {"id": k + 1, "image_id": img, "category_id": cat, "bbox": [x0, y0, x1 - x0, y1 - y0],
             "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0, "segmentation": rle}
        )  # fmt: skip
    data = {
        "images": [{"id": i, "height": h, "width": w, "file_name": f"{i}.jpg"} for i, h, w in IMAGES],
        "annotations": anns,
        "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
    }
    path.write_text(json.dumps(data))
    return path


LABEL_TO_CAT = {0: 1, 1: 3}


def _perfect_results(shift=0):
    sizes = {i: (h, w) for i, h, w in IMAGES}
    inputs, outputs = [], []
    for img, h, w in IMAGES:
        objs = [o for o in OBJECTS if o[0] == img]
        inputs.append({"image_id": img, "orig_size": (h, w)})
        outputs.append(
            {
                "scores": torch.linspace(0.9, 0.8, len(objs)),
                "labels": torch.tensor([{1: 0, 3: 1}[o[1]] for o in objs]),
                "boxes": torch.tensor(
                    [[o[2] + shift, o[3], o[4] + shift, o[5]] for o in objs], dtype=torch.float
                ),
                "masks": torch.from_numpy(
                    np.stack([_mask(*sizes[img], o[2] + shift, o[3], o[4] + shift, o[5]) for o in objs])
                ),
            }
        )
    return inputs, outputs


def test_perfect_predictions_give_ap_100(tmp_path):
    gt = _write_gt(tmp_path / "gt.json")
    ev = COCOEvaluator(gt, output_dir=tmp_path / "out", label_to_category=LABEL_TO_CAT)
    ev.reset()
    inputs, outputs = _perfect_results()
    ev.process(inputs[:1], outputs[:1])
    ev.process(inputs[1:], outputs[1:])
    res = ev.evaluate()
    assert set(res) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        assert res[task]["AP"] == pytest.approx(100.0)
        assert res[task]["AP50"] == pytest.approx(100.0)
        assert res[task]["AP75"] == pytest.approx(100.0)
    saved = json.loads((tmp_path / "out" / RESULTS_FILE).read_text())
    assert len(saved) == 3 and {d["category_id"] for d in saved} == {1, 3}


def test_wrong_predictions_score_lower_and_reset_clears(tmp_path):
    gt = _write_gt(tmp_path / "gt.json")
    ev = COCOEvaluator(gt, label_to_category=LABEL_TO_CAT)
    inputs, outputs = _perfect_results(shift=4)  # shifted by 4 px: IoU drops below .75 for the small objects
    ev.process(inputs, outputs)
    res = ev.evaluate()
    assert 0 < res["bbox"]["AP"] < 100 and 0 < res["segm"]["AP"] < 100
    assert res["bbox"]["AP50"] == pytest.approx(100.0)
    ev.reset()
    with pytest.warns(UserWarning, match="no images"):
        assert ev.evaluate() == {}


def test_raw_model_outputs_through_the_postprocessor(tmp_path):
    gt = _write_gt(tmp_path / "gt.json")
    # image 2 (30x30) fed unpadded at 32x32 scale: one query with the GT box, mask logits at /4
    logits = torch.full((1, 4, 2), -8.0)
    logits[0, 1, 1] = 8.0
    x0, y0, x1, y1 = 2 / 30, 4 / 30, 20 / 30, 12 / 30
    boxes = torch.rand(1, 4, 4) * 0.1 + 0.2
    boxes[0, 1] = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0])
    masks = torch.full((1, 4, 8, 8), -8.0)
    raw = {"pred_logits": logits, "pred_boxes": boxes, "pred_masks": masks}
    meta = [{"image_id": 2, "orig_size": (30, 30), "image_size": (32, 32)}]

    class Batch:  # the ClipBatch attributes the evaluator reads
        frames = torch.zeros(1, 1, 3, 32, 32)

    Batch.meta = meta
    ev = COCOEvaluator(
        gt, tasks=("bbox",), postprocessor=ImagePostProcessor(num_out=3), label_to_category=LABEL_TO_CAT
    )
    ev.process(Batch(), raw)
    assert len(ev._predictions) == 3 and ev._predictions[0]["category_id"] == 3
    assert ev._predictions[0]["bbox"] == pytest.approx([2.0, 4.0, 18.0, 8.0], abs=1e-4)
    assert ev.evaluate()["bbox"]["AP"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="postprocessor"):
        COCOEvaluator(gt).process(meta, raw)


def test_bad_ground_truth_files_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_coco_gt(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: invalid JSON"):
        load_coco_gt(bad)
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(ValueError, match="missing field 'categories'"):
        load_coco_gt(bad)
    bad.write_text(
        json.dumps({"images": [], "categories": [], "annotations": [{"image_id": 1, "bbox": [0, 0, 1, 1]}]})
    )
    with pytest.raises(ValueError, match=r"annotations\[0\] has no field 'category_id'"):
        load_coco_gt(bad)


def test_unknown_image_and_missing_id(tmp_path):
    gt = _write_gt(tmp_path / "gt.json")
    ev = COCOEvaluator(gt, label_to_category=LABEL_TO_CAT)
    inputs, outputs = _perfect_results()
    inputs[0]["image_id"] = 99
    ev.process(inputs, outputs)
    with pytest.raises(KeyError, match="99"):
        ev.evaluate()
    with pytest.raises(KeyError, match="image_id"):
        ev.process([{"orig_size": (4, 4)}], outputs[:1])
    with pytest.raises(ValueError, match="unknown tasks"):
        COCOEvaluator(gt, tasks=("keypoints",))


def test_distributed_gather_single_rank(tmp_path):
    gt = _write_gt(tmp_path / "gt.json")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ev = COCOEvaluator(gt, label_to_category=LABEL_TO_CAT)
        ev.process(*_perfect_results())
        assert ev.evaluate()["segm"]["AP"] == pytest.approx(100.0)
    finally:
        dist.destroy_process_group()
