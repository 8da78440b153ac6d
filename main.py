"""DeVIS-compatible entry point.

    torchrun --nproc_per_node=4 main.py --config-file configs/devis/YT-19/devis_R_50_YT-19.yaml [K V ...]
    torchrun --nproc_per_node=4 main.py --config-file X.yaml --eval-only MODEL.WEIGHTS model.pth
    python main.py --config-file X.yaml                  # one process (GPU if available, else CPU)

Same engine as ``vidseg train``; ``--world-size`` and ``--dist-url`` are accepted for old scripts and ignored
(torchrun's environment describes the group), ``--device`` maps to ``MODEL.DEVICE``.
"""

import argparse
import sys

from vidseg.engine.entry import LAUNCH_EPILOG, add_launch_arguments, run_from_args
from vidseg.utils.threads import prepare_env


def main(argv=None) -> int:
    prepare_env()  # before torch is imported: OpenMP reads OMP_WAIT_POLICY once (vidseg.utils.threads)
    p = argparse.ArgumentParser(
        description=__doc__, epilog=LAUNCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--world-size", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--dist-url", default="env://", help=argparse.SUPPRESS)
    p.add_argument("--device", default="", help="MODEL.DEVICE (cuda, cpu, cuda:1)")
    add_launch_arguments(p)
    args = p.parse_intermixed_args(argv)
    extra = ["MODEL.DEVICE", args.device] if args.device else []
    return run_from_args(args, extra_opts=extra)


if __name__ == "__main__":
    from vidseg.utils.errors import run_guarded

    sys.exit(run_guarded(main, sys.argv[0]))
