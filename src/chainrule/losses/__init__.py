"""Losses. ``loss(pred, target)`` returns a Python float (``reduction="mean"`` or
``"sum"``) or the per-element losses (``"none"``) and keeps what ``backward()`` needs;
``backward(grad=None)`` returns dLoss/dpred. Every backward is written by hand and
checked against torch.nn.

- classification: CrossEntropyLoss (logits), NLLLoss (log-probabilities)
- binary:         BCELoss (probabilities), BCEWithLogitsLoss (logits)
- regression:     MSELoss, L1Loss, SmoothL1Loss, HuberLoss
- divergence:     KLDivLoss
"""

from .base import Loss
from .binary import BCELoss, BCEWithLogitsLoss
from .classification import CrossEntropyLoss, NLLLoss
from .divergence import KLDivLoss
from .regression import HuberLoss, L1Loss, MSELoss, SmoothL1Loss

__all__ = ["Loss", "CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss", "MSELoss",
           "L1Loss", "SmoothL1Loss", "HuberLoss", "KLDivLoss"]
