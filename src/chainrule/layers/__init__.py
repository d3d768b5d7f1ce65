"""All layers, by family. ``chainrule`` re-exports every name of ``__all__``."""

from .base import Layer
from .container import Residual, Sequential
from .graph import Graph
# not layers: the placeholders a graph is declared with (re-exported by chainrule)
from .symbolic import Input, SymbolicTensor

# convolution
from .conv import Conv1d, Conv2d, ConvTranspose2d

# linear and shape
from .linear import Flatten, Linear, Unflatten

# activations
from .activation import (CELU, ELU, GELU, SELU, Hardsigmoid, Hardswish, Hardtanh, Identity,
                         LeakyReLU, LogSoftmax, Mish, PReLU, ReLU, ReLU6, Sigmoid, SiLU, Softmax,
                         Softplus, Tanh)

# pooling
from .pooling import (AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool1d, AvgPool2d, MaxPool1d,
                      MaxPool2d)

# normalization
from .normalization import (BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm2d, LayerNorm,
                            LocalResponseNorm, SyncBatchNorm)

# regularization
from .dropout import Dropout, Dropout2d

# resampling
from .resample import (ChannelShuffle, PixelShuffle, PixelUnshuffle, Upsample,
                       UpsamplingBilinear2d, UpsamplingNearest2d)

# padding
from .padding import ConstantPad2d, ReflectionPad2d, ReplicationPad2d, ZeroPad2d

# merge and shape
from .merge import Add, Chunk, Concat, Mean, Multiply, Permute, Reshape, Split

# a constant operand (from_onnx's Add/Sub/Mul/Div with a constant; input scaling)
from .constant import ConstantArithmetic

__all__ = [
    "Layer", "Sequential", "Residual", "Graph",
    # convolution
    "Conv2d", "Conv1d", "ConvTranspose2d",
    # linear and shape
    "Linear", "Flatten", "Unflatten",
    # activations
    "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "ReLU6", "Hardtanh", "ELU", "SELU", "CELU", "GELU",
    "SiLU", "Mish", "Hardswish", "Hardsigmoid", "Softplus", "PReLU", "Softmax", "LogSoftmax",
    "Identity",
    # pooling
    "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
    "MaxPool1d", "AvgPool1d", "AdaptiveMaxPool2d",
    # normalization
    "BatchNorm1d", "BatchNorm2d", "SyncBatchNorm", "GroupNorm", "LayerNorm", "InstanceNorm2d", "LocalResponseNorm",
    # regularization
    "Dropout", "Dropout2d",
    # resampling
    "Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d", "PixelShuffle", "PixelUnshuffle",
    "ChannelShuffle",
    # padding
    "ZeroPad2d", "ConstantPad2d", "ReflectionPad2d", "ReplicationPad2d",
    # merge and shape
    "Add", "Multiply", "Concat", "Split", "Chunk", "Reshape", "Permute", "Mean",
    # constant operand
    "ConstantArithmetic",
]
