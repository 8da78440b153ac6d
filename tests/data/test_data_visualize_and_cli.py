"""Rendering (library and ``vidseg visualize``) and ``vidseg synth``."""

import json

import numpy as np
import pytest

from vidseg.cli import main
from vidseg.data.video_io import read_video_frames
from vidseg.structures.masks import encode_rle
from vidseg.structures.results import Track, VideoResult
from vidseg.visualization import draw_overlays, overlays_from_result, render_result_to_file, track_colour


def test_draw_overlays_colours_the_mask_only():
    frame = np.full((40, 60, 3), 100, np.uint8)
    m = np.zeros((40, 60), bool)
    m[20:35, 10:40] = True
    from vidseg.visualization import Overlay

    out = draw_overlays(frame, [Overlay(m, (255, 0, 0), "1: star")])
    assert out[27, 25, 0] > 150 and out[27, 25, 1] < 100  # blended red inside
    assert (out[38:, 45:] == 100).all()  # untouched far from the mask and its label
    assert (out[5:19, 10:40] != 100).any()  # the label box above the mask
    assert track_colour(1) != track_colour(2)


def test_render_video_result(tmp_path):
    h, w, t = 32, 48, 4
    frames = [np.full((h, w, 3), 80, np.uint8) for _ in range(t)]
    masks = []
    for k in range(t):
        m = np.zeros((h, w), np.uint8)
        m[5:20, 5 + 5 * k : 20 + 5 * k] = 1
        masks.append(encode_rle(m))
    res = VideoResult(1, h, w, [Track(0.9, 2, masks[:3] + [None], track_id=4), Track(0.1, 0, masks)])
    ov = overlays_from_result(res, ["a", "b", "c"], score_threshold=0.5)
    assert [len(o) for o in ov] == [1, 1, 1, 0] and ov[0][0].text == "4: c 0.90"
    out = render_result_to_file(tmp_path / "r.gif", frames, res, ["a", "b", "c"], score_threshold=0.5)
    back = read_video_frames(out)
    assert back.shape == (t, h, w, 3)
    assert (
        np.abs(back[0, 15, 12].astype(int) - 80).sum() > 40
        and np.abs(back[3, 15, 12].astype(int) - 80).sum() < 20
    )


def test_synth_and_visualize_commands(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["synth", str(out), "--seed", "1", "--videos", "2", "--val-videos", "1", "--frames", "3-4",
                 "--size", "48x64", "--classes", "3"]) == 0  # fmt: skip
    gt = out / "valid" / "instances.json"
    images = out / "valid" / "JPEGImages"
    data = json.loads(gt.read_text())
    assert len(data["videos"]) == 1 and len(data["categories"]) == 3
    assert (
        main(["visualize", "--gt", str(gt), "--images", str(images), "--out", str(tmp_path / "gt.mp4")]) == 0
    )
    assert read_video_frames(tmp_path / "gt.mp4").shape[0] == data["videos"][0]["length"]
    # Predictions: the GT itself as a results JSON (compressed RLE).
    from vidseg.structures.masks import decode_segmentation

    v = data["videos"][0]
    results = [
        {"video_id": a["video_id"], "category_id": a["category_id"], "score": 0.8,
         "segmentations": [encode_rle(decode_segmentation(s, v["height"], v["width"])) if s else None
                           for s in a["segmentations"]]}
        for a in data["annotations"]
    ]  # fmt: skip
    rpath = tmp_path / "results.json"
    rpath.write_text(json.dumps(results))
    args = ["visualize", "--gt", str(gt), "--results", str(rpath), "--images", str(images)]
    assert main([*args, "--out", str(tmp_path / "pred.gif")]) == 0
    assert (tmp_path / "pred.gif").stat().st_size > 0
    rpath.write_text(json.dumps([{**results[0], "video_id": 999}]))
    assert main([*args, "--out", str(tmp_path / "bad.gif")]) == 1
    assert "'video_id' 999" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth", str(out), "--size", "48by64"])
