"""Untrusted checkpoints: the state an architecture implies is checked against the file's
tensor headers before the model is built, so a hostile header costs no memory."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

import chainrule as cr
from chainrule._state_shapes import implied_state
from chainrule.serialize import LAYER_TYPES, build, describe
from tests.test_serialize import every_layer_model


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_implied_state_is_what_build_makes_for_every_layer_type(dtype):
    model = every_layer_model(dtype)
    assert {type(m).__name__ for m in model.modules()} == set(LAYER_TYPES)
    actual = {k: (v.dtype.name, v.shape) for k, v in model.state_dict().items()}
    assert implied_state(describe(model)) == actual


def test_defaults_left_out_of_a_description_are_the_constructors():
    desc = {"type": "Sequential", "layers": [
        {"type": "Conv2d", "args": {"in_channels": 2, "out_channels": 4, "kernel_size": 3}},
        {"type": "BatchNorm2d", "args": {"num_features": 4}},
        {"type": "Linear", "args": {"in_features": 4, "out_features": 2, "bias": False}}]}
    assert implied_state(desc) == {k: (v.dtype.name, v.shape)
                                   for k, v in build(desc).state_dict().items()}


@pytest.mark.parametrize("desc", [{"type": "Graph", "args": {}}, {"type": "Linear", "args": 3},
                                  {"type": "Conv2d", "args": {"in_channels": "8"}}, [1]])
def test_a_description_it_cannot_judge_is_left_to_build(desc):
    assert implied_state(desc) is None


def _edit_architecture(path, edit) -> None:
    """Rewrite the header's architecture in place, as a hostile edit would (the tensor
    headers and data stay)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    architecture = json.loads(header["__metadata__"]["architecture"])
    edit(architecture)
    header["__metadata__"]["architecture"] = json.dumps(architecture)
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n:])


def test_a_hostile_header_asking_for_huge_layers_fails_fast_without_allocating(tmp_path):
    path = cr.save(cr.Sequential(cr.Flatten(), cr.Linear(4, 3)), tmp_path / "m.safetensors")

    def huge(arch):  # 3.6 GB of float32 weights, 13.8 GB to build with its initializer
        arch["layers"][1]["args"].update(in_features=30000, out_features=30000)

    _edit_architecture(path, huge)
    tracemalloc.start()
    try:
        with pytest.raises(cr.CheckpointError) as info:
            cr.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes allocated to refuse the file"
    message = str(info.value)
    assert str(path) in message and "checked before building it" in message
    assert "model.1.weight is float32 (3, 4), the architecture needs float32 (30000, 30000)" \
        in message


def test_a_dtype_or_a_missing_tensor_is_named_before_building(tmp_path):
    path = cr.save(cr.Sequential(cr.Conv2d(1, 2, 3), cr.BatchNorm2d(2)), tmp_path / "c.safetensors")
    _edit_architecture(path, lambda a: a["layers"][0]["args"].update(dtype="float64"))
    with pytest.raises(cr.CheckpointError, match=r"model.0.weight is float32 \(2, 1, 3, 3\), "
                                                 r"the architecture needs float64"):
        cr.load(path)
    path = cr.save(cr.Sequential(cr.Conv2d(1, 2, 3), cr.BatchNorm2d(2)), tmp_path / "d.safetensors")
    _edit_architecture(path, lambda a: a["layers"].append(
        {"type": "Linear", "args": {"in_features": 2, "out_features": 1}}))
    with pytest.raises(cr.CheckpointError, match="missing model.2.weight; missing model.2.bias"):
        cr.load(path)
