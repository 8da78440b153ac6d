"""Every command in README.md, docs/*.md and MODEL_ZOO.md runs as written.

The fenced shell blocks are read from the files (MODEL_ZOO.md: its inline ``vidseg ...`` commands); each line
that starts a command (``vidseg``, ``python``, ``torchrun``, ``make``, ``pip``) is one test, run in one shared
folder in document order (README first), so that later commands use what earlier ones wrote
(``datasets/synth``, ``output/run1``). ``vidseg`` commands run in this process through ``vidseg.cli.main``. A
command that cannot run on a CPU in seconds is skipped with its reason, listed in the test summary (``-ra``):
add a reason to ``SKIPS`` when you document such a command.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from vidseg.cli import main

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "MODEL_ZOO.md"]
INLINE = {"MODEL_ZOO.md"}  # its commands are inline code in the tables: `vidseg eval --config-file ...`
STARTS = ("vidseg", "python", "torchrun", "make", "pip", "PIP_CONSTRAINT=")

SKIPS: list[tuple[str, str]] = [  # (regex searched in the command, why it is not run here)
    (
        r"^make (quickstart|test)\b",
        "sets up .venv and runs for minutes: CI runs `make test` on a clean clone",
    ),
    (r"\bpip install\b", "installs packages"),
    (r"--nproc_per_node=4|--num-gpus 4", "4 processes (a GPU machine); 2 ranks run in tests/engine (slow)"),
    (r"official_checkpoint\.pth", "needs an official checkpoint (docs/checkpoints.md); tests/checkpoints"),
    (r"_checkpoint\.pth", "needs an official checkpoint; tests/cli/test_cli_official_weights.py runs these"),
    (r"r50_maskhead_coco\.pth", "needs COCO val2017 and the official mask-head weights"),
    (r"\[--", "a usage synopsis, not a command"),
    (r"^vidseg quickstart$", "the full quickstart takes minutes on 2 cores; the short form runs"),
    (r"--epochs 30", "minutes of training"),
    (r"--fetch-only", "needs the npm tarballs (a registry or --from DIR)"),
    (r"visdom", "starts a server that runs until stopped"),
    (
        r"model_checkpoint\.pth|weights/grattvis_",
        "needs OVIS / YouTube-VIS data and the released GRAtt-VIS weights "
        "(tests/checkpoints/test_gratt_checkpoints.py)",
    ),
    (r"--ytvis2022 datasets/ytvis_2022/", "needs the YouTube-VIS 2022 validation GT, split short / long"),
    (
        r"weights/(r50|r101|swinL)_(devis|deformable_detr)",
        "needs the seed's released weights (the table's links) and the dataset; "
        "tests/cli/test_cli_official_weights.py runs eval / predict on tiny files of the official layout",
    ),
    (r"output/ablation[\d-]+/checkpoint\.pth", "needs a trained run of the ablation config (GPU hours)"),
    (r"<config>|GT\.json|GT_short\.json", "placeholders (<config>, GT.json), not a command"),
]


@dataclass
class DocCommand:
    where: str  # file:line
    text: str

    @property
    def skip_reason(self) -> str | None:
        return next((why for pat, why in SKIPS if re.search(pat, self.text)), None)


def doc_commands() -> list[DocCommand]:
    out = []
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        for block in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
            if block.group(1) not in ("", "bash", "sh", "shell", "console"):
                continue
            first_line = text[: block.start()].count("\n") + 2
            lines = block.group(2).split("\n")
            i = 0
            while i < len(lines):
                start, cmd = i, lines[i]
                while cmd.rstrip().endswith("\\") and i + 1 < len(lines):
                    i += 1
                    cmd = cmd.rstrip()[:-1] + " " + lines[i].strip()
                i += 1
                if not cmd.split() or not cmd.split()[0].startswith(STARTS):
                    continue  # output shown in a block, a file listing, a comment
                words = shlex.split(cmd, comments=True)
                if words:
                    out.append(
                        DocCommand(f"{path.relative_to(ROOT)}:{first_line + start}", shlex.join(words))
                    )
        if path.name in INLINE:
            for m in re.finditer(r"`(vidseg [^`]+)`", text):
                words = shlex.split(m.group(1))
                if len(words) >= 3 and not words[-1].startswith("--"):  # not `vidseg convert --config-file`
                    line = text[: m.start()].count("\n") + 1
                    out.append(DocCommand(f"{path.relative_to(ROOT)}:{line}", shlex.join(words)))
    return out


COMMANDS = doc_commands()


def test_the_docs_have_commands():
    where = {c.where.split(":")[0] for c in COMMANDS}
    assert {"README.md", "docs/training.md", "docs/datasets.md", "docs/inference.md", "MODEL_ZOO.md"} <= where
    assert not [c for c in COMMANDS if "last.pth" in c.text]  # no run writes it


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    return {"dir": tmp_path_factory.mktemp("docs"), "done": {}}


def _run(cmd: DocCommand) -> int:
    words = shlex.split(cmd.text)
    assert words[0] == "vidseg", f"{cmd.where}: only vidseg commands run in-process: {cmd.text}"
    try:
        return main(words[1:])
    except SystemExit as e:  # --help
        return int(e.code or 0)


@pytest.mark.e2e
@pytest.mark.parametrize("index", range(len(COMMANDS)), ids=[f"{c.where} {c.text[:60]}" for c in COMMANDS])
def test_doc_command_runs_as_written(index, sandbox, monkeypatch, capsys):
    cmd = COMMANDS[index]
    if cmd.skip_reason:
        pytest.skip(f"{cmd.where}: {cmd.text[:70]}: {cmd.skip_reason}")
    monkeypatch.chdir(sandbox["dir"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for j, earlier in enumerate(COMMANDS[:index]):  # what this command may build on (when run alone, -k)
        if j not in sandbox["done"] and not earlier.skip_reason:
            sandbox["done"][j] = _run(earlier)
    capsys.readouterr()
    rc = _run(cmd)
    sandbox["done"][index] = rc
    err = capsys.readouterr().err
    assert rc == 0, f"{cmd.where}: `{cmd.text}` exited with {rc}:\n{err[-3000:]}"
    assert "Traceback" not in err
