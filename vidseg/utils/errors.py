"""Expected errors as one line; unexpected ones keep their traceback.

Every command and entry point ends through :func:`report_error`: a bad input, a missing or unreadable file,
a full disk, a read-only folder, an unsafe checkpoint or a setting that cannot work (a ``ValueError`` or
``RuntimeError`` naming a config key or a flag) gives one line on stderr (and the same line in the
run's ``log.txt`` when the command opened one) and exit code 1. Anything else is a bug: its traceback is
printed (and logged), as it is for every error with ``--debug`` (or ``VIDSEG_DEBUG=1``).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterable

__all__ = ["DEBUG_ENV", "expected_error_line", "report_error", "log_to_files"]

DEBUG_ENV = "VIDSEG_DEBUG"

# OSErrors that are the user's environment, not a bug: (errno, what to say after the file name).
_OS_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "file not found",
    errno.EISDIR: "is a folder, expected a file",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EIO: "input/output error",
}


def _expected_types() -> tuple[type, ...]:
    """The exception classes that name a user's file or setting (imported here, lazily)."""
    import json

    types: list[type] = [json.JSONDecodeError]
    for module, names in (
        ("vidseg.config.config", ("ConfigError",)),
        ("vidseg.data.errors", ("DatasetError",)),
        ("vidseg.checkpoints.safe_load", ("CheckpointError",)),
        ("vidseg.engine.run_setup", ("RunDirError",)),
        ("vidseg.engine.trainer", ("NonFiniteLossError",)),
        ("vidseg.evaluation.ytvis_data", ("EvalInputError",)),
        ("vidseg.evaluation.rle_runs", ("RLEError",)),
        ("vidseg.inference.predictor", ("PredictorError",)),
        ("PIL", ("UnidentifiedImageError",)),
    ):
        try:
            mod = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        types.extend(getattr(mod, n) for n in names if hasattr(mod, n))
    return tuple(types)


# A ValueError / RuntimeError whose message names a config key (SOLVER.AMP.DTYPE, MODEL.DEVICE) or a flag
# (--num-gpus) is a setting the user can change, reported by the code that checks it: one line too.
_SETTING = re.compile(r"(?<![\w.])(?:[A-Z][A-Z0-9_]*\.)+[A-Z][A-Z0-9_]*(?![\w.])|(?<![\w-])--[a-z][a-z0-9-]+")


def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)


def _clean(text: str) -> str:
    """One line: a DataLoader worker's re-raised error carries the worker's traceback in its message; its
    last line is the original message (``Type: message``)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return text.strip()
    if len(lines) > 1 and "Original Traceback" in text:
        last = lines[-1]
        head, sep, rest = last.partition(": ")
        return rest if sep and "." in head and " " not in head else last
    return " ".join(ln.strip() for ln in lines)


def _os_line(e: OSError) -> str | None:
    if e.errno == errno.EEXIST and e.filename is not None and os.path.isfile(e.filename):
        return f"{e.filename}: is a file, expected a folder"  # mkdir(exist_ok=True) of an output folder
    what = _OS_ERRNOS.get(e.errno or -1)
    if what is None:
        return None
    name = e.filename if e.filename is not None else ""
    if e.filename2 is not None:
        name = f"{name} -> {e.filename2}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        what += " (free some space or choose another OUTPUT_DIR / --out)"
    return f"{name}: {what}" if name else f"{what} ({e.strerror or e})"


def expected_error_line(exc: BaseException) -> str | None:
    """The one-line message of an expected error, None for an unexpected one (a bug: keep the traceback)."""
    expected = _expected_types()
    for e in _chain(exc):
        if isinstance(e, expected):
            return _clean(str(exc) if e is not exc and str(exc) else str(e))
        if type(e) in (ValueError, RuntimeError) and _SETTING.search(str(e)):
            return _clean(str(e))
        if isinstance(e, FileNotFoundError) and e.errno is None and str(e):
            return _clean(str(e))  # raised by vidseg with a message that names the file (no errno)
        if isinstance(e, OSError) and not isinstance(e, (ConnectionError, TimeoutError)):
            line = _os_line(e)
            if line is not None:
                return line
            if "truncated" in str(e) or "cannot identify image" in str(e):  # PIL's decoding errors
                return _clean(str(e))
    return None


def log_to_files(line: str, handlers: Iterable[logging.Handler], level: int = logging.ERROR) -> None:
    """Write ``line`` to the file handlers among ``handlers`` only (the console already got it)."""
    record = logging.LogRecord("vidseg", level, __file__, 0, "%s", (line,), None)
    for h in handlers:
        if isinstance(h, logging.FileHandler):
            try:
                h.handle(record)
            except Exception:  # noqa: BLE001 - a log file on a full disk must not hide the error itself
                pass


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def report_error(prog: str, exc: BaseException, new_handlers: Iterable[logging.Handler] = ()) -> int:
    """Print ``exc`` as one line (expected) or with its traceback (unexpected or ``--debug``), log it to the
    log files opened by the command (``new_handlers``) and return the exit code (1)."""
    handlers = list(new_handlers)
    line = expected_error_line(exc)
    if line is not None and not debug_enabled():
        msg = f"{prog}: error: {line}"
        print(msg, file=sys.stderr, flush=True)
        log_to_files(msg, handlers)
        return 1
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    print(tb, end="", file=sys.stderr, flush=True)
    if line is None:
        hint = f"{prog}: unexpected error (a bug: please report it with the traceback above)"
        print(hint, file=sys.stderr, flush=True)
        log_to_files(tb.rstrip() + "\n" + hint, handlers)
    else:
        log_to_files(f"{prog}: error: {line}", handlers)
    return 1


def run_guarded(fn, prog: str, *args, **kwargs) -> int:
    """``fn(*args, **kwargs)`` as an entry point: its exit code, or :func:`report_error`'s on an exception
    (``--debug`` in ``sys.argv`` shows tracebacks)."""
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
        os.environ[DEBUG_ENV] = "1"
    log = logging.getLogger("vidseg")
    before = set(log.handlers)
    try:
        return int(fn(*args, **kwargs) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - see report_error
        return report_error(prog, e, [h for h in log.handlers if h not in before])
