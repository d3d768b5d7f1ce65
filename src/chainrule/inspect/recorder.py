"""Recorder: per-layer, per-step statistics of a training run, read off the real passes.

The recorder hooks each leaf layer's ``forward`` and ``backward`` (see ``_hooks``) and,
optionally, the optimizer's ``step``. It computes its statistics from the arrays those
calls produce anyway, so recording costs no extra forward or backward pass, and it
never writes into the model: training gives bitwise the same weights with or without
it. Detached, nothing of it remains on the model.

Usage::

    recorder = Recorder().attach(model, optimizer)
    fit(model, loss_fn, optimizer, (X, y), on_batch=recorder.on_batch)
    recorder.detach()
    recorder.save(run_dir)               # run_dir/inspect.json

Without an optimizer, call ``recorder.on_step()`` after each backward to close a step.

Graphs. A layer that one forward pass calls several times (a layer a ``Graph`` calls at
two nodes, or one inside a graph that is itself called twice) gets one entry per call,
named as the graph names its nodes: ``name`` for the first call, ``name@1``, ... for the
later ones. Forward calls are matched to entries in the order they run; backward calls
in reverse order, since backward runs the nodes in reverse. A layer of several inputs or
outputs (``Concat``, ``Split``) is recorded over all of them: the activation statistics
over the elements of all its outputs, ``grad_input_norm`` over all its input gradients.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from ..callbacks import Callback
from ..layers.base import Layer
from . import _hooks
from .stats import (DEFAULT_RATIO_THRESHOLD, activation_kind, activation_stats, fired_channels,
                    gradient_flags, gradient_ratio, l2_norm)

STATS_FILENAME = "inspect.json"
FORMAT = "chainrule-inspect"
VERSION = 1

_ACTIVATION_KEYS = ("mean", "std", "zero_fraction", "dead_units", "saturation")
_LAYER_KEYS = _ACTIVATION_KEYS + ("grad_input_norm",)
_PARAM_KEYS = ("grad_norm", "weight_norm", "update_ratio")


class Recorder(Callback):
    """Collects, per leaf layer and per recorded training step:

    - activations (of the layer's output): ``mean``, ``std``; for ReLU ``zero_fraction``
      and ``dead_units`` (the number of channels silent on the whole batch); for
      Sigmoid/Tanh ``saturation`` (definitions in ``chainrule.inspect.stats``);
    - ``grad_input_norm``: ||dL/dx|| of the layer's input gradient;

    per parameter: ``grad_norm`` ||dL/dw|| (just before the optimizer step),
    ``weight_norm`` ||w|| and ``update_ratio`` ||Δw|| / ||w|| of the optimizer step
    (only with an optimizer attached); and per step ``gradient_ratio`` =
    ||dL/dx|| at the first leaf / at the last leaf. Missing values are None.

    Args:
        every: record one step in ``every`` (the others cost one flag check per call).
        dead_window: ``flags()`` reports a ReLU channel as dead when it fired on none of
            the last ``dead_window`` recorded batches (1: dead on the last batch).
        ratio_threshold: ``flags()`` reports vanishing gradients when the ratio is below
            ``1 / ratio_threshold`` and exploding ones when above ``ratio_threshold``.

    Only calls in training mode are recorded, so evaluation passes and saliency maps
    computed meanwhile do not mix into the statistics.

    It is a ``chainrule.callbacks.Callback``: in ``fit(..., callbacks=[recorder])`` it
    attaches itself to the model and optimizer when training begins (unless already
    attached), labels each recorded step with its epoch and loss, and detaches at the end
    if it attached itself (``save`` it afterwards).
    """

    def __init__(self, every: int = 1, dead_window: int = 10,
                 ratio_threshold: float = DEFAULT_RATIO_THRESHOLD) -> None:
        for name, value in (("every", every), ("dead_window", dead_window)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Recorder: {name} must be an int >= 1, got {value!r}")
        if not ratio_threshold > 1.0:
            raise ValueError(f"Recorder: ratio_threshold must be > 1, got {ratio_threshold!r}")
        self.every = every
        self.dead_window = dead_window
        self.ratio_threshold = float(ratio_threshold)
        self._hooks: list[_hooks.MethodHook] = []
        self._optimizer: Any = None
        self._optimizer_previous_step: Any = None
        self._model: Layer | None = None
        self._params: list[tuple[str, Any]] = []
        self._step = 0                     # optimizer steps seen while attached
        self._pending_layers: dict[str, dict[str, Any]] = {}
        self._pending_fired: dict[str, np.ndarray] = {}
        # Calls seen this step of each layer called several times per pass (see _call_name).
        self._calls: dict[tuple[str, str], int] = {}
        # Per ReLU layer, the fired_channels masks of the last dead_window recorded steps.
        self._fired: dict[str, deque[np.ndarray]] = {}
        self._pending_params: dict[str, dict[str, float | None]] = {}
        self.records: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "every": every,
            "dead_window": dead_window, "ratio_threshold": self.ratio_threshold,
            "layers": [], "params": [], "ratio_layers": [None, None],
            "step": [], "epoch": [], "loss": [], "gradient_ratio": [],
            "layer_stats": {}, "param_stats": {}, "dead_channels": {},
        }

    # ------------------------------------------------------------------ attach / detach
    @property
    def attached(self) -> bool:
        return self._model is not None

    def attach(self, model: Layer, optimizer: Any = None) -> "Recorder":
        """Start watching ``model`` (and ``optimizer``, whose ``step`` then closes each
        recorded step and gives the update ratios). Returns the recorder."""
        if self.attached:
            raise RuntimeError("Recorder.attach: already attached; call detach() first")
        if not isinstance(model, Layer):
            raise TypeError(f"Recorder.attach: expected a Layer, got {type(model).__name__}")
        counts = _hooks.call_counts(model)
        calls = [(layer, _hooks.call_names(name, max(counts.get(id(layer), 1), 1)))
                 for name, layer in _hooks.leaf_layers(model)]
        self._describe(model, [(n, layer) for layer, names in calls for n in names])
        for layer, names in calls:
            kind = activation_kind(layer)
            self._hooks.append(_hooks.install(layer, "forward", self._forward_hook(names, kind)))
            # dx of a layer that could skip it (the first) is computed on recorded steps only
            self._hooks.append(_hooks.install(layer, "backward", self._backward_hook(names),
                                              wants_result=lambda: self.recording))
        self._model = model
        self._params = list(model.named_parameters())
        if optimizer is not None:
            self._optimizer = optimizer
            self._optimizer_previous_step = optimizer.__dict__.get("step")
            optimizer.step = self._wrap_step(optimizer.step)
        return self

    def detach(self) -> "Recorder":
        """Stop watching: every hook is removed, the model and optimizer are as before."""
        for hook in reversed(self._hooks):
            _hooks.remove(hook)
        self._hooks = []
        if self._optimizer is not None:
            if self._optimizer_previous_step is None:
                del self._optimizer.step
            else:
                self._optimizer.step = self._optimizer_previous_step
        self._optimizer = self._optimizer_previous_step = None
        self._model = None
        return self

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.attached:
            self.detach()

    def _describe(self, model: Layer, leaves: list[tuple[str, Layer]]) -> None:
        """Fill the layer and parameter tables (kept across re-attachment to the same
        architecture, so one file can span several ``fit`` calls)."""
        layers = [{"name": n, "type": type(m).__name__, "kind": activation_kind(m)}
                  for n, m in leaves]
        params = [{"name": n, "shape": list(p.shape)} for n, p in model.named_parameters()]
        if self.records["layers"] and (layers != self.records["layers"]
                                       or params != self.records["params"]):
            raise ValueError("Recorder.attach: this recorder holds statistics of another "
                             "architecture; use a new Recorder")
        self.records["layers"], self.records["params"] = layers, params
        self.records["ratio_layers"] = [leaves[0][0], leaves[-1][0]]
        for entry in layers:
            self.records["layer_stats"].setdefault(entry["name"], {k: [] for k in _LAYER_KEYS})
        for entry in params:
            self.records["param_stats"].setdefault(entry["name"], {k: [] for k in _PARAM_KEYS})

    # ------------------------------------------------------------------ hooks
    @property
    def recording(self) -> bool:
        """Whether the current step is one that gets recorded."""
        return self.attached and self._step % self.every == 0

    def _call_name(self, names: list[str], direction: str) -> str:
        """The entry of this call of a layer called ``len(names)`` times per pass: the
        k-th forward call of the step is ``names[k]``, the k-th backward call
        ``names[-1 - k]`` (modulo the count, should a step run more passes)."""
        if len(names) == 1:
            return names[0]
        key = (direction, names[0])
        k = self._calls.get(key, 0)
        self._calls[key] = k + 1
        k %= len(names)
        return names[k] if direction == "forward" else names[-1 - k]

    def _forward_hook(self, names: list[str], kind: str):
        def after_forward(layer: Layer, x: np.ndarray, y: np.ndarray) -> None:
            if not (layer.training and self.recording):
                return
            name = self._call_name(names, "forward")
            y = _hooks.joined(y)
            fired = fired_channels(y) if kind == "relu" else None
            self._pending_layers.setdefault(name, {}).update(activation_stats(y, kind, fired))
            if fired is not None:
                self._pending_fired[name] = fired
        return after_forward

    def _backward_hook(self, names: list[str]):
        def after_backward(layer: Layer, grad: np.ndarray, dx: np.ndarray) -> None:
            if layer.training and self.recording:
                name = self._call_name(names, "backward")
                self._pending_layers.setdefault(name, {})["grad_input_norm"] = l2_norm(
                    _hooks.joined(dx))
        return after_backward

    def _wrap_step(self, step):
        def recorded_step(*args: Any, **kwargs: Any) -> Any:
            if not self.recording:
                result = step(*args, **kwargs)
                self._step += 1
                return result
            self._read_gradients()
            before = {name: p.data.copy() for name, p in self._params}
            result = step(*args, **kwargs)
            for name, p in self._params:
                entry = self._pending_params[name]
                w_norm = entry["weight_norm"]  # of the weights before this step
                delta = l2_norm(p.data - before[name])
                entry["update_ratio"] = delta / w_norm if w_norm > 0 else None
            self._commit()
            return result
        return recorded_step

    def _read_gradients(self) -> None:
        for name, p in self._params:
            self._pending_params[name] = {"grad_norm": l2_norm(p.grad),
                                          "weight_norm": l2_norm(p.data),
                                          "update_ratio": None}

    # ------------------------------------------------------------------ steps
    def on_step(self) -> None:
        """Close the current step (after backward) when no optimizer is attached; with
        one attached, its ``step()`` does this."""
        if not self.attached:
            raise RuntimeError("Recorder.on_step: not attached to a model")
        if self._optimizer is not None:
            raise RuntimeError("Recorder.on_step: the attached optimizer's step() closes "
                               "each step; do not call on_step as well")
        if self.recording:
            self._read_gradients()
            self._commit()
        else:
            self._step += 1

    def on_batch(self, epoch: int, step: int, loss: float) -> None:
        """``fit``'s ``on_batch`` callback: labels the step just recorded with its epoch
        and loss (a no-op after a step that was not recorded)."""
        rec = self.records
        if rec["step"] and rec["step"][-1] == self._step - 1:
            rec["epoch"][-1] = int(epoch)
            rec["loss"][-1] = float(loss) if math.isfinite(loss) else None

    # ------------------------------------------------------------------ as a fit callback
    def on_train_begin(self, logs: Any = None) -> None:
        self._attached_by_fit = not self.attached
        if self._attached_by_fit:
            self.attach(self.loop.model, self.loop.optimizer)

    def on_batch_end(self, batch: int, logs: Any = None) -> None:
        self.on_batch(self.loop.epoch, batch, logs["loss"])

    def on_train_end(self, logs: Any = None) -> None:
        if getattr(self, "_attached_by_fit", False) and self.attached:
            self.detach()
        self._attached_by_fit = False

    def _commit(self) -> None:
        rec = self.records
        for entry in rec["layers"]:
            name = entry["name"]
            got = self._pending_layers.get(name, {})
            for key in _LAYER_KEYS:
                rec["layer_stats"][name][key].append(_finite(got.get(key)))
        for entry in rec["params"]:
            got = self._pending_params.get(entry["name"], {})
            for key in _PARAM_KEYS:
                rec["param_stats"][entry["name"]][key].append(_finite(got.get(key)))
        first, last = rec["ratio_layers"]
        ratio = gradient_ratio(self._pending_layers.get(first, {}).get("grad_input_norm"),
                               self._pending_layers.get(last, {}).get("grad_input_norm"))
        rec["gradient_ratio"].append(_finite(ratio))
        for name, fired in self._pending_fired.items():
            window = self._fired.setdefault(name, deque(maxlen=self.dead_window))
            if window and window[-1].shape != fired.shape:
                window.clear()  # the layer saw another input size: channels differ
            window.append(fired)
            ever = np.logical_or.reduce(list(window))
            rec["dead_channels"][name] = {"dead": np.flatnonzero(~ever).tolist(),
                                          "of": int(ever.size), "batches": len(window)}
        rec["step"].append(self._step)
        rec["epoch"].append(None)
        rec["loss"].append(None)
        self._pending_layers, self._pending_params, self._pending_fired = {}, {}, {}
        self._calls = {}
        self._step += 1

    # ------------------------------------------------------------------ results
    def flags(self) -> dict[str, Any]:
        """Warnings as of the last recorded step: ``dead_units`` {ReLU layer name:
        indices of the channels that fired on none of the last ``dead_window`` recorded
        batches} (only layers with some), the ``gradient_ratio`` of that step and whether
        it means ``vanishing`` or ``exploding``."""
        return flags_of(self.records)

    def as_dict(self) -> dict[str, Any]:
        """Everything recorded, as plain lists and numbers (what ``save`` writes)."""
        return {**self.records, "steps_seen": self._step, "flags": self.flags()}

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Recorder":
        """A recorder holding the statistics saved in ``path`` (a file or run folder),
        to be attached again to the same architecture: a resumed run appends to it and
        counts its steps on from where the file ends."""
        data = load_stats(path)
        recorder = cls(every=data["every"], dead_window=data["dead_window"],
                       ratio_threshold=data["ratio_threshold"])
        recorder.records = {k: v for k, v in data.items() if k not in ("flags", "steps_seen")}
        recorder._step = int(data.get("steps_seen", 0))
        return recorder

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``as_dict()`` as JSON to ``path``, or to ``path/inspect.json`` when
        ``path`` is a directory; returns the file's path. No pickle anywhere."""
        path = Path(path)
        if path.is_dir():
            path = path / STATS_FILENAME
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(_rounded(self.as_dict()), allow_nan=False), encoding="utf-8")
        os.replace(tmp, path)  # a reader never sees half a file
        return path

    def summary(self) -> str:
        """A few lines for the end of a training run: the flags in words."""
        return format_flags(self.flags())


def _rounded(value: Any) -> Any:
    """Floats to 7 significant digits (about float32's precision, ample for statistics
    and plots), which halves the file against Python's 17."""
    if isinstance(value, float):
        return float(f"{value:.7g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: those (and missing values) become None."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def flags_of(records: dict[str, Any]) -> dict[str, Any]:
    """The flags of recorded statistics (a ``Recorder.records`` or a loaded file)."""
    ratios = records.get("gradient_ratio", [])
    ratio = ratios[-1] if ratios else None
    threshold = records.get("ratio_threshold", DEFAULT_RATIO_THRESHOLD)
    dead_info = records.get("dead_channels", {})
    dead = {name: info["dead"] for name, info in dead_info.items() if info["dead"]}
    return {"dead_units": dead, "channels": {n: dead_info[n]["of"] for n in dead},
            "batches": {n: dead_info[n]["batches"] for n in dead},
            "gradient_ratio": ratio, "threshold": threshold, **gradient_flags(ratio, threshold)}


def format_flags(flags: dict[str, Any]) -> str:
    """The flags as sentences."""
    lines = []
    for name, channels in flags["dead_units"].items():
        more = " ..." if len(channels) > 20 else ""
        lines.append(f"dead units: ReLU {name}: {len(channels)} of {flags['channels'][name]} "
                     f"channels fired on none of the last {flags['batches'][name]} recorded "
                     f"batches: {channels[:20]}{more}")
    ratio = flags["gradient_ratio"]
    if ratio is not None:
        verdict = ("VANISHING" if flags["vanishing"] else "EXPLODING" if flags["exploding"]
                   else "healthy")
        lines.append(f"gradient ratio ||dL/dx|| first layer / last layer = {ratio:.3g} "
                     f"({verdict}; flagged outside [1/{flags['threshold']:g}, "
                     f"{flags['threshold']:g}])")
    return "\n".join(lines) if lines else "no flags: nothing was recorded"


def load_stats(path: str | os.PathLike) -> dict[str, Any]:
    """Read a file written by ``Recorder.save`` (or the ``inspect.json`` in a run
    directory). Raises ValueError for a file of another format."""
    path = Path(path)
    if path.is_dir():
        path = path / STATS_FILENAME
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a chainrule inspect file (expected format {FORMAT!r})")
    if data.get("version") != VERSION:
        raise ValueError(f"{path}: inspect file version {data.get('version')!r}, this "
                         f"chainrule reads version {VERSION}")
    return data


def series(values: list[Any]) -> np.ndarray:
    """A recorded list as a float64 array, None -> NaN (for plotting)."""
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
