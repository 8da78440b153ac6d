"""Rendering of ground truth and predictions over video frames (mp4 / gif)."""

from vidseg.visualization.render import (
    Overlay,
    draw_overlays,
    overlays_from_record,
    overlays_from_result,
    render_result_to_file,
    render_video,
    track_colour,
)

__all__ = [
    "Overlay",
    "draw_overlays",
    "overlays_from_record",
    "overlays_from_result",
    "render_result_to_file",
    "render_video",
    "track_colour",
]
