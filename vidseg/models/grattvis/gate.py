"""The GRAtt block's parts (grattvis.md §3.4): Gumbel-sigmoid gate, gated residual, attention bias.

The gate logits come from the head's ``prop_instance`` (``Linear(C, 1)``) on the shared ``decoder_norm`` of
the cross-attention output; the head calls these functions in this order after every cross-attention:

1. ``gumbel_sigmoid_gate(logits [cQ, L*B])`` -> the hard and soft gates of every copy;
2. ``share_last_copy(hard.t(), copies=L)``: the gate of the last detector-layer copy (l = L-1) for all copies;
3. ``gated_residual(gate, q_ca, q_in)``: ``g * q_CA + (1 - g) * q_in``;
4. ``gate_attention_bias(gate_of_last_copy [B, cQ], num_heads, copies=L)``: the self-attention ``attn_mask``.

Batch items are ordered ``n = l * B + b`` (the L detector-layer copies of B videos), as everywhere in the
head.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_TEMPERATURE",
    "gumbel_sigmoid_gate",
    "share_last_copy",
    "gated_residual",
    "gate_attention_bias",
]

DEFAULT_TEMPERATURE = 0.66667  # GumbelSoftmax(eps=0.66667) in the official grattvis.py
_NOISE_EPS = 1e-8


def gumbel_sigmoid_gate(
    logits: Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """The binary Gumbel-sigmoid gate with a straight-through hard value.

    Training: ``u ~ U(0, 1)`` drawn in the layout of ``logits`` (so that one generator state gives the
    official draw), logistic noise ``n = log(u + 1e-8) - log(1 - u + 1e-8)``, soft sample
    ``s = sigmoid((logits + n) / temperature)``, hard value ``1[s >= 0.5]`` whose gradient is that of ``s``.
    Eval: ``1[logits >= 0]``, no noise, and the soft value is the hard one.

    The official code writes the straight-through value as ``(hard - s).detach() + s``, which can miss 1.0 by
    one ulp; here it is ``hard + (s - s.detach())``: the same gradient, and a forward value of exactly 0.0 or
    1.0.

    Args:
        logits: gate logits of any shape (the head passes ``[cQ, L*B]``).
        temperature: the relaxation temperature (0.66667).
        training: draw noise and keep the soft sample's gradient; otherwise threshold at 0.
        generator: the random source of the noise (the global one when None).
    Returns:
        ``(hard, soft)``, both shaped like ``logits``; ``hard`` holds exactly 0.0 / 1.0.
    """
    if not training:
        hard = (logits >= 0).to(logits.dtype)
        return hard, hard
    u = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device).uniform_(
        0.0, 1.0, generator=generator
    )
    noise = torch.log(u + _NOISE_EPS) - torch.log(1 - u + _NOISE_EPS)
    soft = torch.sigmoid((logits + noise) / temperature)
    hard = (soft >= 0.5).to(soft.dtype) + (soft - soft.detach())
    return hard, soft


def share_last_copy(gate: Tensor, copies: int) -> Tensor:
    """The gate of the last detector-layer copy, applied to every copy (spec §11 item 2).

    Gradients of all copies flow into the last copy's gate, as in the official code; the other copies' gates
    are not used.

    Args:
        gate: ``[L*B, cQ]`` with ``n = l * B + b``.
        copies: ``L``.
    Returns:
        ``[L*B, cQ]``: row ``l * B + b`` is ``gate[(L-1) * B + b]``.
    """
    n, _ = gate.shape
    if n % copies:
        raise ValueError(f"share_last_copy: {n} batch items is not a multiple of {copies} copies")
    b = n // copies
    return gate[(copies - 1) * b :].repeat(copies, 1)


def gated_residual(gate: Tensor, q_ca: Tensor, q_in: Tensor) -> Tensor:
    """``q = g * q_CA + (1 - g) * q_in`` per query (spec §3.4 item 4).

    ``q_in`` is the query that entered this step's decoder (the propagated query, after the memory read), the
    same for every decoder layer, not the previous layer's output.

    Args:
        gate: ``[N, cQ]`` (N = L*B) of 0.0 / 1.0 (straight-through values carry the soft gradient).
        q_ca: the cross-attention output ``[cQ, N, C]``.
        q_in: the step's input query ``[cQ, N, C]``.
    Returns:
        ``[cQ, N, C]``.
    """
    g = gate.t().unsqueeze(-1).to(q_ca.dtype)
    return g * q_ca + (1 - g) * q_in


def gate_attention_bias(
    gate: Tensor, num_heads: int, copies: int, dtype: torch.dtype | None = None
) -> Tensor:
    """The decoder self-attention ``attn_mask`` driven by the gate, exactly as the official code builds it.

    Start from zeros ``[B, cQ, cQ]``, set the rows of gated-off queries (gate == 0) to 1.0, zero the
    diagonal, then repeat over the L copies and the heads in the batch order that ``nn.MultiheadAttention``
    expects for a 3-d mask: index ``(l * B + b) * num_heads + head``.

    Why a +1.0 float and not a hard mask (spec §0 item 3, §3.4 item 5): the official code builds this
    *float* matrix and passes it as ``attn_mask``; ``nn.MultiheadAttention`` ADDS a float mask to the
    attention logits (only a boolean mask blocks positions). The intent was "inactive queries take nothing
    from the others", but what runs is +1 on every off-diagonal logit of a gated-off row, which after the
    softmax is the same as lowering that query's logit for itself by 1. Active rows and all columns are
    untouched. Official weights were trained with this bias, so it is reproduced as it is, not as it was
    meant.

    Args:
        gate: the gate of the last copy ``[B, cQ]`` (0.0 = gated off); no gradient flows through the bias.
        num_heads: attention heads.
        copies: ``L``.
        dtype: the bias dtype (that of the self-attention input); the gate's when None.
    Returns:
        ``[L*B*num_heads, cQ, cQ]`` float.
    """
    b, q = gate.shape
    off = gate.detach() == 0
    bias = off[:, :, None].expand(b, q, q).to(dtype or gate.dtype)
    bias = bias * (1 - torch.eye(q, dtype=bias.dtype, device=bias.device))
    return bias[None, :, None].expand(copies, b, num_heads, q, q).reshape(copies * b * num_heads, q, q)
