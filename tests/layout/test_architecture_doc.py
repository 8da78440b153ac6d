"""docs/architecture.md is true: every path it names exists, and every package of vidseg and of vidseg/models
appears in it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text()


def _exists(rel: str) -> bool:
    p = ROOT / rel
    return p.exists() or p.with_suffix(".py").exists()


def test_every_named_path_exists():
    named = set(re.findall(r"`(vidseg/[\w/.]+)`", DOC)) | set(re.findall(r"(vidseg/[\w/]+\.py)", DOC))
    assert named
    missing = sorted(n for n in named if not _exists(n.rstrip("/")))
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def test_the_models_tree_matches_the_folder():
    block = DOC[DOC.index("models/\n") : DOC.index("```", DOC.index("models/\n"))]
    entries = re.findall(r"^\s{2,}([\w]+(?:/|\.py))", block, re.M)
    per_package = re.findall(r"^\s{2}(\w+)/.*?(?=^\s{2}\w+/|\Z)", block, re.M | re.S)
    assert {"devis", "mask2former", "set_prediction"} <= set(per_package)
    models = ROOT / "vidseg" / "models"
    listed_dirs = {e.rstrip("/") for e in entries if e.endswith("/")}
    assert listed_dirs == {p.name for p in models.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    listed = set(re.findall(r"(\w+\.py)", block))
    for name in listed:
        assert list(models.rglob(name)), f"docs/architecture.md lists {name}, which is not in vidseg/models"
    for pkg in ("set_prediction", "devis", "mask2former"):
        files = {p.name for p in (models / pkg).glob("*.py")} - {"__init__.py"}
        assert files <= listed, f"vidseg/models/{pkg}: {sorted(files - listed)} not in docs/architecture.md"


def test_every_top_level_package_is_described():
    packages = {p.name for p in (ROOT / "vidseg").iterdir() if (p / "__init__.py").exists()}
    described = set(re.findall(r"`vidseg/(\w+)`", DOC))
    assert packages <= described, f"not in docs/architecture.md: {sorted(packages - described)}"


def test_the_modules_a_package_row_names_exist():
    """In the package table, ```name` (what it does)`` names a module of that row's package."""
    missing = []
    for row in re.findall(r"^\| `vidseg/(\w+)`[^|]*\| (.*) \|$", DOC, re.M):
        package, text = row
        for name in re.findall(r"`(\w+)` \(", text):
            if name.islower() and not (ROOT / "vidseg" / package / f"{name}.py").exists():
                missing.append(f"vidseg/{package}/{name}.py")
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"
