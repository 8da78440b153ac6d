"""The command line as users type it: flags anywhere, ``score`` (with ``evaluate`` as a hidden alias),
``eval --help`` without training flags, and one clear line when a clone folder named vidseg hides the
package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_cli

from vidseg.cli import command_parser, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", ["train", "eval", "config", "quickstart"])
def test_flags_after_the_key_value_pairs(command):
    parser, _ = command_parser(command)
    flag = "--no-progress" if command != "config" else "--config-file"
    tail = [flag] if command != "config" else [flag, "x.yaml"]
    args = parser.parse_intermixed_args(["OUTPUT_DIR", "x", "SOLVER.BASE_LR", "0.1", *tail])
    assert args.opts == ["OUTPUT_DIR", "x", "SOLVER.BASE_LR", "0.1"]
    assert (args.config_file == "x.yaml") if command == "config" else args.no_progress


def test_config_prints_overrides_given_around_flags(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("SEED: 3\n")
    rc, out, _ = run_cli(
        capsys, "config", "OUTPUT_DIR", "out/x", "--config-file", cfg, "SOLVER.BASE_LR", "0.5"
    )
    assert rc == 0 and "OUTPUT_DIR: out/x" in out and "SEED: 3" in out and "BASE_LR: 0.5" in out


def test_eval_help_offers_no_training_flags(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    assert "--config-file" in text and "--num-gpus" in text
    for flag in ("--resume", "--overwrite", "--eval-only"):
        assert flag not in text, flag
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--resume" in text and "--overwrite" in text


def test_score_is_listed_and_evaluate_is_a_hidden_alias(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    commands = [ln.split()[0] for ln in listed.splitlines() if ln.startswith("    ") and ln.split()]
    assert "score" in commands and "evaluate" not in commands
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert capsys.readouterr().out.startswith("usage: vidseg score")


_EDITABLE = """\
import importlib.util, os, runpy, sys
ROOT = sys.argv.pop(1)
class Editable:  # what an editable install's finder does: map vidseg and its submodules to the source tree
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "vidseg" and not name.startswith("vidseg."):
            return None
        base = os.path.join(ROOT, *name.split("."))
        if os.path.isdir(base):
            init = os.path.join(base, "__init__.py")
            return importlib.util.spec_from_file_location(name, init, submodule_search_locations=[base])
        if os.path.isfile(base + ".py"):
            return importlib.util.spec_from_file_location(name, base + ".py")
        return None
sys.meta_path = [f for f in sys.meta_path if "editable" not in str(f).lower()] + [Editable]
sys.path = [""] + [p for p in sys.path[1:] if os.path.abspath(p or ".") != ROOT]  # "python -m": cwd first
runpy.run_module("vidseg", run_name="__main__", alter_sys=True)
"""


def test_python_m_vidseg_from_the_parent_of_a_clone_says_so(tmp_path):
    script = tmp_path / "editable_run.py"
    script.write_text(_EDITABLE)
    parent = tmp_path / "work"
    (parent / "vidseg").mkdir(parents=True)  # a clone: pyproject.toml, vidseg/, ... but no __init__.py
    (parent / "vidseg" / "pyproject.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = [sys.executable, str(script), str(ROOT), "--version"]
    p = subprocess.run(run, cwd=parent, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        f"vidseg: the folder {parent / 'vidseg'} (a clone of vidseg?) hides the installed vidseg package; "
        "run the command from another folder (e.g. from inside the clone) or use the 'vidseg' command"
    ]
    # Elsewhere the same launcher works: the check only fires on a shadowing folder.
    p = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.startswith("vidseg ")
