"""The numpy parser of uncompressed-RLE ``counts`` lists gives exactly what ``json`` gives, or falls back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vidseg.evaluation import rle_json
from vidseg.evaluation.rle_json import loads_rle_json, parse_int_lists
from vidseg.evaluation.ytvis_data import EvalInputError, load_ground_truth, read_json


def _reference(data: bytes):
    """What ``json`` gives, with counts lists of objects with a size as int64 arrays."""

    def hook(obj):
        if isinstance(obj.get("counts"), list) and "size" in obj:
            if all(type(x) is int and 0 <= x < 2**63 for x in obj["counts"]):
                obj["counts"] = np.array(obj["counts"], dtype=np.int64)
        return obj

    return json.loads(data, object_hook=hook)


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype == np.int64
            and np.array_equal(a, b)
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize(
    "text",
    [
        b'{"size": [2, 3], "counts": [1, 2, 3]}',
        b'{"size": [2, 3], "counts": []}',
        b'{"size": [2, 3], "counts": [ ]}',
        b'{"size":[1,1],"counts" : [\n0 ,\t1\r]}',
        b'{"counts": [1, 2], "other": 1}',  # no size: stays a list of ints
        b'[{"size": [1, 1], "counts": [0, 1]}, {"size": [1, 2], "counts": [2]}]',
        b'{"size": [1, 1], "counts": [1, 2], "counts": [3]}',  # duplicate key: the last wins
        b'{"size": [1, 1], "counts": [0, 10, 0, 7]}',
        b'{"size": [1, 1], "counts": [1,  2]}',  # double space: general parser
        b'{"size": [1, 1], "counts": [1 ,2]}',  # space before the comma: general parser
        b'{"size": [1, 1], "counts": [1, 2,3]}',  # mixed separators in one list
        b'{"size": [1, 1], "counts": [ 1, 2 ]}',  # spaces inside the brackets
        b'{"size": [1, 1], "counts": [1,\t2]}',  # a tab (whitespace JSON allows)
        b'{"size": [1, 1], "counts": [ 1, 2 ]}',
        b'{"size": [1, 1], "counts": [1, ,2]}',  # invalid JSON
        b'{"size": [1, 1], "counts": [1, , 2]}',  # invalid JSON (empty token in the usual layout)
        b'[{"size": [1, 1], "counts": [1,2]}, {"size": [1, 1], "counts": [3, 4]}]',  # mixed layouts
        b'[{"size": [1, 1], "counts": [5]}, {"size": [1, 1], "counts": [6]}, {"counts": [], "size": [1, 1]}]',
        b'{"size": [1, 1], "counts": [1, 02]}',  # invalid JSON (leading zero after ", ")
        b'{"size": [1, 1], "counts": [0, 0, 00]}',  # invalid JSON
        b'{"size": [1, 1], "counts": [10, 2]}{',  # trailing garbage
        b'{"size": [1, 1], "counts": [1.5, 2]}',  # floats: left to json
        b'{"size": [1, 1], "counts": [-1, 2]}',  # negative: left to json (the checker rejects it later)
        b'{"size": [1, 1], "counts": [01, 2]}',  # leading zero: invalid JSON, json's error
        b'{"size": [1, 1], "counts": [1 2]}',  # invalid JSON
        b'{"size": [1, 1], "counts": [1,, 2]}',  # invalid JSON
        b'{"size": [1, 1], "counts": [1, 2,]}',  # invalid JSON
        b'{"size": [1, 1], "counts": [,1]}',  # invalid JSON
        b'{"size": [1, 1], "counts": [12345678901234567890123, 0]}',  # too long for int64: left to json
        b'{"a": "x\\"counts\\": [1, 2]", "size": [1, 1], "counts": [4]}',  # inside a string: not a key
        b'{"a": "\\\\", "counts": [4], "size": [1, 1]}',  # escaped backslash before a real key
        b'{"a": "\\u0000vidseg-rle-0", "size": [1, 1], "counts": [4]}',  # the marker itself in the file
        b'{"size": [1, 1], "counts": "\\u0000vidseg\\u002drle-0", "b": {"counts": [5], "size": [1, 1]}}',
        b'{"size": [1, 1], "counts": [1, 2]',  # truncated
        b"\xff\xfe",  # not UTF-8
    ],
)
def test_rle_json_matches_json(text: bytes) -> None:
    try:
        want = _reference(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        with pytest.raises(type(e)) as got:
            loads_rle_json(text)
        assert str(got.value) == str(e)  # the same message as plain json
        return
    assert _same(loads_rle_json(text), want)


def test_rle_json_random_documents_and_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rle_json, "_CHUNK", 64)  # many chunks
    rng = np.random.default_rng(0)
    for _ in range(20):
        objs = []
        for _ in range(int(rng.integers(1, 30))):
            top = 10 ** int(rng.integers(1, 12))
            counts = [int(x) for x in rng.integers(0, top, int(rng.integers(0, 9)))]
            objs.append({"size": [int(rng.integers(1, 9)), 3], "counts": counts, "id": int(rng.integers(9))})
            if rng.random() < 0.2:
                objs.append({"counts": counts})
        text = json.dumps({"annotations": [{"segmentations": objs}]}, indent=int(rng.integers(0, 3)) or None)
        assert _same(loads_rle_json(text.encode()), _reference(text.encode()))


def test_parse_int_lists_flags_bad_lists() -> None:
    lists = [b"1,2,3", b"", b" 7 ", b"1,,2", b"01", b"1 2", b"0", b"4,", b"123456789012345678"]
    offsets = np.cumsum([0] + [len(x) for x in lists])
    values, ptr, bad = parse_int_lists(b"".join(lists), offsets)
    assert bad.tolist() == [False, False, False, True, True, True, False, True, False]
    got = {i: values[ptr[i] : ptr[i + 1]].tolist() for i in range(len(lists)) if not bad[i]}
    assert got == {0: [1, 2, 3], 1: [], 2: [7], 6: [0], 8: [123456789012345678]}


def test_load_ground_truth_fast_path_errors_name_file_and_field(tmp_path) -> None:
    gt = {
        "videos": [{"id": 1, "height": 2, "width": 2, "length": 1}],
        "categories": [{"id": 1}],
        "annotations": [
            {"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "areas": [1],
             "segmentations": [{"size": [2, 2], "counts": [1, 1, 2]}]},
            {"id": 2, "video_id": 1, "category_id": 1, "iscrowd": 0, "areas": [1],
             "segmentations": [{"size": [2, 2], "counts": [1, -1, 2]}]},
        ],
    }  # fmt: skip
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    with pytest.raises(EvalInputError, match=r"gt\.json: annotations\[1\]: segmentations\[0\]: field 'count"):
        load_ground_truth(path)
    gt["annotations"].pop()
    path.write_text(json.dumps(gt))
    tr = load_ground_truth(path).tracks[1, 1][0]
    assert tr.frames[0]["counts"].dtype == np.int64 and tr.frames[0]["counts"].tolist() == [1, 1, 2]
    path.write_text(json.dumps(gt)[:-5])
    with pytest.raises(EvalInputError, match=r"gt\.json: not valid JSON"):
        read_json(path, hook=True)


def test_rle_json_mutated_lists_match_json() -> None:
    """Random one-character edits of count lists (spaces, commas, signs, zeros, deletions) in both
    json.dump layouts: the fast path accepts exactly what json accepts, with json's values or error."""
    rng = np.random.default_rng(1)
    for trial in range(300):
        lists = [[int(x) for x in rng.integers(0, 10 ** int(rng.integers(1, 4)), int(rng.integers(1, 6)))]]
        lists.append([int(x) for x in rng.integers(0, 500, 4)])
        sep = (", ", ": ") if trial % 2 else (",", ":")
        text = json.dumps([{"size": [2, 3], "counts": c} for c in lists], separators=sep).encode()
        starts = [i for i in range(len(text)) if text[i : i + 1] == b"["][2:]  # inside the count lists
        pos = int(rng.choice(starts)) + 1 + int(rng.integers(0, 6))
        edit = rng.choice([b" ", b",", b"-", b"0", b"", b"  ", b"\t"])
        mutated = text[:pos] + edit + text[pos + (1 if rng.random() < 0.5 else 0) :]
        try:
            want = _reference(mutated)
        except json.JSONDecodeError as e:
            with pytest.raises(json.JSONDecodeError) as got:
                loads_rle_json(mutated)
            assert str(got.value) == str(e), mutated
            continue
        assert _same(loads_rle_json(mutated), want), mutated
