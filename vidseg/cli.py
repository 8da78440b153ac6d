"""The ``vidseg`` command line: ``vidseg <command> [options]``.

Each command lives in ``vidseg/commands/<name>.py`` with ``add_arguments(parser)`` and ``run(args) -> int``;
it is imported only when used, so ``vidseg --help`` stays fast and a missing optional dependency of one
command never breaks another. Options may come anywhere, also after the ``KEY VALUE`` pairs. An expected
error (a bad file, a full disk, ...) ends a command with one line on stderr and exit code 1; ``--debug``
(anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

# name -> (module, one-line help). Explicit: a command is added here when it lands.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("vidseg.commands.synth", "write a synthetic dataset in the exact YouTube-VIS layout"),
    "visualize": (
        "vidseg.commands.visualize",
        "render ground truth or a results JSON over the frames (mp4/gif)",
    ),
    "score": (
        "vidseg.commands.score",
        "score a results JSON against a ground-truth JSON (YouTube-VIS/OVIS)",
    ),
    "train": (
        "vidseg.commands.train",
        "train a model from a config (single process, --num-gpus N, or torchrun)",
    ),
    "eval": ("vidseg.commands.eval", "evaluate a trained model on a dataset (the --eval-only path)"),
    "predict": ("vidseg.commands.predict", "segment and track the objects of a video file or frame folder"),
    "quickstart": ("vidseg.commands.quickstart", "synthetic data -> train -> evaluate -> render, on CPU"),
    "convert": (
        "vidseg.commands.convert",
        "convert an official DeVIS / Deformable DETR checkpoint to vidseg",
    ),
    "config": ("vidseg.commands.config", "print a resolved config (with _BASE_ and KEY VALUE overrides)"),
    "visdom": ("vidseg.commands.visdom", "start a Visdom server on loopback, its page's scripts from npm"),
    "plot": ("vidseg.commands.plot", "draw the training curves of one or more runs into a PNG"),
}
# Old names that still work but are not listed: alias -> command.
ALIASES: dict[str, str] = {"evaluate": "score"}

DEBUG_FLAG = "--debug"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidseg",
        description="Video instance segmentation in pure PyTorch: DeVIS and GRAtt-VIS.",
        epilog="Run 'vidseg <command> --help' for the options of a command. --debug (anywhere): full "
        "tracebacks instead of one-line errors.",
    )
    parser.add_argument("--version", action="version", version=f"vidseg {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Arguments are added lazily in main() for the chosen command only.
    for alias, target in ALIASES.items():
        sub.add_parser(alias).set_defaults(_module=COMMANDS[target][0])  # no help=: not listed
    return parser


def _version() -> str:
    from vidseg import __version__

    return __version__


def command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    """The argument parser of command ``name`` (an alias gives its command's parser) and its module."""
    name = ALIASES.get(name, name)
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(
        prog=f"vidseg {name}",
        description=getattr(module, "DESCRIPTION", help_text),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=getattr(module, "EPILOG", None),
    )
    module.add_arguments(sub)
    return sub, module


def main(argv: Sequence[str] | None = None) -> int:
    # Before any command imports torch: OpenMP reads its wait policy once, at import (see docs/training.md).
    from vidseg.utils.threads import prepare_env

    prepare_env()
    from vidseg.utils.errors import DEBUG_ENV, report_error

    argv = list(sys.argv[1:] if argv is None else argv)
    if DEBUG_FLAG in argv:  # a global flag, accepted anywhere; spawned ranks see it through the environment
        argv = [a for a in argv if a != DEBUG_FLAG]
        os.environ[DEBUG_ENV] = "1"
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help", "--version") or argv[0] not in {*COMMANDS, *ALIASES}:
        parser.parse_args(argv)  # prints help / version / "invalid choice" and exits
        parser.print_help()
        return 2
    name = ALIASES.get(argv[0], argv[0])
    sub, module = command_parser(name)
    # Intermixed: "--config-file X KEY VALUE --no-progress" and "SOURCE --out D KEY VALUE" parse as typed.
    args = sub.parse_intermixed_args(argv[1:])
    log = logging.getLogger("vidseg")
    before = set(log.handlers)
    try:
        return int(module.run(args) or 0)  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        print(f"vidseg {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one line for expected errors, the traceback for the others
        return report_error(f"vidseg {name}", e, [h for h in log.handlers if h not in before])


if __name__ == "__main__":
    sys.exit(main())
