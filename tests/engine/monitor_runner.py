"""A toy training on the stand-in data that stops at chosen iterations until the test lets it go on.

Usage: python monitor_runner.py OUT GATES [--resume] [KEY VALUE ...]
GATES: comma-separated iterations ("4,8"), or "-" for none. After iteration i (its metrics are written), the
run writes OUT/../gate_at_i and waits for OUT/../gate_go_i, so a test can kill or restart things at a known
point of the run without sleeping for a guessed time.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_standins import StandinData, toy_cfg  # noqa: E402

from vidseg.engine.run import RunOptions, run_train  # noqa: E402
from vidseg.engine.trainer import HookBase  # noqa: E402


class GateHook(HookBase):
    def __init__(self, folder: Path, gates: set[int]) -> None:
        self.folder, self.gates = folder, gates

    def after_step(self) -> None:
        i = self.trainer.iter
        if i in self.gates:
            (self.folder / f"gate_at_{i}").touch()
            while not (self.folder / f"gate_go_{i}").exists():
                time.sleep(0.05)


if __name__ == "__main__":
    out, gates, *rest = sys.argv[1:]
    resume = "--resume" in rest
    rest = [a for a in rest if a != "--resume"]
    its = set() if gates == "-" else {int(x) for x in gates.split(",")}
    hook = GateHook(Path(out).resolve().parent, its)
    opts = RunOptions(resume=resume, progress=False, extra_hooks=(hook,))
    sys.exit(run_train(toy_cfg(out, *rest), opts, data=StandinData()))
