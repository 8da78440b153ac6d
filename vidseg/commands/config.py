"""``vidseg config``: print the resolved config."""

from __future__ import annotations

import argparse

from vidseg.models import load_config

DESCRIPTION = "Print a config with its _BASE_ chain and KEY VALUE overrides resolved."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config-file", default="", metavar="PATH", help="YAML config (may use _BASE_)")
    p.add_argument(
        "opts", nargs="*", metavar="KEY VALUE", help="KEY VALUE overrides, e.g. SOLVER.BASE_LR 0.0002"
    )


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config_file or None, args.opts)
    print(cfg.dump(), end="")
    return 0
