"""The ``vidseg`` command line: ``vidseg <command> [options]``.

Each command lives in ``vidseg/commands/<name>.py`` with ``add_arguments(parser)`` and ``run(args) -> int``;
it is imported only when used, so ``vidseg --help`` stays fast and a missing optional dependency of one
command never breaks another.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help). Explicit: a command is added here when it lands.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("vidseg.commands.synth", "write a synthetic dataset in the exact YouTube-VIS layout"),
    "visualize": (
        "vidseg.commands.visualize",
        "render ground truth or a results JSON over the frames (mp4/gif)",
    ),
    "evaluate": (
        "vidseg.commands.evaluate",
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
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidseg",
        description="Video instance segmentation in pure PyTorch: DeVIS and GRAtt-VIS.",
        epilog="Run 'vidseg <command> --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"vidseg {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Arguments are added lazily in main() for the chosen command only.
    return parser


def _version() -> str:
    from vidseg import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Before any command imports torch: OpenMP reads its wait policy once, at import (see docs/training.md).
    from vidseg.utils.threads import prepare_env

    prepare_env()
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help", "--version") or argv[0] not in COMMANDS:
        args = parser.parse_args(argv)  # prints help / version / "invalid choice" and exits
        parser.print_help()
        return 2
    name = argv[0]
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(
        prog=f"vidseg {name}",
        description=getattr(module, "DESCRIPTION", help_text),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=getattr(module, "EPILOG", None),
    )
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
