"""The GRAtt-VIS head: official keys and size, step outputs, gates, propagation, memory, a reference."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidseg.models.grattvis.memory import NoMemory, QueryMemory
from vidseg.models.grattvis.vis_head import GRAttVISHead

SPEC_KEYS = Path(__file__).resolve().parents[1] / "spec_keys" / "grattvis-state-dict-keys-R50-OVIS.txt"
TINY = dict(
    num_classes=5,
    hidden_dim=32,
    num_frame_queries=7,
    num_queries=10,
    nheads=4,
    dim_feedforward=64,
    mask_dim=16,
)
L, B = 3, 2


def _head(seed: int = 0, **kw) -> GRAttVISHead:
    torch.manual_seed(seed)
    return GRAttVISHead(**{**TINY, **kw})


def _frame_queries(copies: int, frames: int, seed: int = 1, fq: int = 7, c: int = 32) -> torch.Tensor:
    return torch.randn(copies, frames, fq, c, generator=torch.Generator().manual_seed(seed))


def _spec_vita_keys() -> dict[str, tuple[int, ...]]:
    out = {}
    for line in SPEC_KEYS.read_text().splitlines():
        m = re.fullmatch(r"vita_module\.(\S+) \((.*)\)", line.strip())
        if m:
            out[m.group(1)] = tuple(int(s) for s in m.group(2).split(",") if s.strip())
    return out


# ---------------------------------------------------------------------------------------- keys, size, init
@pytest.fixture(scope="module")
def full_head() -> GRAttVISHead:
    torch.manual_seed(0)
    return GRAttVISHead(num_classes=25, use_mem=False)


def test_state_dict_keys_and_shapes_are_the_official_vita_module_ones(full_head):
    spec = _spec_vita_keys()
    assert len(spec) == 149
    ours = {k: tuple(v.shape) for k, v in full_head.state_dict().items()}
    assert ours == spec


def test_parameter_count_is_the_official_13_17m(full_head):
    n = sum(p.numel() for p in full_head.parameters() if p.requires_grad)
    assert n == sum(math.prod(s) for s in _spec_vita_keys().values()) == 13_171_483


def test_memory_adds_the_four_linear_layers_directly_on_the_head():
    head = GRAttVISHead(num_classes=25, use_mem=True, gated_prop=True)
    extra = {k: tuple(v.shape) for k, v in head.state_dict().items() if k not in _spec_vita_keys()}
    assert extra == {
        f"pre_{w}_embed_{kv}.{p}": ((256, 256) if p == "weight" else (256,))
        for w in ("query", "memory")
        for kv in ("k", "v")
        for p in ("weight", "bias")
    }
    assert len(head.state_dict()) == 157


def test_init_xavier_on_transformer_layers_and_c2_xavier_on_the_mask_features_conv():
    head = _head()
    conv = head.vita_mask_features
    bound = math.sqrt(3 / conv.weight[0].numel())  # kaiming_uniform a=1
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
    w = head.transformer_self_attention_layers[0].self_attn.in_proj_weight  # [3C, C] as one matrix
    xavier = math.sqrt(6 / (w.shape[0] + w.shape[1]))
    assert w.abs().max() <= xavier and w.abs().max() > 0.9 * xavier
    w1 = head.enc_ffn[0].linear1.weight
    assert w1.abs().max() <= math.sqrt(6 / sum(w1.shape))
    assert head.mask_features(torch.randn(2, 32, 5, 6)).shape == (2, 16, 5, 6)
    assert GRAttVISHead(**{**TINY, "conv_dim": 24}).vita_mask_features.in_channels == 24


# ---------------------------------------------------------------------------------------- step outputs
def test_training_step_shapes_and_gate_lists():
    head = _head().train()
    q0 = head.initial_query(L * B)
    assert q0.shape == (10, L * B, 32) and torch.equal(q0[:, 4], head.query_feat.weight)
    out = head.step(_frame_queries(L, B), q0, head.new_memory())
    assert out["pred_logits"].shape == (L, B, 10, 6)
    assert out["pred_mask_embed"].shape == (L, B, 10, 16)
    assert out["pred_cq_embed"].shape == (L, B, 10, 32)
    assert out["pred_fq_embed"].shape == (L, B, 1, 7, 32)
    assert out["prop_query"].shape == (10, L * B, 32)
    assert len(out["aux_outputs"]) == 2
    for aux in out["aux_outputs"]:
        assert set(aux) == {"pred_logits", "pred_mask_embed", "pred_cq_embed"}
        assert aux["pred_logits"].shape == (L, B, 10, 6)
    for key in ("gates", "soft_gates", "gate_logits"):
        assert len(out[key]) == 3 and all(g.shape == (L * B, 10) for g in out[key])
    for gate, soft in zip(out["gates"], out["soft_gates"], strict=True):
        assert set(gate.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(gate[:B], gate[-B:]) and torch.equal(gate[B : 2 * B], gate[-B:])  # shared
        assert torch.equal(gate[-B:], (soft[-B:] >= 0.5).float())  # the last copy's own gate
        assert ((soft > 0) & (soft < 1)).all()


def test_eval_step_shapes_is_deterministic_and_gates_are_logit_at_least_zero():
    head = _head().eval()
    fq = _frame_queries(1, 1)
    with torch.no_grad():
        out = head.step(fq, head.initial_query(1), head.new_memory())
        again = head.step(fq, head.initial_query(1), head.new_memory())
        # Only the last detector-layer copy is used at test time, as officially.
        last = head.step(
            torch.cat([_frame_queries(2, 1, seed=9), fq]), head.initial_query(1), head.new_memory()
        )
    assert out["pred_logits"].shape == (1, 1, 10, 6)
    assert out["pred_fq_embed"].shape == (1, 1, 1, 7, 32)
    assert out["aux_outputs"] == []
    assert torch.equal(out["prop_query"], again["prop_query"])
    assert torch.equal(out["pred_logits"], last["pred_logits"])
    for gate, soft, logits in zip(out["gates"], out["soft_gates"], out["gate_logits"], strict=True):
        assert torch.equal(gate, (logits >= 0).float()) and torch.equal(soft, gate)


def test_bad_shapes_get_one_clear_error():
    head = _head().train()
    with pytest.raises(ValueError, match="L\\*B items"):
        head.step(_frame_queries(L, B), head.initial_query(L * B + 1), head.new_memory())
    with pytest.raises(ValueError, match="LEN_CLIP_WINDOW"):
        head.step(_frame_queries(L, 2 * B), head.initial_query(L * B), head.new_memory())
    with pytest.raises(ValueError, match="ENC_WINDOW_SIZE"):
        GRAttVISHead(num_classes=3, enc_window_size=-1)


def test_prop_query_is_not_detached_gradients_reach_the_first_step_input():
    head = _head().train()
    q0 = head.initial_query(L * B).detach().requires_grad_(True)
    mem = head.new_memory()
    out1 = head.step(_frame_queries(L, B, seed=1), q0, mem)
    out2 = head.step(_frame_queries(L, B, seed=2), out1["prop_query"], mem)
    out2["pred_logits"].sum().backward()
    assert q0.grad is not None and q0.grad.abs().sum() > 0


def test_without_gated_prop_no_prop_instance_no_bias_and_no_gates():
    head = _head(gated_prop=False).train()
    assert not hasattr(head, "prop_instance")
    seen = []
    for layer in head.transformer_self_attention_layers:
        layer.self_attn.register_forward_pre_hook(
            lambda mod, args, kwargs: seen.append(kwargs.get("attn_mask")), with_kwargs=True
        )
    out = head.step(_frame_queries(L, B), head.initial_query(L * B), head.new_memory())
    assert seen == [None, None, None]
    assert out["gates"] == out["soft_gates"] == out["gate_logits"] == []


def _force_gates(head: GRAttVISHead, value: float) -> None:
    with torch.no_grad():
        head.prop_instance.weight.zero_()
        head.prop_instance.bias.fill_(value)


def test_gated_off_everywhere_resets_to_q_in_at_every_layer():
    head = _head().eval()
    _force_gates(head, -100.0)  # every logit < 0: every gate 0 at every layer
    q_in = torch.randn(10, 1, 32)
    with torch.no_grad():
        out = head.step(_frame_queries(1, 1, seed=1), q_in, NoMemory())
        other = head.step(_frame_queries(1, 1, seed=2), q_in, NoMemory())
        # The cross-attention output is thrown away at every layer, so the result is the last layer's
        # self-attention (every row gated off: +1 off the diagonal everywhere) and FFN of q_in itself.
        bias = (1 - torch.eye(10)).expand(4, 10, 10)
        qpos = head.query_embed.weight[:, None]
        ref = head.transformer_ffn_layers[2](head.transformer_self_attention_layers[2](q_in, qpos, bias))
    assert all(g.sum() == 0 for g in out["gates"])
    torch.testing.assert_close(out["prop_query"], ref)
    torch.testing.assert_close(other["prop_query"], ref)  # independent of the frame queries


def test_gated_on_everywhere_equals_the_ungated_head():
    head = _head().train()
    _force_gates(head, 100.0)  # the logistic noise is > log(1e-8) = -18.4: always open
    plain = _head(gated_prop=False).train()
    plain.load_state_dict({k: v for k, v in head.state_dict().items() if not k.startswith("prop_instance")})
    fq, q0 = _frame_queries(L, B), head.initial_query(L * B)
    out = head.step(fq, q0, NoMemory())
    ref = plain.step(fq, q0, NoMemory())
    assert all(g.min() == 1 for g in out["gates"])
    torch.testing.assert_close(out["prop_query"], ref["prop_query"])
    torch.testing.assert_close(out["pred_logits"], ref["pred_logits"])


# ---------------------------------------------------------------------------------------- memory in the head
def test_memory_first_step_adds_v_q_then_reads_and_writes_one_entry_per_step():
    head = _head(use_mem=True, gated_prop=False).eval()
    mem = head.new_memory()
    assert isinstance(mem, QueryMemory) and mem.enabled
    q0 = head.initial_query(1)
    seen = []
    head.transformer_cross_attention_layers[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        out1 = head.step(_frame_queries(1, 1, seed=1), q0, mem)
        assert len(mem) == 1
        torch.testing.assert_close(seen[0], q0 + head.pre_query_embed_v(q0))  # empty memory: r = 0
        dec_last = head.decoder_norm(out1["prop_query"]).transpose(0, 1)
        torch.testing.assert_close(mem.keys[0], head.pre_memory_embed_k(dec_last))
        torch.testing.assert_close(mem.values[0], head.pre_memory_embed_v(dec_last))
        q1 = out1["prop_query"]
        head.step(_frame_queries(1, 1, seed=2), q1, mem)
        assert len(mem) == 2
        # One stored entry: its softmax weight is 1, so r is that entry's value.
        torch.testing.assert_close(seen[1], q1 + head.pre_query_embed_v(q1) + mem.values[0].transpose(0, 1))
    assert isinstance(_head().new_memory(), NoMemory)


def test_memory_gradient_flows_back_through_stored_entries():
    head = _head(use_mem=True).train()
    mem = head.new_memory()
    q0 = head.initial_query(L * B).detach().requires_grad_(True)
    out1 = head.step(_frame_queries(L, B, seed=1), q0, mem)
    out2 = head.step(_frame_queries(L, B, seed=2), out1["prop_query"].detach(), mem)
    out3 = head.step(_frame_queries(L, B, seed=3), out2["prop_query"].detach(), mem)
    out3["pred_logits"].sum().backward()
    # The propagated queries were cut: the third step reaches step 1's input and the memory keys' layer
    # only through the stored entries (two of them, so that the softmax over steps has a gradient).
    assert q0.grad is not None and q0.grad.abs().sum() > 0
    assert head.pre_memory_embed_k.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------- windowed encoder
def _same_weights(head: GRAttVISHead, **kw) -> GRAttVISHead:
    other = _head(**kw)
    other.load_state_dict(head.state_dict())
    return other.train(head.training)


def _full_attention_encoder(head: GRAttVISHead, x: torch.Tensor) -> torch.Tensor:
    t, fq, n, c = x.shape
    y = x.flatten(0, 1)
    for attn, ffn in zip(head.enc_self_attn, head.enc_ffn, strict=True):
        y = ffn(attn(y))
    return y.view(t, fq, n, c)


def test_windowed_encoder_in_training_attends_within_windows_of_frames_padding_masked():
    head = _head(enc_layers=2, enc_window_size=2).train()
    x = torch.randn(3, 7, 2, 32)  # T = 3 frames: windows {0, 1} and {2, pad}
    with torch.no_grad():
        out = head._encode(x)
        torch.testing.assert_close(out[:2], _full_attention_encoder(head, x[:2]))
        torch.testing.assert_close(out[2:], _full_attention_encoder(head, x[2:]))
        wide = _same_weights(head, enc_layers=2, enc_window_size=4)._encode(x)  # one padded window
        torch.testing.assert_close(wide, _full_attention_encoder(head, x))


def test_windowed_encoder_at_test_time_shifts_the_odd_layers():
    head = _head(enc_layers=2, enc_window_size=2).eval()
    x = torch.randn(2, 7, 1, 32)
    with torch.no_grad():
        out = head._encode(x)
        # Layer 0: one window of both frames. Layer 1: the window shifted by 1 frame; the wrapped-around frame
        # is cut off from the other, so each frame attends to itself only.
        y = head.enc_ffn[0](head.enc_self_attn[0](x.flatten(0, 1))).view(2, 7, 1, 32)
        ref = torch.stack([head.enc_ffn[1](head.enc_self_attn[1](y[t])) for t in range(2)])
    torch.testing.assert_close(out, ref)


# ---------------------------------------------------------------------------------------- numeric reference
def _mha(mod: nn.MultiheadAttention, q, k, v, heads: int, bias=None):
    """Multi-head attention from its weights: [S, N, C] sequences, bias [N, heads, S, T] added to logits."""
    wq, wk, wv = mod.in_proj_weight.chunk(3)
    bq, bk, bv = mod.in_proj_bias.chunk(3)
    s, n, c = q.shape
    d = c // heads

    def split(x, w, b):
        return (x @ w.T + b).reshape(x.shape[0], n, heads, d).permute(1, 2, 0, 3)  # [N, h, S, d]

    logits = split(q, wq, bq) @ split(k, wk, bk).transpose(-1, -2) / math.sqrt(d)
    if bias is not None:
        logits = logits + bias
    out = (logits.softmax(-1) @ split(v, wv, bv)).permute(2, 0, 1, 3).reshape(s, n, c)
    return out @ mod.out_proj.weight.T + mod.out_proj.bias


def _ln(x, norm: nn.LayerNorm):
    return F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps)


def _ffn(x, layer):
    hidden = F.relu(x @ layer.linear1.weight.T + layer.linear1.bias)
    return _ln(x + hidden @ layer.linear2.weight.T + layer.linear2.bias, layer.norm)


def _reference_step(head: GRAttVISHead, fq: torch.Tensor, q0: torch.Tensor, copies: int, videos: int, seed):
    """One step re-derived with torch primitives (W = 1): returns (prop_query, pred_logits, gates)."""
    h = head.num_heads
    n = copies * videos
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    src = fq.reshape(n, fq.shape[2], fq.shape[3]).transpose(0, 1)  # [fQ, N, C], n = l * B + b
    src = src @ head.input_proj_dec.weight.T + head.input_proj_dec.bias
    for attn, ffn in zip(head.enc_self_attn, head.enc_ffn, strict=True):
        src = _ffn(_ln(src + _mha(attn.self_attn, src, src, src, h), attn.norm), ffn)
    pos = head.fq_pos.weight[:, None]
    qpos = head.query_embed.weight[:, None]
    out = q0
    gates = []
    for i in range(head.num_layers):
        ca = head.transformer_cross_attention_layers[i]
        out = _ln(out + _mha(ca.multihead_attn, out + qpos, src + pos, src, h), ca.norm)
        z = _ln(out, head.decoder_norm) @ head.prop_instance.weight[0] + head.prop_instance.bias[0]  # [cQ, N]
        if g is None:
            open_ = z >= 0
        else:
            u = torch.empty(z.shape).uniform_(0.0, 1.0, generator=g)
            open_ = torch.sigmoid((z + torch.log(u + 1e-8) - torch.log(1 - u + 1e-8)) / 0.66667) >= 0.5
        last = open_[:, (copies - 1) * videos :]  # [cQ, B]: the last copy decides for all copies
        gate = torch.cat([last] * copies, dim=1).float()  # [cQ, N]
        out = gate[..., None] * out + (1 - gate[..., None]) * q0
        bias = torch.zeros(n, h, out.shape[0], out.shape[0])
        for j in range(n):
            for q in range(out.shape[0]):
                if gate[q, j] == 0:
                    bias[j, :, q, :] = 1.0
                    bias[j, :, q, q] = 0.0
        sa = head.transformer_self_attention_layers[i]
        out = _ln(out + _mha(sa.self_attn, out + qpos, out + qpos, out, h, bias), sa.norm)
        out = _ffn(out, head.transformer_ffn_layers[i])
        gates.append(gate.t())
    dec = _ln(out, head.decoder_norm).transpose(0, 1).reshape(copies, videos, out.shape[0], -1)
    return out, dec @ head.class_embed.weight.T + head.class_embed.bias, gates


@pytest.mark.parametrize("training", [True, False])
def test_step_matches_a_hand_written_reference(training):
    head = _head(seed=3, enc_layers=1, dec_layers=2).train(training)
    with torch.no_grad():
        head.prop_instance.weight.normal_(0, 1.0)
        head.prop_instance.bias.zero_()
        for m in head.modules():  # LayerNorms away from identity, so that a missing or extra norm shows
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    copies, videos = (2, 2) if training else (1, 1)
    fq = _frame_queries(copies, videos, seed=4)
    q0 = torch.randn(10, copies * videos, 32, generator=torch.Generator().manual_seed(5))
    seed = 11 if training else None
    gen = torch.Generator().manual_seed(seed) if training else None
    with torch.no_grad():
        out = head.step(fq, q0, NoMemory(), generator=gen)
        ref_q, ref_logits, ref_gates = _reference_step(head, fq, q0, copies, videos, seed)
    for gate, ref_gate in zip(out["gates"], ref_gates, strict=True):
        assert torch.equal(gate, ref_gate)
        assert 0 < gate.sum() < gate.numel()  # some queries on, some off: the bias and residual matter
    torch.testing.assert_close(out["prop_query"], ref_q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["pred_logits"], ref_logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_an_encoder_window_changes_nothing_for_one_frame_steps(training):
    # W = 1 frame per step: the padded frames are masked (and cut off in the shifted layers), so the step
    # equals the unwindowed one in training and at test time.
    head = _head(enc_layers=2).train(training)
    windowed = _same_weights(head, enc_layers=2, enc_window_size=3)
    copies, videos = (L, B) if training else (1, 1)
    fq, q0 = _frame_queries(copies, videos), head.initial_query(copies * videos)
    with torch.no_grad():
        out = head.step(fq, q0, NoMemory(), generator=torch.Generator().manual_seed(0))
        ref = windowed.step(fq, q0, NoMemory(), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["pred_fq_embed"], ref["pred_fq_embed"])
    torch.testing.assert_close(out["prop_query"], ref["prop_query"])
