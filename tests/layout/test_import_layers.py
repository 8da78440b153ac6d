"""Nothing imports upward: each package of vidseg may import only the packages below it.

The order, bottom to top: utils, config, structures, ops, layers, backbones, data, models, evaluation,
checkpoints, visualization, inference, engine, commands, cli. Imports inside functions count too (a lazy
import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "vidseg"

# package -> the vidseg packages it must not import
FORBIDDEN: dict[str, set[str]] = {
    "utils": {"config", "structures", "ops", "layers", "backbones", "data", "models", "evaluation", "engine",
              "checkpoints", "inference", "commands", "visualization", "cli"},
    "config": {"structures", "ops", "layers", "backbones", "data", "models", "evaluation", "engine",
               "checkpoints", "inference", "commands", "visualization", "cli"},
    "structures": {"ops", "layers", "backbones", "data", "models", "evaluation", "engine", "checkpoints",
                   "inference", "commands", "visualization", "cli"},
    "ops": {"data", "models", "evaluation", "engine", "checkpoints", "inference", "commands", "cli"},
    "layers": {"data", "models", "evaluation", "engine", "checkpoints", "inference", "commands", "cli"},
    "backbones": {"data", "models", "evaluation", "engine", "inference", "commands", "cli"},
    "data": {"models", "evaluation", "engine", "checkpoints", "inference", "commands", "cli"},
    "models": {"engine", "inference", "commands", "cli"},
    "evaluation": {"engine", "inference", "commands", "cli"},
    "checkpoints": {"engine", "inference", "commands", "cli"},
    "visualization": {"models", "engine", "inference", "commands", "cli"},
    "inference": {"engine", "commands", "cli"},
    "engine": {"commands", "cli"},
}  # fmt: skip


def _vidseg_imports(path: Path) -> set[str]:
    """The top-level vidseg packages a module imports (``vidseg.models.x`` -> ``models``)."""
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + (
                [f"{node.module}.{a.name}" for a in node.names] if node.module == "vidseg" else []
            )
        for name in names:
            parts = name.split(".")
            if parts[0] == "vidseg" and len(parts) > 1:
                out.add(parts[1])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_nothing_above_it(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for imported in sorted(_vidseg_imports(path) & FORBIDDEN[package]):
            bad.append(f"{path.relative_to(ROOT.parent)} imports vidseg.{imported}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from vidseg.engine import dist\n    import vidseg.models.toy\n")
    assert _vidseg_imports(f) == {"engine", "models"}
