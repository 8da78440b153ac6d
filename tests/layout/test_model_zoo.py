"""MODEL_ZOO.md is true: every row of the seed tables is there, every config path exists and loads, the AP of
a row is the one its config's header quotes from the seed, and every ``vidseg`` command in it parses (its
flags by the command's own parser, its ``KEY VALUE`` pairs against the config) without running anything."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from vidseg.cli import command_parser
from vidseg.models import load_config

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "MODEL_ZOO.md").read_text(encoding="utf-8")
SECTIONS = {"DeVIS": 9, "DeVIS ablations": 9, "GRAtt-VIS": 8}  # rows in the seed READMEs' tables


def _section(title: str) -> str:
    start = TEXT.index(f"\n## {title}")
    end = TEXT.find("\n## ", start + 1)
    return TEXT[start : end if end > 0 else len(TEXT)]


def _rows(title: str) -> list[list[str]]:
    lines = [ln for ln in _section(title).splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines[1:] if not ln.startswith("|---")]


ROWS = [(title, i, row) for title in SECTIONS for i, row in enumerate(_rows(title))]


def _config_of(row: list[str]) -> str:
    (path,) = [c.strip("`") for c in row if re.fullmatch(r"`configs/\S+\.yaml`", c)]
    return path


def _commands(row: list[str]) -> list[list[str]]:
    return [shlex.split(c) for cell in row for c in re.findall(r"`(vidseg [^`]+)`", cell)]


def _loadable(path: str):
    if not (ROOT / path).exists():
        pytest.fail(f"MODEL_ZOO.md names {path}, which does not exist")
    return load_config(str(ROOT / path))


def test_every_row_of_the_seed_tables_is_there():
    assert {t: len(_rows(t)) for t in SECTIONS} == SECTIONS
    assert "No AP in this file has been reproduced" in TEXT  # and the status column claims no AP


@pytest.mark.parametrize("title, i, row", ROWS, ids=[f"{t}-{i}" for t, i, _ in ROWS])
def test_each_row_config_loads_quotes_its_ap_and_its_commands_parse(title, i, row):
    path = _config_of(row)
    cfg = _loadable(path)
    header = "".join(ln for ln in (ROOT / path).read_text().splitlines(True) if ln.startswith("#"))
    ap = row[2] if title != "DeVIS ablations" else row[4]
    shared = sum(_config_of(r) == path for _, _, r in ROWS) > 1  # the ablation table's last row: another eval
    if not shared:
        assert re.search(rf"\b{re.escape(ap)} (mask )?AP\b", header), f"{path} does not quote {ap} AP"
    commands = _commands(row)
    assert [c[1] for c in commands][:2] == ["eval", "predict"], row
    for words in commands:
        name = words[1]
        parser, _ = command_parser(name)
        args = parser.parse_intermixed_args(words[2:])  # argparse exits (SystemExit) on a bad flag
        if name in ("eval", "predict"):
            assert args.config_file == path
            weights = args.opts[args.opts.index("MODEL.WEIGHTS") + 1] if name == "eval" else args.weights
            assert weights.startswith(("weights/", "output/")) and weights.endswith(".pth")
            load_config(str(ROOT / path), args.opts)  # the overrides are real keys of this config
        if name == "score":
            assert args.ytvis2022 and "2022" in path
    assert cfg.MODEL.META_ARCHITECTURE


def test_the_weights_names_of_eval_and_predict_agree_within_a_row():
    for _, _, row in ROWS:
        eval_words, predict_words = _commands(row)[:2]
        assert (
            eval_words[eval_words.index("MODEL.WEIGHTS") + 1]
            == predict_words[predict_words.index("--weights") + 1]
        )


def test_every_status_entry_is_in_the_legend():
    legend = _section("Status legend")
    names = set()
    for cell in re.findall(r"^\| ([\w /-]+) \| ", legend, re.M):
        names |= {n.strip() for n in cell.split("/")}
    for title, _, row in ROWS:
        status = row[-1]
        if status.startswith("as "):
            continue
        for entry in status.split(", "):
            assert entry in names, f"{title}: status {entry!r} is not in the legend"
    for test_file in re.findall(r"`(tests/[\w/]+\.py)`", legend):
        assert (ROOT / test_file).exists(), test_file


def test_the_vidseg_forms_of_the_seed_commands_parse_and_match_them():
    rows = _rows("The seeds' commands and their vidseg forms")
    assert len(rows) == 4
    for seed, ours in rows:
        seed_words, words = shlex.split(seed.strip("`")), shlex.split(ours.strip("`"))
        parser, _ = command_parser(words[1])
        args = parser.parse_intermixed_args(words[2:])
        # the same overrides, in the same order (the seed's KEY VALUE pairs end its command)
        assert args.opts == seed_words[len(seed_words) - len(args.opts) :]
        assert words[1] == ("eval" if "--eval-only" in seed_words else "train")
        if words[1] == "train":  # 4 GPUs, as the seed's --num-gpus 4 / --nproc_per_node=4
            assert args.num_gpus == 4 and ("--nproc_per_node=4" in seed_words or "4" in seed_words)
        config = args.config_file.replace("configs/genvis/", "configs/grattvis/")
        if not config.startswith("YOUR_MODEL_PATH"):
            load_config(str(ROOT / config), args.opts)
