import pytest
import torch
import torch.nn.functional as F

from cnnlab.errors import ConfigError
from cnnlab.layers import ConnectionTableConv2d, EuclideanRBF, ScaledTanh, TrainableSubsampling, glyph_codes


def test_scaled_tanh_maps_plus_minus_one_to_themselves():
    f = ScaledTanh()
    out = f(torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.allclose(out, torch.tensor([-1.0, 0.0, 1.0]), atol=2e-4)
    assert torch.allclose(f(torch.tensor([50.0])), torch.tensor([1.7159]))


def test_trainable_subsampling_is_gain_times_window_sum_plus_bias():
    layer = TrainableSubsampling(2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([0.5, -2.0]))
        layer.bias.copy_(torch.tensor([1.0, 0.0]))
    x = torch.arange(32.0).view(1, 2, 4, 4)
    expected = torch.stack([x[0, c].view(2, 2, 2, 2).sum((1, 3)) for c in range(2)])  # 2×2 block sums
    expected = expected * torch.tensor([0.5, -2.0]).view(2, 1, 1) + torch.tensor([1.0, 0.0]).view(2, 1, 1)
    assert torch.equal(layer(x)[0], expected)
    assert sum(p.numel() for p in layer.parameters()) == 4


def test_connection_table_conv_equals_masked_dense_conv():
    table = [[0], [0, 1], [1, 2], [0, 1, 2]]
    layer = ConnectionTableConv2d(3, table, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    dense = layer.dense_weight()
    assert torch.equal(dense.abs().sum((2, 3)) > 0, layer.connection_mask())
    assert torch.allclose(layer(x), F.conv2d(x, dense, layer.bias, padding=1), atol=1e-6)
    # Output map 0 ignores inputs 1 and 2 entirely.
    y1 = layer(x)
    x2 = x.clone()
    x2[:, 1:] = torch.randn(2, 2, 8, 8)
    assert torch.equal(layer(x2)[:, 0], y1[:, 0])
    assert sum(p.numel() for p in layer.parameters()) == 8 * 9 + 4  # 8 connections of 3×3 + 4 biases


def test_connection_table_gradients_reach_only_connected_kernels():
    layer = ConnectionTableConv2d(2, [[1], [0, 1]], 3)
    layer(torch.randn(1, 2, 5, 5)).sum().backward()
    assert layer.weight.grad.shape == (3, 3, 3) and torch.all(layer.weight.grad.abs().sum((1, 2)) > 0)


@pytest.mark.parametrize("table", [[[0, 0]], [[3]], [[]]])
def test_connection_table_rejects_bad_rows(table):
    with pytest.raises(ConfigError, match="Connection table row 0"):
        ConnectionTableConv2d(2, table, 3)


def test_rbf_outputs_squared_distances_to_fixed_codes():
    codes = glyph_codes(10)
    rbf = EuclideanRBF(codes)
    x = torch.randn(5, 84)
    assert torch.allclose(rbf(x), torch.cdist(x, codes).pow(2), rtol=1e-4, atol=1e-3)
    assert not rbf.codes.requires_grad
    assert torch.equal(rbf(codes).argmin(1), torch.arange(10))  # each code is nearest to itself


def test_glyph_codes_are_plus_minus_one_and_distinct():
    codes = glyph_codes(12)
    assert codes.shape == (12, 84) and set(codes.unique().tolist()) == {-1.0, 1.0}
    assert len({tuple(c.tolist()) for c in codes}) == 12
    assert torch.equal(glyph_codes(12), codes)  # deterministic extra codes
