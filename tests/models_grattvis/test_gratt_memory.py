"""GenVIS's query memory: the per-slot read, the store, the empty memory and the gradient through entries."""

from __future__ import annotations

import math

import pytest
import torch

from vidseg.models.grattvis.memory import NoMemory, QueryMemory, read_own_slot


def test_read_matches_a_hand_computed_example_without_sqrt_scaling():
    # cQ = 2 slots, N = 1 batch item, C = 2, M = 2 stored steps.
    k_q = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # [cQ, N, C]
    keys = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 2.0]]]])  # [M, N, cQ, C]
    values = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[5.0, 6.0], [7.0, 8.0]]]])
    r = read_own_slot(k_q, keys, values)
    # slot 0: scores (1, 0); slot 1: scores (0, 2): plain dot products, no 1/sqrt(2).
    a0 = math.e / (math.e + 1)
    a1 = 1 / (1 + math.e**2)
    expected = torch.tensor(
        [
            [[a0 * 1 + (1 - a0) * 5, a0 * 2 + (1 - a0) * 6]],
            [[a1 * 3 + (1 - a1) * 7, a1 * 4 + (1 - a1) * 8]],
        ]
    )
    torch.testing.assert_close(r, expected)


def test_a_slot_reads_only_its_own_slot_of_past_steps():
    torch.manual_seed(0)
    k_q, keys, values = torch.randn(4, 3, 8), torch.randn(5, 3, 4, 8), torch.randn(5, 3, 4, 8)
    r = read_own_slot(k_q, keys, values)
    keys2, values2 = keys.clone(), values.clone()
    keys2[:, :, 1:] += 10
    values2[:, :, 1:] -= 3
    r2 = read_own_slot(k_q, keys2, values2)
    torch.testing.assert_close(r[0], r2[0])  # slot 0 saw nothing of the other slots' change
    assert not torch.allclose(r[1:], r2[1:])
    # The official two-step einsum (all slots, then the diagonal) gives the same.
    full = torch.einsum("qbc,mbpc->bqmp", k_q, keys)
    scores = torch.diagonal(full, dim1=1, dim2=3).permute(0, 2, 1)  # [N, cQ, M]
    ref = torch.einsum("bqm,mbqc->qbc", scores.softmax(dim=2), values)
    torch.testing.assert_close(r, ref)


def test_store_appends_one_entry_per_step_and_reads_all_of_them():
    mem = QueryMemory()
    assert len(mem) == 0 and mem.enabled
    k_q = torch.randn(4, 6, 8)
    assert torch.equal(mem.read(k_q), torch.zeros(4, 6, 8))  # empty memory reads zeros
    k1, v1 = torch.randn(3, 2, 4, 8), torch.randn(3, 2, 4, 8)  # [L, B, cQ, C]
    k2, v2 = torch.randn(6, 4, 8), torch.randn(6, 4, 8)  # [N, cQ, C]
    mem.append(k1, v1)
    mem.append(k2, v2)
    assert len(mem) == 2
    ref = read_own_slot(k_q, torch.stack([k1.flatten(0, 1), k2]), torch.stack([v1.flatten(0, 1), v2]))
    torch.testing.assert_close(mem.read(k_q), ref)
    with pytest.raises(ValueError, match="does not match"):
        mem.append(torch.randn(5, 4, 8), torch.randn(5, 4, 8))
    with pytest.raises(ValueError, match="differ"):
        mem.append(torch.randn(6, 4, 8), torch.randn(6, 4, 7))
    with pytest.raises(ValueError, match="do not fit"):
        mem.read(torch.randn(4, 5, 8))


def test_no_memory_stores_nothing():
    mem = NoMemory()
    mem.append(torch.randn(2, 4, 8), torch.randn(2, 4, 8))
    assert len(mem) == 0 and not mem.enabled
    assert torch.equal(mem.read(torch.ones(4, 2, 8)), torch.zeros(4, 2, 8))


def test_gradient_flows_through_stored_entries():
    k = torch.randn(2, 3, 8, requires_grad=True)
    v = torch.randn(2, 3, 8, requires_grad=True)
    k_q = torch.randn(3, 2, 8, requires_grad=True)
    mem = QueryMemory()
    mem.append(k * 1.0, v * 1.0)
    mem.append(torch.randn(2, 3, 8), torch.randn(2, 3, 8))
    mem.read(k_q).pow(2).sum().backward()
    for t in (k, v, k_q):
        assert t.grad is not None and t.grad.abs().sum() > 0
