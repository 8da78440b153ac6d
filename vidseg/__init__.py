"""vidseg: video instance segmentation in pure PyTorch (DeVIS, GRAtt-VIS)."""

__version__ = "0.1.0"
