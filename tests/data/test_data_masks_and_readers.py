"""Segmentation encodings, the YouTube-VIS / COCO readers, category maps and bad-input errors."""

import copy
import json

import numpy as np
import pytest
from pycocotools import mask as mask_util

from vidseg.data.category_maps import COCO_TO_OVIS, COCO_TO_YTVIS_2019, TARGETS, invert_category_map
from vidseg.data.coco import load_coco_json
from vidseg.data.errors import DatasetError
from vidseg.data.ytvis import load_ytvis_json
from vidseg.structures.masks import decode_segmentation, encode_rle, encode_uncompressed_rle, mask_to_xywh


def _square_mask(h=20, w=30):
    m = np.zeros((h, w), bool)
    m[4:12, 6:20] = True
    return m


def test_every_encoding_decodes_to_the_same_mask():
    m = _square_mask()
    h, w = m.shape
    poly = [[6, 4, 20, 4, 20, 12, 6, 12]]  # the square's outline
    enc = {
        "compressed_str": encode_rle(m),
        "compressed_bytes": mask_util.encode(np.asfortranarray(m.astype(np.uint8))),
        "uncompressed": encode_uncompressed_rle(m),
    }
    for name, segm in enc.items():
        np.testing.assert_array_equal(decode_segmentation(segm, h, w), m, err_msg=name)
    # Polygons rasterise with the COCO rule (area close to, not exactly, the square).
    pm = decode_segmentation(poly, h, w)
    assert abs(int(pm.sum()) - int(m.sum())) <= 30 and pm[6:10, 8:18].all()
    for absent in (None, [], {}):
        assert decode_segmentation(absent, h, w) is None


def test_uncompressed_rle_matches_pycocotools_runs():
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = rng.random((13, 17)) > 0.6
        ours = encode_uncompressed_rle(m)
        ref = mask_util.frPyObjects(ours, 13, 17)
        assert ref["counts"] == mask_util.encode(np.asfortranarray(m.astype(np.uint8)))["counts"]
        assert sum(ours["counts"]) == 13 * 17
    first_pixel_set = np.zeros((4, 4), bool)
    first_pixel_set[0, 0] = True
    assert encode_uncompressed_rle(first_pixel_set)["counts"][:2] == [0, 1]


def test_mask_to_xywh():
    assert mask_to_xywh(_square_mask()) == [6.0, 4.0, 14.0, 8.0]
    assert mask_to_xywh(np.zeros((3, 3), bool)) is None


def _tiny_ytvis(m):
    rle = encode_uncompressed_rle(m)
    return {
        "videos": [{"id": 5, "width": 30, "height": 20, "length": 2, "file_names": ["v/0.jpg", "v/1.jpg"]}],
        "categories": [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}],
        "annotations": [
            {
                "id": 1,
                "video_id": 5,
                "category_id": 7,
                "iscrowd": 0,
                "segmentations": [rle, None],
                "areas": [int(m.sum()), None],
                "bboxes": [mask_to_xywh(m), None],
            }
        ],
    }


def test_ytvis_reader_and_category_round_trip(tmp_path):
    m = _square_mask()
    p = tmp_path / "a.json"
    p.write_text(json.dumps(_tiny_ytvis(m)))
    recs, meta = load_ytvis_json(p, tmp_path / "img")
    assert meta.classes == ["a", "b"] and meta.category_ids == [3, 7]  # sorted by id
    for label, cid in enumerate(meta.label_to_category_id):
        assert meta.category_id_to_label[cid] == label
    (rec,) = recs
    assert rec.video_id == 5 and rec.length == 2 and rec.file_names[1].endswith("img/v/1.jpg")
    inst = rec.instances[0]
    assert inst.label == 1 and inst.category_id == 7 and not inst.iscrowd
    assert decode_segmentation(inst.segmentations[1], 20, 30) is None


def test_coco_category_maps_round_trip():
    for target, (classes, cmap) in TARGETS.items():
        assert all(1 <= v <= len(classes) for v in cmap.values()), target
        inv = invert_category_map(cmap)
        assert {src: dst for dst, srcs in inv.items() for src in srcs} == cmap
    # person -> person; bicycle, motorcycle -> motorbike (YT-19); car, bus, truck -> vehicle (OVIS).
    assert COCO_TO_YTVIS_2019[1] == 1 and invert_category_map(COCO_TO_YTVIS_2019)[21] == [2, 4]
    assert invert_category_map(COCO_TO_OVIS)[25] == [3, 6, 8]


def test_coco_reader_maps_classes_and_drops_unmapped(tmp_path):
    m = _square_mask()
    data = {
        "images": [{"id": 9, "file_name": "x.jpg", "height": 20, "width": 30}],
        "categories": [
            {"id": 1, "name": "person"},
            {"id": 2, "name": "bicycle"},
            {"id": 11, "name": "hydrant"},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 9,
                "category_id": 2,
                "iscrowd": 0,
                "segmentation": [[6, 4, 20, 4, 20, 12, 6, 12]],
            },
            {"id": 2, "image_id": 9, "category_id": 11, "iscrowd": 0, "segmentation": encode_rle(m)},
            {
                "id": 3,
                "image_id": 9,
                "category_id": 1,
                "iscrowd": 1,
                "segmentation": encode_uncompressed_rle(m),
            },
        ],
    }
    p = tmp_path / "coco.json"
    p.write_text(json.dumps(data))
    recs, meta = load_coco_json(p, tmp_path, target="ytvis_2019")
    assert meta.num_classes == 40 and meta.evaluator_type == "coco"
    (rec,) = recs
    assert rec.length == 1 and [i.category_id for i in rec.instances] == [21, 1]  # hydrant dropped
    assert [i.label for i in rec.instances] == [20, 0] and rec.instances[1].iscrowd
    recs, meta = load_coco_json(p, tmp_path)  # COCO's own label space
    assert meta.category_ids == [1, 2, 11] and len(recs[0].instances) == 3


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: d["annotations"][0]["segmentations"].append(None), "'segmentations' has 3 entries"),
        (lambda d: d["annotations"][0].__setitem__("category_id", 99), "'category_id' 99"),
        (lambda d: d["annotations"][0].__setitem__("video_id", 42), "'video_id' 42"),
        (lambda d: d["videos"][0].pop("file_names"), "missing field 'file_names'"),
        (lambda d: d["videos"][0].__setitem__("length", 3), "'length' is 3"),
        (lambda d: d.pop("categories"), "'categories'"),
        (lambda d: d["videos"][0].__setitem__("height", "20"), "'height' must be int"),
    ],
)
def test_bad_ytvis_json_names_file_video_and_field(tmp_path, mutate, needle):
    data = copy.deepcopy(_tiny_ytvis(_square_mask()))
    mutate(data)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data))
    with pytest.raises(DatasetError) as e:
        load_ytvis_json(p, tmp_path)
    msg = str(e.value)
    assert str(p) in msg and needle in msg, msg
    if "annotations" in msg and "video_id" not in needle:
        assert "video 5" in msg


def test_corrupt_and_missing_json(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{"videos": [')
    with pytest.raises(DatasetError, match=r"c\.json: invalid JSON at line 1"):
        load_ytvis_json(p, tmp_path)
    with pytest.raises(DatasetError, match="annotation file not found"):
        load_ytvis_json(tmp_path / "missing.json", tmp_path)
