"""The GRAtt gate: Gumbel-sigmoid in training and eval, straight-through gradient, residual, the bias."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vidseg.models.grattvis.gate import (
    DEFAULT_TEMPERATURE,
    gate_attention_bias,
    gated_residual,
    gumbel_sigmoid_gate,
    share_last_copy,
)


def _logits(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 2


def test_eval_gate_is_logit_at_least_zero_without_noise_and_soft_is_hard():
    z = torch.tensor([[-1.0, 0.0, 1e-6, -1e-6, 3.0]])
    state = torch.get_rng_state()
    hard, soft = gumbel_sigmoid_gate(z, training=False)
    assert hard.tolist() == [[0.0, 1.0, 1.0, 0.0, 1.0]]
    assert soft is hard
    assert torch.equal(torch.get_rng_state(), state)  # no random draw at test time


def test_training_gate_is_exactly_binary_and_follows_the_logistic_noise_formula():
    z = _logits(10, 6)
    hard, soft = gumbel_sigmoid_gate(z, training=True, generator=torch.Generator().manual_seed(3))
    u = torch.empty(10, 6).uniform_(0.0, 1.0, generator=torch.Generator().manual_seed(3))
    expected_soft = torch.sigmoid((z + torch.log(u + 1e-8) - torch.log(1 - u + 1e-8)) / 0.66667)
    torch.testing.assert_close(soft, expected_soft, rtol=0, atol=1e-6)
    assert set(hard.unique().tolist()) <= {0.0, 1.0}  # exactly 0.0 / 1.0, not 1 +- an ulp
    assert torch.equal(hard, (soft >= 0.5).float())
    assert DEFAULT_TEMPERATURE == 0.66667
    # The noise is random: another draw differs.
    hard2, soft2 = gumbel_sigmoid_gate(z, training=True, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(soft, soft2)


def test_training_gate_opens_with_probability_sigmoid_of_the_logit():
    # P(z + logistic noise >= 0) = sigmoid(z), whatever the temperature.
    g = torch.Generator().manual_seed(0)
    for z in (-1.0, 0.0, 1.5):
        hard, _ = gumbel_sigmoid_gate(torch.full((40000,), z), training=True, generator=g)
        assert abs(hard.mean().item() - 1 / (1 + math.exp(-z))) < 0.01


def test_straight_through_gradient_equals_the_soft_sample_gradient():
    z = _logits(8, 4).requires_grad_(True)
    w = _logits(8, 4, seed=1)
    hard, _ = gumbel_sigmoid_gate(z, training=True, generator=torch.Generator().manual_seed(5))
    (hard * w).sum().backward()
    grad_hard = z.grad.clone()
    z.grad = None
    _, soft = gumbel_sigmoid_gate(z, training=True, generator=torch.Generator().manual_seed(5))
    (soft * w).sum().backward()
    torch.testing.assert_close(grad_hard, z.grad, rtol=0, atol=0)
    assert grad_hard.abs().sum() > 0


def test_last_copy_gate_is_applied_to_every_copy():
    gate = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # L=3, B=2
    shared = share_last_copy(gate, copies=3)
    assert shared.tolist() == [[1.0, 0.0], [0.0, 1.0]] * 3
    with pytest.raises(ValueError, match="multiple"):
        share_last_copy(gate, copies=4)


def test_gated_residual_keeps_the_cross_attention_output_or_the_step_input_per_query():
    q_ca = torch.randn(3, 2, 4)
    q_in = torch.randn(3, 2, 4)
    gate = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]], requires_grad=True)  # [N, cQ]
    out = gated_residual(gate, q_ca, q_in)
    for n in range(2):
        for q in range(3):
            ref = q_ca[q, n] if gate[n, q] == 1 else q_in[q, n]
            assert torch.equal(out[q, n], ref)
    out.sum().backward()
    torch.testing.assert_close(gate.grad, (q_ca - q_in).sum(-1).t())  # d/dg (g q_ca + (1-g) q_in)


def test_attention_bias_is_plus_one_off_diagonal_on_gated_off_rows_in_l_b_head_order():
    gate = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])  # B=2, cQ=4
    bias = gate_attention_bias(gate, num_heads=3, copies=2)
    assert bias.shape == (2 * 2 * 3, 4, 4) and bias.dtype == torch.float32
    per_video = torch.zeros(2, 4, 4)
    for b in range(2):
        for q in range(4):
            if gate[b, q] == 0:
                per_video[b, q] = 1.0
                per_video[b, q, q] = 0.0
    for layer_copy in range(2):
        for b in range(2):
            for head in range(3):
                assert torch.equal(bias[(layer_copy * 2 + b) * 3 + head], per_video[b])
    assert gate_attention_bias(gate, 1, 1, dtype=torch.float64).dtype == torch.float64


def _attend(attn: nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return attn(x, x, x, attn_mask=mask, need_weights=False)[0]


def test_official_float_bias_equals_minus_one_on_the_diagonal_and_differs_from_a_boolean_mask():
    torch.manual_seed(0)
    heads, cq, b, copies = 4, 10, 2, 3
    attn = nn.MultiheadAttention(32, heads)
    x = torch.randn(cq, copies * b, 32)
    gate = (torch.rand(b, cq) > 0.5).float()
    gate[0, 0], gate[0, 1] = 0.0, 1.0
    official = gate_attention_bias(gate, heads, copies)
    # The same thing, written as what it does: -1 on the diagonal of the gated-off rows.
    diag = torch.zeros(b, cq, cq)
    for bi in range(b):
        for q in range(cq):
            if gate[bi, q] == 0:
                diag[bi, q, q] = -1.0
    diag = diag[None, :, None].expand(copies, b, heads, cq, cq).reshape(-1, cq, cq)
    with torch.no_grad():
        out_official = _attend(attn, x, official)
        torch.testing.assert_close(out_official, _attend(attn, x, diag), rtol=0, atol=1e-6)
        # A hard (boolean) mask, what the official code meant, is not what it computes.
        hard = _attend(attn, x, official.bool())
        assert (out_official - hard).abs().max() > 1e-2
        # Active rows are untouched by the bias.
        plain = _attend(attn, x, torch.zeros_like(official))
        active = gate.repeat(copies, 1).t().bool()  # [cQ, N]
        torch.testing.assert_close(out_official[active], plain[active], rtol=0, atol=1e-6)
        assert (out_official[~active] - plain[~active]).abs().max() > 1e-3
