"""All layers, by family. ``chainrule`` re-exports every name of ``__all__``."""

from .base import Layer
from .container import Residual, Sequential

# convolution
from .conv import Conv2d

# linear and shape
from .linear import Flatten, Linear

# activations
from .activation import LeakyReLU, ReLU, Sigmoid, Tanh

# pooling
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

# normalization
from .normalization import BatchNorm1d, BatchNorm2d

# regularization
from .dropout import Dropout

# resampling
# padding

__all__ = [
    "Layer", "Sequential", "Residual",
    # convolution
    "Conv2d",
    # linear and shape
    "Linear", "Flatten",
    # activations
    "ReLU", "LeakyReLU", "Sigmoid", "Tanh",
    # pooling
    "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
    # normalization
    "BatchNorm1d", "BatchNorm2d",
    # regularization
    "Dropout",
    # resampling
    # padding
]
