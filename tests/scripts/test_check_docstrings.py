"""scripts/check_docstrings.py: the two reflow shapes are found, legitimate shapes are not, and --fix only
moves line breaks inside docstrings."""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check_docstrings.py"


def _load():
    spec = importlib.util.spec_from_file_location("check_docstrings", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_docstrings"] = module  # dataclasses look the module up while the class is built
    spec.loader.exec_module(module)
    return module


cd = _load()
W = 60  # a small width keeps the samples readable; the script's default is pyproject's 110

BROKEN = '''def f(x):
    """Summary line of the function, a fairly long one.

    The first paragraph has a line that was cut by the tool
    so
    that the next line could have taken the lone word.

    Args:
        x: the input tensor of shape ``[B, C]`` normalised to
        one;
            other keys are ignored by this function.
        y: fine.
    """
    return x
'''

FIXED = '''def f(x):
    """Summary line of the function, a fairly long one.

    The first paragraph has a line that was cut by the tool
    so that the next line could have taken the lone word.

    Args:
        x: the input tensor of shape ``[B, C]`` normalised
            to one; other keys are ignored by this function.
        y: fine.
    """
    return x
'''

LEGIT = '''"""Module summary that is long enough to fill the line.

A paragraph whose last line is short, which is fine as it
is.

Lists are fine, and short items are not fragments:

- a list item line that runs very close to the width limit
- b
- c: short items
1. a numbered item that is long enough to be near the end
2. x

Running text may also start a line with a marker, see the
(a) shortest-edge resize, then the (b) resize to a size in
``crop_sizes``, then a crop.

Modes:
    fast
    slow
    exact

Example::

    python train.py --config configs/a_very_long_name.yaml
    x
    --resume

```
a fenced line of code that goes up to the width limit ab
x
more code
```

>>> f(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 1)
3
>>> g()

=====  ============================================
name   meaning of the name, long enough to be close
a      b
=====  ============================================
"""


def g(a, b, c, *args):
    """Summary.

    Args:
        a: an entry that is long enough to be near the end
            of the line.
        b, c / d: several names in one entry, continued one
            level deeper.
        *args: star args.

    Returns:
        ``(tp, ignored)`` bool [T, D]: matched to a GT with a
        non-zero id, and ignored because matched to it.

    Raises:
        ValueError: if the input is not a tensor of shape
        ``[B, C]`` (free text at the entry's indentation).
    """
'''


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _messages(path: Path, width: int = W) -> list[tuple[int, str]]:
    problems, fixed = cd.check_file(path, width=width)
    assert not fixed
    return [(p.lineno, p.message) for p in problems]


def test_lone_fragment_and_args_continuation_are_reported(tmp_path):
    msgs = _messages(_write(tmp_path, "broken.py", BROKEN))
    assert [line for line, _ in msgs] == [5, 10]
    assert "lone fragment 'so'" in msgs[0][1]
    assert "Args entry at the entry's own indentation" in msgs[1][1]


def test_the_shapes_of_the_tree_at_110(tmp_path):
    # Taken from vidseg/models/matcher.py and vidseg/models/criterion.py at 9c7a815, before the fix.
    src = '''class M:
    def forward(self, outputs, targets):
        """Match every image of the batch.

        Args:
            outputs: ``"pred_logits"`` ``[B, Q, K]`` and ``"pred_boxes"`` ``[B, Q, 4]`` (normalised
            cxcywh); other
                keys are ignored.
        """

    def _pairs(self):
        """Pairs that get box/mask losses: all pairs of images with at least one valid pair (DeVIS
        supervises the
        invalid frames of a visible instance too, with tiny boxes and empty masks), ``[M]`` bool."""
'''
    path = _write(tmp_path, "tree.py", src)
    msgs = _messages(path, width=110)
    assert [line for line, _ in msgs] == [7, 13]
    cd.check_file(path, fix=True, width=110)
    text = path.read_text()
    assert "(normalised cxcywh);\n                other keys are ignored.\n" in text
    assert "pair (DeVIS supervises\n        the invalid frames" in text
    assert max(len(line) for line in text.splitlines()) <= 110
    assert _messages(path, width=110) == []


def test_list_item_continuation_at_the_marker_is_reported(tmp_path):
    src = '''"""Summary.

1. :class:`Attention` turns each query embedding into the
maps
   at /32, /16 and /8 (one softmax over heads x pixels).
2. :class:`Conv` refines them.
"""
'''
    path = _write(tmp_path, "items.py", src)
    msgs = _messages(path)
    assert [line for line, _ in msgs] == [4]
    assert "list item" in msgs[0][1]
    cd.check_file(path, fix=True, width=W)
    assert path.read_text().splitlines()[3] == "   maps at /32, /16 and /8 (one softmax over heads x"


def test_legitimate_shapes_are_not_reported(tmp_path):
    assert _messages(_write(tmp_path, "legit.py", LEGIT)) == []
    assert _messages(_write(tmp_path, "fixed.py", FIXED)) == []


def test_fix_rewraps_only_the_broken_paragraphs(tmp_path):
    path = _write(tmp_path, "broken.py", BROKEN)
    problems, fixed = cd.check_file(path, fix=True, width=W)
    assert fixed and len(problems) == 2
    assert path.read_text() == FIXED


def test_fix_is_idempotent_and_leaves_code_alone(tmp_path):
    # The same shape in a plain string and in a comment is code, not a docstring.
    code = 'X = """Not a docstring: a line that is long enough here\nso\nit stays as it is."""\n# a\n# b\n'
    path = _write(tmp_path, "mixed.py", BROKEN + code)
    cd.check_file(path, fix=True, width=W)
    once = path.read_text()
    assert once == FIXED + code
    problems, fixed = cd.check_file(path, fix=True, width=W)
    assert problems == [] and not fixed and path.read_text() == once


def test_fix_gives_raises_entries_a_hanging_indent(tmp_path):
    src = '''def f():
    """Summary.

    Raises:
        RLEError: a string that ends inside a number, a count that
        does
        not fit in uint32.
    """
'''
    path = _write(tmp_path, "raises.py", src)
    assert [line for line, _ in _messages(path)] == [6]
    cd.check_file(path, fix=True, width=W)
    assert path.read_text().splitlines()[4:6] == [
        "        RLEError: a string that ends inside a number, a",
        "            count that does not fit in uint32.",
    ]


def test_fix_does_not_break_short_inline_literals_or_start_a_line_with_a_marker(tmp_path):
    src = '''"""Summary.

Masks are never expanded to full bitmaps in this module, as
they
stay compressed: frames of ``H x W`` pixels, label ``c - 1``.
"""
'''
    path = _write(tmp_path, "literal.py", src)
    cd.check_file(path, fix=True, width=W)
    # A plain greedy wrap would end the second line with "label ``c -".
    assert path.read_text().splitlines()[3:5] == [
        "they stay compressed: frames of ``H x W`` pixels, label",
        "``c - 1``.",
    ]
    assert cd._protect("a ``c - 1`` b - c 2. d") == "a ``c\x01-\x011`` b\x01- c\x012. d"
    long_literal = "``" + " ".join(["x"] * 30) + "``"
    assert cd._protect(long_literal) == long_literal  # a long literal may still be broken


def test_strict_also_reports_a_last_line_that_fits_on_the_line_before(tmp_path):
    src = '''def f():
    """Summary.

    A paragraph whose last line fits on the line before
    it.

    A paragraph whose previous line is really full, up to
    the limit.
    """
'''
    path = _write(tmp_path, "strict.py", src)
    assert _messages(path) == []
    problems, _ = cd.check_file(path, width=W, strict=True)
    assert [p.lineno for p in problems] == [5]
    cd.check_file(path, fix=True, width=W, strict=True)
    assert "    A paragraph whose last line fits on the line before it.\n" in path.read_text()
    assert cd.check_file(path, width=W, strict=True)[0] == []


def test_fix_keeps_crlf_line_ends(tmp_path):
    path = tmp_path / "crlf.py"
    path.write_bytes(BROKEN.replace("\n", "\r\n").encode())
    cd.check_file(path, fix=True, width=W)
    assert path.read_bytes() == FIXED.replace("\n", "\r\n").encode()


def test_fix_keeps_closing_quotes_within_the_width(tmp_path):
    src = '''def f():
    """The summary line runs up to the limit of the width, so
    that
    the closing quotes then end the last line of this one."""
'''
    path = _write(tmp_path, "quotes.py", src)
    assert [line for line, _ in _messages(path)] == [3]
    cd.check_file(path, fix=True, width=W)
    lines = path.read_text().splitlines()
    assert max(map(len, lines)) <= W
    assert lines[-1].endswith('."""') and ast.get_docstring(ast.parse(path.read_text()).body[0])


def _words(text: str) -> list[str]:
    return text.split()


@pytest.mark.parametrize("folder", ["vidseg/models", "vidseg/evaluation", "vidseg/ops"])
def test_fix_on_the_tree_changes_only_line_breaks(tmp_path, folder):
    """On the real files (broken or already fixed): words unchanged, code unchanged, nothing left to report,
    no line over 110."""
    src = ROOT / folder
    dst = tmp_path / "tree"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    before = {p.relative_to(dst): p.read_text() for p in dst.rglob("*.py")}
    for p in sorted(dst.rglob("*.py")):
        cd.check_file(p, fix=True)
    for rel, old in before.items():
        new = (dst / rel).read_text()
        assert _words(new) == _words(old), rel
        assert max((len(line) for line in new.splitlines()), default=0) <= 110, rel
        assert cd._normalised_dump(ast.parse(new)) == cd._normalised_dump(ast.parse(old)), rel
        assert cd.check_file(dst / rel)[0] == [], rel


def test_command_line_reports_and_exit_status(tmp_path):
    broken = _write(tmp_path, "broken.py", BROKEN)
    legit = _write(tmp_path, "legit.py", LEGIT)
    run = [sys.executable, str(SCRIPT), "--width", str(W)]
    r = subprocess.run([*run, str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        f"{broken}:5: lone fragment 'so' in the middle of a paragraph (re-wrap it)",
        f"{broken}:10: continuation of an Args entry at the entry's own indentation (indent it by 4 more)",
    ]
    assert subprocess.run([*run, str(legit)], capture_output=True).returncode == 0
    r = subprocess.run([*run, "--fix", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0 and "0 left" in r.stderr
    assert broken.read_text() == FIXED
    assert subprocess.run([*run, str(tmp_path)], capture_output=True).returncode == 0
    r = subprocess.run([*run, str(tmp_path / "missing")], capture_output=True, text=True)
    assert r.returncode == 1 and "no such file or folder" in r.stderr
