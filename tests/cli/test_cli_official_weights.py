"""Official checkpoint files, as the official code writes them, straight into ``vidseg eval``
(``MODEL.WEIGHTS``) and ``vidseg predict --weights`` (issues 14 and 16): the command line recognises the file,
says so in its log, and gives the results of the same weights loaded into the model in Python (scores,
categories, every RLE). The same for a vidseg training checkpoint and for files ``vidseg convert`` wrote.

The files come from ``tests/checkpoints/official_files.py`` (the official save calls with real optimizers and
schedulers), filled with the weights of a real tiny model so that its outputs mean something."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidseg.checkpoints import detectron2_to_vidseg, load_weights, safe_read, vidseg_to_detectron2
from vidseg.cli import main
from vidseg.data import generate_synthetic_dataset
from vidseg.data.video_io import write_video
from vidseg.inference import VideoPredictor
from vidseg.inference.sources import open_source
from vidseg.models import build_model, load_config

TESTS = Path(__file__).resolve().parents[1]
H, W, N = 64, 96, 3  # one DeVIS clip (T=3)
DEVIS = "quickstart/devis_tiny.yaml"


def _official_files():
    """``tests/checkpoints/official_files.py``, imported with its own ``conftest`` (this folder has none of
    its own: ``conftest`` is ``tests/conftest.py`` here)."""
    if "official_files" in sys.modules:  # already imported by the tests in tests/checkpoints
        return sys.modules["official_files"]
    folder = TESTS / "checkpoints"
    spec = importlib.util.spec_from_file_location("checkpoints_conftest", folder / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    saved = sys.modules.get("conftest")
    sys.modules["conftest"] = conftest
    try:
        spec = importlib.util.spec_from_file_location("official_files", folder / "official_files.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["conftest"]
        else:
            sys.modules["conftest"] = saved
    sys.modules["official_files"] = module
    return module


official_files = _official_files()


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> dict[str, Path]:
    """An mp4 of a synthetic video, a YouTube-VIS val set whose frames are that mp4's decoded frames (eval and
    predict then see the same pixels), and a train split of one video."""
    tmp = tmp_path_factory.mktemp("official_weights")
    d = generate_synthetic_dataset(
        tmp / "syn", seed=1, num_videos_train=1, num_videos_val=1, num_frames=N, height=H, width=W,
        num_classes=2, max_instances=3, progress=False,
    )  # fmt: skip
    gt = json.loads(Path(d["val_json"]).read_text())
    entry = gt["videos"][0]
    frames = [np.asarray(Image.open(Path(d["val_images"]) / f).convert("RGB")) for f in entry["file_names"]]
    mp4 = write_video(tmp / "clip.mp4", frames, fps=5)
    decoded = open_source(mp4)
    images = tmp / "images"
    (images / "v").mkdir(parents=True)
    entry["file_names"] = []
    for t in range(len(decoded)):
        Image.fromarray(np.asarray(decoded[t])).save(images / "v" / f"{t:05d}.png")
        entry["file_names"].append(f"v/{t:05d}.png")
    ann = tmp / "val.json"
    ann.write_text(json.dumps(gt))
    return {"dir": tmp, "mp4": mp4, "ann": ann, "images": images, **d}


def _opts(video: dict[str, Path], devis: bool = True) -> list[str]:
    """The overrides both commands get: CPU, the tiny val set, its class count, its test size."""
    common = [
        *("MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0"),
        *("DATASETS.TEST", '("custom_val",)', "DATASETS.CUSTOM_VAL_JSON", str(video["ann"])),
        *("DATASETS.CUSTOM_VAL_IMAGES", str(video["images"])),
        *("INPUT.MIN_SIZE_TEST", str(H), "INPUT.MAX_SIZE_TEST", str(W)),
    ]
    if devis:
        return [*common, "MODEL.NUM_CLASSES", "2", "TEST.NUM_OUT", "4", "MODEL.BACKBONE_PRETRAINED", "''"]
    return [*common, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2", "TEST.DETECTIONS_PER_IMAGE", "4"]


def _eval(capsys, config: str, weights: Path, opts: list[str], out: Path) -> tuple[list[dict], str]:
    """``vidseg eval --config-file config MODEL.WEIGHTS weights``: (results.json, log.txt)."""
    argv = ["eval", "--config-file", config, "--no-progress", *opts, "MODEL.WEIGHTS", str(weights)]
    rc = main([*argv, "OUTPUT_DIR", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err[-3000:]
    return json.loads((out / "eval_results" / "results.json").read_text()), (out / "log.txt").read_text()


def _predict(capsys, mp4: Path, config: str, weights: Path, opts: list[str], out: Path) -> tuple[list, str]:
    """``vidseg predict mp4 --config-file config --weights weights``: (results.json, stdout + stderr)."""
    log = logging.getLogger("vidseg")
    for h in [h for h in log.handlers if getattr(h, "_vidseg", False)]:  # as in a fresh process: no handlers
        log.removeHandler(h)  # left by an earlier command in this process
        h.close()
    argv = ["predict", str(mp4), "--config-file", config, "--weights", str(weights), "--out", str(out)]
    rc = main([*argv, "--no-render", "--no-progress", "--video-id", "1", *opts])
    cap = capsys.readouterr()
    assert rc == 0, cap.err[-3000:]
    return json.loads((out / "results.json").read_text()), cap.out + cap.err


def _in_python(config: str, opts: list[str], state_dict: dict[str, torch.Tensor], mp4: Path) -> list[dict]:
    """The same weights put into the model in Python (``load_state_dict``, strict), predicted on ``mp4``."""
    cfg = load_config(config, opts)
    bundle = build_model(cfg)
    bundle.model.load_state_dict(state_dict, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no weights given": the model already holds them
        predictor = VideoPredictor.from_config(
            cfg, "", device="cpu", model=bundle.model, inference=bundle.inference
        )
    result = predictor.predict(state=predictor.init_state(mp4, video_id=1), source=mp4, progress=False)
    return result.to_official(predictor.category_ids(result))


def _same_results(expected: list[dict], got: list[dict], *, exact: bool) -> None:
    """Same tracks: scores (eval's to 1e-6: its loader prepares the frames its own way), categories, RLEs."""
    assert 0 < len(got) == len(expected)
    key = lambda e: (-e["score"], e["category_id"])  # noqa: E731
    for a, b in zip(sorted(expected, key=key), sorted(got, key=key)):
        assert b["score"] == (a["score"] if exact else pytest.approx(a["score"], abs=1e-6))
        assert a["category_id"] == b["category_id"] and len(b["segmentations"]) == N
        counts = [[s and s["counts"] for s in e["segmentations"]] for e in (a, b)]
        assert counts[0] == counts[1]
    assert any(s is not None for e in got for s in e["segmentations"])


def _tiny_devis_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    cfg = load_config(DEVIS, ["MODEL.NUM_CLASSES", "2", "MODEL.BACKBONE_PRETRAINED", "''"])
    return build_model(cfg).model.state_dict()


def test_an_official_devis_checkpoint_runs_through_eval_and_predict(video, tmp_path, capsys):
    init = _tiny_devis_state(seed=3)
    path = tmp_path / "devis_r50_yt19_checkpoint.pth"
    shapes = {k: tuple(v.shape) for k, v in init.items()}
    trained = official_files.write_devis_checkpoint(path, shapes, video=True, init=init).state_dict()
    obj = safe_read(path)  # what main.py saved: legacy pickle, yacs cfg, optimizer and MultiStepLR states
    assert path.read_bytes()[:2] == b"\x80\x02" and obj["epoch"] == 3
    assert len(obj["optimizer"]["param_groups"]) == 5
    # The official names: all but the tiny config's plain-conv mask head (MODEL.MASK_HEAD.USE_MDC False) are
    # names of the official R-50 YT-19 file.
    official = {ln.split(" ", 1)[0] for ln in (TESTS / "spec_keys/devis-state-dict-keys-R50-YT19.txt").open()}
    plain_convs = {f"mask_head.{n}.{p}" for n in (*(f"lay{i}" for i in range(1, 6)), "out_lay") for p in "wb"}
    assert {k[: k.rindex(".") + 2] for k in obj["model"] if k not in official} == plain_convs

    opts = _opts(video)
    expected = _in_python(DEVIS, opts, trained, video["mp4"])
    evaluated, log = _eval(capsys, DEVIS, path, opts, tmp_path / "eval")
    recognised = f"format=devis_video; mapped {len(trained)} tensors; nothing left out"
    assert f"weights {path}: {recognised}" in log
    assert "not weights, not used: optimizer, lr_scheduler, epoch, cfg" in log
    predicted, printed = _predict(capsys, video["mp4"], DEVIS, path, opts, tmp_path / "pred")
    assert recognised in printed
    _same_results(expected, evaluated, exact=False)
    _same_results(expected, predicted, exact=True)

    # vidseg convert --config-file: a .safetensors of the model's weights, read by both commands the same way
    converted = tmp_path / "devis_r50_yt19.safetensors"
    argv = ["convert", str(path), str(converted), "--config-file", DEVIS, "MODEL.NUM_CLASSES", "2"]
    assert main([*argv, "MODEL.BACKBONE_PRETRAINED", "''"]) == 0, capsys.readouterr().err[-3000:]
    assert "format=devis_video" in capsys.readouterr().out
    again, log = _eval(capsys, DEVIS, converted, opts, tmp_path / "eval_converted")
    assert f"weights {converted}: format=vidseg; mapped {len(trained)} tensors; nothing left out" in log
    assert again == evaluated
    again, printed = _predict(capsys, video["mp4"], DEVIS, converted, opts, tmp_path / "pred_converted")
    assert "format=vidseg" in printed and again == predicted


@pytest.mark.slow  # ~15 s: a DeVIS training iteration and its checkpoint writes
def test_a_vidseg_training_checkpoint_runs_through_eval_and_predict(video, tmp_path, capsys):
    """``checkpoint.pth`` as ``vidseg train`` writes it (model, optimizer, scheduler, RNG, config), and its
    ``vidseg convert`` to ``.safetensors``."""
    run = tmp_path / "run"
    train = [
        *("DATASETS.TRAIN", '("custom_train",)', "DATASETS.CUSTOM_TRAIN_JSON", str(video["train_json"])),
        *("DATASETS.CUSTOM_TRAIN_IMAGES", str(video["train_images"]), "INPUT.MIN_SIZE_TRAIN", f"[{H}]"),
        *(
            "INPUT.MAX_SIZE_TRAIN",
            str(W),
            "SOLVER.EPOCHS",
            "1",
            "SOLVER.STEPS",
            "[]",
            "TEST.EVAL_PERIOD",
            "0",
        ),
        *("SOLVER.CHECKPOINT_PERIOD", "0", "OUTPUT_DIR", str(run)),
    ]
    opts = _opts(video)
    rc = main(["train", "--config-file", DEVIS, "--no-progress", *opts, *train])
    assert rc == 0, capsys.readouterr().err[-3000:]
    path = run / "checkpoint.pth"
    obj = safe_read(path)
    assert obj["format"] == "vidseg-train-v1" and obj["iter"] == 1 and "optimizer" in obj
    expected = _in_python(DEVIS, opts, obj["model"], video["mp4"])

    converted = tmp_path / "model.safetensors"
    rc = main(["convert", str(path), str(converted), "--config-file", str(run / "config.yaml")])
    assert rc == 0, capsys.readouterr().err[-3000:]
    for weights in (path, converted):
        evaluated, log = _eval(capsys, DEVIS, weights, opts, tmp_path / f"eval_{weights.suffix[1:]}")
        assert (
            f"weights {weights}: format=vidseg; mapped {len(obj['model'])} tensors; nothing left out" in log
        )
        predicted, printed = _predict(
            capsys, video["mp4"], DEVIS, weights, opts, tmp_path / f"pred_{weights.suffix}"
        )
        assert "format=vidseg" in printed
        _same_results(expected, evaluated, exact=False)
        _same_results(expected, predicted, exact=True)


GRATT = "quickstart/grattvis_tiny.yaml"  # USE_MEM False, GATED_PROP True


def _detectron2_file(path: Path, model: torch.nn.Module, *, gate: bool = True) -> dict[str, torch.Tensor]:
    """``model`` under the official detectron2 names (``vidseg_to_detectron2``), with the criteria's
    ``empty_weight`` buffers the official files carry, saved as detectron2's checkpointer does; ``gate`` False
    leaves out ``prop_instance`` (a VITA or GenVIS file). Returns the file's ``model`` entry."""
    sd = vidseg_to_detectron2(model.state_dict())
    if not gate:
        sd = {k: v for k, v in sd.items() if not k.startswith("vita_module.prop_instance.")}
    k1 = sd["vita_module.class_embed.weight"].shape[0]
    memory = any(k.startswith("vita_module.pre_memory_embed_k.") for k in sd)
    for name in ("criterion", "vita_criterion", *(("genvis_criterion",) if gate or memory else ())):
        sd[f"{name}.empty_weight"] = torch.cat([torch.ones(k1 - 1), torch.tensor([0.1])])
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    return official_files.write_detectron2_checkpoint(path, shapes, init=sd).state_dict()


def _tiny_grattvis(use_mem: bool, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    opts = ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2", "MODEL.GENVIS.USE_MEM", str(use_mem)]
    return build_model(load_config(GRATT, opts)).model


def _warnings(log: str, text: str) -> list[str]:
    return [ln for ln in log.splitlines() if text in ln and " WARNING " in ln]


def _memory_decision(path: Path, use_mem: bool, config_says: bool) -> str:
    return (
        f"MODEL.WEIGHTS {path}: the checkpoint was trained with memory {'on' if use_mem else 'off'} "
        f"(vita_module.pre_memory_embed_* {'present' if use_mem else 'absent'}) but MODEL.GENVIS.USE_MEM "
        f"is {config_says}: building with MODEL.GENVIS.USE_MEM {use_mem}, as the checkpoint"
    )


@pytest.mark.parametrize(
    "use_mem, config_says",
    [(True, False), pytest.param(False, True, marks=pytest.mark.slow)],
    ids=["memory_file_config_off", "no_memory_file_config_on"],
)
def test_an_official_grattvis_file_decides_the_memory(video, tmp_path, capsys, use_mem, config_says):
    """A GRAtt-VIS file with (without) GenVIS's memory against ``MODEL.GENVIS.USE_MEM`` False (True): the
    file wins, with one warning line, in eval and in predict, and both give the results of the model built as
    the file was."""
    opts = _opts(video, devis=False)
    path = tmp_path / f"grattvis_r50_ovis{'_memory' if use_mem else ''}.pth"
    model = _tiny_grattvis(use_mem, seed=5)
    written = _detectron2_file(path, model)
    # The official names: those of the R-50 OVIS file (trained without memory), plus GenVIS's memory linears.
    official = {
        ln.split(" ", 1)[0] for ln in (TESTS / "spec_keys/grattvis-state-dict-keys-R50-OVIS.txt").open()
    }
    assert set(written) - official == (set(official_files.MEMORY_KEYS) if use_mem else set())
    assert any(k.startswith("backbone.res2.") for k in written)
    assert set(safe_read(path)) == {"model", "trainer", "iteration"}

    trained = detectron2_to_vidseg(written, model.state_dict())[0]  # the criteria's empty_weight dropped
    expected = _in_python(GRATT, [*opts, "MODEL.GENVIS.USE_MEM", str(use_mem)], trained, video["mp4"])
    run_opts = [*opts, "MODEL.GENVIS.USE_MEM", str(config_says)]
    evaluated, log = _eval(capsys, GRATT, path, run_opts, tmp_path / "eval")
    decision = _memory_decision(path, use_mem, config_says)
    assert len(_warnings(log, decision)) == 1, log[-3000:]
    loaded = f"weights {path}: format=detectron2; mapped {len(trained)} tensors"
    assert loaded in log
    # predict --weights: the model is built for that file too (not for the config's MODEL.WEIGHTS)
    predicted, printed = _predict(capsys, video["mp4"], GRATT, path, run_opts, tmp_path / "pred")
    assert len(_warnings(printed, decision)) == 1 and loaded in printed, printed[-3000:]
    assert "not used by" not in printed  # every tensor of the file has a place in the model
    _same_results(expected, evaluated, exact=False)
    _same_results(expected, predicted, exact=True)


@pytest.mark.slow  # ~3 s each: another file, model and eval
@pytest.mark.parametrize("method", ["vita", "genvis"])
def test_an_official_vita_or_genvis_file_initialises_grattvis_in_eval(video, tmp_path, capsys, method):
    """A VITA file (no ``prop_instance``, no memory; the official GRAtt-VIS training init) or a GenVIS file
    (the memory, no gate): the gate starts fresh, with one warning line, and eval gives the results of that
    file loaded into the model in Python (built, as eval builds it, after seeding with ``SEED``)."""
    from vidseg.engine.run_setup import seed_all

    use_mem = method == "genvis"
    opts = _opts(video, devis=False)  # MODEL.GENVIS.USE_MEM False, GATED_PROP True
    path = tmp_path / f"{method}_r50_ovis.pth"
    _detectron2_file(path, _tiny_grattvis(use_mem, seed=6), gate=False)
    evaluated, log = _eval(capsys, GRATT, path, opts, tmp_path / "eval")
    if method == "vita":
        fresh = (
            f"MODEL.WEIGHTS {path}: a VITA checkpoint (no prop_instance, no memory): "
            "vita_module.prop_instance starts fresh (default init); everything else is loaded"
        )
    else:
        fresh = (
            f"MODEL.WEIGHTS {path}: a GenVIS checkpoint (no vita_module.prop_instance): "
            "the GRAtt gate starts fresh (default init)"
        )
        assert len(_warnings(log, _memory_decision(path, True, False))) == 1, log[-3000:]
    assert len(_warnings(log, fresh)) == 1, log[-3000:]
    kind = "VITA" if method == "vita" else "GenVIS"
    assert f"GRAtt-VIS: the gate (vita_module.prop_instance) is not in this {kind} file: default init" in log
    cfg = load_config(GRATT, [*opts, "MODEL.GENVIS.USE_MEM", str(use_mem)])
    seed_all(cfg.SEED)
    model = build_model(cfg).model
    report = load_weights(model, path)
    assert report.missing == ["vita_module.prop_instance.weight", "vita_module.prop_instance.bias"]
    expected = _in_python(
        GRATT, [*opts, "MODEL.GENVIS.USE_MEM", str(use_mem)], model.state_dict(), video["mp4"]
    )
    _same_results(expected, evaluated, exact=False)


@pytest.mark.slow  # ~4 s: a file, its conversion and eval
def test_a_grattvis_file_with_memory_converted_keeps_the_memory(video, tmp_path, capsys):
    """``vidseg convert --config-file`` builds the model for IN as eval does: the memory linears of a file
    trained with memory reach OUT (and eval of OUT gives the Python-loaded model's results)."""
    opts = _opts(video, devis=False)
    path, converted = tmp_path / "grattvis_r50_ovis_memory.pth", tmp_path / "grattvis_memory.safetensors"
    model = _tiny_grattvis(True, seed=7)
    trained = detectron2_to_vidseg(_detectron2_file(path, model), model.state_dict())[0]
    assert (
        main(
            [
                "convert",
                str(path),
                str(converted),
                "--config-file",
                GRATT,
                "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
                "2",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "left out: no place" not in printed and "format=detectron2" in printed, printed
    assert set(safe_read(converted)["model"]) == set(trained)
    expected = _in_python(GRATT, [*opts, "MODEL.GENVIS.USE_MEM", "True"], trained, video["mp4"])
    evaluated, log = _eval(capsys, GRATT, converted, opts, tmp_path / "eval")
    assert len(_warnings(log, _memory_decision(converted, True, False))) == 1, log[-3000:]
    assert f"weights {converted}: format=vidseg; mapped {len(trained)} tensors; nothing left out" in log
    _same_results(expected, evaluated, exact=False)


@pytest.mark.slow  # ~8 s: a GRAtt-VIS training step from a VITA file, then eval of its checkpoint
def test_a_vita_file_initialises_grattvis_training_and_its_checkpoint_evaluates(video, tmp_path, capsys):
    """``vidseg train MODEL.WEIGHTS vita.pth`` (the official GRAtt-VIS recipe): the gate starts fresh with one
    warning line, the frozen detector keeps the file's weights, and the run's ``checkpoint.pth`` goes through
    ``vidseg eval`` with the results of its weights loaded in Python."""
    path = tmp_path / "vita_r50_ovis.pth"
    written = _detectron2_file(path, _tiny_grattvis(False, seed=8), gate=False)
    opts = _opts(video, devis=False)
    run = tmp_path / "run"
    train = [
        *("DATASETS.TRAIN", '("custom_train",)', "DATASETS.CUSTOM_TRAIN_JSON", str(video["train_json"])),
        *("DATASETS.CUSTOM_TRAIN_IMAGES", str(video["train_images"]), "INPUT.MIN_SIZE_TRAIN", f"[{H}]"),
        *(
            "INPUT.MAX_SIZE_TRAIN",
            str(W),
            "SOLVER.MAX_ITER",
            "1",
            "SOLVER.STEPS",
            "[]",
            "TEST.EVAL_PERIOD",
            "0",
        ),
        *("SOLVER.CHECKPOINT_PERIOD", "0", "MODEL.WEIGHTS", str(path), "OUTPUT_DIR", str(run)),
    ]
    argv = ["train", "--config-file", GRATT, "--no-progress", *opts, *train]
    # One training video, a batch of 2 (the tiny config's SOLVER.BATCH_SIZE): one line naming the setting.
    assert main([*argv[:-1], str(tmp_path / "refused")]) == 1
    err = capsys.readouterr().err
    assert "fewer than one global batch of 2 (SOLVER.BATCH_SIZE 2)" in err and "Traceback" not in err
    assert main([*argv, "SOLVER.BATCH_SIZE", "1"]) == 0, capsys.readouterr().err[-3000:]
    log = (run / "log.txt").read_text()
    fresh = (
        f"MODEL.WEIGHTS {path}: a VITA checkpoint (no prop_instance, no memory): "
        "vita_module.prop_instance starts fresh (default init); everything else is loaded"
    )
    assert len(_warnings(log, fresh)) == 1, log[-3000:]
    trained = safe_read(run / "checkpoint.pth")["model"]
    mapped = detectron2_to_vidseg(written, trained)[0]
    assert "vita_module.prop_instance.weight" in trained and "vita_module.prop_instance.weight" not in mapped
    detector = [k for k in mapped if k.startswith(("backbone.", "sem_seg_head."))]
    assert detector and all(torch.equal(trained[k], mapped[k]) for k in detector)  # FREEZE_DETECTOR

    expected = _in_python(GRATT, opts, trained, video["mp4"])
    evaluated, log = _eval(capsys, GRATT, run / "checkpoint.pth", opts, tmp_path / "eval")
    assert f"format=vidseg; mapped {len(trained)} tensors; nothing left out" in log
    _same_results(expected, evaluated, exact=False)
