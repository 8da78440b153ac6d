"""Shared helpers of the official-parity generators: extract an official repository, shim its imports, save.

Nothing here is imported by vidseg or by the tests. A generator calls ``extract(name)`` to get a throw-away
copy of ``$VIDSEG_OFFICIAL_MIRROR/<name>/repo`` (``git archive HEAD``) outside the repository,
``stub_packages`` so that ``import pkg.sub.module`` loads only that file (not the package ``__init__`` with
its detectron2 / CUDA imports), and ``save_fixture`` to write the official outputs with the commit hash and
the command.
"""

from __future__ import annotations

import atexit
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch
from torch import nn

# A folder of bare git mirrors, one ``<owner>+<name>/repo`` per official repository (no default: it is local).
MIRROR_VAR = "VIDSEG_OFFICIAL_MIRROR"
FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "official_parity"


def extract(name: str) -> tuple[Path, str]:
    """``git archive HEAD`` of the mirror ``name`` (``owner+repo``) into a temp dir; returns (dir, commit)."""
    if not os.environ.get(MIRROR_VAR):
        sys.exit(f"{MIRROR_VAR} is not set: point it at a folder holding {name}/repo (a bare git clone)")
    git_dir = Path(os.environ[MIRROR_VAR]) / name / "repo"
    commit = subprocess.check_output(["git", f"--git-dir={git_dir}", "rev-parse", "HEAD"], text=True).strip()
    tmp = Path(tempfile.mkdtemp(prefix=f"official_{name.split('+')[-1]}_"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    archive = subprocess.Popen(["git", f"--git-dir={git_dir}", "archive", "HEAD"], stdout=subprocess.PIPE)
    subprocess.check_call(["tar", "-x", "-C", str(tmp)], stdin=archive.stdout)
    archive.wait()
    return tmp, commit


def stub_packages(root: Path, *packages: str) -> None:
    """Register ``packages`` (dotted names under ``root``) empty: their ``__init__`` never runs."""
    for dotted in packages:
        mod = types.ModuleType(dotted)
        mod.__path__ = [str(root / dotted.replace(".", "/"))]
        sys.modules[dotted] = mod
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


def _module(name: str, **attrs) -> types.ModuleType:
    mod = sys.modules.get(name) or types.ModuleType(name)
    mod.__path__ = []
    for key, value in attrs.items():
        setattr(mod, key, value)
    sys.modules[name] = mod
    return mod


def configurable(init):
    """detectron2's ``@configurable`` on ``__init__``: ``cls(cfg=..., **extra)`` uses ``from_config``."""

    def wrapped(self, *args, **kwargs):
        cfg = kwargs.pop("cfg", None)
        if cfg is None and args and hasattr(args[0], "MODEL"):
            cfg, args = args[0], args[1:]
        if cfg is None:
            return init(self, *args, **kwargs)
        from_config = type(self).from_config
        params = inspect.signature(from_config).parameters
        supported = {k: v for k, v in kwargs.items() if k in params}
        extra = {k: v for k, v in kwargs.items() if k not in params}
        return init(self, **from_config(cfg, *args, **supported), **extra)

    return wrapped


class _D2Conv2d(nn.Conv2d):
    """detectron2's ``Conv2d``: ``nn.Conv2d`` with optional ``norm`` and ``activation`` after it."""

    def __init__(self, *args, norm=None, activation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm, self.activation = norm, activation

    def forward(self, x):
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return x if self.activation is None else self.activation(x)


def _c2_xavier_fill(module: nn.Module) -> None:
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)


def shim_detectron2() -> None:
    """Minimal ``detectron2`` / ``fvcore`` stand-ins for the few names the official heads import."""
    _module("fvcore")
    _module("fvcore.nn")
    _module("fvcore.nn.weight_init", c2_xavier_fill=_c2_xavier_fill)
    _module("detectron2")
    _module("detectron2.config", configurable=configurable)
    _module("detectron2.layers", Conv2d=_D2Conv2d)


class Cfg(types.SimpleNamespace):
    """A nested attribute config (``cfg.MODEL.VITA.HIDDEN_DIM``) built from a nested dict."""

    def __init__(self, tree: dict) -> None:
        super().__init__(**{k: Cfg(v) if isinstance(v, dict) else v for k, v in tree.items()})


def save_fixture(name: str, data: dict, commit: str, repo: str) -> Path:
    """Save ``data`` (tensors, lists, dicts) with the official commit and the command to ``FIXTURES/name``."""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    data = dict(data)
    data["meta"] = {
        "official_repo": repo,
        "official_commit": commit,
        "command": "PYTHONPATH=. python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "torch": str(torch.__version__),
    }
    path = FIXTURES / name
    torch.save(data, path)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB), official {repo}@{commit[:12]}")
    return path


def official_definition(path: Path, name: str, namespace: dict, within: str | None = None):
    """A function or class of an official file, its source run unchanged in ``namespace`` (its globals).

    For code whose module cannot be imported here (detectron2, cv2, ...): ``within`` names the class whose
    method ``name`` is wanted (returned as a plain function of ``self``).
    """
    import ast  # noqa: PLC0415
    import textwrap  # noqa: PLC0415

    source = path.read_text()
    body = ast.parse(source).body
    if within is not None:
        body = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == within).body
    node = next(n for n in body if isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name == name)
    exec(compile(textwrap.dedent(ast.get_source_segment(source, node)), str(path), "exec"), namespace)
    return namespace[name]


class AssignmentMargins:
    """Wraps ``module.linear_sum_assignment`` while in use: records, for every call, how much worse the
    second-best assignment is than the best (0: an exact tie, which float rounding would decide)."""

    def __init__(self, module: types.ModuleType) -> None:
        self.module, self.margins = module, []

    def __enter__(self) -> AssignmentMargins:
        solve = self.solve = self.module.linear_sum_assignment

        def solve_and_measure(cost):
            rows, cols = solve(cost)
            best, margin = cost[rows, cols].sum(), float("inf")
            for a, b in zip(rows, cols):  # the second best lacks at least one pair of the best
                other = cost.copy()
                other[a, b] = 1e9
                r2, c2 = solve(other)
                margin = min(margin, float(other[r2, c2].sum() - best))
            self.margins.append(margin)
            return rows, cols

        self.module.linear_sum_assignment = solve_and_measure
        return self

    def __exit__(self, *exc) -> None:
        self.module.linear_sum_assignment = self.solve

    @property
    def smallest(self) -> float:
        return min(self.margins, default=float("inf"))
