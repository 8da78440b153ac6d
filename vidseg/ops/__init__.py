"""Deformable ops: multi-scale deformable attention (spatial and DeVIS-temporal) and modulated deformable
conv.

Two implementations behind one API, chosen by ``impl`` (config key ``MODEL.DEFORM_ATTN_IMPL``):
``"torch"`` (pure PyTorch, the reference and the CPU path), ``"triton"`` (fused kernels, CUDA) and ``"auto"``
(Triton on CUDA, PyTorch elsewhere). See docs/ops.md.
"""

from vidseg.ops.deform_conv import ModulatedDeformConv2d, deform_conv2d
from vidseg.ops.dispatch import IMPLS, check_impl, resolve_impl, triton_available
from vidseg.ops.msda import ms_deform_attn, multi_frame_ms_deform_attn
from vidseg.ops.msda_init import expand_spatial_to_temporal, init_temporal_from_spatial
from vidseg.ops.msda_modules import MSDeformAttn, TemporalMSDeformAttnDecoder, TemporalMSDeformAttnEncoder
from vidseg.ops.msda_temporal import temporal_frame_table, temporal_ms_deform_attn

__all__ = [
    "IMPLS",
    "MSDeformAttn",
    "ModulatedDeformConv2d",
    "TemporalMSDeformAttnDecoder",
    "TemporalMSDeformAttnEncoder",
    "check_impl",
    "deform_conv2d",
    "expand_spatial_to_temporal",
    "init_temporal_from_spatial",
    "ms_deform_attn",
    "multi_frame_ms_deform_attn",
    "resolve_impl",
    "temporal_frame_table",
    "temporal_ms_deform_attn",
    "triton_available",
]
