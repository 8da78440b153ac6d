"""``python -m vidseg <command>`` (also the form used with ``torchrun -m vidseg train ...``)."""

import sys


def _shadowing_folder() -> str | None:
    """The folder that hides the installed package, if any: ``python -m vidseg`` run from the parent of a
    clone named ``vidseg`` imports that clone folder (no ``__init__.py``) as a namespace package, and only
    the submodules come from the installed code."""
    pkg = sys.modules.get("vidseg")
    if pkg is None or getattr(pkg, "__file__", None) is not None:
        return None
    paths = list(getattr(pkg, "__path__", []) or [])
    return paths[0] if paths else "vidseg"


_folder = _shadowing_folder()
if _folder is not None:
    print(
        f"vidseg: the folder {_folder} (a clone of vidseg?) hides the installed vidseg package; run the "
        "command from another folder (e.g. from inside the clone) or use the 'vidseg' command",
        file=sys.stderr,
    )
    sys.exit(1)

from vidseg.cli import main  # noqa: E402 - after the check, which must not import the package

sys.exit(main())
