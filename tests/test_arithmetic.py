"""Convolution arithmetic against the seeds' hand-computed cases and against PyTorch's shapes."""

import itertools

import pytest
import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.layers import ReceptiveField, conv_output_size, same_padding


def test_seed_examples():
    # 32×32×3 input, three 5×5×3 filters, stride 1, no padding -> 28×28×3 (CS231n / Deshpande's guide)
    assert conv_output_size(32, 5) == 28
    assert nn.Conv2d(3, 3, 5)(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 28, 28)
    # 7×7 input, 3×3 filter, stride 2 -> 3×3
    assert conv_output_size(7, 3, stride=2) == 3
    # padding (K−1)/2 keeps the size at stride 1
    for k in (1, 3, 5, 7, 11):
        assert conv_output_size(32, k, padding=same_padding(k)) == 32


def test_strict_refuses_non_integer_outputs():
    # 7×7 input, 3×3 filter, stride 3: (7 − 3)/3 + 1 = 2.33 does not tile
    with pytest.raises(ConfigError, match="not an integer"):
        conv_output_size(7, 3, stride=3, strict=True)
    assert conv_output_size(7, 3, stride=3) == 2  # PyTorch floors


def test_even_kernel_has_no_same_padding():
    with pytest.raises(ConfigError, match="even"):
        same_padding(4)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "dilation"),
    [c for c in itertools.product((7, 32, 227), (1, 3, 5, 11), (1, 2, 4), (0, 1, 2), (1, 2)) if c[1] * c[4] <= c[0]],
)
def test_matches_pytorch_conv_and_pool_shapes(size, kernel, stride, padding, dilation):
    conv = nn.Conv2d(1, 1, kernel, stride, padding, dilation)
    assert conv(torch.zeros(1, 1, size, size)).shape[-1] == conv_output_size(size, kernel, stride, padding, dilation)
    if padding <= kernel // 2:
        for ceil in (False, True):
            pool = nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=ceil)
            expected = pool(torch.zeros(1, 1, size, size)).shape[-1]
            ours = conv_output_size(size, kernel, stride, padding, dilation, ceil_mode=ceil)
            # torch drops a last ceil-mode window that would start in the right padding
            if ceil and (ours - 1) * stride >= size + padding:
                ours -= 1
            assert ours == expected


def test_receptive_field_of_stacked_layers():
    # Two 3×3 convs see 5×5; three see 7×7 (VGG's argument).
    rf = ReceptiveField().after(3).after(3)
    assert (rf.size, rf.jump) == (5, 1)
    assert ReceptiveField().after(3).after(3).after(3).size == 7
    # AlexNet conv1 (11, stride 4) then 3×3/2 overlapping pool: size 11 + 2·4 = 19, jump 8
    rf = ReceptiveField().after(11, 4).after(3, 2)
    assert (rf.size, rf.jump) == (19, 8)
    # start: centre of the first unit's field; padding shifts it left
    assert ReceptiveField().after(5).start == 2
    assert ReceptiveField().after(3, padding=1).start == 0
