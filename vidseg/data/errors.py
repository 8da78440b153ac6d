"""The one error type of the data pipeline: bad input named by file, video and field."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset problem (malformed JSON, missing frame, wrong lengths, unknown category, unreadable video).

    The message names the file, the video and the field, so the user can fix the input without a stack trace.
    """


def where(file: object, video: object = None, field: str | None = None) -> str:
    """``"FILE: video V: field F"`` prefix for :class:`DatasetError` messages (parts left out when None)."""
    parts = [str(file)]
    if video is not None:
        parts.append(f"video {video}")
    if field is not None:
        parts.append(f"field {field!r}")
    return ": ".join(parts)
