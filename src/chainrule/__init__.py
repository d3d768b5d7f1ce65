"""chainrule: convolutional neural networks with every backward pass written by hand."""

# Imported first for its one side effect: glibc malloc thresholds that make short-lived
# arrays cheap (see _allocator; CHAINRULE_MALLOC_TUNING=0 turns it off).
from . import _allocator  # noqa: F401
from . import functional, optim
from . import models
from . import data
from . import callbacks
from .checkpoint import Checkpoint, CheckpointError, load, load_checkpoint, save
from .gradcheck import gradcheck
# interop imports torch/onnx only inside its functions, so this stays cheap.
from . import interop
from .interop.onnx import export_onnx
# chainrule.inspect: the package's name shadows the standard library's only as an
# attribute of chainrule (absolute `import inspect` still gets the stdlib).
from . import inspect
# Every layer class, by the names of chainrule.layers.__all__.
from .layers import *  # noqa: F401,F403
from . import layers as _layers
from .layers import Input, SymbolicTensor
# Every loss class, by the names of chainrule.losses.__all__.
from .losses import *  # noqa: F401,F403
from . import losses as _losses
from .parameter import Parameter
from . import init, utils
from . import distributed
from .random import manual_seed
from .train import History, Interrupted, NonFiniteLossError, evaluate, fit, predict

__version__ = "0.1.0"

__all__ = [
    "Parameter", *_layers.__all__, "Input", "SymbolicTensor", *_losses.__all__, "gradcheck",
    "fit", "evaluate", "predict", "History", "Interrupted", "NonFiniteLossError", "callbacks",
    "functional", "optim",
    "models", "data", "save", "load", "load_checkpoint", "Checkpoint", "CheckpointError",
    "interop", "export_onnx", "inspect", "init", "utils", "manual_seed", "distributed",
]
