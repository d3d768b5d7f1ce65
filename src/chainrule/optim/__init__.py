"""Optimizers and learning-rate schedulers with PyTorch's update rules."""

from chainrule.optim.adam import Adam, AdamW
from chainrule.optim.optimizer import Optimizer
from chainrule.optim.rmsprop import RMSprop
from chainrule.optim.scheduler import CosineAnnealingLR, LRScheduler, StepLR
from chainrule.optim.sgd import SGD

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "RMSprop",
    "LRScheduler",
    "StepLR",
    "CosineAnnealingLR",
]
