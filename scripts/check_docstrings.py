#!/usr/bin/env python
"""Find (and with ``--fix`` repair) docstring lines broken by a bad reflow.

A reflow that cut every line over the width and put the overflow on a line of its own, at the same
indentation, leaves two shapes that this check reports as ``file:line: message`` (exit status 1 if any):

- a lone fragment: a line of one or two words in the middle of a paragraph, where the word could not join the
  line before (that line is full) but the next line of the paragraph could have joined it;
- a continuation at the wrong indentation: in an ``Args:`` / ``Attributes:`` / ``Keyword Args:`` section a
  line at the entries' own indentation (or shallower) that is not an entry ``name: text``, and in a list a
  line at the marker's indentation that continues a full item line.

Not reported: list items, section headers, literal blocks (after a line ending in ``::``, or fenced), doctest
lines, tables and column-aligned text, the short last line of a paragraph, free text in ``Returns:`` /
``Raises:``.

``--fix`` re-wraps each reported paragraph in place to the line length (110, pyproject's ruff line-length):
same indentation, a hanging indent of +4 for section entries, no words broken or changed, only line breaks
(never inside an inline literal of up to 40 characters, nor before a word that would start a list).
It checks, file by file, that the module's AST is unchanged except for whitespace in docstrings before it
writes. ``--fix`` exits 1 only if something is still reported after the fix.

``--strict`` also reports a short last line whose first word fits on the nearly full line before it.

Usage: ``python scripts/check_docstrings.py [--fix] [--strict] [--width N] [PATH ...]`` (default paths:
vidseg tests benchmarks).
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import sys
import textwrap
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

WIDTH = 110
# A line this close to the width counts as full: the broken reflow did not always fill lines to the end.
NEAR = 10
DEFAULT_PATHS = ("vidseg", "tests", "benchmarks")

# Sections whose body is a list of ``name: text`` entries with deeper continuation lines.
ENTRY_SECTIONS = {
    "args",
    "arguments",
    "parameters",
    "params",
    "attributes",
    "keyword args",
    "keyword arguments",
    "kwargs",
    "other parameters",
}
# Sections of ``Name: text`` entries where free text is allowed too: fixed with a hanging indent, never
# reported for indentation.
RAISES_SECTIONS = {"raises", "warns"}
SECTION_RE = re.compile(r"^[A-Z][A-Za-z]*(?: [A-Za-z]+){0,3}:$")
# ``name: text``, ``a, b: text``, ``a / b: text``, ``*args: text``, ``name (int): text``, ``name``: text.
_NAME = r"\*{0,2}`{0,2}[A-Za-z_][\w.\[\]]*`{0,2}"
ENTRY_RE = re.compile(rf"^{_NAME}(?:\s*(?:,|/|\bor\b)\s*{_NAME})*(?:\s*\([^)]*\))?:(?:\s|$)")
RAISES_ENTRY_RE = re.compile(r"^[A-Za-z_][\w.]*(?:\s*(?:,|/|\bor\b)\s*[A-Za-z_][\w.]*)*:(?:\s|$)")
LIST_RE = re.compile(r"^(?:[-*+\u2022]|\d{1,3}[.)]|\(\w{1,3}\)|[a-z][.)])\s+")
FENCE_RE = re.compile(r"^(```|~~~)")
TABLE_RE = re.compile(r"^(?:\+[-=+]+\+?|\|.*\||[=\-~^*#]{3,}(?:\s+[=\-]{3,})*)$")
# Column-aligned text: two spaces inside a line, not after sentence punctuation.
ALIGNED_RE = re.compile(r"[^\s.:;!?,] {2,}\S")
STRING_START_RE = re.compile(r"^([rRuUbB]{0,2})(\"\"\"|''')")


@dataclass
class DocLine:
    """One physical line of a docstring.

    ``head`` is the source before the text (indentation, and on the first line the code and the opening
    quotes), ``tail`` the source after it (the closing quotes on the last line).
    """

    lineno: int
    head: str
    text: str
    tail: str

    @property
    def indent(self) -> int:
        return len(self.head)

    @property
    def phys_len(self) -> int:
        return len(self.head) + len(self.text) + len(self.tail)

    @property
    def words(self) -> list[str]:
        return self.text.split()


@dataclass
class Paragraph:
    """Consecutive lines wrapped as one unit; ``cont`` is the indentation of the lines after the first."""

    kind: str  # "text", "first" (starts on the opening-quote line), "entry", "item", "raises"
    lines: list[int]
    cont: int | None
    opaque: bool = False
    flagged: set[int] = field(default_factory=set)


@dataclass
class Problem:
    path: Path
    lineno: int
    message: str


def _docstring_nodes(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = getattr(node, "body", None)
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                yield body[0].value


def _string_tokens(source: str) -> dict[tuple[int, int], tuple[int, int]]:
    """Start -> end (row, character column) of every STRING token."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(source, newline="").readline):
        if tok.type == tokenize.STRING:
            out[tok.start] = tok.end
    return out


def _char_col(line: str, byte_col: int) -> int:
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="replace"))


def docstring_lines(node: ast.Constant, lines: list[str], tokens) -> list[DocLine] | None:
    """The physical lines of a triple-quoted docstring made of one string token, else None."""
    first, last = node.lineno, node.end_lineno
    start = _char_col(lines[first - 1], node.col_offset)
    end = _char_col(lines[last - 1], node.end_col_offset)
    if tokens.get((first, start)) != (last, end) or first == last:
        return None  # implicit concatenation, or a one-line docstring (nothing to reflow)
    m = STRING_START_RE.match(lines[first - 1][start:])
    if m is None or not lines[last - 1][:end].endswith(m.group(2)):
        return None
    body_start = start + m.end()
    out = []
    for lineno in range(first, last + 1):
        raw = lines[lineno - 1]
        lo = body_start if lineno == first else 0
        hi = end - 3 if lineno == last else len(raw)
        seg = raw[lo:hi]
        if "\t" in seg or seg.endswith("\\"):
            return None  # tabs or backslash-newline: leave alone
        text = seg.strip()
        lead = len(seg) - len(seg.lstrip())
        if not text:
            head, tail = raw[: lo + len(seg)], raw[lo + len(seg) :]
        else:
            head = raw[: lo + lead]
            tail = raw[lo + lead + len(text) :]
        if lineno != last:
            tail = tail.rstrip()  # trailing whitespace inside the string is not kept by a re-wrap anyway
        out.append(DocLine(lineno, head, text, tail))
    return out


def _can_join(prev: DocLine, nxt: DocLine, width: int) -> bool:
    """Whether the first word of ``nxt`` would fit at the end of ``prev`` (with the closing quotes, if that
    word is all of the docstring's last line)."""
    extra = len(nxt.tail) if len(nxt.words) == 1 else 0
    return len(prev.head) + len(prev.text) + 1 + len(nxt.words[0]) + extra <= width


def _near_full(prev: DocLine, nxt: DocLine, width: int) -> bool:
    """Whether ``prev`` is about full: the first word of ``nxt`` would not fit, or only just (within
    ``NEAR`` characters)."""
    return not _can_join(prev, nxt, width - NEAR)


def _starts_list(doc: list[DocLine], i: int, cur: Paragraph | None) -> bool:
    """Whether the list-marker-like line ``i`` opens an item: ``(a) ...`` inside running text does not."""
    prev = doc[i - 1]
    return (
        cur is None
        or cur.kind == "item"
        or not prev.text
        or prev.text.endswith(":")
        or doc[i].indent != (cur.cont if cur.cont is not None else prev.indent)
    )


def _is_short(line: DocLine, width: int = WIDTH) -> bool:
    """One or two words, or a few words on a line under a third of the width (``unchanged). Raises``)."""
    return len(line.words) <= 2 or (len(line.text) <= width // 3 and not line.text.endswith(":"))


def analyse(
    doc: list[DocLine], base_indent: int, width: int = WIDTH, strict: bool = False
) -> tuple[list[Paragraph], dict[int, str]]:
    """Split a docstring into paragraphs and report the broken lines (index into ``doc`` -> message)."""
    paras: list[Paragraph] = []
    flags: dict[int, str] = {}
    cur: Paragraph | None = None
    section: dict | None = None  # {"kind", "indent", "entry_indent"}
    literal_parent: int | None = None
    fence = doctest = False

    def close():
        nonlocal cur
        if cur is not None:
            paras.append(cur)
        cur = None

    def next_text(i):
        for j in range(i + 1, len(doc)):
            if doc[j].text:
                return doc[j]
        return None

    for i, ln in enumerate(doc):
        text, ind = ln.text, ln.indent
        if not text:
            close()
            doctest = False
            continue
        if i == 0:
            ind = base_indent  # the summary line: its text column is not an indentation
        if fence:
            fence = not FENCE_RE.match(text)
            continue
        if literal_parent is not None:
            if ind > literal_parent:
                continue
            literal_parent = None
        if doctest:
            continue
        if FENCE_RE.match(text):
            close()
            fence = True
            continue
        if text.startswith(">>>"):
            close()
            doctest = True
            continue
        if section is not None and ind <= section["indent"]:
            section = None
        nxt = next_text(i)
        # A line ending in ":" before deeper lines ends its paragraph (outside Args, where entries do that).
        ends_before_deeper = text.endswith(":") and nxt is not None and nxt.indent > ind
        in_entries = section is not None and section["kind"] == "entry"
        if SECTION_RE.match(text) and i > 0:
            close()
            name = text[:-1].strip().lower()
            if name in ENTRY_SECTIONS:
                section = {"kind": "entry", "indent": ind, "entry_indent": None}
            elif name in RAISES_SECTIONS:
                section = {"kind": "raises", "indent": ind, "entry_indent": None}
            continue
        if TABLE_RE.match(text) or ALIGNED_RE.search(text):
            if cur is not None:
                cur.opaque = True
            close()
            paras.append(Paragraph("text", [i], ind, opaque=True))
            if text.endswith("::"):
                literal_parent = ind
            continue

        placed = False
        if section is not None:
            if section["entry_indent"] is None:
                section["entry_indent"] = ind
            e_ind = section["entry_indent"]
            if section["kind"] == "entry":
                if ind == e_ind and ENTRY_RE.match(text) and not LIST_RE.match(text):
                    close()
                    cur = Paragraph("entry", [i], None)
                    placed = True
                elif ind <= e_ind and cur is not None and cur.kind == "entry":
                    where = "the entry's own indentation" if ind == e_ind else "less than the entries"
                    flags[i] = f"continuation of an Args entry at {where} (indent it by 4 more)"
                    cur.lines.append(i)
                    cur.flagged.add(i)
                    placed = True
                elif ind > e_ind and cur is not None and cur.kind == "entry":
                    if cur.cont is None and not LIST_RE.match(text):
                        cur.cont = ind
                    if ind == cur.cont and not LIST_RE.match(text):
                        cur.lines.append(i)
                        placed = True
            elif section["kind"] == "raises" and ind == e_ind and RAISES_ENTRY_RE.match(text):
                close()
                cur = Paragraph("raises", [i], ind)
                placed = True
        if not placed:
            if LIST_RE.match(text) and i > 0 and _starts_list(doc, i, cur):
                close()
                marker = LIST_RE.match(text).group(0)
                cur = Paragraph("item", [i], ind + len(marker))
            elif cur is not None and cur.kind == "item" and ind == cur.cont:
                cur.lines.append(i)
            elif (
                cur is not None
                and cur.kind == "item"
                and ind == doc[cur.lines[0]].indent
                and _near_full(doc[cur.lines[-1]], ln, width)
            ):
                flags[i] = (
                    "continuation of a list item at the marker's indentation (indent it under the text)"
                )
                cur.lines.append(i)
                cur.flagged.add(i)
            elif cur is not None and cur.kind in ("text", "first", "raises") and ind == cur.cont:
                cur.lines.append(i)
            else:
                close()
                if i == 0:
                    cur = Paragraph("first", [i], base_indent)
                else:
                    cur = Paragraph("text", [i], ind)
        if text.endswith("::"):
            close()
            literal_parent = ind
        elif ends_before_deeper and not in_entries:
            close()
    close()

    for p in paras:
        if p.opaque:
            continue
        for k in range(1, len(p.lines) - 1):
            prev, line, nxt = (doc[p.lines[j]] for j in (k - 1, k, k + 1))
            if p.lines[k] in p.flagged or p.lines[k + 1] in p.flagged:
                continue
            if line.indent != p.cont or nxt.indent != p.cont or not _is_short(line, width):
                continue
            if _near_full(prev, line, width) and _can_join(line, nxt, width):
                flags[p.lines[k]] = f"lone fragment {line.text!r} in the middle of a paragraph (re-wrap it)"
                p.flagged.add(p.lines[k])
        if strict and len(p.lines) >= 2 and not p.flagged:
            # A short last line is legitimate, unless its first word fits on the nearly full line before: no
            # wrap breaks a line there (off by default: the original wrap may have had a reason).
            prev, line = doc[p.lines[-2]], doc[p.lines[-1]]
            if (
                line.indent == p.cont
                and _is_short(line, width)
                and _near_full(prev, line, width)
                and _can_join(prev, line, width)
            ):
                flags[p.lines[-1]] = f"short last line {line.text!r} whose first word fits on the line before"
                p.flagged.add(p.lines[-1])
    return paras, flags


NBSP = "\x01"  # a space the re-wrap must not break at (restored as a space)
SHORT_LITERAL = 40


def _protect(text: str) -> str:
    """Make the spaces that must not become line breaks non-breaking: inside an inline literal of up to
    ``SHORT_LITERAL`` characters (``H x W``), and before a word that would read as a list marker or a doctest
    prompt at the start of a line (``c - 1``)."""
    text = re.sub(
        r"``[^`]+?``",
        lambda m: m.group(0).replace(" ", NBSP) if len(m.group(0)) <= SHORT_LITERAL else m.group(0),
        text,
    )
    return re.sub(r" (?=(?:[-*+\u2022]|>>>|\d{1,3}[.)])(?: |$))", NBSP, text)


def rewrap(doc: list[DocLine], para: Paragraph, width: int = WIDTH) -> list[str]:
    """The paragraph's physical lines, re-wrapped: only the line breaks between the words change."""
    first, last = doc[para.lines[0]], doc[para.lines[-1]]
    if para.kind in ("entry", "raises"):
        cont = first.indent + 4
    elif para.kind == "first":
        cont = para.cont if para.cont is not None else first.indent
    else:
        cont = para.cont if para.cont is not None else first.indent
    text = _protect(" ".join(doc[i].text for i in para.lines))
    # Glue placeholders for the closing quotes to the last word so that they count in the last line's width.
    pad = "\x00" * len(last.tail)
    wrapper = textwrap.TextWrapper(
        width=width,
        initial_indent=" " * len(first.head),
        subsequent_indent=" " * cont,
        break_long_words=False,
        break_on_hyphens=False,
        expand_tabs=False,
        replace_whitespace=False,
    )
    wrapped = wrapper.wrap(text + pad)
    if pad:
        wrapped[-1] = wrapped[-1][: -len(pad)]
    wrapped = [line.replace(NBSP, " ") for line in wrapped]
    wrapped[0] = first.head + wrapped[0][len(first.head) :]
    wrapped[-1] += last.tail
    return wrapped


def _normalised_dump(tree: ast.AST) -> str:
    for node in _docstring_nodes(tree):
        node.value = " ".join(node.value.split())
    return ast.dump(tree)


def check_file(
    path: Path, fix: bool = False, width: int = WIDTH, strict: bool = False
) -> tuple[list[Problem], bool]:
    """Problems found in ``path`` (before any fix) and whether the file was rewritten."""
    try:
        with open(path, encoding="utf-8", newline="") as f:  # keep "\r\n" as it is
            source = f.read()
        tree = ast.parse(source, filename=str(path))
        tokens = _string_tokens(source)
    except (SyntaxError, UnicodeDecodeError, tokenize.TokenError) as e:
        return [Problem(path, getattr(e, "lineno", None) or 1, f"cannot parse: {e}")], False
    # Python's line breaks only (str.splitlines also splits at form feeds), each kept with its line.
    parts = re.split(r"(\r\n|\r|\n)", source)
    lines, ends = parts[0::2], parts[1::2] + [""]
    problems: list[Problem] = []
    edits: list[tuple[int, int, list[str]]] = []  # (first lineno, last lineno, new lines)
    for node in _docstring_nodes(tree):
        doc = docstring_lines(node, lines, tokens)
        if doc is None:
            continue
        base = len(lines[node.lineno - 1]) - len(lines[node.lineno - 1].lstrip())
        paras, flags = analyse(doc, base, width, strict)
        for i in sorted(flags):
            problems.append(Problem(path, doc[i].lineno, flags[i]))
        for p in paras:
            if p.flagged:
                edits.append((doc[p.lines[0]].lineno, doc[p.lines[-1]].lineno, rewrap(doc, p, width)))
    if not (fix and edits):
        return problems, False
    new_lines, new_ends = list(lines), list(ends)
    for lo, hi, repl in sorted(edits, reverse=True):
        new_lines[lo - 1 : hi] = repl
        new_ends[lo - 1 : hi] = [ends[lo - 1]] * (len(repl) - 1) + [ends[hi - 1]]
    new_source = "".join(line + end for line, end in zip(new_lines, new_ends))
    try:
        same = _normalised_dump(ast.parse(new_source)) == _normalised_dump(ast.parse(source))
    except SyntaxError:
        same = False
    if not same:
        problems.append(
            Problem(path, 1, "not fixed: the re-wrap would change more than docstring whitespace")
        )
        return problems, False
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(new_source)
    return problems, True


def iter_files(paths: list[str]):
    for p in paths:
        path = Path(p)
        if path.is_dir():
            yield from sorted(f for f in path.rglob("*.py") if ".venv" not in f.parts)
        elif path.suffix == ".py" or path.is_file():
            yield path
        else:
            print(f"{p}: no such file or folder", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=list(DEFAULT_PATHS), help="files or folders")
    parser.add_argument("--fix", action="store_true", help="re-wrap the reported paragraphs in place")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="also report a short last line whose first word fits on the nearly full line before",
    )
    parser.add_argument("--width", type=int, default=WIDTH, help=f"line length (default {WIDTH})")
    args = parser.parse_args(argv)
    missing = [p for p in args.paths if not Path(p).exists()]
    for p in missing:
        print(f"{p}: no such file or folder", file=sys.stderr)
    total = remaining = fixed_files = 0
    for path in iter_files([p for p in args.paths if p not in missing]):
        problems, fixed = check_file(path, fix=args.fix, width=args.width, strict=args.strict)
        after = check_file(path, width=args.width, strict=args.strict)[0] if fixed else problems
        fixed_files += fixed
        for pr in problems:
            print(f"{pr.path}:{pr.lineno}: {pr.message}{' (fixed)' if fixed else ''}")
        if fixed:
            for pr in after:
                print(f"{pr.path}:{pr.lineno}: {pr.message} (still there after --fix)")
        total += len(problems)
        remaining += len(after)
    if args.fix:
        print(
            f"{total} broken docstring line(s); {fixed_files} file(s) re-wrapped; {remaining} left",
            file=sys.stderr,
        )
    elif total:
        print(f"{total} broken docstring line(s); run with --fix to re-wrap them", file=sys.stderr)
    return 1 if remaining or missing else 0


if __name__ == "__main__":
    sys.exit(main())
