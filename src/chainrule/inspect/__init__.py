"""Make backpropagation visible: statistics recorded during training, saliency and
max-pool routing maps, an HTML report, and a step-by-step explanation of one step.

- ``Recorder``: per-layer activation and gradient statistics of a training run, with
  dead-unit and vanishing/exploding-gradient flags (``recorder.py``, ``stats.py``).
- ``saliency``, ``saliency_map``, ``maxpool_routing``: input gradients computed by the
  model's own backward pass (``saliency.py``).
- ``build_report``, ``inspect_run``: ``report.html`` and its PNGs (``report.py``).
- ``explain``: one training step told layer by layer (``explain.py``).

The command line (``chainrule inspect``, ``chainrule explain``, ``train --inspect``) is
in ``cli_inspect.py``.
"""

from .explain import Derivative, derivative_of, explain
from .recorder import STATS_FILENAME, Recorder, load_stats
from .report import build_report, inspect_run
from .saliency import PoolRouting, maxpool_routing, saliency, saliency_map

__all__ = [
    "Recorder", "load_stats", "STATS_FILENAME", "saliency", "saliency_map",
    "maxpool_routing", "PoolRouting", "build_report", "inspect_run", "explain",
    "derivative_of", "Derivative",
]
