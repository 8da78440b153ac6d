"""Bad input to what landed with GRAtt-VIS, safetensors and the train_net_* scripts: one line naming the file
and the field (a warning where the work goes on), a non-zero exit, no traceback; every option has help text
and every config path a help text names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from cli_helpers import error_lines, run_cli
from PIL import Image

from vidseg.cli import command_parser

ROOT = Path(__file__).resolve().parents[2]
GRATT_OVIS = ROOT / "configs/grattvis/ovis/grattvis_R50_bs8.yaml"
GRATT_TINY = ROOT / "configs/quickstart/grattvis_tiny.yaml"
DEVIS_TINY = ROOT / "configs/quickstart/devis_tiny.yaml"
# A test set that is never read: every weights error comes before the data is opened.
NO_DATA = ["DATASETS.TEST", '("custom_val",)', "DATASETS.CUSTOM_VAL_JSON", "absent.json"]
GRATT_K3 = ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3", *NO_DATA]


def _one_error(err: str, command: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = error_lines(err, command)
    assert len(lines) == 1, err[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Tiny GRAtt-VIS files (memory off / on, 3 classes), a tiny DeVIS file, and broken variants."""
    from safetensors.torch import save_file

    from vidseg.models import build_model, load_config

    d = tmp_path_factory.mktemp("weights")
    files = {}
    for name, cfg_file, opts in (
        ("gratt", GRATT_TINY, ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"]),
        ("gratt_mem", GRATT_TINY, ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3", "MODEL.GENVIS.USE_MEM", "True"]),
        ("devis", DEVIS_TINY, ["MODEL.NUM_CLASSES", "3"]),
    ):
        torch.manual_seed(0)
        sd = build_model(load_config(str(cfg_file), opts), None).model.state_dict()
        files[name] = d / f"{name}.pth"
        torch.save({"model": sd}, files[name])
        if name == "gratt":
            key = "sem_seg_head.pixel_decoder.transformer.level_embed"
            wrong = {k: v.contiguous() for k, v in sd.items()}
            wrong[key] = torch.zeros(wrong[key].shape[0] + 1, wrong[key].shape[1])
            files["wrong_shape"] = d / "wrong_shape.safetensors"
            save_file(wrong, str(files["wrong_shape"]))
    data = files["gratt"].read_bytes()
    files["truncated"] = d / "truncated.pth"
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["garbage"] = d / "garbage.pth"
    files["garbage"].write_text("not a checkpoint\n" * 20)
    return files


@pytest.mark.parametrize("config", [GRATT_OVIS, ROOT / "configs/devis/YT-19/devis_R_50_YT-19.yaml"])
def test_eval_missing_weights_is_one_line_before_building(tmp_path, capsys, config):
    missing = tmp_path / "missing.pth"
    rc, _, err = run_cli(capsys, "eval", "--config-file", config, "MODEL.WEIGHTS", missing)
    assert rc != 0
    assert _one_error(err, "eval") == f"vidseg eval: error: MODEL.WEIGHTS {missing}: file not found"
    assert "WARNING" not in err  # no "cannot read it to check MODEL.GENVIS.USE_MEM" before it
    rc, _, err = run_cli(capsys, "eval", "--config-file", config, "MODEL.WEIGHTS", tmp_path)
    assert rc != 0 and "is a folder" in _one_error(err, "eval")


def test_train_net_genvis_eval_only_with_the_configs_absent_weights(tmp_path, capsys, monkeypatch):
    """The README's --eval-only command, without downloading weights: the config's MODEL.WEIGHTS
    (weights/vita_r50_ovis.pth) is named, not a traceback; --num-gpus must not be negative."""
    from train_net import main

    monkeypatch.chdir(tmp_path)
    rc = main(["--num-gpus", "0", "--eval-only", "--config-file", str(GRATT_OVIS), "OUTPUT_DIR", "out"])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err
    assert err.strip() == "vidseg eval: error: MODEL.WEIGHTS weights/vita_r50_ovis.pth: file not found"
    rc = main(["--num-gpus", "-1", "--config-file", str(GRATT_OVIS)])
    err = capsys.readouterr().err
    assert rc != 0 and err.strip() == "vidseg train: error: --num-gpus -1: must be >= 0 (0 or 1: one process)"


def test_a_file_missing_inside_the_code_is_one_line():
    """A FileNotFoundError that vidseg raises with its own message (no errno) names the file: expected."""
    from vidseg.utils.errors import expected_error_line

    assert expected_error_line(FileNotFoundError("checkpoint file not found: a.pth")) == (
        "checkpoint file not found: a.pth"
    )
    assert expected_error_line(FileNotFoundError()) is None  # no message: still a bug's traceback


@pytest.mark.parametrize(
    "name, why",
    [
        ("truncated", "a truncated or damaged torch zip file"),
        ("garbage", "neither a torch file, a pickle nor a .safetensors file"),
    ],
)
def test_unreadable_weights_say_what_is_wrong(capsys, weights, name, why):
    rc, _, err = run_cli(
        capsys, "eval", "--config-file", GRATT_TINY, "MODEL.WEIGHTS", weights[name], *GRATT_K3
    )
    assert rc != 0
    line = _one_error(err, "eval")
    assert str(weights[name]) in line and why in line
    assert len(line) < 200  # not torch's paragraph about miniz


def test_eval_refuses_a_tensor_of_another_shape(capsys, weights):
    f = weights["wrong_shape"]
    rc, _, err = run_cli(capsys, "eval", "--config-file", GRATT_TINY, "MODEL.WEIGHTS", f, *GRATT_K3)
    assert rc != 0
    line = _one_error(err, "eval")
    assert f"MODEL.WEIGHTS {f}: 1 tensor(s) of another shape" in line
    assert "sem_seg_head.pixel_decoder.transformer.level_embed: checkpoint (4, 64) vs model (3, 64)" in line


@pytest.mark.parametrize(
    "config, opts, file, arch",
    [
        (GRATT_TINY, GRATT_K3, "devis", "GRAttVIS"),
        (DEVIS_TINY, ["MODEL.NUM_CLASSES", "3", *NO_DATA], "gratt", "DeVIS"),
    ],
)
def test_another_methods_checkpoint_is_an_error(capsys, weights, config, opts, file, arch):
    rc, _, err = run_cli(capsys, "eval", "--config-file", config, "MODEL.WEIGHTS", weights[file], *opts)
    assert rc != 0
    line = _one_error(err, "eval")
    assert f"MODEL.WEIGHTS {weights[file]}: none of its tensors fit the {arch} model" in line


def test_memory_checkpoint_under_use_mem_false_warns_and_the_checkpoint_wins(tmp_path, capsys, weights):
    out = tmp_path / "mem.safetensors"
    rc, _, err = run_cli(
        capsys,
        "convert",
        weights["gratt_mem"],
        out,
        "--config-file",
        GRATT_TINY,
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
        "3",
        "MODEL.GENVIS.USE_MEM",
        "False",
    )
    assert rc == 0, err[-2000:]
    assert "Traceback" not in err
    warned = [ln for ln in err.splitlines() if "WARNING" in ln and "MODEL.GENVIS.USE_MEM" in ln]
    assert len(warned) == 1 and str(weights["gratt_mem"]) in warned[0]
    assert "building with MODEL.GENVIS.USE_MEM True, as the checkpoint" in warned[0]
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        assert any(k.startswith("vita_module.pre_memory_embed") for k in f.keys())


def test_eval_without_weights_warns_in_one_log_line(capsys):
    rc, _, err = run_cli(capsys, "eval", "--config-file", GRATT_TINY, "MODEL.WEIGHTS", "", *GRATT_K3)
    assert rc != 0  # the absent test set
    assert "UserWarning" not in err and "eval_worker(" not in err
    assert [ln for ln in err.splitlines() if "randomly initialised" in ln][0].endswith(
        "WARNING eval: MODEL.WEIGHTS is empty, evaluating a randomly initialised model"
    )


@pytest.mark.parametrize(
    "opts, expected",
    [
        (["MODEL.GENVIS.USE_MEMORY", "True"], "unknown config key 'MODEL.GENVIS.USE_MEMORY'; did you mean "),
        (["MODEL.GENVIS.USE_MEM", "maybe"], "MODEL.GENVIS.USE_MEM expects bool, got str 'maybe'"),
    ],
)
def test_config_typos_are_one_line(capsys, opts, expected):
    rc, _, err = run_cli(capsys, "eval", "--config-file", GRATT_OVIS, *opts)
    assert rc != 0
    assert expected in _one_error(err, "eval")


@pytest.mark.parametrize(
    "opts, expected",
    [
        (["MODEL.VITA.ENC_WINDOW_SIZE", "-1"], "MODEL.VITA.ENC_WINDOW_SIZE must be >= 0, got -1"),
        (["TEST.DETECTIONS_PER_IMAGE", "0"], "TEST.DETECTIONS_PER_IMAGE) must be >= 1, got 0"),
    ],
)
def test_impossible_grattvis_settings_are_one_line(capsys, opts, expected):
    rc, _, err = run_cli(capsys, "eval", "--config-file", GRATT_TINY, *GRATT_K3, *opts)
    assert rc != 0
    assert expected in _one_error(err, "eval")


def test_missing_base_file_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "leaf.yaml"
    cfg.write_text('_BASE_: "nope.yaml"\n', encoding="utf-8")
    rc, _, err = run_cli(capsys, "eval", "--config-file", cfg)
    assert rc != 0
    assert _one_error(err, "eval") == f"vidseg eval: error: {cfg}: _BASE_ file not found: nope.yaml " + (
        f"(looked for {tmp_path / 'nope.yaml'})"
    )


def test_quickstart_unknown_method_lists_the_methods(capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(capsys, "quickstart", "--method", "vita")  # grattvis is a method now (issue 16)
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert "invalid choice: 'vita' (choose from 'DeVIS', 'ToyVIS', 'GRAttVIS')" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["convert", "predict", "quickstart", "eval", "train"])
def test_every_option_has_help_text(command):
    parser, _ = command_parser(command)
    for action in parser._actions:
        assert action.help, f"vidseg {command} {action.option_strings or action.dest}: no help text"
    convert, _ = command_parser("convert")
    overwrite = next(a for a in convert._actions if "--overwrite" in a.option_strings)
    assert "OUT.pth" not in overwrite.help  # OUT is a .safetensors by default


def _help_texts() -> dict[str, str]:
    import importlib

    from vidseg.cli import COMMANDS

    texts = {}
    for name, (module, _) in COMMANDS.items():
        mod = importlib.import_module(module)
        texts[f"vidseg {name}"] = f"{getattr(mod, 'DESCRIPTION', '')}\n{getattr(mod, 'EPILOG', '') or ''}"
    for script in sorted(ROOT.glob("train_net*.py")):
        texts[script.name] = script.read_text(encoding="utf-8").split('"""')[1]
    return texts


def test_config_paths_in_help_texts_exist():
    paths = {
        (where, m)
        for where, text in _help_texts().items()
        for m in re.findall(r"configs/[\w./-]+\.yaml", text)
        if "X.yaml" not in m and "<" not in m
    }
    assert paths, "no config path found: the pattern is broken"
    missing = sorted(f"{where}: {p}" for where, p in paths if not (ROOT / p).is_file())
    assert not missing, missing


@pytest.mark.parametrize(
    "source, expected",
    [
        ("missing.mp4", "source not found: {src}"),
        ("fake.mp4", "cannot open video {src}: Invalid data found when processing input"),
        ("notes.txt", "{src}: not a video file (.mp4, .avi"),
        ("empty", "{src}: no image frames (.jpg, .jpeg, .png, .bmp, .webp) in the folder"),
    ],
)
def test_predict_bad_sources_are_one_line(tmp_path, capsys, weights, source, expected):
    src = tmp_path / source
    if source == "fake.mp4":
        src.write_text("not a video\n" * 10)
    elif source == "notes.txt":
        src.write_text("hello\n")
    elif source == "empty":
        src.mkdir()
    opts = ["--weights", weights["gratt"], "--out", tmp_path / "o", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"]
    rc, _, err = run_cli(capsys, "predict", src, "--config-file", GRATT_TINY, *opts, "--no-progress")
    assert rc != 0
    assert expected.format(src=src) in _one_error(err, "predict")
    assert "[Errno" not in err


@pytest.mark.parametrize("flag", ["--topk", "--max-frames", "--clip-length", "--clip-stride", "--fps"])
def test_predict_negative_numbers_are_refused(tmp_path, capsys, flag):
    rc, _, err = run_cli(capsys, "predict", tmp_path, "--config-file", GRATT_TINY, flag, "-1")
    assert rc != 0
    assert _one_error(err, "predict") == f"vidseg predict: error: {flag} -1: must be >= 0"


def test_predict_clip_length_on_a_streaming_method_warns(tmp_path, capsys, weights):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        Image.new("RGB", (48, 32), (40 * i, 80, 120)).save(frames / f"{i:05d}.jpg")
    opts = ["--weights", weights["gratt"], "--out", tmp_path / "o", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"]
    rc, _, err = run_cli(
        capsys, "predict", frames, "--config-file", GRATT_TINY, *opts, "--clip-length", "2", "--no-render",
        "--no-progress",
    )  # fmt: skip
    assert rc == 0, err[-2000:]
    warned = [ln for ln in err.splitlines() if "--clip-length" in ln]
    assert warned == ["vidseg predict: warning: --clip-length 2 is ignored: GRAttVIS streams the video (its "
                      "memory is bounded already)"]  # fmt: skip


def test_train_missing_weights_is_one_line_and_makes_no_run_folder(tmp_path, capsys):
    out, missing = tmp_path / "run", tmp_path / "nope.pth"
    data = ["DATASETS.TRAIN", '("custom_train",)', "DATASETS.CUSTOM_TRAIN_JSON", tmp_path / "absent.json"]
    rc, _, err = run_cli(
        capsys, "train", "--config-file", GRATT_TINY, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3", *data,
        "OUTPUT_DIR", out, "MODEL.WEIGHTS", missing, "--no-progress",
    )  # fmt: skip
    assert rc != 0
    line = _one_error(err, "train")
    assert line == f"vidseg train: error: MODEL.WEIGHTS {missing}: file not found (the weights to start from)"
    assert not out.exists()


def test_predict_weights_with_memory_under_use_mem_false_keep_the_memory(tmp_path, capsys, weights):
    """--weights is what the builder sees (as MODEL.WEIGHTS is for eval): the file's memory is built and
    loaded, not dropped as 'not used' tensors."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        Image.new("RGB", (48, 32), (40 * i, 80, 120)).save(frames / f"{i:05d}.jpg")
    rc, _, err = run_cli(
        capsys, "predict", frames, "--config-file", GRATT_TINY, "--weights", weights["gratt_mem"],
        "--out", tmp_path / "o", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3", "MODEL.GENVIS.USE_MEM", "False",
        "--no-render", "--no-progress",
    )  # fmt: skip
    assert rc == 0, err[-2000:]
    assert "not used by" not in err and "unexpected" not in err
    assert [ln for ln in err.splitlines() if "MODEL.GENVIS.USE_MEM" in ln][0].endswith(
        "building with MODEL.GENVIS.USE_MEM True, as the checkpoint"
    )


def test_convert_never_replaces_its_input(tmp_path, capsys, weights):
    src = tmp_path / "g.pth"
    src.write_bytes(weights["gratt"].read_bytes())
    before = src.read_bytes()
    rc, _, err = run_cli(capsys, "convert", src, tmp_path / "." / "g.pth", "--format", "pth", "--overwrite")
    assert rc != 0
    assert "is IN itself" in _one_error(err, "convert")
    assert src.read_bytes() == before
    out = tmp_path / "g.safetensors"
    out.write_text("mine")
    rc, _, err = run_cli(capsys, "convert", src, out)
    assert rc != 0 and _one_error(err, "convert").endswith("exists; pass --overwrite to replace it")
    assert out.read_text() == "mine"


def test_convert_format_typo_lists_the_formats(capsys, weights):
    with pytest.raises(SystemExit) as e:
        run_cli(capsys, "convert", weights["gratt"], "--format", "pt")
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert "invalid choice: 'pt' (choose from 'safetensors', 'pth')" in err and "Traceback" not in err


def test_train_net_genvis_help_names_itself():
    import subprocess
    import sys

    p = subprocess.run(
        [sys.executable, str(ROOT / "train_net_genvis.py"), "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert "python train_net_genvis.py --num-gpus 4 --config-file configs/grattvis/ovis/" in p.stdout
    assert "--eval-only" in p.stdout and "0 or 1: one" in p.stdout and p.stderr == ""
