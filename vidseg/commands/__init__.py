"""One module per ``vidseg`` command: ``add_arguments(parser)`` and ``run(args) -> int``."""
