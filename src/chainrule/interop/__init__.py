"""Moving models between chainrule and other tools: PyTorch modules and ONNX files.

- ``from_torch(module)`` / ``to_torch(model)``: ``torch.nn`` <-> chainrule, weights,
  buffers, modes and dtypes included (needs ``chainrule[torch]``).
- ``export_onnx(model, path, input_shape)``: an ONNX file for inference, dynamic batch
  (needs ``chainrule[onnx]``).

Neither torch nor onnx is imported until one of these functions is called.
"""

from ._common import UnsupportedModuleError
from .onnx import export_onnx
from .torch import from_torch, to_torch

__all__ = ["from_torch", "to_torch", "export_onnx", "UnsupportedModuleError"]
