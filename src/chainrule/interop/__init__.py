"""Moving models between chainrule and other tools: PyTorch modules and ONNX files.

- ``from_torch(module)`` / ``to_torch(model)``: ``torch.nn`` <-> chainrule, weights,
  buffers, modes and dtypes included (needs ``chainrule[torch]``).
- ``export_onnx(model, path, input_shape)``: an ONNX file for inference, dynamic batch
  (needs ``chainrule[onnx]``).
- ``from_onnx(path_or_model)``: an ONNX model as a trainable ``Graph`` (needs
  ``chainrule[onnx]``).
- ``optimizer_state_to_torch(state_dict)`` / ``optimizer_state_from_torch(state_dict)``:
  an optimizer's state dict for its twin on the other side, to continue a run there.

Neither torch nor onnx is imported until one of these functions is called.
"""

from ._common import UnsupportedModuleError
from .onnx import export_onnx
from .onnx_import import UnsupportedOnnxError, from_onnx
from .optim_state import optimizer_state_from_torch, optimizer_state_to_torch
from .torch import from_torch, to_torch

__all__ = ["from_torch", "to_torch", "export_onnx", "from_onnx", "UnsupportedModuleError",
           "UnsupportedOnnxError",
           "optimizer_state_to_torch", "optimizer_state_from_torch"]
