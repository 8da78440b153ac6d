"""vidseg.utils.dist: the one home of the rank queries and gathers (engine, models and evaluation use it)."""

import ast
import subprocess
import sys
from pathlib import Path

import torch.distributed as tdist

from vidseg.utils import dist

ROOT = Path(__file__).resolve().parents[2]


def test_without_a_process_group_everything_is_rank_0_of_1():
    assert not dist.is_dist()
    assert (dist.get_rank(), dist.get_world_size(), dist.get_local_rank()) == (0, 1, 0)
    assert dist.is_main_process()
    dist.barrier()  # a no-op, not a hang
    assert dist.all_reduce_mean(3) == 3.0 and isinstance(dist.all_reduce_mean(3), float)
    obj = {"a": [1, 2]}
    assert dist.all_gather_object(obj) == [obj] and dist.gather_to_main(obj) == [obj]


def test_inside_a_one_rank_gloo_group(tmp_path):
    tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        assert dist.is_dist() and dist.get_world_size() == 1 and dist.is_main_process()
        assert dist.all_gather_object(("x", 1)) == [("x", 1)]
        assert dist.gather_to_main([5]) == [[5]]
        assert dist.all_reduce_mean(2.5) == 2.5
        dist.barrier()
    finally:
        tdist.destroy_process_group()
    assert not dist.is_dist()


def test_importing_it_does_not_import_torch():
    code = "import sys, vidseg.utils.dist; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_evaluation_never_imports_the_engine():
    """Evaluation sits below the engine: its gathers come from vidseg.utils.dist."""
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in _imported_modules(p) if m.startswith("vidseg.engine"))
        for p in (ROOT / "vidseg" / "evaluation").glob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
