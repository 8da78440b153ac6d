"""The Triton MSDA kernels as ``torch.library`` custom ops (``vidseg::msda_forward`` /
``vidseg::msda_backward``) with fake implementations, so ``torch.compile`` traces through them without graph
breaks, and with autograd registered on the forward op.

Importing this module imports ``triton``; :mod:`vidseg.ops.msda` imports it only when the Triton path is
chosen.
"""

import torch
import triton
from torch import Tensor

from vidseg.ops.msda_triton_kernels import msda_bwd_kernel, msda_fwd_kernel, msda_grad_value_gather_kernel


def _blocks(Q: int, D: int) -> tuple[int, int]:
    """(BLOCK_Q, BLOCK_D): all channels in one program; about 2k fp32 accumulators per program."""
    block_d = triton.next_power_of_2(D)
    block_q = max(1, min(64, 2048 // block_d, triton.next_power_of_2(Q)))
    return block_q, block_d


def _frames_arg(frame_index: Tensor | None, device: torch.device) -> tuple[Tensor, bool]:
    if frame_index is None:
        return torch.zeros(1, dtype=torch.int32, device=device), False
    return frame_index.to(torch.int32).contiguous(), True


@torch.library.custom_op("vidseg::msda_forward", mutates_args=())
def msda_forward(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    frame_index: Tensor | None,
    deterministic: bool,
) -> Tensor:
    """value ``[B, F, S, M, D]``, locations ``[B, Q, M, L, P, 2]``, weights ``[B, Q, M, L, P]``, frame_index
    ``[Q, P]`` or None -> ``[B, Q, M * D]`` (dtype of value). ``deterministic`` only affects the backward."""
    B, nF, S, M, D = value.shape
    _, Q, _, L, P, _ = sampling_locations.shape
    value = value.contiguous()
    out = torch.empty(B, Q, M, D, dtype=value.dtype, device=value.device)
    fidx, has_frames = _frames_arg(frame_index, value.device)
    block_q, block_d = _blocks(Q, D)
    grid = (triton.cdiv(Q, block_q), B * M)
    msda_fwd_kernel[grid](
        value,
        spatial_shapes.to(torch.int32).contiguous(),
        level_start_index.to(torch.int32).contiguous(),
        sampling_locations.contiguous(),
        attention_weights.contiguous(),
        fidx,
        out,
        Q,
        nF,
        S,
        M,
        D,
        L,
        P,
        HAS_FRAMES=has_frames,
        BLOCK_Q=block_q,
        BLOCK_D=block_d,
    )
    return out.view(B, Q, M * D)


@msda_forward.register_fake
def _(
    value,
    spatial_shapes,
    level_start_index,
    sampling_locations,
    attention_weights,
    frame_index,
    deterministic,
):
    B, _, _, M, D = value.shape
    return value.new_empty(B, sampling_locations.shape[1], M * D)


@torch.library.custom_op("vidseg::msda_backward", mutates_args=())
def msda_backward(
    grad_output: Tensor,
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    frame_index: Tensor | None,
    deterministic: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`msda_forward` w.r.t. value, sampling_locations and attention_weights."""
    B, nF, S, M, D = value.shape
    _, Q, _, L, P, _ = sampling_locations.shape
    value = value.contiguous()
    loc = sampling_locations.contiguous()
    attn = attention_weights.contiguous()
    grad_output = grad_output.contiguous()
    shapes32 = spatial_shapes.to(torch.int32).contiguous()
    starts32 = level_start_index.to(torch.int32).contiguous()
    fidx, has_frames = _frames_arg(frame_index, value.device)
    grad_value = torch.zeros(B * nF * S * M, D, dtype=torch.float32, device=value.device)
    grad_loc = torch.empty_like(loc)
    grad_attn = torch.empty_like(attn)
    block_q, block_d = _blocks(Q, D)
    grid = (triton.cdiv(Q, block_q), B * M)
    msda_bwd_kernel[grid](
        grad_output,
        value,
        shapes32,
        starts32,
        loc,
        attn,
        fidx,
        grad_value,
        grad_loc,
        grad_attn,
        Q,
        nF,
        S,
        M,
        D,
        L,
        P,
        HAS_FRAMES=has_frames,
        ATOMIC_VALUE=not deterministic,
        BLOCK_Q=block_q,
        BLOCK_D=block_d,
    )
    if deterministic:
        _grad_value_sorted(
            grad_output, value.shape, spatial_shapes, level_start_index, loc, attn, frame_index, grad_value
        )
    return grad_value.view(value.shape).to(value.dtype), grad_loc, grad_attn


@msda_backward.register_fake
def _(
    grad_output,
    value,
    spatial_shapes,
    level_start_index,
    sampling_locations,
    attention_weights,
    frame_index,
    det,
):
    return torch.empty_like(value), torch.empty_like(sampling_locations), torch.empty_like(attention_weights)


def _grad_value_sorted(
    grad_output: Tensor,
    value_shape: torch.Size,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    loc: Tensor,
    attn: Tensor,
    frame_index: Tensor | None,
    grad_value: Tensor,
) -> None:
    """Deterministic value gradient without float atomics: list every (value row, coefficient, grad row) of
    the 4 bilinear taps of every sample, stable-sort by value row, and let one program per row sum its segment
    in that fixed order. Uses O(samples) extra memory; it is the opt-in mode."""
    B, nF, S, M, D = value_shape
    _, Q, _, L, P, _ = loc.shape
    dev = loc.device
    n_rows = B * nF * S * M
    Hs = spatial_shapes[:, 0].to(torch.float32).view(L, 1)
    Ws = spatial_shapes[:, 1].to(torch.float32).view(L, 1)
    Wi = spatial_shapes[:, 1].view(L, 1)
    Hi = spatial_shapes[:, 0].view(L, 1)
    s0 = level_start_index.view(L, 1)
    px = loc[..., 0].float() * Ws - 0.5  # [B, Q, M, L, P]
    py = loc[..., 1].float() * Hs - 0.5
    x0, y0 = px.floor(), py.floor()
    lx, ly = px - x0, py - y0
    x0, y0 = x0.long(), y0.long()
    a = attn.float()
    f = 0 if frame_index is None else frame_index.long()[None, :, None, None, :]
    b = torch.arange(B, device=dev).view(B, 1, 1, 1, 1)
    m = torch.arange(M, device=dev).view(1, 1, M, 1, 1)
    rows, coefs = [], []
    for dy, dx, w in (
        (0, 0, (1 - ly) * (1 - lx)),
        (0, 1, (1 - ly) * lx),
        (1, 0, ly * (1 - lx)),
        (1, 1, ly * lx),
    ):
        yy, xx = y0 + dy, x0 + dx
        valid = (yy >= 0) & (yy < Hi) & (xx >= 0) & (xx < Wi)
        row = (((b * nF + f) * S + s0 + yy * Wi + xx) * M + m).expand_as(valid)
        rows.append(torch.where(valid, row, n_rows))
        coefs.append(a * w)
    key = torch.stack(rows, -1).flatten()
    coef = torch.stack(coefs, -1).flatten()
    sorted_key, perm = torch.sort(key, stable=True)
    seg = torch.searchsorted(sorted_key, torch.arange(n_rows + 1, device=dev))
    grow = perm // (4 * L * P)  # row (b*Q + q)*M + m of grad_output viewed [B*Q*M, D]
    msda_grad_value_gather_kernel[(n_rows,)](
        seg, coef[perm].contiguous(), grow, grad_output, grad_value, D, BLOCK_D=triton.next_power_of_2(D)
    )


def _setup_context(ctx, inputs, output) -> None:
    value, spatial_shapes, level_start_index, loc, attn, frame_index, deterministic = inputs
    ctx.save_for_backward(value, spatial_shapes, level_start_index, loc, attn, frame_index)
    ctx.deterministic = deterministic


def _backward(ctx, grad_output):
    value, spatial_shapes, level_start_index, loc, attn, frame_index = ctx.saved_tensors
    grad_value, grad_loc, grad_attn = msda_backward(
        grad_output, value, spatial_shapes, level_start_index, loc, attn, frame_index, ctx.deterministic
    )
    return grad_value, None, None, grad_loc, grad_attn, None, None


msda_forward.register_autograd(_backward, setup_context=_setup_context)
