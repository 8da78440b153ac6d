"""FrozenBatchNorm2d, PositionEmbeddingSine and MLP."""

import math

import pytest
import torch
from torch import nn

from vidseg.layers import MLP, DropPath, FrozenBatchNorm2d, PositionEmbeddingSine


def test_frozen_bn_matches_eval_batchnorm():
    bn = nn.BatchNorm2d(5).eval()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.1, 3)
    frozen = FrozenBatchNorm2d(5)
    frozen.load_state_dict(bn.state_dict())  # includes num_batches_tracked, which must be dropped
    x = torch.randn(2, 5, 3, 4)
    torch.testing.assert_close(frozen(x), bn(x))
    assert list(frozen.parameters()) == []


def test_frozen_bn_eps_inside_rsqrt():
    frozen = FrozenBatchNorm2d(1)
    frozen.running_var.zero_()  # without eps inside the rsqrt this would be inf
    y = frozen(torch.ones(1, 1, 1, 1))
    assert y.item() == pytest.approx(1 / math.sqrt(1e-5), rel=1e-5)


def test_convert_frozen_batchnorm():
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    m[1].running_mean.fill_(2.0)
    m = FrozenBatchNorm2d.convert_frozen_batchnorm(m)
    assert isinstance(m[1], FrozenBatchNorm2d) and m[1].running_mean[0] == 2.0


def test_position_encoding_hand_checked_pixel():
    pe = PositionEmbeddingSine(num_pos_feats=128, temperature=10000, normalize=True, scale=2 * math.pi)
    mask = torch.zeros(1, 2, 4, dtype=torch.bool)
    mask[:, :, 3] = True  # last column is padding: 3 valid columns
    pos = pe(mask)
    assert pos.shape == (1, 256, 2, 4)
    # pixel (y=1, x=2): cumsum positions 2 of 2 rows and 3 of 3 valid columns, normalised to 2π
    y = 2 / (2 + 1e-6) * 2 * math.pi
    x = 3 / (3 + 1e-6) * 2 * math.pi
    f1 = 10000 ** (2 / 128)  # frequency divisor of channels 2 and 3
    expected = {0: math.sin(y), 1: math.cos(y), 2: math.sin(y / f1), 3: math.cos(y / f1), 128: math.sin(x)}
    expected[129] = math.cos(x)
    expected[131] = math.cos(x / f1)
    for c, v in expected.items():
        assert pos[0, c, 1, 2].item() == pytest.approx(v, abs=1e-5), c
    # the first valid pixel gets 1/H and 1/W of the 2π range
    assert pos[0, 128, 0, 0].item() == pytest.approx(math.sin(2 * math.pi / 3), abs=1e-5)


def test_position_encoding_rejects_bad_shape_and_scale():
    with pytest.raises(ValueError, match=r"\[B,H,W\]"):
        PositionEmbeddingSine()(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="normalize"):
        PositionEmbeddingSine(normalize=False, scale=1.0)


def test_mlp_names_and_forward():
    mlp = MLP(256, 256, 4, 3)
    assert [k for k in mlp.state_dict()] == [f"layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
    assert mlp(torch.randn(2, 7, 256)).shape == (2, 7, 4)
    one = MLP(3, 99, 2, 1)
    x = torch.randn(4, 3)
    torch.testing.assert_close(one(x), one.layers[0](x))  # no ReLU on the last (only) layer


def test_drop_path_train_vs_eval():
    dp = DropPath(0.5)
    x = torch.ones(1000, 3)
    dp.train()
    y = dp(x)
    kept = (y[:, 0] != 0).float().mean().item()
    assert 0.4 < kept < 0.6 and set(y.unique().tolist()) <= {0.0, 2.0}
    dp.eval()
    assert torch.equal(dp(x), x)
