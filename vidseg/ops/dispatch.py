"""Choosing the implementation of the deformable ops: ``"auto" | "torch" | "triton"``.

``auto`` picks Triton for CUDA tensors and pure PyTorch elsewhere. An explicit ``triton`` request that cannot
be honoured raises an error that says why; nothing falls back silently. Triton also runs on CPU tensors under
its interpreter (``TRITON_INTERPRET=1``), which is how CI checks the kernels without a GPU.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from functools import lru_cache

import torch

IMPLS = ("auto", "torch", "triton")


@lru_cache(maxsize=1)
def triton_available() -> bool:
    """True when the ``triton`` package can be imported (it may still lack a GPU to run on)."""
    return importlib.util.find_spec("triton") is not None


def triton_interpret() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_impl(impl: str) -> str:
    """Validate an ``impl`` string (case-insensitive) and return it lower-cased."""
    if not isinstance(impl, str) or impl.lower() not in IMPLS:
        raise ValueError(f"deformable op impl must be one of {IMPLS} (MODEL.DEFORM_ATTN_IMPL), got {impl!r}")
    return impl.lower()


_warned_auto = False


_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def resolve_impl(impl: str, device: torch.device, dtype: torch.dtype | None = None) -> str:
    """Map ``impl`` and the device (and dtype) of the inputs to ``"torch"`` or ``"triton"``.

    Raises ``RuntimeError`` for ``triton`` when the package is missing or the tensors are on a device that the
    Triton kernels cannot run on (CPU without ``TRITON_INTERPRET=1``), ``TypeError`` for a dtype they do not
    take (float64: they accumulate in fp32). ``auto`` uses PyTorch for float64 inputs.
    """
    global _warned_auto
    impl = check_impl(impl)
    if impl == "torch":
        return "torch"
    if impl == "triton":
        if not triton_available():
            raise RuntimeError(
                "deformable op impl 'triton' was requested but the 'triton' package is not installed; "
                "install it (pip install 'vidseg[triton]') or set MODEL.DEFORM_ATTN_IMPL torch"
            )
        if device.type != "cuda" and not (device.type == "cpu" and triton_interpret()):
            raise RuntimeError(
                f"deformable op impl 'triton' needs CUDA tensors (got device {device}); on CPU use "
                "MODEL.DEFORM_ATTN_IMPL torch (or auto), or set TRITON_INTERPRET=1 to run the kernels "
                "in the (slow) Triton interpreter"
            )
        if dtype is not None and dtype not in _TRITON_DTYPES:
            raise TypeError(
                f"deformable op impl 'triton' takes float32/float16/bfloat16 inputs, got {dtype}; "
                "use impl 'torch' (MODEL.DEFORM_ATTN_IMPL torch) for float64"
            )
        return "triton"
    # auto
    if dtype is not None and dtype not in _TRITON_DTYPES:
        return "torch"
    if device.type == "cuda":
        if triton_available():
            return "triton"
        if not _warned_auto:
            warnings.warn(
                "MODEL.DEFORM_ATTN_IMPL auto: CUDA tensors but 'triton' is not installed; using the "
                "pure-PyTorch deformable ops (slower, more memory). Install triton or set the key to "
                "'torch' to silence this.",
                stacklevel=3,
            )
            _warned_auto = True
    return "torch"
