"""``vidseg predict`` end to end on a generated mp4 with the toy model: results.json, rendered mp4, errors."""

from __future__ import annotations

import json

import pytest
from inference_helpers import N_FRAMES, H, W, write_frame_folder, write_mp4, write_toy_config

from vidseg.checkpoints import write_weights
from vidseg.cli import main
from vidseg.data.video_io import read_video_frames
from vidseg.inference import VideoPredictor
from vidseg.models import build_model, load_config


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["predict", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _toy_weights(tmp_path, cfg_path, opts=()):
    bundle = build_model(load_config(str(cfg_path), list(opts)))
    path = tmp_path / "toy.pth"
    write_weights(path, bundle.model.state_dict(), overwrite=True)
    return path, bundle.model


@pytest.mark.e2e
def test_predict_mp4_writes_results_and_video(tmp_path, capsys):
    cfg = write_toy_config(tmp_path)
    mp4 = write_mp4(tmp_path / "walk.mp4")
    weights, model = _toy_weights(tmp_path, cfg)
    out = tmp_path / "pred"
    rc, stdout, err = _run(
        capsys, str(mp4), "--config-file", str(cfg), "--weights", str(weights), "--out", str(out),
        "--score-threshold", "0.0", "--no-progress", "MODEL.TOY.TOPK", "3",
    )  # fmt: skip
    assert rc == 0, err
    entries = json.loads((out / "results.json").read_text())
    assert len(entries) == 3  # one entry per track (MODEL.TOY.TOPK 3 from the KEY VALUE override)
    for e in entries:
        assert set(e) == {"video_id", "score", "category_id", "segmentations"}
        assert len(e["segmentations"]) == N_FRAMES
        assert e["video_id"] == 0 and 1 <= e["category_id"] <= 3  # no dataset: category id = label + 1
        rle = next(s for s in e["segmentations"] if s)
        assert rle["size"] == [H, W] and isinstance(rle["counts"], str)
    assert (out / "results.zip").is_file()
    rendered = read_video_frames(out / "walk.mp4")
    assert rendered.shape == (N_FRAMES, H, W, 3)
    assert str(out / "results.json") in stdout and str(out / "walk.mp4") in stdout
    # The command used the given weights: the same model through the API gives the same scores.
    pred = VideoPredictor.from_config(load_config(str(cfg), ["MODEL.TOY.TOPK", "3"]), str(weights))
    assert all(
        torch_equal(a, b) for a, b in zip(pred.model.state_dict().values(), model.state_dict().values())
    )
    scores = [t.score for t in pred.predict(mp4, progress=False).tracks]
    assert [e["score"] for e in entries] == pytest.approx(scores)


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_predict_frame_folder_no_render_and_threshold(tmp_path, capsys):
    cfg = write_toy_config(tmp_path)
    frames = write_frame_folder(tmp_path / "clipA")
    out = tmp_path / "out"
    rc, stdout, err = _run(
        capsys, str(frames), "--config-file", str(cfg), "--out", str(out), "--no-render", "--no-progress",
        "--score-threshold", "1.5", "--max-frames", "4",
    )  # fmt: skip
    assert rc == 0, err
    entries = json.loads((out / "results.json").read_text())
    assert len(entries) == 5 and all(len(e["segmentations"]) == 4 for e in entries)
    assert not list(out.glob("*.mp4"))
    assert "5 tracks, 0 with score >= 1.5" in stdout


def test_predict_errors_name_the_file(tmp_path, capsys):
    cfg = write_toy_config(tmp_path)
    rc, _, err = _run(capsys, str(tmp_path / "missing.mp4"), "--config-file", str(cfg))
    assert rc == 2 and "source not found" in err and "missing.mp4" in err

    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 50)
    rc, _, err = _run(capsys, str(bad), "--config-file", str(cfg), "--no-progress")
    assert rc == 2 and "corrupt.mp4" in err

    mp4 = write_mp4(tmp_path / "ok.mp4")
    rc, _, err = _run(capsys, str(mp4), "--config-file", str(cfg), "--weights", str(tmp_path / "no.pth"))
    assert rc == 2 and "weights file not found" in err and "no.pth" in err

    # Weights of a wider model do not fit: a clear error naming the file, not a silent partial load.
    wide, _ = _toy_weights(tmp_path, cfg, ["MODEL.TOY.HIDDEN_DIM", "32"])
    rc, _, err = _run(capsys, str(mp4), "--config-file", str(cfg), "--weights", str(wide), "--no-progress")
    assert rc == 2 and "toy.pth" in err and "do not fit" in err and "shape mismatch" in err

    rc, _, err = _run(capsys, str(mp4), "--config-file", str(cfg), "MODEL.TOY.NO_SUCH_KEY", "1")
    assert rc == 2 and "NO_SUCH_KEY" in err
