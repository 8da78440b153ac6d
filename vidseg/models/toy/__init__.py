"""A seconds-fast VIS model (``ToyVIS``) for tests and the quickstart: learned clip queries over a tiny conv
encoder. ``config`` (``MODEL.TOY.*``), ``model``, ``criterion`` (matcher + losses), ``inference``,
``builder``."""

from __future__ import annotations

from typing import Any

from vidseg.models.toy.config import add_toy_config as add_config

__all__ = ["add_config", "build"]


def build(cfg: Any, metadata: Any = None):
    """The toy model's ``ModelBundle`` (see :func:`vidseg.models.toy.builder.build`)."""
    from vidseg.models.toy.builder import build as _build

    return _build(cfg, metadata)
