"""All layers."""

from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .base import Layer
from .container import Residual, Sequential
from .conv import Conv2d
from .dropout import Dropout
from .linear import Flatten, Linear
from .normalization import BatchNorm1d, BatchNorm2d
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

__all__ = [
    "Layer", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Linear", "Flatten",
    "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Dropout", "BatchNorm1d", "BatchNorm2d",
    "Sequential", "Residual",
]
