"""Checkpoints: a model, optionally its optimizer, and metadata in one ``.safetensors`` file.

Layout of the file (a plain safetensors file, readable by ``safetensors.numpy.load_file``
and ``safetensors.torch.load_file``):

- tensors ``model.<name>``: the model's ``state_dict()``, so stripping ``model.`` gives
  the keys of the equivalent ``torch.nn`` module (``"0.weight"``, ``"1.running_mean"``);
- tensors ``optimizer.state.<index>.<name>``: the optimizer's per-parameter arrays
  (e.g. Adam's ``exp_avg``), indexed as in ``Optimizer.state_dict()``;
- the header's ``__metadata__`` (str -> str):

  ====================  ==============================================================
  ``format``            ``chainrule-checkpoint`` (plain text, not JSON: easy to grep)
  ``version``           ``1``
  ``architecture``      JSON: ``serialize.describe(model)``
  ``optimizer``         JSON, only with an optimizer: ``{"type": class name,
                        "param_groups": [...], "scalar_state": {index: {name: number}}}``
  ``metadata``          JSON: the keyword arguments given to ``save``
  ====================  ==============================================================

Loading never runs code from the file: the architecture is rebuilt through
``serialize.build``'s allow-list, and tensors are raw little-endian arrays. Nor does a
file make it allocate more than the file holds: the shapes and dtypes the architecture
implies are checked against the tensor headers before the model is built.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from ._files import write_atomically
from ._state_shapes import implied_state
from .layers.base import Layer
from .serialize import build, describe

__all__ = ["save", "load", "load_checkpoint", "Checkpoint", "CheckpointError"]

FORMAT = "chainrule-checkpoint"
VERSION = 1
# safetensors' own limit; checked before the header is parsed, so a corrupt length
# cannot make us allocate or parse gigabytes.
MAX_HEADER_BYTES = 100_000_000
MODEL_PREFIX = "model."
OPTIMIZER_PREFIX = "optimizer.state."


class CheckpointError(ValueError):
    """A file that is not a readable chainrule checkpoint (truncated, corrupt, foreign,
    or with tensors that do not fit its architecture). The message names the file."""


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns.

    Attributes:
        model: the rebuilt model with its saved weights, in training mode.
        optimizer_state: ``{"state": ..., "param_groups": ...}`` for
            ``Optimizer.load_state_dict`` of an optimizer built over the same parameters,
            or None when none was saved.
        optimizer_type: the saved optimizer's class name (e.g. ``"Adam"``), or None.
        metadata: the keyword arguments given to ``save``.
    """

    model: Layer
    optimizer_state: dict[str, Any] | None = None
    optimizer_type: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- saving

def save(model: Layer, path: str | os.PathLike, optimizer: Any = None, **metadata: Any) -> Path:
    """Write ``model`` (architecture and weights), optionally ``optimizer``'s state, and
    ``metadata`` to ``path`` as one safetensors file; returns the path.

    The write is atomic: the bytes go to a temporary file in the same directory, are
    flushed and fsync'ed, then ``os.replace`` puts it in place and the directory is
    fsync'ed. If anything fails, an existing file at ``path`` is left untouched and the
    temporary file is removed.

    Args:
        model: a model made of chainrule's built-in layers.
        path: the file to write (conventionally ``*.safetensors``).
        optimizer: an optimizer whose ``state_dict()`` is saved, or None.
        **metadata: JSON-serializable values (numbers, strings, lists, dicts; NumPy
            scalars become Python numbers; NaN and infinity are refused, as JSON has
            no such values).

    Raises:
        TypeError: a metadata value is not JSON-serializable (the key is named), or the
            model holds a layer type ``describe`` does not know.
        ValueError: the model's state does not match its description (e.g. one
            parameter was cast to another dtype alone), so the file could not be loaded.
    """
    path = Path(path)
    if not path.parent.is_dir():  # else the error would name our temporary file
        raise FileNotFoundError(errno.ENOENT, f"save: no directory {path.parent} to write "
                                f"{path.name} into", str(path.parent))
    header = {"format": FORMAT, "version": str(VERSION)}
    for key, value in metadata.items():  # check each first, so the error can name it
        _to_json(value, f"save: metadata {key!r}")
    header["metadata"] = _to_json(metadata, "save: metadata")

    architecture = describe(model)
    state = model.state_dict()
    _check_matches(build(architecture).state_dict(), state, "save: the model")
    header["architecture"] = _to_json(architecture, "save: architecture")
    # safetensors writes raw memory: each array must be C-contiguous.
    tensors = {MODEL_PREFIX + k: _c_order(v) for k, v in state.items()}

    if optimizer is not None:
        opt_tensors, opt_header = _pack_optimizer(optimizer)
        tensors.update(opt_tensors)
        header["optimizer"] = _to_json(opt_header, "save: optimizer state")

    write_atomically(path, safetensors.numpy.save(tensors, metadata=header))
    return path


def _c_order(array: np.ndarray) -> np.ndarray:
    # Not np.ascontiguousarray: it turns 0-d arrays (num_batches_tracked) into 1-d ones.
    return np.asarray(array, order="C")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, default=_json_default, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as err:
        raise TypeError(f"{what} is not JSON-serializable: {err}") from err


def _pack_optimizer(optimizer: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (arrays) and a JSON header (rest)."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, np.ndarray] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, np.ndarray):
                tensors[f"{OPTIMIZER_PREFIX}{index}.{name}"] = _c_order(value)
            else:
                _to_json(value, f"save: optimizer state[{index!r}][{name!r}]")
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"type": type(optimizer).__name__,
                     "param_groups": state_dict["param_groups"], "scalar_state": scalars}


# ---------------------------------------------------------------------- loading

def load(path: str | os.PathLike) -> Layer:
    """The model saved in ``path``, with its weights, in training mode (like a freshly
    built model: call ``.eval()`` for inference). See ``load_checkpoint``."""
    return load_checkpoint(path).model


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by ``save``.

    The architecture is rebuilt from the header and the weights loaded strictly: every
    tensor must exist with exactly the dtype and shape of the rebuilt model's. The
    model is returned in training mode.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated or corrupt, has a header longer than
            ``MAX_HEADER_BYTES``, is a safetensors file of another program, or holds
            tensors that do not fit its architecture (the key is named).
    """
    path = Path(path)
    data = _read(path)
    meta = _chainrule_metadata(data, path)
    architecture = _from_json(meta, "architecture", path)
    # Before anything is allocated: the state the architecture implies must be what the
    # file holds, so a header that asks for huge layers costs nothing (see _state_shapes).
    _check_tensor_headers(architecture, data, path)

    try:  # checks every offset against the file size: catches truncated tensor data
        tensors = safetensors.numpy.load(data)
    except (SafetensorError, KeyError, ValueError, TypeError) as err:
        # KeyError: a dtype safetensors knows but its NumPy reader does not (e.g. BF16).
        raise CheckpointError(f"{path}: corrupt tensor data: {err!r}") from err

    try:
        model = build(architecture)
    except (ValueError, MemoryError) as err:  # MemoryError: absurd sizes in a corrupt file
        raise CheckpointError(f"{path}: the architecture cannot be built: "
                              f"{str(err) or type(err).__name__}") from err

    model_state = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items()
                   if k.startswith(MODEL_PREFIX)}
    optimizer_tensors = {k[len(OPTIMIZER_PREFIX):]: v for k, v in tensors.items()
                         if k.startswith(OPTIMIZER_PREFIX)}
    stray = [k for k in tensors if not k.startswith((MODEL_PREFIX, OPTIMIZER_PREFIX))]
    if stray:
        raise CheckpointError(f"{path}: unexpected tensor(s) {', '.join(sorted(stray))}")
    try:
        _check_matches(model.state_dict(), model_state, "the file", prefix=MODEL_PREFIX)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err
    model.load_state_dict(model_state)

    optimizer_state, optimizer_type = None, None
    if "optimizer" in meta:
        optimizer_type, optimizer_state = _unpack_optimizer(
            _from_json(meta, "optimizer", path), optimizer_tensors, path)
    elif optimizer_tensors:
        raise CheckpointError(f"{path}: optimizer tensors but no 'optimizer' header entry")

    metadata = _from_json(meta, "metadata", path) if "metadata" in meta else {}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: 'metadata' must be a JSON object, got "
                              f"{type(metadata).__name__}")
    return Checkpoint(model, optimizer_state, optimizer_type, metadata)


_SAFETENSORS_DTYPES = {"F16": "float16", "F32": "float32", "F64": "float64", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
                       "BOOL": "bool", "BF16": "bfloat16"}


def _check_tensor_headers(architecture: Any, data: bytes, path: Path) -> None:
    """Compare the dtypes and shapes ``architecture`` implies with the file's tensor
    headers (read without loading any tensor); raise CheckpointError naming every
    mismatch. A description it cannot judge is left to ``build``."""
    expected = implied_state(architecture)
    if expected is None:
        return
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")].decode("utf-8"))
    stored: dict[str, tuple[str, tuple[int, ...]]] = {}
    for key, entry in header.items():
        if key.startswith(MODEL_PREFIX) and isinstance(entry, dict):
            shape = entry.get("shape")
            if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
                raise CheckpointError(f"{path}: corrupt header: tensor {key} has shape {shape!r}")
            stored[key[len(MODEL_PREFIX):]] = (
                _SAFETENSORS_DTYPES.get(entry.get("dtype"), str(entry.get("dtype"))), tuple(shape))
    problems = [f"missing {MODEL_PREFIX}{k}" for k in expected if k not in stored]
    problems += [f"unexpected {MODEL_PREFIX}{k}" for k in stored if k not in expected]
    for key, (dtype, shape) in expected.items():
        got = stored.get(key)
        if got is not None and got != (dtype, shape):
            problems.append(f"{MODEL_PREFIX}{key} is {got[0]} {got[1]}, the architecture "
                            f"needs {dtype} {shape}")
    if problems:
        raise CheckpointError(f"{path}: the file does not match the architecture (checked "
                              "before building it): " + "; ".join(problems))


def _read(path: Path) -> bytes:
    """The whole file, after checking the 8-byte header length against the file size."""
    try:
        f = open(path, "rb")
    except FileNotFoundError as err:
        raise FileNotFoundError(errno.ENOENT, f"no checkpoint file at {path}", str(path)) from err
    with f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: truncated: {size} bytes, less than the 8-byte header "
                                  "length that starts a safetensors file")
        header_len = int.from_bytes(prefix, "little")  # u64, little-endian
        if header_len > MAX_HEADER_BYTES:
            raise CheckpointError(f"{path}: header length {header_len} bytes exceeds the limit "
                                  f"of {MAX_HEADER_BYTES} bytes; the file is corrupt or not a "
                                  "safetensors file")
        if 8 + header_len > size:
            raise CheckpointError(f"{path}: header length {header_len} bytes runs past the end "
                                  f"of the {size}-byte file: truncated or corrupt")
        return prefix + f.read()


def _chainrule_metadata(data: bytes, path: Path) -> dict[str, str]:
    """Parse the JSON header and return its ``__metadata__``, which must carry our tag."""
    header_len = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8:8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: corrupt header (not valid UTF-8 JSON): {err}") from err
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt header: expected a JSON object, got "
                              f"{type(header).__name__}")
    meta = header.get("__metadata__")
    tag = meta.get("format") if isinstance(meta, dict) else None
    if tag != FORMAT:
        found = "no format tag" if tag is None else f"format {tag!r}"
        raise CheckpointError(
            f"{path}: not a chainrule checkpoint ({found} in the header's __metadata__, "
            f"expected {FORMAT!r}); if it is another program's safetensors file, read its "
            "tensors with safetensors.numpy.load_file")
    if not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path}: corrupt header: __metadata__ values must be strings")
    version = meta.get("version")
    if version != str(VERSION):
        newer = version is not None and version.isdigit() and int(version) > VERSION
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}, this chainrule reads version "
            f"{VERSION}" + ("; upgrade chainrule to read it" if newer else ""))
    if "architecture" not in meta:
        raise CheckpointError(f"{path}: corrupt header: no 'architecture' entry")
    return meta


def _from_json(meta: Mapping[str, str], key: str, path: Path) -> Any:
    try:
        return json.loads(meta[key])
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: corrupt header entry {key!r}: {err}") from err


def _check_matches(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray],
                   what: str, prefix: str = "") -> None:
    """Raise ValueError naming every key of ``actual`` that is missing, unexpected, or of
    another dtype or shape than in ``expected``."""
    problems = [f"missing {prefix}{k}" for k in expected if k not in actual]
    problems += [f"unexpected {prefix}{k}" for k in actual if k not in expected]
    for key, want in expected.items():
        got = actual.get(key)
        if got is not None and (got.dtype != want.dtype or got.shape != want.shape):
            problems.append(f"{prefix}{key} is {got.dtype} {tuple(got.shape)}, the "
                            f"architecture needs {want.dtype} {tuple(want.shape)}")
    if problems:
        raise ValueError(f"{what} does not match the architecture: " + "; ".join(problems))


def _unpack_optimizer(header: Any, tensors: Mapping[str, np.ndarray], path: Path
                      ) -> tuple[str, dict[str, Any]]:
    """Rebuild ``{"state": {index: {name: value}}, "param_groups": [...]}``."""
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: corrupt optimizer entry: {why}")

    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise bad("expected an object with a 'type' string")
    groups = header.get("param_groups")
    scalar_state = header.get("scalar_state", {})
    if not isinstance(groups, list) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list)
            and all(isinstance(i, int) and not isinstance(i, bool) for i in g["params"])
            for g in groups):
        raise bad("'param_groups' must be a list of objects with a list of int 'params'")
    if not isinstance(scalar_state, dict) or not all(
            isinstance(v, dict) for v in scalar_state.values()):
        raise bad("'scalar_state' must map parameter indices to objects")

    known = {i for g in groups for i in g["params"]}
    state: dict[int, dict[str, Any]] = {}

    def entry(index_text: str, where: str) -> dict[str, Any]:
        if not index_text.isdigit() or int(index_text) not in known:
            raise bad(f"{where}: {index_text!r} is not the index of a parameter in param_groups")
        return state.setdefault(int(index_text), {})

    for index_text, values in scalar_state.items():  # scalars first: "step" leads, as in torch
        entry(index_text, "scalar_state").update(values)
    for key, array in tensors.items():
        index_text, _, name = key.partition(".")
        slot = entry(index_text, OPTIMIZER_PREFIX + key)
        if not name or name in slot:
            raise bad(f"tensor {OPTIMIZER_PREFIX}{key} has no name or repeats a scalar")
        slot[name] = np.array(array)  # a writable copy of the read-only buffer view

    # JSON has no tuples; hyper-parameters that are sequences (Adam's betas) are tuples
    # in every optimizer, so they come back as tuples.
    param_groups = [{k: (v if k == "params" or not isinstance(v, list) else tuple(v))
                     for k, v in g.items()} for g in groups]
    return header["type"], {"state": dict(sorted(state.items())), "param_groups": param_groups}
