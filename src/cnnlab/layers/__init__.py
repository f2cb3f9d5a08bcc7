"""Building blocks, usable on their own. Layers know no architectures."""

from cnnlab.layers.activations import ScaledTanh
from cnnlab.layers.arithmetic import ReceptiveField, conv_output_size, same_padding
from cnnlab.layers.connection_table import ConnectionTableConv2d
from cnnlab.layers.pooling import TrainableSubsampling
from cnnlab.layers.rbf import EuclideanRBF, glyph_codes

__all__ = [
    "ConnectionTableConv2d",
    "EuclideanRBF",
    "ReceptiveField",
    "ScaledTanh",
    "TrainableSubsampling",
    "conv_output_size",
    "glyph_codes",
    "same_padding",
]
