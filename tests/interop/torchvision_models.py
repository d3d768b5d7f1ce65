"""torchvision's classification architectures for the parity tests, with no weights and
without torchvision's compiled operators.

The torchvision wheel pip picks for torch==2.13.0 on CPU-only machines is a CUDA build
(0.28.0): ``import torchvision`` loads its compiled extension, registers the operators'
fake kernels, and fails with "operator torchvision::nms does not exist". The
classification models are pure Python. ``builder(name)`` therefore imports
``torchvision.models`` normally where that works (a matching build), and otherwise puts
empty packages in ``sys.modules`` for ``torchvision``, ``torchvision.models`` and
``torchvision.ops`` (so that their ``__init__`` files, which import the compiled parts,
never run) and imports the model files themselves from the installed package. Where
neither works it skips the test, saying why.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Callable

import pytest

# builder name -> the module of torchvision.models that defines it
MODULES = {"resnet18": "resnet", "densenet121": "densenet", "mobilenet_v2": "mobilenetv2",
           "squeezenet1_1": "squeezenet"}


def _import_normally() -> str | None:
    """None on success, else why ``torchvision.models`` does not import."""
    try:
        importlib.import_module("torchvision.models")
    except Exception as err:   # RuntimeError from the operator registrations, ImportError
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]   # a half-imported package would be found again
        return f"{type(err).__name__}: {err}"
    return None


def _import_by_file() -> None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("torchvision is not installed (pip install torchvision)")
    root = spec.submodule_search_locations[0]
    for package, folder in (("torchvision", root), ("torchvision.models", f"{root}/models"),
                            ("torchvision.ops", f"{root}/ops")):
        stub = types.ModuleType(package)
        stub.__path__ = [folder]   # a package: its submodules import from the real files
        sys.modules[package] = stub


_FAILED_NORMALLY: list[str] = []   # why the normal import failed, once it did


def builder(name: str) -> Callable:
    """torchvision's ``name`` builder (``resnet18``, ...), or a skip naming the reason."""
    module = f"torchvision.models.{MODULES[name]}"
    try:
        if "torchvision.models" not in sys.modules:
            why = _import_normally()
            if why is not None:
                _FAILED_NORMALLY.append(why)
                _import_by_file()
        return getattr(importlib.import_module(module), name)
    except Exception as err:
        for key in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[key]
        normally = f" ({_FAILED_NORMALLY[-1]})" if _FAILED_NORMALLY else ""
        pytest.skip(f"torchvision's models do not import{normally}, nor by file: "
                    f"{type(err).__name__}: {err}")
