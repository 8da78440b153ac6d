"""Swin internals: windows, shifted-window masks, relative position index, padding."""

import torch

from vidseg.backbones.swin import (
    SwinTransformer,
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)


def test_window_partition_roundtrip():
    x = torch.randn(2, 14, 21, 5)
    w = window_partition(x, 7)
    assert w.shape == (2 * 2 * 3, 7, 7, 5)
    torch.testing.assert_close(w[1], x[0, 0:7, 7:14])  # row-major window order
    torch.testing.assert_close(window_reverse(w, 7, 14, 21), x)


def test_relative_position_index_small_window():
    idx = relative_position_index(2)  # tokens (0,0),(0,1),(1,0),(1,1); table is 3x3
    assert idx.shape == (4, 4)
    assert idx[0, 0] == 4  # zero offset -> centre of the 3x3 table
    assert idx[0, 3] == 0  # (0,0)-(1,1) = (-1,-1)
    assert idx[3, 0] == 8  # (+1,+1)
    assert idx.max() == 8 and idx.min() == 0


def test_shifted_window_mask_blocks_cross_region_attention():
    ws, shift = 4, 2
    mask = shifted_window_mask(8, 8, ws, shift, torch.device("cpu"))
    assert mask.shape == (4, 16, 16)
    assert (mask[0] == 0).all()  # top-left window lies in one region
    # bottom-right window holds 4 regions of 2x2 tokens: each token may attend to its own 4 tokens only
    assert ((mask[3] == 0).sum(dim=1) == 4).all()
    assert set(mask.unique().tolist()) == {0.0, -100.0}


def test_swin_pads_non_multiple_inputs_and_runs_backward():
    torch.manual_seed(0)
    model = SwinTransformer(embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=3, drop_path_rate=0.1)
    x = torch.randn(2, 3, 37, 29, requires_grad=True)  # not multiples of 4, nor of the window at any stage
    out = model(x)
    assert out["res2"].shape == (2, 16, 10, 8) and out["res3"].shape == (2, 32, 5, 4)
    assert list(model.state_dict())[:2] == ["patch_embed.proj.weight", "patch_embed.proj.bias"]
    assert "norm0.weight" in model.state_dict() and "norm1.weight" in model.state_dict()
    sum(v.square().mean() for v in out.values()).backward()
    assert model.layers[0].blocks[1].attn.relative_position_bias_table.grad is not None
    assert torch.isfinite(x.grad).all()


def test_swin_padding_does_not_leak_into_valid_region_of_first_block():
    # In a non-shifted block tokens only attend within their window: changing pixels of a window that is
    # entirely outside the first window must not change the first window's output.
    torch.manual_seed(0)
    model = SwinTransformer(embed_dim=8, depths=(1,), num_heads=(2,), window_size=2, out_indices=(0,)).eval()
    x = torch.randn(1, 3, 16, 16)
    y = x.clone()
    y[..., 8:, 8:] += 1.0
    with torch.no_grad():
        a, b = model(x)["res2"], model(y)["res2"]
    torch.testing.assert_close(a[..., :2, :2], b[..., :2, :2])
    assert not torch.allclose(a[..., 2:, 2:], b[..., 2:, 2:])


def test_frozen_stages():
    model = SwinTransformer(embed_dim=8, depths=(1, 1), num_heads=(1, 2), window_size=2, frozen_stages=1)
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert not any(p.requires_grad for p in model.layers[0].parameters())
    assert all(p.requires_grad for p in model.layers[1].parameters())
    model.train()
    assert not model.layers[0].training and model.layers[1].training
