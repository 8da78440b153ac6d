"""build_evaluator: the dataset metadata (evaluator_type, set by the data catalog) decides the metric."""

import json
from types import SimpleNamespace

import pytest
from evalcase_gen import encode
from test_evaluation_quirks import block, gt_dict

from vidseg.data import get_dataset_metadata, load_dataset, register_dataset, unregister_dataset
from vidseg.evaluation import OVIS_STATS, YTVIS_STATS, COCOEvaluator, YTVISEvaluator, build_evaluator
from vidseg.structures.results import Track, VideoResult


def _cfg(root):
    return SimpleNamespace(DATASETS=SimpleNamespace(ROOT=str(root)))


@pytest.mark.parametrize(
    ("name", "evaluator_type", "ovis"),
    [("ovis_val", "ovis", True), ("ytvis_2019_val", "ytvis", False), ("ytvis_2021_val", "ytvis", False),
     ("ytvis_2022_val", "ytvis2022", False)],
)  # fmt: skip
def test_video_sets_get_the_ytvis_evaluator_with_their_rules(tmp_path, name, evaluator_type, ovis):
    meta = get_dataset_metadata(name, _cfg(tmp_path))  # no JSON there: the built-in class table
    assert meta.evaluator_type == evaluator_type
    ev = build_evaluator(meta, tmp_path / "out")
    assert type(ev) is YTVISEvaluator and ev.ovis is ovis
    assert ev.workers == 1  # by default the metric runs in the calling process (no fork)
    assert ev.label_to_category_id == meta.label_to_category_id and ev.output_dir == str(tmp_path / "out")
    assert build_evaluator(meta, tmp_path, workers=None).workers is None  # a caller may let it fork


def _coco_json(path, cats=((3, "person"), (8, "car"))):
    images = [{"id": 5, "file_name": "a.jpg", "height": 4, "width": 4}]
    anns = [{"id": 1, "image_id": 5, "category_id": cats[0][0], "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0,
             "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]}]  # fmt: skip
    categories = [{"id": c, "name": n} for c, n in cats]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return path


def test_coco_sets_get_the_coco_evaluator(tmp_path):
    gt = _coco_json(tmp_path / "instances.json")
    register_dataset("build_test_coco", gt, tmp_path, kind="coco")
    try:
        _, meta = load_dataset("build_test_coco")
        assert meta.evaluator_type == "coco" and meta.coco_target is None
        ev = build_evaluator(meta, tmp_path / "e")
        assert isinstance(ev, COCOEvaluator) and ev.tasks == ("bbox", "segm")
        assert ev.label_to_category == {0: 3, 1: 8} and ev.gt_name == str(gt)
        assert build_evaluator(meta, tmp_path / "e", mask_on=False).tasks == ("bbox",)
    finally:
        unregister_dataset("build_test_coco")


def test_coco_in_a_video_label_space_builds_its_ground_truth_from_the_records(tmp_path):
    gt = _coco_json(tmp_path / "instances.json", cats=((1, "person"), (3, "car")))
    register_dataset("build_test_coco2ytvis", gt, tmp_path, kind="coco", coco_target="ytvis_2019")
    try:
        records, meta = load_dataset("build_test_coco2ytvis")
        assert meta.coco_target == "ytvis_2019" and meta.evaluator_type == "coco"
        with pytest.raises(ValueError, match="needs its records"):
            build_evaluator(meta, tmp_path / "e")
        ev = build_evaluator(meta, tmp_path / "e", records=lambda: records)
        assert ev.gt_name == "<COCO object>"  # built from the records, not the file
        assert sorted(ev.coco_gt.cats) == sorted(meta.category_ids) != [1, 3]
    finally:
        unregister_dataset("build_test_coco2ytvis")


def test_metadata_without_an_evaluator_type_is_scored_as_ytvis(tmp_path):
    meta = SimpleNamespace(json_file=str(tmp_path / "gt.json"), label_to_category_id=[1, 2])
    assert type(build_evaluator(meta, tmp_path)) is YTVISEvaluator


def test_an_unknown_evaluator_type_is_one_clear_error(tmp_path):
    meta = SimpleNamespace(name="mine", evaluator_type="lvis", json_file="x.json", label_to_category_id=[1])
    with pytest.raises(ValueError, match="'mine': unknown evaluator_type 'lvis'"):
        build_evaluator(meta, tmp_path)


def _ovis_gt(path):
    gt = gt_dict([{"masks": [block()]}], videos=((1, 1),))
    gt["annotations"][0]["occlusion"] = ["no_occlusion"]
    gt["videos"][0]["file_names"] = ["v/00000.jpg"]  # the data reader wants them (the metric does not)
    path.write_text(json.dumps(gt))
    return path


def test_a_registered_ovis_set_is_scored_with_the_ovis_rules(tmp_path):
    """The metric follows the metadata, not the dataset's name: OVIS rules give the 18 stats."""
    gt = _ovis_gt(tmp_path / "gt.json")
    result = VideoResult(1, 4, 4, [Track(score=0.9, label=0, masks=[encode(block())])])
    stats = {}
    for name, evaluator_type in (("mine_occluded", "ovis"), ("ovis_named_but_ytvis", None)):
        register_dataset(name, gt, tmp_path, evaluator_type=evaluator_type)
        try:
            _, meta = load_dataset(name)
            ev = build_evaluator(meta, tmp_path / name)
            ev.reset()
            ev.process(None, [result])
            stats[name] = [k for k in ev.evaluate()["segm"] if not k.startswith("AP-")]
        finally:
            unregister_dataset(name)
    assert stats == {"mine_occluded": list(OVIS_STATS), "ovis_named_but_ytvis": list(YTVIS_STATS)}


def test_register_dataset_rejects_a_metric_of_another_kind(tmp_path):
    with pytest.raises(ValueError, match="evaluator_type must be 'coco' for kind 'coco'"):
        register_dataset("bad", tmp_path / "x.json", tmp_path, kind="coco", evaluator_type="ovis")
    with pytest.raises(ValueError, match="'ytvis', 'ovis' or 'ytvis2022' for kind 'ytvis', got 'coco'"):
        register_dataset("bad", tmp_path / "x.json", tmp_path, evaluator_type="coco")
