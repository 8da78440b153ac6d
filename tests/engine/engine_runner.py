"""Runs a toy training on the stand-in data in a subprocess (for the kill/resume and 2-process tests).

Usage: python engine_runner.py OUT [--two-procs] [--slow] [--dump] [--resume] [--overwrite] [KEY VALUE ...]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_standins import DumpHook, SleepHook, StandinData, toy_cfg  # noqa: E402

from vidseg.engine.run import RunOptions, run_train  # noqa: E402

if __name__ == "__main__":
    args = sys.argv[1:]
    flags = {a for a in args if a.startswith("--")}
    rest = [a for a in args if not a.startswith("--")]
    hooks = []
    if "--slow" in flags:
        hooks.append(SleepHook())
    if "--dump" in flags:
        hooks.append(DumpHook(rest[0]))
    opts = RunOptions(
        resume="--resume" in flags,
        overwrite="--overwrite" in flags,
        num_procs=2 if "--two-procs" in flags else 1,
        progress=False,
        extra_hooks=tuple(hooks),
    )
    sys.exit(run_train(toy_cfg(rest[0], *rest[1:]), opts, data=StandinData()))
