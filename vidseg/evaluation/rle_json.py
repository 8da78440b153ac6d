"""Fast loading of JSON files whose bulk is uncompressed-RLE ``"counts": [int, ...]`` lists.

A 720p YouTube-VIS ground-truth file holds millions of run lengths; Python's ``json`` builds one Python int
per number, which takes as long as the whole metric. Here every ``"counts": [...]`` list is located with
``bytes.find``, all lists are parsed at once by numpy's C text parser (after byte-level checks that they are
strict JSON integer lists; other layouts take a regular-expression scan and a vectorised numpy parser), and
each list is replaced in the text by a short placeholder string before the rest (small) goes through
``json``. An object hook turns each placeholder back into an int64 array (objects with ``"size"``) or a list
of ints.

Exactness: a list is only taken over when it is a valid JSON array of integers without sign, exponent or
leading zeros (anything else - floats, negative numbers, ``true`` - is left to ``json``), and only when its
``"counts"`` key is a real key (its opening quote is not escaped). The replacement swaps a valid JSON value
for another at the same place, so a file is valid JSON exactly when the rewritten text is; any error, and any
file that already contains the placeholder marker, goes through plain ``json`` on the original bytes, which
gives the usual error message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np

_MARK = "\x00vidseg-rle-"  # a JSON string cannot hold a raw NUL: it is written as \u0000 below
_MARK_JSON = b'"\\u0000vidseg-rle-'
_KEY = re.compile(rb'"counts"[ \t\n\r]*:[ \t\n\r]*\[')
_SPAN = re.compile(rb'"counts"[ \t\n\r]*:[ \t\n\r]*\[([0-9, \t\n\r]*)\]')
_CHUNK = 4 << 20  # bytes of list text parsed per numpy pass (bounds the temporaries to ~100 MB)
_MAX_DIGITS = 18  # below 2**63: longer numbers are left to json
_COUNT_CHUNK = 1 << 18  # values per pass when counting digits
_POW10 = 10 ** np.arange(1, _MAX_DIGITS + 1, dtype=np.int64)
_WS = np.zeros(256, dtype=bool)
_WS[[ord(" "), ord("\t"), ord("\n"), ord("\r")]] = True


def parse_int_lists(body: bytes, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse comma-separated non-negative integer lists laid end to end.

    Args:
        body: the lists' contents (between ``[`` and ``]``) concatenated.
        offsets: int64 [N+1], list i is ``body[offsets[i]:offsets[i+1]]``.

    Returns:
        ``(values, ptr, bad)``: ``values`` int64 [V]; ``ptr`` int64 [N+1], list i holds
        ``values[ptr[i]:ptr[i+1]]``; ``bad`` bool [N], lists that are not strict JSON integer lists (empty
        tokens, a space inside a number, leading zeros, more than 18 digits); their values are meaningless.
    """
    n = len(offsets) - 1
    raw = np.frombuffer(body, dtype=np.uint8)
    keep = ~_WS[raw]
    pos = np.flatnonzero(keep)  # positions of non-whitespace characters
    s = raw[pos]
    owner = np.repeat(np.arange(n, dtype=np.int32), np.diff(offsets))[keep]  # list of each kept character
    is_digit = s != ord(",")
    # A number starts at a digit whose previous kept character is a comma or is in another list, ends
    # likewise; a comma must sit between two digits of its own list.
    prev_same = np.zeros(len(s), dtype=bool)
    prev_same[1:] = owner[1:] == owner[:-1]
    next_same = np.zeros(len(s), dtype=bool)
    next_same[:-1] = prev_same[1:]
    prev_digit = np.zeros(len(s), dtype=bool)
    prev_digit[1:] = is_digit[:-1]
    next_digit = np.zeros(len(s), dtype=bool)
    next_digit[:-1] = is_digit[1:]
    start = is_digit & ~(prev_same & prev_digit)
    end = is_digit & ~(next_same & next_digit)
    bad_char = ~is_digit & ~(prev_same & prev_digit & next_same & next_digit)  # empty token / edge comma
    gap = np.zeros(len(s), dtype=bool)
    gap[1:] = pos[1:] - pos[:-1] != 1
    bad_char |= is_digit & prev_digit & prev_same & gap  # "1 2": whitespace inside a number
    starts = np.flatnonzero(start)
    ends = np.flatnonzero(end)
    ndig = ends - starts + 1
    lead0 = (s[starts] == ord("0")) & (ndig > 1)
    too_long = ndig > _MAX_DIGITS
    bad = np.zeros(n, dtype=bool)
    bad[owner[bad_char]] = True
    bad[owner[starts[lead0 | too_long]]] = True
    counts = np.bincount(owner[starts], minlength=n)
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    digit = (s - np.uint8(48)).astype(np.int64)
    values = np.zeros(len(starts), dtype=np.int64)
    longest = int(ndig.max()) if len(ndig) else 0
    sel = np.flatnonzero(ndig <= _MAX_DIGITS)
    for j in range(min(longest, _MAX_DIGITS)):  # digit j of every number with more than j digits
        values[sel] = values[sel] * 10 + digit[starts[sel] + j]
        sel = sel[ndig[sel] > j + 1]
    return values, ptr, bad


def loads_rle_json(
    data: bytes, hook: Callable[[dict], Any] | None = None, *, hook_skips_arrays: bool = False
) -> Any:
    """``json.loads(data, object_hook=...)`` with uncompressed-RLE count lists parsed by numpy.

    ``"counts"`` lists of objects with a ``"size"`` field become int64 arrays; other ``"counts"`` lists stay
    lists of ints (as ``json`` gives them). ``hook``, if given, is then applied to every object (with
    ``hook_skips_arrays``, not to the objects that just got an int64 counts array: the caller's hook would
    return them unchanged). Raises ``json.JSONDecodeError`` / ``UnicodeDecodeError`` exactly as
    ``json.loads(data)`` would.
    """
    if _MARK_JSON in data:
        return json.loads(data, object_hook=_wrap(hook, None))
    spans = _candidate_spans(data)
    parsed = _parse_fast(data, spans)
    if parsed is None:  # unusual layout or content: the regular-expression scan and the general parser
        spans = _real_spans(data)
        parsed = _parse_general(data, spans)
    values, lo, hi, bad = parsed
    pieces, last, placed = [], 0, {}
    for k, (a, b) in enumerate(spans):
        if bad[k]:
            continue  # json parses (or rejects) this list itself
        pieces.append(data[last : a - 1])
        pieces.append(b'"\\u0000vidseg-rle-%d"' % k)
        last = b + 1
        placed[k] = False
    if not placed:
        return json.loads(data, object_hook=_wrap(hook, None))
    pieces.append(data[last:])
    try:
        restore = _wrap(hook, (values, lo, hi, placed), hook_skips_arrays)
        out = json.loads(b"".join(pieces), object_hook=restore)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return json.loads(data, object_hook=_wrap(hook, None))  # the error message of the original text
    if not all(placed.values()):  # a placeholder that did not come back as a counts value: be safe
        return json.loads(data, object_hook=_wrap(hook, None))
    return out


def _parse_fast(data: bytes, spans: list[tuple[int, int]]) -> tuple | None:
    """``(values, lo, hi, bad)`` for lists in the usual layout (``json.dump`` separators), None otherwise:
    list k is ``values[lo[k]:hi[k]]``.

    The non-empty lists are joined with a ``-1`` sentinel between them (no list holds a sign, checked) and
    parsed by numpy's C text parser in one call; byte-level counts check that the text is a strict JSON
    integer list, and the sentinels give the list boundaries."""
    view = memoryview(data)  # slices of a view: the lists are copied once, by the join below
    pieces = [view[a:b] for a, b in spans]
    nonempty = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces)) > 0
    n_sep = int(nonempty.sum()) - 1
    if n_sep < 0:
        z = np.zeros(len(pieces), dtype=np.int64)
        return np.zeros(0, np.int64), z, z, np.zeros(len(pieces), dtype=bool)
    # json.dump writes ", " between numbers (default) or "," (compact separators); anything else: None.
    sample = next((bytes(x) for x in pieces if len(x) and b"," in bytes(x[:32])), b"")
    comma = b", " if b", " in sample else b","
    body = (comma + b"-1" + comma).join(x for x in pieces if x)
    # Strict text: without digits and "-" only separators remain, which then tile it exactly (k copies of
    # the separator in a text of k separators' length); the only "-" are the n_sep of the sentinels.
    rest = body.translate(None, b"0123456789-")
    n_comma = len(rest) // len(comma)
    if (
        len(rest) != n_comma * len(comma)
        or rest.count(comma) != n_comma
        or body.count(b"-") != n_sep
        or not (body[:1].isdigit() and body[-1:].isdigit())
    ):
        return None
    del rest
    # text mode (not deprecated), C speed; it skips the space after a comma
    try:
        values = np.fromstring(body, dtype=np.int64, sep=",")
    except ValueError:  # e.g. an empty token (",,"): numpy 2 stops with an error; json gives the message
        return None
    if len(values) != n_comma + 1 or values.max() >= 10**_MAX_DIGITS:
        return None
    # Digits: an empty token (", ,", read as 0) or a leading zero makes the counts disagree.
    if not _no_leading_zeros(values, len(body) - n_comma * len(comma) - n_sep):
        return None
    sep = np.flatnonzero(values < 0)
    if len(sep) != n_sep:
        return None
    lo = np.zeros(len(pieces), dtype=np.int64)
    hi = np.zeros(len(pieces), dtype=np.int64)
    lo[nonempty] = np.concatenate([[0], sep + 1])
    hi[nonempty] = np.concatenate([sep, [len(values)]])
    return values, lo, hi, np.zeros(len(pieces), dtype=bool)


def _parse_general(data: bytes, spans: list[tuple[int, int]]) -> tuple:
    """:func:`parse_int_lists` over chunks of about ``_CHUNK`` bytes, so that its temporaries stay small."""
    pieces = [data[a:b] for a, b in spans]
    if not pieces:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z, np.zeros(0, dtype=bool)
    sizes = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    vals, ptrs, bads = [], [np.zeros(1, dtype=np.int64)], []
    lo, total, nval = 0, 0, 0
    for hi in range(1, len(spans) + 1):
        total += int(sizes[hi - 1])
        if total < _CHUNK and hi < len(spans):
            continue
        offsets = np.zeros(hi - lo + 1, dtype=np.int64)
        np.cumsum(sizes[lo:hi], out=offsets[1:])
        v, p, b = parse_int_lists(b"".join(pieces[lo:hi]), offsets)
        ptrs.append(p[1:] + nval)
        nval += len(v)
        vals.append(v)
        bads.append(b)
        lo, total = hi, 0
    ptr = np.concatenate(ptrs)
    return np.concatenate(vals), ptr[:-1], ptr[1:], np.concatenate(bads)


def _no_leading_zeros(values: np.ndarray, num_digits: int) -> bool:
    """A token has at least as many digits as its value needs, exactly as many unless it has leading zeros
    (an empty token, read as 0, has fewer): so the text is clean exactly when the values' digit counts add up
    to its ``num_digits``."""
    need = len(values)  # every token has a first digit; one more for each power of ten a value reaches
    powers = _POW10[: int(np.searchsorted(_POW10, values.max(), side="right"))].tolist()
    for i in range(0, len(values), _COUNT_CHUNK):  # chunks: the comparison temporaries stay in the cache
        chunk = values[i : i + _COUNT_CHUNK]
        for p in powers:
            need += int(np.count_nonzero(chunk >= p))
    return need == num_digits


def _candidate_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of the contents of ``"counts": [ ... ]`` up to the first ``]``, for real keys; the
    contents are checked afterwards (:func:`_parse_fast`), so this needs no scan of the lists' characters
    beyond the search for their ``]``."""
    spans = []
    find = data.find
    for m in _KEY.finditer(data):
        if _unescaped(data, m.start()):
            e = find(b"]", m.end())
            if e < 0:
                break
            spans.append((m.end(), e))
    return spans


def _unescaped(data: bytes, q: int) -> bool:
    """Whether the quote at ``q`` is not escaped (an even number of backslashes before it)."""
    nb = 0
    while q - nb - 1 >= 0 and data[q - nb - 1] == 0x5C:
        nb += 1
    return nb % 2 == 0


def _real_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of the contents of every ``"counts": [...]`` list whose key quote is not escaped."""
    spans = []
    for m in _SPAN.finditer(data):
        if _unescaped(data, m.start()):
            spans.append(m.span(1))
    return spans


def _wrap(
    hook: Callable[[dict], Any] | None, table: tuple | None, hook_skips_arrays: bool = False
) -> Callable[[dict], Any]:
    values, lo, hi, placed = table if table is not None else (None, None, None, {})
    if table is not None:
        lo, hi = lo.tolist(), hi.tolist()  # Python ints: cheaper to index and slice with, 20,000 times
    n_mark = len(_MARK)

    def restore(obj: dict) -> Any:
        c = obj.get("counts")
        if type(c) is list:  # a list json parsed itself (plain path, or one the fast path left to json)
            if "size" in obj and all(type(x) is int and 0 <= x < 2**63 for x in c):
                obj["counts"] = np.array(c, dtype=np.int64)
        elif table is not None and type(c) is str and c.startswith(_MARK):
            k = int(c[n_mark:])
            if placed.get(k) is False:
                placed[k] = True
                arr = values[lo[k] : hi[k]]
                if "size" in obj:
                    obj["counts"] = arr
                    if hook_skips_arrays:  # the caller's hook leaves int64 counts arrays as they are
                        return obj
                else:
                    obj["counts"] = arr.tolist()
            else:
                placed[-1] = False  # a marker where none was put: makes the caller fall back
        return hook(obj) if hook is not None else obj

    return restore
