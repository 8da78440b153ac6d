"""``vidseg predict`` never writes over its source nor over earlier results (unless --overwrite), and says
what the scores were when nothing reaches the threshold."""

from __future__ import annotations

import json

from inference_helpers import write_mp4, write_toy_config

from vidseg.cli import main


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["predict", *map(str, argv), "--no-progress"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_predict_into_the_source_folder_keeps_the_source(tmp_path, capsys):
    cfg = write_toy_config(tmp_path)
    mp4 = write_mp4(tmp_path / "myclip.mp4")
    before = mp4.read_bytes()
    rc, out, err = _run(capsys, mp4, "--config-file", cfg, "--out", tmp_path, "--score-threshold", "0")
    assert rc == 0, err
    assert mp4.read_bytes() == before  # the source is untouched
    assert (tmp_path / "myclip_pred.mp4").stat().st_size > 0
    assert f"video:   {tmp_path / 'myclip_pred.mp4'}" in out


def test_predict_refuses_to_replace_results_unless_overwrite(tmp_path, capsys):
    cfg = write_toy_config(tmp_path)
    mp4 = write_mp4(tmp_path / "walk.mp4")
    out = tmp_path / "pred"
    assert _run(capsys, mp4, "--config-file", cfg, "--out", out)[0] == 0
    first = (out / "results.json").read_bytes()
    rc, _, err = _run(capsys, mp4, "--config-file", cfg, "--out", out, "--topk", "1")
    assert rc == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("vidseg predict: error: would replace ") and "--overwrite" in line
    for name in ("results.json", "results.zip", "walk.mp4"):
        assert str(out / name) in line, name
    assert (out / "results.json").read_bytes() == first
    rc, _, err = _run(capsys, mp4, "--config-file", cfg, "--out", out, "--topk", "1", "--overwrite")
    assert rc == 0, err
    assert len(json.loads((out / "results.json").read_text())) == 1


def test_nothing_above_the_threshold_says_what_the_scores_were(tmp_path, capsys):
    cfg = write_toy_config(tmp_path)
    mp4 = write_mp4(tmp_path / "walk.mp4")
    rc, out, err = _run(
        capsys, mp4, "--config-file", cfg, "--out", tmp_path / "p", "--no-render", "--score-threshold", "1.5"
    )
    assert rc == 0, err
    scores = sorted(
        (e["score"] for e in json.loads((tmp_path / "p" / "results.json").read_text())), reverse=True
    )
    head, detail = out.splitlines()[1:3]
    assert head == "5 tracks, 0 with score >= 1.5"
    assert f"the best scores are {scores[0]:.3g} (track" in detail
    shown = float(detail.split("--score-threshold ")[1].split()[0])
    assert 0.9 * scores[0] <= shown <= scores[0]  # a threshold that keeps the best track, and no lower
