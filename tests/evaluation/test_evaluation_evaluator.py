"""The evaluator interface, the results writer, distributed gathering and the CLI."""

import json
import math
import os
import zipfile

import pytest
from evalcase_gen import encode
from gloo_ranks import run_ranks
from test_evaluation_quirks import ONE, block, gt_dict

from vidseg.cli import main
from vidseg.evaluation import YTVISEvaluator
from vidseg.structures.results import Track, VideoResult


def _video_result(video_id=1, label=0):
    return VideoResult(
        video_id=video_id, height=4, width=4, tracks=[Track(score=0.9, label=label, masks=[encode(block())])]
    )


def _gt_file(tmp_path, annotations=True):
    gt = gt_dict([{"masks": [block()]}, {"masks": [block()], "video_id": 2}], videos=((1, 1), (2, 1)))
    if not annotations:
        del gt["annotations"]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path


def test_evaluator_writes_files_and_returns_percent(tmp_path):
    ev = YTVISEvaluator(_gt_file(tmp_path), [1, 2], tmp_path / "out", progress=False)
    ev.reset()
    ev.process(None, [_video_result(1)])
    ev.process(None, _video_result(2, label=1))  # category 2 in video 2: a false positive
    out = ev.evaluate()["segm"]
    assert out["AP"] == pytest.approx(51 * ONE / 101 * 100)  # one of two GT found, at precision 1
    assert out["AP-c1"] == out["AP"] and math.isnan(out["AP-c2"])
    entries = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [e["category_id"] for e in entries] == [1, 2]
    assert isinstance(entries[0]["segmentations"][0]["counts"], str)
    with zipfile.ZipFile(tmp_path / "out" / "results.zip") as z:
        assert z.namelist() == ["results.json"] and json.loads(z.read("results.json")) == entries


def test_evaluator_without_annotations_only_writes(tmp_path):
    ev = YTVISEvaluator(_gt_file(tmp_path, annotations=False), {0: 1}, tmp_path / "out", progress=False)
    ev.process(None, [_video_result()])
    assert ev.evaluate() == {}
    assert (tmp_path / "out" / "results.zip").is_file()


def _worker(rank, world, port, gt_path, out_dir, queue):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    ev = YTVISEvaluator(gt_path, [1, 2], out_dir, progress=False)
    ev.reset()
    ev.process(
        None, [_video_result(rank + 1), _video_result(1)]
    )  # video 1 seen on both ranks (sampler padding)
    queue.put((rank, ev.evaluate()))
    dist.destroy_process_group()


def test_evaluator_gathers_across_two_gloo_processes(tmp_path):
    gt = str(_gt_file(tmp_path))
    results = run_ranks(_worker, lambda r, port, queue: (r, 2, port, gt, str(tmp_path), queue))
    assert results[1] == {}
    assert results[0]["segm"]["AP"] == pytest.approx(ONE * 100)  # both videos found, video 1 counted once
    assert len(json.loads((tmp_path / "results.json").read_text())) == 2


def test_cli_prints_table_and_json(tmp_path, capsys):
    gt = _gt_file(tmp_path)
    res = tmp_path / "res.json"
    res.write_text(json.dumps([e for vr in [_video_result(1)] for e in vr.to_official([1, 2])]))
    out = tmp_path / "scores.json"
    assert main(["score", str(gt), str(res), "--per-category", "--json", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "AP50" in text and "c1" in text
    report = json.loads(out.read_text())
    assert report["stats"]["AP"] == pytest.approx(51 * ONE / 101) and report["per_category"][1]["AP"] == -1


def test_cli_reports_bad_input(tmp_path, capsys):
    gt = _gt_file(tmp_path)
    res = tmp_path / "res.json"
    res.write_text(json.dumps([{"video_id": 1}]))
    assert main(["score", str(gt), str(res), "--no-progress"]) == 1
    assert "entry 0: missing required field 'category_id'" in capsys.readouterr().err
    assert main(["score", str(gt), os.fspath(tmp_path / "nope.json")]) == 1


def test_cli_workers_option(tmp_path, capsys):
    gt = _gt_file(tmp_path)
    res = tmp_path / "res.json"
    res.write_text(json.dumps([e for vr in [_video_result(1)] for e in vr.to_official([1, 2])]))
    outs = []
    for w in ("1", "2"):
        out = tmp_path / f"scores{w}.json"
        assert main(["score", str(gt), str(res), "--workers", w, "--json", str(out), "--no-progress"]) == 0
        outs.append(json.loads(out.read_text()))
    assert outs[0] == outs[1]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["score", str(gt), str(res), "--workers", "0"])
    assert "expected a positive integer" in capsys.readouterr().err
