"""The engine on a COCO-kind dataset: ``vidseg eval`` / ``run_eval`` and evaluation during training pick the
COCO evaluator (bbox + segm AP) and write ``coco_instances_results.json`` into the eval folder."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from vidseg.data import load_dataset
from vidseg.engine.evaluate import evaluate_dataset
from vidseg.engine.run import DataSource, RunOptions, run_eval, run_train
from vidseg.evaluation import COCOEvaluator, YTVISEvaluator
from vidseg.models import load_config
from vidseg.structures.masks import decode_segmentation, encode_rle
from vidseg.structures.results import Track, VideoResult

TINY_CONFIG = "configs/quickstart/deformable_mask_head_tiny.yaml"
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# (image id, h, w, [(category id, x0, y0, x1, y1)]); categories 3 (red boxes) and 8 (green boxes)
IMAGES = [
    (5, 64, 80, [(3, 8, 10, 40, 50), (8, 50, 5, 75, 30)]),
    (9, 72, 64, [(8, 10, 20, 50, 60)]),
    (21, 64, 64, [(3, 4, 4, 30, 30), (3, 34, 30, 60, 60)]),
]
COLOURS = {3: (220, 30, 30), 8: (30, 200, 60)}


def write_tiny_coco(root, split="val2017"):
    """A COCO-layout set under ``root/coco`` (JPEGs + ``annotations/instances_<split>.json``)."""
    img_dir = root / "coco" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for img_id, h, w, objs in IMAGES:
        pixels = np.full((h, w, 3), 90, dtype=np.uint8)
        for cat, x0, y0, x1, y1 in objs:
            pixels[y0:y1, x0:x1] = COLOURS[cat]
            poly = [x0, y0, x1, y0, x1, y1, x0, y1]
            anns.append(
                {"id": len(anns) + 1, "image_id": img_id, "category_id": cat, "segmentation": [poly],
                 "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0}
            )  # fmt: skip
        name = f"{img_id:012d}.jpg"
        Image.fromarray(pixels).save(img_dir / name, quality=95)
        images.append({"id": img_id, "file_name": name, "height": h, "width": w})
    cats = [{"id": 3, "name": "red", "supercategory": "x"}, {"id": 8, "name": "green", "supercategory": "x"}]
    ann_dir = root / "coco" / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    path = ann_dir / f"instances_{split}.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def tiny_cfg(root, out, *opts):
    return load_config(
        TINY_CONFIG,
        [
            *("DATASETS.ROOT", str(root), "DATASETS.TEST", "('coco_2017_val',)", "OUTPUT_DIR", str(out)),
            *("MODEL.DEVICE", "cpu", "MODEL.BACKBONE_PRETRAINED", "''", "DATALOADER.NUM_WORKERS", "0"),
            *("INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96", "VISDOM_ON", "False"),
            *opts,
        ],
    )


def _check_metrics(metrics, prefix=""):
    for task in ("bbox", "segm"):
        for name in METRICS:
            v = metrics[f"{prefix}{task}/{name}"]
            assert math.isnan(v) or 0.0 <= v <= 100.0, (task, name, v)
        assert not math.isnan(metrics[f"{prefix}{task}/AP"])


def _check_results_file(path, gt_json):
    entries = json.loads(path.read_text())
    assert entries, "no predictions"
    ids = {im[0] for im in IMAGES}
    for e in entries:
        assert e["image_id"] in ids and e["category_id"] in (3, 8) and 0.0 <= e["score"] <= 1.0
        assert len(e["bbox"]) == 4 and isinstance(e["segmentation"]["counts"], str)
    size = {im[0]: [im[1], im[2]] for im in IMAGES}
    assert all(e["segmentation"]["size"] == size[e["image_id"]] for e in entries)
    COCO(str(gt_json)).loadRes(str(path))  # valid COCO results format


def test_data_source_picks_the_evaluator_by_type(tmp_path):
    write_tiny_coco(tmp_path)
    cfg = tiny_cfg(tmp_path, tmp_path / "out")
    ev = DataSource().evaluator(cfg, "coco_2017_val", tmp_path / "out" / "eval")
    assert isinstance(ev, COCOEvaluator) and ev.tasks == ("bbox", "segm")
    assert ev.label_to_category == {0: 3, 1: 8}
    assert ev.output_dir == tmp_path / "out" / "eval"


def test_ytvis_sets_keep_the_ytvis_evaluator(tmp_path):
    (tmp_path / "v.json").write_text(
        json.dumps({"videos": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]})
    )
    cfg = tiny_cfg(
        tmp_path,
        tmp_path / "out",
        *("DATASETS.CUSTOM_VAL_JSON", str(tmp_path / "v.json"), "DATASETS.CUSTOM_VAL_IMAGES", str(tmp_path)),
    )
    ev = DataSource().evaluator(cfg, "custom_val", tmp_path / "e")
    assert isinstance(ev, YTVISEvaluator) and not ev.ovis and ev.workers == 1


class OracleInference:
    """``inference(model, video)`` that returns the ground truth of the pseudo-video as one-frame tracks."""

    def __init__(self, cfg, name):
        self.records = {r.video_id: r for r in load_dataset(name, cfg)[0]}

    def __call__(self, model, video):
        rec = self.records[int(video.video_id)]
        result = VideoResult(video_id=rec.video_id, height=rec.height, width=rec.width)
        for inst in rec.instances:
            mask = decode_segmentation(inst.segmentations[0], rec.height, rec.width)
            result.tracks.append(Track(score=0.9, label=inst.label, masks=[encode_rle(mask)]))
        return result


@pytest.mark.parametrize("name", ["coco_2017_val", "coco2ytvis2019_val"])
def test_ground_truth_through_the_engine_scores_100(tmp_path, name):
    """Image ids, the label map (also into a video label space) and mask sizes line up end to end."""
    write_tiny_coco(tmp_path)
    cfg = tiny_cfg(tmp_path, tmp_path / "out", "DATASETS.TEST", f"('{name}',)")
    data = DataSource()
    dataset, collate = data.test(cfg, name)
    meta = data.metadata(cfg, name)
    out = tmp_path / "out" / "eval"
    evaluator = data.evaluator(cfg, name, out)
    m = evaluate_dataset(
        torch.nn.Identity(), OracleInference(cfg, name), dataset, out, meta.label_to_category_id, evaluator,
        collate, progress=False,
    )  # fmt: skip
    assert m["bbox/AP"] == pytest.approx(100.0) and m["segm/AP"] == pytest.approx(100.0)
    entries = json.loads((out / "coco_instances_results.json").read_text())
    expected = {3: 6, 8: 29} if name == "coco2ytvis2019_val" else {3: 3, 8: 8}
    assert sorted(e["category_id"] for e in entries) == sorted(expected[o[0]] for im in IMAGES for o in im[3])


@pytest.mark.filterwarnings("ignore:eval. MODEL.WEIGHTS is empty")
def test_eval_only_on_coco_writes_bbox_and_segm_metrics(tmp_path):
    gt = write_tiny_coco(tmp_path)
    out = tmp_path / "out"
    assert run_eval(tiny_cfg(tmp_path, out), RunOptions(progress=False)) == 0
    root = out / "eval_results"
    metrics = json.loads((root / "metrics.json").read_text())
    _check_metrics(metrics)
    _check_results_file(root / "coco_instances_results.json", gt)


def test_eval_during_training_on_coco(tmp_path):
    write_tiny_coco(tmp_path, "train2017")
    gt = write_tiny_coco(tmp_path, "val2017")
    out = tmp_path / "run"
    cfg = tiny_cfg(
        tmp_path,
        out,
        *("DATASETS.TRAIN", "('coco_2017_train',)", "SOLVER.SCHEDULE", "epoch", "SOLVER.EPOCHS", "1"),
        *("SOLVER.STEPS", "(1,)", "SOLVER.BATCH_SIZE", "2", "TEST.EVAL_PERIOD", "1"),
        *("INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96", "SOLVER.CHECKPOINT_PERIOD", "0"),
    )
    assert run_train(cfg, RunOptions(progress=False)) == 0
    epoch_dir = out / "eval_results" / "epoch_1"
    _check_results_file(epoch_dir / "coco_instances_results.json", gt)
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "bbox/AP" in x]
    assert len(evals) == 1
    _check_metrics(evals[0])


@pytest.mark.e2e
def test_vidseg_eval_cli_on_coco(tmp_path):
    gt = write_tiny_coco(tmp_path)
    out = tmp_path / "cli"
    cfg_args = [
        *("DATASETS.ROOT", tmp_path, "DATASETS.TEST", "('coco_2017_val',)", "OUTPUT_DIR", out),
        *("MODEL.DEVICE", "cpu", "MODEL.BACKBONE_PRETRAINED", "''", "DATALOADER.NUM_WORKERS", "0"),
        *("INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    cmd = [sys.executable, "-m", "vidseg", "eval", "--config-file", TINY_CONFIG, "--no-progress"]
    p = subprocess.run(cmd + [str(a) for a in cfg_args], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    _check_metrics(json.loads((out / "eval_results" / "metrics.json").read_text()))
    _check_results_file(out / "eval_results" / "coco_instances_results.json", gt)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:eval. MODEL.WEIGHTS is empty")
def test_eval_only_on_coco_with_two_gloo_processes(tmp_path, monkeypatch):
    """``--num-gpus 2`` on CPU: each rank infers its images, rank 0 gathers; same numbers as one process."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    gt = write_tiny_coco(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_eval(tiny_cfg(tmp_path, one, "SEED", "3"), RunOptions(progress=False)) == 0
    assert run_eval(tiny_cfg(tmp_path, two, "SEED", "3"), RunOptions(progress=False, num_procs=2)) == 0
    m1 = json.loads((one / "eval_results" / "metrics.json").read_text())
    m2 = json.loads((two / "eval_results" / "metrics.json").read_text())
    assert m2.keys() == m1.keys()
    _check_results_file(two / "eval_results" / "coco_instances_results.json", gt)
    r1 = json.loads((one / "eval_results" / "coco_instances_results.json").read_text())
    r2 = json.loads((two / "eval_results" / "coco_instances_results.json").read_text())
    assert sorted(e["image_id"] for e in r1) == sorted(e["image_id"] for e in r2)


def test_custom_coco_set_through_config_keys(tmp_path):
    """``DATASETS.CUSTOM_FORMAT coco``: a user's own COCO-format set, read as images, scored by COCOeval."""
    gt = write_tiny_coco(tmp_path)
    images = str(tmp_path / "coco" / "val2017")
    keys = ("DATASETS.CUSTOM_VAL_JSON", str(gt), "DATASETS.CUSTOM_VAL_IMAGES", images)
    cfg = tiny_cfg(tmp_path, tmp_path / "out", *keys, "DATASETS.TEST", "('custom_val',)")
    data = DataSource()
    cfg.defrost()
    cfg.DATASETS.CUSTOM_FORMAT = "ytvis"  # the default: the error names the file and the key that fixes it
    with pytest.raises(Exception, match="instances_val2017.json.*CUSTOM_FORMAT coco"):
        data.metadata(cfg, "custom_val")
    cfg.DATASETS.CUSTOM_FORMAT = "coco"
    dataset, collate = data.test(cfg, "custom_val")
    meta = data.metadata(cfg, "custom_val")
    out = tmp_path / "out" / "eval"
    evaluator = data.evaluator(cfg, "custom_val", out)
    assert isinstance(evaluator, COCOEvaluator)
    m = evaluate_dataset(
        torch.nn.Identity(), OracleInference(cfg, "custom_val"), dataset, out, meta.label_to_category_id,
        evaluator, collate, progress=False,
    )  # fmt: skip
    assert m["segm/AP"] == pytest.approx(100.0)
    cfg.DATASETS.CUSTOM_FORMAT = "cocoo"
    with pytest.raises(Exception, match="CUSTOM_FORMAT"):
        data.metadata(cfg, "custom_val")


def _official_devis_file(model, path):
    """DeVIS main.py's save: AdamW (5 name-matched groups) stepped, MultiStepLR, frozen yacs cfg, legacy."""
    from yacs.config import CfgNode

    names = (["backbone.0"], ["sampling_offsets", "reference_points"], ["bbox_attention", "mask_head"])
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if not any(k in n for ks in names for k in ks)], "lr": 2e-5}]
    groups += [{"params": [p for n, p in named if any(k in n for k in ks)], "lr": 1e-5} for ks in names]
    groups.append({"params": [p for n, p in named if "temporal_sampling_offsets" in n], "lr": 2e-6})
    optimizer = torch.optim.AdamW(groups, lr=2e-5, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [15])
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-3)
    optimizer.step()
    scheduler.step()
    cfg = CfgNode({"MODEL": CfgNode({"SHIFT_CLASS_NEURON": True}), "SOLVER": CfgNode({"STEPS": [15]})})
    cfg.freeze()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 1, "cfg": cfg}
    state.update(lr_scheduler=scheduler.state_dict(), vis_win_names={}, best_val_stats=[0.1, 0.2])
    torch.save(state, path, _use_new_zipfile_serialization=False)


def test_eval_reads_official_weights_and_shifts_only_deformable_detr_files(tmp_path):
    """MODEL.WEIGHTS through ``run_eval``: an official DeVIS file loads strictly; MODEL.SHIFT_CLASS_NEURON
    rotates the class rows of an official Deformable DETR file and leaves the DeVIS file alone (logged)."""
    import argparse

    from vidseg.models import build_model

    write_tiny_coco(tmp_path)
    cfg = tiny_cfg(tmp_path, tmp_path / "x", "MODEL.NUM_CLASSES", "2")
    model = build_model(cfg).model
    devis, ddetr = tmp_path / "devis_coco.pth", tmp_path / "ddetr.pth"
    _official_devis_file(model, devis)
    bare = {k[len("def_detr.") :]: v for k, v in model.state_dict().items() if k.startswith("def_detr.")}
    torch.save({"model": bare, "epoch": 49, "args": argparse.Namespace(lr=2e-4, with_box_refine=True)}, ddetr)
    for path, out in ((devis, tmp_path / "out_devis"), (ddetr, tmp_path / "out_ddetr")):
        opts = ("MODEL.NUM_CLASSES", "2", "MODEL.WEIGHTS", str(path), "MODEL.SHIFT_CLASS_NEURON", "True")
        assert run_eval(tiny_cfg(tmp_path, out, *opts), RunOptions(progress=False)) == 0
        log = (out / "log.txt").read_text()
        n = len(model.state_dict())
        if path == devis:
            assert f"format=devis_maskhead; mapped {n} tensors; nothing left out" in log
            assert "SHIFT_CLASS_NEURON not applied" in log and "rows of" not in log
        else:
            assert f"format=deformable_detr; mapped {len(bare)} tensors ({len(bare)} renamed" in log
            assert "SHIFT_CLASS_NEURON: class_embed rows of" in log and "class rows shifted in" in log


def test_mask2former_trains_and_scores_coco_through_the_engine(tmp_path):
    """The per-frame detector of GRAtt-VIS: image training and COCO bbox + segm AP during training."""
    write_tiny_coco(tmp_path, "train2017")
    gt = write_tiny_coco(tmp_path, "val2017")
    out = tmp_path / "m2f"
    cfg = load_config(
        "configs/quickstart/mask2former_tiny.yaml",
        [
            *("DATASETS.ROOT", str(tmp_path), "DATASETS.TRAIN", "('coco_2017_train',)"),
            *("OUTPUT_DIR", str(out), "DATASETS.TEST", "('coco_2017_val',)", "MODEL.DEVICE", "cpu"),
            *("DATALOADER.NUM_WORKERS", "0", "VISDOM_ON", "False", "SOLVER.CHECKPOINT_PERIOD", "0"),
            *("INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96", "INPUT.MIN_SIZE_TRAIN", "(64,)"),
            *("INPUT.MAX_SIZE_TRAIN", "96", "SOLVER.SCHEDULE", "epoch", "SOLVER.EPOCHS", "1"),
            *("SOLVER.STEPS", "(1,)", "SOLVER.BATCH_SIZE", "2", "TEST.EVAL_PERIOD", "1"),
        ],
    )
    assert run_train(cfg, RunOptions(progress=False)) == 0
    _check_results_file(out / "eval_results" / "epoch_1" / "coco_instances_results.json", gt)
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "segm/AP" in x]
    assert len(evals) == 1
    _check_metrics(evals[0])
