"""A tiny real dataset and training config for the CLI tests: synthetic YouTube-VIS data (4 + 2 videos of
4 frames, 64x96) and the quickstart's ToyVIS config, written as a YAML file."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidseg.cli import main
from vidseg.commands.quickstart import quickstart_config
from vidseg.data import generate_synthetic_dataset


def make_data(folder: Path) -> dict:
    return generate_synthetic_dataset(
        folder,
        seed=0,
        num_videos_train=4,
        num_videos_val=2,
        num_frames=4,
        height=64,
        width=96,
        progress=False,
    )


def write_config(path: Path, data: dict, out: Path, *opts: str) -> Path:
    """The quickstart's training config (1 epoch, evaluated at its end) on ``data``, as ``path``."""
    args = argparse.Namespace(
        method="ToyVIS",
        size="64x96",
        seed=0,
        clip_frames=2,
        epochs=1,
        opts=["DATALOADER.NUM_WORKERS", "0", *opts],
    )
    path.write_text(quickstart_config(args, data, out).dump(), encoding="utf-8")
    return path


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def error_lines(err: str, command: str) -> list[str]:
    """The lines of stderr that report an error of ``vidseg <command>`` (log lines have a time prefix)."""
    return [ln for ln in err.splitlines() if ln.startswith(f"vidseg {command}: error:")]


def video_width_frames_fps(path: str | Path) -> tuple[int, int, float]:
    """A rendered video's frame width, its decoded frame count and its nominal frame rate."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = sum(1 for _ in c.decode(s))
        return s.codec_context.width, frames, float(s.average_rate)
