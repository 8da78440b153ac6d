"""Fixtures for checkpoint tests: official key lists parsed from the spec and module trees built from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

SPEC = Path(__file__).resolve().parents[1] / "spec_keys"
BUFFER_SUFFIXES = ("running_mean", "running_var", "relative_position_index")
FROZEN_BN_PARENTS = ("bn", "downsample.1")


def parse_key_list(path: Path) -> dict[str, tuple[int, ...]]:
    """``name (d0, d1, ...)`` per line -> ``{name: shape}``."""
    shapes = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        name, shape = line.split(" ", 1)
        shapes[name] = tuple(int(s) for s in shape.strip(" ()").split(",") if s.strip())
    return shapes


def _is_buffer(name: str) -> bool:
    # FrozenBatchNorm2d keeps all four tensors as buffers.
    parent = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
    return name.endswith(BUFFER_SUFFIXES) or parent.startswith("bn") or ".downsample.1." in name


def module_tree(
    shapes: dict[str, tuple[int, ...]], tie: dict[str, str] | None = None, is_buffer=None
) -> nn.Module:
    """A plain ``nn.Module`` tree whose ``state_dict`` has exactly these names and shapes.

    ``tie`` maps an alias prefix to a source prefix whose module is reused (as the official models share the
    box heads between ``def_detr.bbox_embed`` and ``def_detr.transformer.decoder.bbox_embed``).
    ``is_buffer(name)`` says which tensors are buffers (default: BN statistics and frozen-BN tensors).
    """
    is_buffer = is_buffer or _is_buffer
    root = nn.Module()
    tie = tie or {}
    for name, shape in shapes.items():
        if any(name.startswith(alias + ".") for alias in tie):
            continue
        *path, leaf = name.split(".")
        mod = root
        for part in path:
            if not hasattr(mod, part):
                mod.add_module(part, nn.Module())
            mod = getattr(mod, part)
        t = torch.zeros(shape)
        if is_buffer(name):
            mod.register_buffer(leaf, t.long() if name.endswith("relative_position_index") else t)
        else:
            mod.register_parameter(leaf, nn.Parameter(t))
    for alias, source in tie.items():
        src = root.get_submodule(source)
        *path, leaf = alias.split(".")
        root.get_submodule(".".join(path)).add_module(leaf, src)
    return root


def random_state_dict(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, s in shapes.items():
        sd[k] = (
            torch.randint(0, 100, s, generator=g)
            if k.endswith("relative_position_index")
            else torch.rand(s, generator=g)
        )
    return sd


@pytest.fixture(scope="session")
def coco_shapes() -> dict[str, tuple[int, ...]]:
    return parse_key_list(SPEC / "devis-state-dict-keys-maskhead-R50-COCO.txt")


@pytest.fixture(scope="session")
def yt19_shapes() -> dict[str, tuple[int, ...]]:
    return parse_key_list(SPEC / "devis-state-dict-keys-R50-YT19.txt")


@pytest.fixture(scope="session")
def grattvis_shapes() -> dict[str, tuple[int, ...]]:
    return parse_key_list(SPEC / "grattvis-state-dict-keys-R50-OVIS.txt")


@pytest.fixture(scope="session")
def coco_shapes_tiny(coco_shapes) -> dict[str, tuple[int, ...]]:
    """The official names with every dimension capped at 3: name logic without 42 M random numbers."""
    return {k: tuple(min(d, 3) for d in s) for k, s in coco_shapes.items()}


TIE = {"def_detr.transformer.decoder.bbox_embed": "def_detr.bbox_embed"}
