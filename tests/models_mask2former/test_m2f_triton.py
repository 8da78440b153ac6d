"""The pixel decoder on the Triton MSDA (the Triton interpreter on CPU, as tests/ops does) against PyTorch."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    # Before triton is imported: the kernels are decorated for the interpreter at import.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from test_m2f_decoders import _features, _pixel_decoder  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def decoders():
    pytest.importorskip("triton")
    if DEV == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("triton was imported without TRITON_INTERPRET=1 and there is no GPU")
    ref = _pixel_decoder().to(DEV).eval()
    tri = _pixel_decoder().to(DEV).eval()
    for m in tri.modules():
        if hasattr(m, "impl") and isinstance(m.impl, str):
            m.impl = "triton"
    return ref, tri


def test_pixel_decoder_on_triton_matches_pytorch_in_fp32(decoders):
    ref, tri = decoders
    feats = {k: v.to(DEV) for k, v in _features(b=1, h=32, w=64).items()}
    with torch.no_grad():
        a, b = ref(feats), tri(feats)
    torch.testing.assert_close(b["mask_features"], a["mask_features"], atol=1e-4, rtol=1e-4)


def test_pixel_decoder_in_bf16_on_triton_stays_close_to_fp32(decoders):
    ref, tri = decoders
    tri.force_fp32 = False
    feats = {k: v.to(DEV) for k, v in _features(b=1, h=32, w=64).items()}
    with torch.no_grad(), torch.autocast(DEV, dtype=torch.bfloat16):
        a, b = ref(feats), tri(feats)
    assert a["mask_features"].dtype == torch.float32 and b["mask_features"].dtype == torch.bfloat16
    diff = (b["mask_features"].float() - a["mask_features"]).abs().max().item()
    assert diff < 0.5 * a["mask_features"].abs().max().item()
