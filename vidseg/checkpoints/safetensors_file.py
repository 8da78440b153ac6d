"""vidseg weights as ``.safetensors``: tensors plus string metadata, a format that cannot run code when read.

A safetensors file is an 8-byte little-endian header length, a JSON header (tensor names, dtypes, shapes,
offsets and a ``__metadata__`` object of strings), then the raw tensor bytes. vidseg stores every top-level
entry of a vidseg checkpoint other than ``model`` (``config``, ``converted_from``, ``source_file``,
``source_config``, ``class_neuron_shifted``, ``notes``) as a JSON string under its own metadata key, plus
``"format": "pt"`` (the model hubs' convention for PyTorch tensors). Reading gives back the same dict that
``torch.load`` gives for the torch-file form, so format detection and loading do not care which form it was.

Training checkpoints (optimizer, scheduler, RNG state) stay torch files: they hold more than tensors.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from typing import Any

import torch

from vidseg.checkpoints.safe_load import CheckpointError

SUFFIX = ".safetensors"
# Metadata keys that are part of the safetensors convention, not a vidseg entry.
_HUB_KEYS = ("format",)
# A header longer than this is not a weights file (real headers are well under 10 MB even for 1e4 tensors).
_MAX_HEADER = 100 * 1024 * 1024


def is_safetensors(path: str | os.PathLike) -> bool:
    """Whether the file starts like a safetensors file: a plausible header length, then a JSON object."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 0 < n <= min(_MAX_HEADER, size - 8)


def _json_default(obj: Any) -> Any:
    # Values a converted config may hold that JSON has no type for.
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):  # numpy arrays
        return obj.tolist()
    return str(obj)


def encode_metadata(entries: Mapping[str, Any]) -> dict[str, str]:
    """``{key: JSON string}`` for the safetensors header (plus ``"format": "pt"``)."""
    meta = {"format": "pt"}
    for k, v in entries.items():
        if k in _HUB_KEYS or k == "model":
            raise ValueError(f"metadata key {k!r} is reserved in a vidseg safetensors file")
        meta[k] = json.dumps(v, default=_json_default)
    return meta


def decode_metadata(meta: Mapping[str, str] | None) -> dict[str, Any]:
    """The vidseg entries of a header, JSON values parsed (another tool's non-JSON string stays a string)."""
    out: dict[str, Any] = {}
    for k, v in (meta or {}).items():
        if k in _HUB_KEYS:
            continue
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


def safetensors_bytes(
    state_dict: Mapping[str, torch.Tensor], entries: Mapping[str, Any], path: str | os.PathLike = "<weights>"
) -> bytes:
    """The bytes of a safetensors file holding ``state_dict``, with ``entries`` as metadata.

    ``path`` only names the file in errors.

    Tensors are cloned to CPU and made contiguous: safetensors stores each tensor's own bytes and refuses
    tensors that share memory (the official box heads appear under two names, as one tensor).
    """
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    try:
        return save(tensors, metadata=encode_metadata(entries))
    except Exception as e:  # noqa: BLE001  (safetensors raises its own error types for unsupported tensors)
        raise CheckpointError(f"{os.fspath(path)}: cannot be written as safetensors ({e})") from e


def read_safetensors(path: str | os.PathLike) -> dict[str, Any]:
    """``{"model": state_dict, **metadata}`` of a safetensors file (tensors on CPU)."""
    from safetensors import safe_open

    path = os.fspath(path)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = f.metadata()
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open has no __iter__)
    except Exception as e:  # noqa: BLE001  (safetensors raises SafetensorError for a corrupt file)
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from e
    return {"model": sd, **decode_metadata(meta)}
