"""Building blocks, usable on their own. Layers know no architectures."""

from cnnlab.layers.activations import ScaledTanh
from cnnlab.layers.arithmetic import ReceptiveField, conv_output_size, same_padding
from cnnlab.layers.connection_table import ConnectionTableConv2d
from cnnlab.layers.constraints import ConstraintActivity, clip_row_norms_
from cnnlab.layers.conv_block import ConvReLU
from cnnlab.layers.dropconnect import DropConnectLinear
from cnnlab.layers.global_pool import GlobalAvgPool2d
from cnnlab.layers.inception import Inception
from cnnlab.layers.maxout import Maxout
from cnnlab.layers.mlpconv import MLPConv
from cnnlab.layers.normalization import LocalResponseNorm
from cnnlab.layers.pooling import FractionalMaxPool2d, TrainableSubsampling, average_over_pooling_draws
from cnnlab.layers.rbf import EuclideanRBF, glyph_codes
from cnnlab.layers.residual import BasicBlock, Bottleneck, ZeroPadShortcut, projection_shortcut
from cnnlab.layers.spatial_transformer import SpatialTransformer

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ConnectionTableConv2d",
    "ConstraintActivity",
    "ConvReLU",
    "DropConnectLinear",
    "EuclideanRBF",
    "FractionalMaxPool2d",
    "GlobalAvgPool2d",
    "Inception",
    "LocalResponseNorm",
    "MLPConv",
    "Maxout",
    "ReceptiveField",
    "ScaledTanh",
    "SpatialTransformer",
    "TrainableSubsampling",
    "ZeroPadShortcut",
    "average_over_pooling_draws",
    "clip_row_norms_",
    "conv_output_size",
    "glyph_codes",
    "projection_shortcut",
    "same_padding",
]
