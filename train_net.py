"""GRAtt-VIS / detectron2-compatible entry point.

    python train_net.py --num-gpus 4 --config-file configs/grattvis/ovis/grattvis_R50_bs8.yaml [K V ...]
    python train_net.py --num-gpus 4 --config-file X.yaml --eval-only MODEL.WEIGHTS model.pth
    python train_net.py --num-gpus 8 --num-machines 2 --machine-rank R --dist-url tcp://HOST:PORT ...

Same engine as ``vidseg train``. Several machines: every machine runs the command with its
``--machine-rank``; ``--dist-url`` names machine 0 (or use torchrun, see docs/training.md).
"""

import argparse
import os
import sys
from urllib.parse import urlparse

from vidseg.engine.entry import LAUNCH_EPILOG, add_launch_arguments, run_from_args
from vidseg.utils.threads import prepare_env


def main(argv=None) -> int:
    prepare_env()  # before torch is imported: OpenMP reads OMP_WAIT_POLICY once (vidseg.utils.threads)
    p = argparse.ArgumentParser(
        description=__doc__, epilog=LAUNCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if p.prog.startswith("train_net"):  # train_net_genvis.py --help: its examples under its own name
        p.description = __doc__.replace("train_net.py", p.prog)
    p.add_argument("--num-machines", type=int, default=1, help="machines taking part (multi-node)")
    p.add_argument("--machine-rank", type=int, default=0, help="this machine's rank (0..num-machines-1)")
    p.add_argument("--dist-url", default="auto", help="tcp://HOST:PORT of machine 0 (multi-node)")
    add_launch_arguments(p)
    args = p.parse_intermixed_args(argv)
    if args.num_machines > 1:
        url = urlparse(args.dist_url)
        if url.scheme != "tcp" or not url.hostname or not url.port:
            p.error("--num-machines > 1 needs --dist-url tcp://HOST:PORT (the address of machine 0)")
        # Read by vidseg.engine.launch: node layout for the spawned local processes.
        os.environ.update(
            {
                "VIDSEG_NUM_MACHINES": str(args.num_machines),
                "VIDSEG_MACHINE_RANK": str(args.machine_rank),
                "MASTER_ADDR": url.hostname,
                "MASTER_PORT": str(url.port),
            }
        )
    return run_from_args(args)


if __name__ == "__main__":
    from vidseg.utils.errors import run_guarded

    sys.exit(run_guarded(main, sys.argv[0]))
