"""Reading checkpoint files without running arbitrary code.

``torch.load(weights_only=True)`` covers files that hold only tensors and plain containers. Official
DeVIS checkpoints are legacy pickles (``_use_new_zipfile_serialization=False``) that also contain a yacs
``CfgNode``; official Deformable DETR checkpoints contain an ``argparse.Namespace``. Those are read with a
restricted unpickler that resolves only an allow-list of globals (containers, ``collections.Counter``
(the ``milestones`` of a saved ``MultiStepLR``), tensor/storage rebuild functions, dtypes, numpy scalars and
arrays) and maps config objects to plain stand-ins; any other global (``os.system``, ``builtins.eval``, a
model class, ...) is refused with :class:`UnsafeCheckpointError`. detectron2 ``.pkl`` files (plain pickles
of numpy arrays, not torch files) go through the same unpickler. No import of arbitrary modules takes place.
"""

from __future__ import annotations

import _codecs
import _compat_pickle
import collections
import io
import os
import pickle
import types
import zipfile
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt or has an unexpected structure."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint refers to a global that is not on the allow-list (it could run code when loaded)."""


class ConfigStub(dict):
    """Stand-in for a yacs/detectron2 ``CfgNode``: a dict whose pickled ``__dict__`` state is discarded."""

    def __setstate__(self, state: Any) -> None:
        # CfgNode pickles its flags (__immutable__, __new_allowed__, ...) as instance state; the keys and
        # values were already restored as dict items, so the flags are not needed.
        pass


class NamespaceStub:
    """Stand-in for ``argparse.Namespace`` (Deformable DETR saves its ``args``): keeps the attributes."""

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)


def _latin1_encode(obj: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    # Protocol-2 pickles store ``bytes`` as _codecs.encode(str, "latin1"); allow only that use.
    if encoding not in ("latin1", "latin-1", "iso-8859-1"):
        raise UnsafeCheckpointError(f"refusing _codecs.encode with encoding {encoding!r}")
    return _codecs.encode(obj, encoding, errors)


def _storage_from_bytes(b: bytes) -> Any:
    # A torch tensor put through plain ``pickle.dump`` (Mask2Former's convert-pretrained-swin-model-to-d2.py
    # writes its Swin .pkl files so) stores each storage as the bytes of a small legacy torch file, which
    # ``torch.storage._load_from_bytes`` reads with a full unpickler; read it with ``weights_only`` instead.
    return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)


def _torch_allowed() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        # MultiStepLR.state_dict()["milestones"] (DeVIS main.py saves its lr_scheduler): a dict subclass.
        ("collections", "Counter"): collections.Counter,
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("builtins", "slice"): slice,
        ("_codecs", "encode"): _latin1_encode,
        ("argparse", "Namespace"): NamespaceStub,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    }
    if hasattr(torch._utils, "_rebuild_tensor_v3"):
        allowed[("torch._utils", "_rebuild_tensor_v3")] = torch._utils._rebuild_tensor_v3
    for cfg_module in (
        "yacs.config",
        "vidseg.config.config",
        "detectron2.config.config",
        "fvcore.common.config",
    ):
        allowed[(cfg_module, "CfgNode")] = ConfigStub
    return allowed


def _numpy_allowed() -> dict[tuple[str, str], Any]:
    try:
        import numpy as np
    except ImportError:  # numpy is optional for reading checkpoints
        return {}
    # numpy 2 moved numpy.core to numpy._core; files written by either version name one of them.
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    scalar, reconstruct = multiarray.scalar, multiarray._reconstruct
    allowed: dict[tuple[str, str], Any] = {("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "scalar")] = scalar
        allowed[(mod, "_reconstruct")] = reconstruct
    # numpy >= 1.25 pickles dtypes as numpy.dtypes.Float64DType etc.
    for name in dir(getattr(np, "dtypes", object())):
        if name.endswith("DType"):
            allowed[("numpy.dtypes", name)] = getattr(np.dtypes, name)
    return allowed


CONVERT_HINT = (
    "If you trust this file, convert it once in Python: ckpt = torch.load(IN, weights_only=False); "
    "torch.save({'model': ckpt['model']}, OUT) (for a bare state dict: torch.save(ckpt, OUT)), then use OUT."
)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only returns allow-listed globals."""

    _allowed: dict[tuple[str, str], Any] | None = None

    @classmethod
    def allowed(cls) -> dict[tuple[str, str], Any]:
        if cls._allowed is None:
            cls._allowed = {**_torch_allowed(), **_numpy_allowed()}
        return cls._allowed

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 files (torch's default) use Python 2 names such as ``__builtin__.set``; translate them as
        # pickle's own find_class would, before the allow-list lookup.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        found = self.allowed().get((module, name))
        if found is not None:
            return found
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise UnsafeCheckpointError(
            f"global '{module}.{name}' is not on the checkpoint allow-list; refusing to load it "
            "(it could execute code). Only tensors, plain containers, numpy values and configs are read. "
            f"{CONVERT_HINT}"
        )


def _restricted_load(file, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


# torch.load(pickle_module=...) needs a module-like object with ``Unpickler``, ``load`` and ``__name__``.
restricted_pickle = types.ModuleType("vidseg_restricted_pickle")
restricted_pickle.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
restricted_pickle.load = _restricted_load  # type: ignore[attr-defined]
restricted_pickle.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]


def to_plain(obj: Any) -> Any:
    """Recursively turn config stand-ins into plain dicts (so the result is ``weights_only``-loadable)."""
    if isinstance(obj, NamespaceStub):
        return {k: to_plain(v) for k, v in vars(obj).items()}
    # OrderedDict (state dicts) and Counter (MultiStepLR milestones: missing keys read as 0) keep their type.
    if isinstance(obj, dict) and type(obj) not in (collections.OrderedDict, collections.Counter):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, tuple) and type(obj) is tuple:
        return tuple(to_plain(v) for v in obj)
    return obj


# torch's legacy (non-zip) files start with this pickled magic number; a pickle that does not is a plain one.
_TORCH_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)


def _is_plain_pickle(path: str) -> bool:
    """A pickle that is not a torch file (detectron2 ``.pkl``: ``pickle.dump`` of numpy arrays)."""
    if zipfile.is_zipfile(path):
        return False
    with open(path, "rb") as f:
        head = f.read(len(_TORCH_LEGACY_MAGIC))
    return head[:1] == b"\x80" and head != _TORCH_LEGACY_MAGIC


def _load_plain_pickle(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            # detectron2 reads its .pkl files with encoding="latin1" (Python 2 pickles of numpy arrays).
            return RestrictedUnpickler(f, encoding="latin1").load()
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001  (truncated or garbled pickle)
        raise CheckpointError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e


def _known_damage(path: str) -> str | None:
    """What is wrong with a file torch could not load, in a few words, when its first bytes tell (torch's own
    message is a paragraph); None when they look like a torch file or a pickle."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        return "a truncated or damaged torch zip file: download or copy it again"
    if head[:1] not in (b"P", b"\x80"):
        return "neither a torch file, a pickle nor a .safetensors file"
    return None


def safe_read(path: str | os.PathLike) -> Any:
    """Load a checkpoint on CPU without running arbitrary code.

    A ``.safetensors`` file (recognised by its header) is read with safetensors:
    ``{"model": tensors, **metadata}``. Otherwise first ``torch.load(weights_only=True)``; if the file holds
    other objects (a yacs ``CfgNode``, an ``argparse.Namespace``) it is re-read with
    :class:`RestrictedUnpickler`. A plain pickle that is not a torch file (a detectron2 ``.pkl`` of numpy
    arrays) is read with :class:`RestrictedUnpickler` directly. Config objects come back as plain dicts.
    Raises ``FileNotFoundError`` for a missing file, :class:`UnsafeCheckpointError` for a global outside the
    allow-list (the message names the global and says how to convert a file you trust) and
    :class:`CheckpointError` for a file that cannot be read; all messages name the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    from vidseg.checkpoints.safetensors_file import is_safetensors, read_safetensors

    if is_safetensors(path):  # by content, whatever the file is called
        return read_safetensors(path)
    if _is_plain_pickle(path):
        return to_plain(_load_plain_pickle(path))
    try:
        # An open file, not the path: torch 2.13 reads a path ending in .safetensors as safetensors.
        with open(path, "rb") as fh:
            return torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as first:
        weights_only_error = first
    except Exception as e:  # noqa: BLE001  (torch raises RuntimeError/EOFError/... for corrupt files)
        why = _known_damage(path) or f"{type(e).__name__}: {str(e).split('. ')[0]}"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({why})") from e
    try:
        with open(path, "rb") as fh:
            obj = torch.load(fh, map_location="cpu", weights_only=False, pickle_module=restricted_pickle)
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001
        if _known_damage(path):
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_known_damage(path)})") from e
        raise CheckpointError(
            f"{path}: could not be read safely ({type(e).__name__}: {e}); "
            f"weights_only load said: {str(weights_only_error).splitlines()[0]}"
        ) from e
    return to_plain(obj)
