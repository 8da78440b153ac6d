"""The seeds' own commands (DeVIS and GRAtt-VIS READMEs), as typed, in their CPU form.

Each command is copied from its README. Its CPU form changes only what a CPU machine needs: 4 GPUs become 2
gloo processes (``--nproc_per_node=2``, ``--num-gpus 2``), the paths to data, weights and outputs point at
generated files, and trailing ``KEY VALUE`` overrides make the model tiny and the run 1-2 iterations. The
seed's own overrides stay where they were typed. One cheap representative runs always (the DeVIS command in
this process, one rank: what each torchrun rank runs); the multi-process forms are slow-marked.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]

DEVIS_TRAIN = "torchrun --nproc_per_node=4 main.py --config-file configs/devis/YT-19/devis_R_50_YT-19.yaml"
DEVIS_TRAIN_LR = DEVIS_TRAIN + " SOLVER.BASE_LR 0.0002"

# DeVIS R50 YT-19 at CPU size: ResNet-18, hidden 128, 1+2 layers, 3 levels, clips of 3 frames x 3 slots.
DEVIS_TINY = [
    "MODEL.DEVICE", "cpu", "MODEL.BACKBONE", "resnet18", "MODEL.HIDDEN_DIM", "128",
    "MODEL.DIM_FEEDFORWARD", "256", "MODEL.NUM_FEATURE_LEVELS", "3",
    "MODEL.TRANSFORMER.ENCODER_LAYERS", "1", "MODEL.TRANSFORMER.DECODER_LAYERS", "2",
    "MODEL.TRANSFORMER.ENC_N_POINTS", "2", "MODEL.TRANSFORMER.DEC_N_POINTS", "2",
    "MODEL.DEVIS.DEFORMABLE_ATTENTION.ENC_N_POINTS_TEMPORAL_FRAME", "2",
    "MODEL.DEVIS.DEFORMABLE_ATTENTION.DEC_N_POINTS_TEMPORAL_FRAME", "2",
    "MODEL.MASK_HEAD.USE_MDC", "False", "MODEL.LOSS.MASK_AUX_LOSS", "[]",
    "MODEL.LOSS.AUX_LOSS_WEIGHTING", "False",  # the official 1/30..15/30 weights are for 6 decoder layers
    "MODEL.DEFORM_ATTN_IMPL", "torch", "MODEL.DEVIS.NUM_FRAMES", "3", "INPUT.NUM_FRAMES", "3",
    "MODEL.NUM_QUERIES", "9", "MODEL.NUM_CLASSES", "0", "TEST.CLIP_TRACKING.STRIDE", "2",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "96", "INPUT.CROP.ENABLED", "False", "DATALOADER.NUM_WORKERS", "0",
    "SOLVER.EPOCHS", "1", "SOLVER.STEPS", "(1,)", "SOLVER.CHECKPOINT_PERIOD", "0", "TEST.EVAL_PERIOD", "0",
    "DATASETS.TRAIN_SUBSET", "1",
]  # fmt: skip
GRATT_TRAIN = (
    "python3 train_net_genvis.py --num-gpus 4 --config-file configs/genvis/ovis/grattvis_R50_bs8.yaml "
    "MODEL.WEIGHTS weights/vita_r50_ovis.pth MODEL.GENVIS.USE_MEM False MODEL.GENVIS.GATED_PROP True "
    "OUTPUT_DIR your_output_dir"
)
GRATT_EVAL = (
    "python3 train_net_genvis.py --num-gpus 1 --config-file YOUR_MODEL_PATH/config.yaml --eval-only "
    "MODEL.WEIGHTS YOUR_MODEL_PATH/model_checkpoint.pth MODEL.GENVIS.USE_MEM False "
    "MODEL.GENVIS.GATED_PROP True OUTPUT_DIR your_output_dir"
)
# GRAtt-VIS R50 OVIS at CPU size (as quickstart/grattvis_tiny.yaml): ResNet-18 detector of width 64 with 10
# queries, a head of width 64 (1 encoder, 3 decoder layers), clips of 3 frames, 2 iterations, fp32.
GRATT_TINY = [
    "MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", "18", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "0",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "64", "MODEL.SEM_SEG_HEAD.MASK_DIM", "64",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS", "2",
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS", "4",
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD", "128",
    "MODEL.MASK_FORMER.HIDDEN_DIM", "64", "MODEL.MASK_FORMER.NHEADS", "4",
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "128", "MODEL.MASK_FORMER.DEC_LAYERS", "4",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "10", "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "512",
    "MODEL.VITA.HIDDEN_DIM", "64", "MODEL.VITA.NHEADS", "4", "MODEL.VITA.DIM_FEEDFORWARD", "128",
    "MODEL.VITA.ENC_LAYERS", "1", "MODEL.VITA.DEC_LAYERS", "3", "MODEL.VITA.NUM_OBJECT_QUERIES", "10",
    "MODEL.VITA.LAST_LAYER_NUM", "3", "MODEL.DEFORM_ATTN_IMPL", "torch",
    "SOLVER.AMP.ENABLED", "False", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2",
    "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "0",
    "DATASETS.DATASET_RATIO", "[1.0]",
    "INPUT.NUM_FRAMES", "3", "INPUT.SAMPLING_FRAME_RANGE", "2", "INPUT.MIN_SIZE_TRAIN", "(64,)",
    "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
    "INPUT.CROP.ENABLED", "False", "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "0",
    "TEST.DETECTIONS_PER_IMAGE", "10",
]  # fmt: skip
# The COCO mask-head model the DeVIS config starts from (MODEL.WEIGHTS), at the same CPU size.
IMAGE_TINY = [
    "MODEL.DEVICE", "cpu", "MODEL.BACKBONE", "resnet18", "MODEL.HIDDEN_DIM", "128",
    "MODEL.DIM_FEEDFORWARD", "256", "MODEL.NUM_FEATURE_LEVELS", "3",
    "MODEL.TRANSFORMER.ENCODER_LAYERS", "1", "MODEL.TRANSFORMER.DECODER_LAYERS", "2",
    "MODEL.TRANSFORMER.ENC_N_POINTS", "2", "MODEL.TRANSFORMER.DEC_N_POINTS", "2",
    "MODEL.MASK_HEAD.USE_MDC", "False", "MODEL.NUM_QUERIES", "30", "MODEL.NUM_CLASSES", "80",
    "MODEL.WEIGHTS", "", "MODEL.DEFORM_ATTN_IMPL", "torch",
]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    from vidseg.data import generate_synthetic_dataset

    return generate_synthetic_dataset(
        tmp_path_factory.mktemp("synth"), seed=0, num_videos_train=2, num_videos_val=1, num_frames=4,
        height=64, width=96, progress=False,
    )  # fmt: skip


def _data_opts(data: dict) -> list[str]:
    return [
        "DATASETS.TRAIN", '("custom_train",)', "DATASETS.TEST", '("custom_val",)',
        "DATASETS.CUSTOM_TRAIN_JSON", str(data["train_json"]),
        "DATASETS.CUSTOM_TRAIN_IMAGES", str(data["train_images"]),
        "DATASETS.CUSTOM_VAL_JSON", str(data["val_json"]),
        "DATASETS.CUSTOM_VAL_IMAGES", str(data["val_images"]),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def coco_maskhead(tmp_path_factory) -> Path:
    """``weights/r50_deformable_detr_segmentation.pth`` at CPU size, as DeVIS ``main.py`` saves it."""
    from yacs.config import CfgNode

    from vidseg.models import build_model, load_config

    torch.manual_seed(0)
    cfg = load_config("quickstart/deformable_mask_head_tiny.yaml", IMAGE_TINY)
    model = build_model(cfg).model
    path = tmp_path_factory.mktemp("weights") / "r50_deformable_detr_segmentation.pth"
    cfg_node = CfgNode({"MODEL": CfgNode({"NUM_QUERIES": 30})})
    state = {"model": model.state_dict(), "optimizer": {}, "lr_scheduler": {}, "epoch": 50, "cfg": cfg_node}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return path


def _cpu_form(command: str, replace: dict[str, str], nproc: int = 2) -> list[str]:
    """The words of a seed command with its GPU count lowered and its placeholder paths replaced."""
    words = shlex.split(command)
    out = []
    for w in words:
        if w.startswith("--nproc_per_node="):
            w = f"--nproc_per_node={nproc}"
        out.append(replace.get(w, w))
    if "--num-gpus" in out:
        out[out.index("--num-gpus") + 1] = str(nproc)
    return out


def _config(out_dir: Path) -> dict:
    return yaml.safe_load((out_dir / "config.yaml").read_text())


def test_the_devis_command_with_the_lr_override_trains_one_rank_in_process(
    tmp_path, data, coco_maskhead, monkeypatch
):
    """What each rank of ``torchrun ... main.py --config-file ... SOLVER.BASE_LR 0.0002`` runs."""
    import importlib.util

    words = _cpu_form(DEVIS_TRAIN_LR, {})
    assert words[:3] == ["torchrun", "--nproc_per_node=2", "main.py"]
    out = tmp_path / "out"
    argv = (
        words[3:]
        + DEVIS_TINY
        + _data_opts(data)
        + ["MODEL.WEIGHTS", str(coco_maskhead), "OUTPUT_DIR", str(out)]
    )
    spec = importlib.util.spec_from_file_location("devis_main", ROOT / "main.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    monkeypatch.chdir(ROOT)  # the seed's config path is relative to the repository
    assert entry.main(argv + ["--no-progress"]) == 0
    cfg = _config(out)
    assert cfg["SOLVER"]["BASE_LR"] == pytest.approx(2e-4)  # the seed's override, after the tiny ones
    assert cfg["MODEL"]["META_ARCHITECTURE"] == "DeVIS" and cfg["SOLVER"]["LR_BACKBONE"] == pytest.approx(
        1e-5
    )
    log = (out / "log.txt").read_text()
    assert "devis_stage2" in log  # the COCO weights were adapted to the video model, as in the seed's stage 2
    assert "lr_base 2.00e-04" in log and (out / "checkpoint.pth").exists()


def _run(words: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if words[0] == "torchrun":
        exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
        words = [exe or sys.executable, *([] if exe else ["-m", "torch.distributed.run"]), *words[1:]]
    elif words[0] in ("python", "python3"):
        words = [sys.executable, *words[1:]]
    return subprocess.run(words, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("command", [DEVIS_TRAIN, DEVIS_TRAIN_LR], ids=["as-typed", "lr-override"])
def test_the_devis_commands_under_torchrun_with_two_ranks(tmp_path, data, coco_maskhead, command):
    out = tmp_path / "out"
    words = _cpu_form(command, {}) + DEVIS_TINY + _data_opts(data)
    words += ["MODEL.WEIGHTS", str(coco_maskhead), "OUTPUT_DIR", str(out), "--no-progress"]
    done = _run(words)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "world size 2" in log and (out / "checkpoint.pth").exists()
    lr = 2e-4 if "BASE_LR" in command else 1e-4
    assert _config(out)["SOLVER"]["BASE_LR"] == pytest.approx(lr)


@pytest.fixture(scope="module")
def vita_weights(tmp_path_factory, data) -> Path:
    """``weights/vita_r50_ovis.pth`` at CPU size: the VITA stage's file (detectron2's checkpointer layout,
    VITA names: no ``prop_instance``), from which the seed's GRAtt-VIS command starts."""
    from vidseg.checkpoints import vidseg_to_detectron2
    from vidseg.models import build_model, load_config

    torch.manual_seed(0)
    config = "configs/genvis/ovis/grattvis_R50_bs8.yaml"
    cfg = load_config(config, ["MODEL.WEIGHTS", "", *GRATT_TINY, *_data_opts(data)])
    sd = vidseg_to_detectron2(build_model(cfg).model.state_dict())
    sd = {k: v for k, v in sd.items() if not k.startswith("vita_module.prop_instance.")}
    path = tmp_path_factory.mktemp("weights") / "vita_r50_ovis.pth"
    torch.save({"model": sd, "trainer": {"iteration": 149999}, "iteration": 149999}, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "script", ["train_net_genvis.py", "train_net_grattvis.py", "train_net_grattvisvis.py"]
)
def test_the_grattvis_commands_train_on_two_processes_then_evaluate(tmp_path, data, vita_weights, script):
    """The README's training command (``--num-gpus 4`` -> 2 gloo processes) from a VITA file, then its
    ``--eval-only`` command on the run folder it wrote; each spelling of the script."""
    run, evaluated = tmp_path / "run", tmp_path / "eval"
    train = _cpu_form(GRATT_TRAIN.replace("train_net_genvis.py", script), {
        "weights/vita_r50_ovis.pth": str(vita_weights), "your_output_dir": str(run),
    })  # fmt: skip
    done = _run(train + GRATT_TINY + _data_opts(data) + ["--no-progress"])
    assert done.returncode == 0, done.stderr[-3000:]
    log = (run / "log.txt").read_text()
    assert "world size 2" in log and "format=detectron2" in log  # the VITA file, by name
    cfg = _config(run)
    assert cfg["MODEL"]["GENVIS"]["GATED_PROP"] is True and cfg["MODEL"]["GENVIS"]["USE_MEM"] is False
    assert cfg["MODEL"]["META_ARCHITECTURE"] in ("Grattvis", "GRAttVIS")

    evaluate = _cpu_form(GRATT_EVAL.replace("train_net_genvis.py", script), {
        "YOUR_MODEL_PATH/config.yaml": str(run / "config.yaml"),
        "YOUR_MODEL_PATH/model_checkpoint.pth": str(run / "checkpoint.pth"),
        "your_output_dir": str(evaluated),
    }, nproc=1)  # fmt: skip
    done = _run(evaluate + ["--no-progress"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert (evaluated / "eval_results" / "results.json").is_file()
    assert "nothing left out" in (evaluated / "log.txt").read_text()  # the run's own checkpoint, every tensor
