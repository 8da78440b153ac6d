"""``python -m vidseg <command>`` (also the form used with ``torchrun -m vidseg train ...``)."""

import sys

from vidseg.cli import main

sys.exit(main())
