"""The engine writes its results files with the one results writer of vidseg.evaluation, in the format the
engine's own writer produced before (same JSON text, same zip member)."""

import json
import zipfile

from torch import nn

from vidseg.engine.evaluate import evaluate_dataset
from vidseg.structures.results import Track, VideoResult

RLE = {"size": [2, 3], "counts": "06"}  # pycocotools.mask.encode of a full 2x3 frame (counts as str)


def _inference(model, video):
    vid = int(video)
    tracks = [Track(score=0.5 + 0.1 * vid, label=vid % 2, masks=[RLE, None, RLE])]
    return VideoResult(video_id=vid, height=2, width=3, tracks=tracks)


def test_results_files_without_an_evaluator(tmp_path):
    metrics = evaluate_dataset(nn.Identity(), _inference, [3, 1, 2], tmp_path, [7, 9], progress=False)
    assert metrics == {}
    text = (tmp_path / "results.json").read_text()
    # what the engine's writer wrote: to_official entries of the videos by ascending id, json.dumps'd
    expected = [e for v in (1, 2, 3) for e in _inference(None, v).to_official([7, 9])]
    assert text == json.dumps(expected)
    assert [e["category_id"] for e in json.loads(text)] == [9, 7, 9]
    with zipfile.ZipFile(tmp_path / "results.zip") as z:
        assert z.namelist() == ["results.json"] and z.read("results.json").decode() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "results.zip"]  # no temporaries
