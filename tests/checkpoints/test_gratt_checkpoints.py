"""VITA / GenVIS / GRAtt-VIS files as detectron2 writes them: what they hold, how a GRAtt-VIS model is built
for them (memory from the file, which wins over MODEL.GENVIS.USE_MEM), what load_weights says starts fresh."""

from __future__ import annotations

import pytest
import torch
from conftest import module_tree
from official_files import MEMORY_KEYS, _detectron2_buffer, detectron2_shapes, write_detectron2_checkpoint

from vidseg.checkpoints import load_weights
from vidseg.checkpoints.grattvis import grattvis_checkpoint_report, grattvis_load_notes, grattvis_weights_plan


def _tiny(shapes):
    return {k: tuple(min(d, 3) for d in s) for k, s in shapes.items()}


def _with_memory(shapes):
    out = dict(shapes)
    out.update({k: (3, 3) if k.endswith("weight") else (3,) for k in MEMORY_KEYS})
    return out


def _old_names(shapes):
    new, old = "sem_seg_head.predictor.query_feat.", "sem_seg_head.predictor.static_query."
    return {k.replace(new, old): s for k, s in shapes.items()}


@pytest.fixture(scope="module")
def shapes(grattvis_shapes):
    gratt = _tiny(detectron2_shapes(grattvis_shapes, "grattvis"))  # the OVIS R50 file: gate, no memory
    return {
        "grattvis": gratt,
        "grattvis_mem": _with_memory(gratt),
        "genvis": _tiny(detectron2_shapes(grattvis_shapes, "genvis")),
        "vita": _tiny(detectron2_shapes(grattvis_shapes, "vita")),
        "vita_old": _old_names(_tiny(detectron2_shapes(grattvis_shapes, "vita"))),
        "detector": {k: s for k, s in gratt.items() if not k.startswith("vita_module.")},
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory, shapes):
    d = tmp_path_factory.mktemp("gratt")
    out = {}
    for name, s in shapes.items():
        out[name] = d / f"{name}.pth"
        old, detector = name == "vita_old", name == "detector"
        write_detectron2_checkpoint(out[name], s, iterations=1, old_trainer=old, freeze_detector=not detector)
    return out


@pytest.mark.parametrize(
    "name, method, use_mem, gated",
    [
        ("grattvis", "grattvis", False, True),
        ("grattvis_mem", "grattvis", True, True),
        ("genvis", "genvis", True, False),
        ("vita", "vita", False, False),
        ("vita_old", "vita", False, False),
        ("detector", "detector", False, False),
    ],
)
def test_report_reads_the_method_memory_and_gate_from_the_keys(files, shapes, name, method, use_mem, gated):
    info = grattvis_checkpoint_report(files[name])
    assert (info.method, info.use_mem, info.gated_prop) == (method, use_mem, gated)
    assert info.num_tensors == len(shapes[name])
    assert info.num_classes == 2  # class_embed [K+1, C] capped at 3 rows by the tiny shapes
    assert info.iteration == 0  # one iteration, detectron2's top-level "iteration"
    assert info.old_query_names is (name == "vita_old")
    expected = {"optimizer", "scheduler", "iteration"} if name == "vita_old" else {"trainer", "iteration"}
    assert set(info.other_entries) == expected
    assert str(files[name]) in info.summary() and method in info.summary()


@pytest.mark.parametrize("name, file_mem", [("grattvis", False), ("grattvis_mem", True), ("genvis", True)])
@pytest.mark.parametrize("cfg_mem", [False, True])
def test_the_checkpoint_wins_over_the_config_with_one_warning_line(files, name, file_mem, cfg_mem):
    use_mem, notes = grattvis_weights_plan(str(files[name]), cfg_mem, gated_prop=True)
    assert use_mem is file_mem
    disagree = [n for n in notes if "MODEL.GENVIS.USE_MEM" in n]
    if cfg_mem == file_mem:
        assert not disagree
    else:
        assert len(disagree) == 1 and "\n" not in disagree[0]
        assert (
            str(files[name]) in disagree[0]
            and f"building with MODEL.GENVIS.USE_MEM {file_mem}" in disagree[0]
        )
    gate_fresh = [n for n in notes if "GenVIS checkpoint" in n]
    assert len(gate_fresh) == (name == "genvis")


@pytest.mark.parametrize("cfg_mem", [False, True])
def test_a_vita_checkpoint_initialises_a_gratt_run(files, cfg_mem):
    use_mem, notes = grattvis_weights_plan(str(files["vita"]), cfg_mem, gated_prop=True)
    assert use_mem is cfg_mem  # a VITA file has no memory to decide from: the config builds it or not
    assert len(notes) == 1 and "VITA checkpoint" in notes[0] and "prop_instance" in notes[0]
    assert ("memory" in notes[0].split(":", 2)[-1]) is cfg_mem
    # without the gate and the memory there is nothing new: a plain VITA-shaped head, nothing to say
    assert grattvis_weights_plan(str(files["vita"]), False, gated_prop=False) == (False, [])


def test_plan_notes_gate_left_out_class_mismatch_detector_and_missing_file(files, tmp_path):
    _, notes = grattvis_weights_plan(str(files["grattvis"]), False, gated_prop=False)
    assert len(notes) == 1 and "GATED_PROP is False" in notes[0]
    _, notes = grattvis_weights_plan(str(files["grattvis"]), False, num_classes=40)
    assert len(notes) == 1 and "K=2" in notes[0] and "K=40" in notes[0]
    use_mem, notes = grattvis_weights_plan(str(files["detector"]), True)
    assert use_mem is True and len(notes) == 1 and "starts fresh" in notes[0]
    assert grattvis_weights_plan("", True) == (True, [])
    missing = tmp_path / "absent.pth"
    use_mem, notes = grattvis_weights_plan(str(missing), False)
    assert use_mem is False and len(notes) == 1 and str(missing) in notes[0]


def _model(shape_dict):
    return module_tree(shape_dict, is_buffer=_detectron2_buffer)


def test_load_weights_reports_what_a_vita_file_leaves_fresh(files, shapes):
    model = _model(shapes["grattvis_mem"])  # GRAtt-VIS with memory, from VITA's file (old static_query names)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_weights(model, files["vita_old"])
    fresh = {
        k for k in shapes["grattvis_mem"] if k.startswith("vita_module.prop_instance.") or k in MEMORY_KEYS
    }
    assert set(report.missing) == fresh
    assert any("the gate" in n and "VITA file" in n for n in report.notes)
    assert any("the memory" in n and "VITA file" in n for n in report.notes)
    assert "sem_seg_head.predictor.static_query.weight" in report.renamed
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in fresh)  # left at their initialisation
    assert "sem_seg_head.predictor.query_feat.weight" in report.mapped


def test_load_notes_are_silent_when_everything_is_there(shapes):
    assert grattvis_load_notes(shapes["grattvis"], shapes["grattvis"]) == []
    assert grattvis_load_notes(shapes["detector"], shapes["vita"]) == []  # not a GRAtt model
    notes = grattvis_load_notes(shapes["grattvis_mem"], shapes["genvis"])
    assert len(notes) == 1 and "the gate" in notes[0] and "GenVIS file" in notes[0]
    notes = grattvis_load_notes(shapes["grattvis"], shapes["detector"])
    assert notes == ["GRAtt-VIS: the file has no VIS head (vita_module): it starts fresh"]
