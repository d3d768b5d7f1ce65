"""checkpoint: save/load round trips (model, optimizer, metadata), atomic writes, refusal
of broken or foreign files, and reading our files with plain safetensors and PyTorch."""

from __future__ import annotations

import functools
import json
import operator
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from safetensors import safe_open

import chainrule as cr
from chainrule.checkpoint import MAX_HEADER_BYTES
from chainrule.optim import SGD, Adam, RMSprop
from chainrule.serialize import describe
from chainrule.train import train_step
from tests.helpers import rel_error
from tests.test_serialize import INPUT_SHAPE, every_layer_model, train_a_little


def small_model(seed: int = 0) -> cr.Sequential:
    return cr.Sequential(cr.Conv2d(1, 2, 3), cr.BatchNorm2d(2), cr.ReLU(), cr.Flatten(),
                         cr.Linear(8, 3)).reset_parameters(seed)


def assert_same_state(a: dict, b: dict) -> None:
    """Same keys, dtypes and bits."""
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


# ---------------------------------------------------------------------- round trips

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_model_round_trip(tmp_path, dtype):
    model = every_layer_model(dtype)
    train_a_little(model)
    path = cr.save(model, tmp_path / "model.safetensors")
    assert path == tmp_path / "model.safetensors"

    loaded = cr.load(path)
    assert loaded.training  # like a freshly built model
    assert describe(loaded) == describe(model)
    assert_same_state(loaded.state_dict(), model.state_dict())
    x = np.random.default_rng(3).standard_normal(INPUT_SHAPE)
    out = model.eval().forward(x)
    assert out.dtype == dtype
    np.testing.assert_array_equal(loaded.eval().forward(x), out)


def _batches(n: int, seed: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(INPUT_SHAPE), rng.integers(0, 5, INPUT_SHAPE[0]))
            for _ in range(n)]


def _seed_dropout(model: cr.Layer) -> None:
    for module in model.modules():
        if isinstance(module, cr.Dropout):
            module.rng = np.random.default_rng(7)


OPTIMIZERS = {
    "Adam": lambda params: Adam(params, lr=1e-2, betas=(0.8, 0.95), weight_decay=1e-3,
                                amsgrad=True),
    "SGD": lambda params: SGD(params, lr=0.05, momentum=0.9, nesterov=True),
    "RMSprop": lambda params: RMSprop(params, lr=1e-3, momentum=0.5, centered=True),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_state_round_trip_continues_bitwise(tmp_path, name):
    model = every_layer_model(np.float32)
    optimizer = OPTIMIZERS[name](model.parameters())
    batches = _batches(6)
    loss_fn = cr.CrossEntropyLoss()
    for x, y in batches[:3]:
        train_step(model, loss_fn, optimizer, x, y)

    ckpt = cr.load_checkpoint(cr.save(model, tmp_path / "c.safetensors", optimizer=optimizer))
    assert ckpt.optimizer_type == name
    saved = optimizer.state_dict()
    assert ckpt.optimizer_state["param_groups"] == saved["param_groups"]  # betas: a tuple
    assert list(ckpt.optimizer_state["state"]) == list(saved["state"])
    for index, entries in saved["state"].items():
        restored = ckpt.optimizer_state["state"][index]
        assert set(restored) == set(entries)
        for key, value in entries.items():
            assert type(restored[key]) is type(value)
            assert np.array_equal(restored[key], value), (index, key)

    resumed = ckpt.model
    resumed_optimizer = OPTIMIZERS[name](resumed.parameters())
    resumed_optimizer.load_state_dict(ckpt.optimizer_state)
    _seed_dropout(model)
    _seed_dropout(resumed)
    for x, y in batches[3:]:
        train_step(model, loss_fn, optimizer, x, y)
        train_step(resumed, loss_fn, resumed_optimizer, x, y)
    assert_same_state(resumed.state_dict(), model.state_dict())


def test_metadata_round_trip(tmp_path):
    path = cr.save(small_model(), tmp_path / "m.safetensors", epoch=3,
                   accuracy=np.float32(0.5), history={"loss": [1.5, 0.25]}, name="run",
                   note=None, best=True)
    ckpt = cr.load_checkpoint(path)
    assert ckpt.metadata == {"epoch": 3, "accuracy": 0.5, "history": {"loss": [1.5, 0.25]},
                             "name": "run", "note": None, "best": True}
    assert ckpt.optimizer_state is None and ckpt.optimizer_type is None
    assert cr.load_checkpoint(cr.save(small_model(), path)).metadata == {}


@pytest.mark.parametrize("key, value", [("bad", object()), ("loss", float("nan")),
                                        ("arr", np.zeros(2))])
def test_metadata_that_is_not_json_is_refused_by_key(tmp_path, key, value):
    path = tmp_path / "m.safetensors"
    with pytest.raises(TypeError, match=f"metadata '{key}'"):
        cr.save(small_model(), path, epoch=1, **{key: value})
    assert not path.exists()


def test_user_layer_type_cannot_be_saved(tmp_path):
    class Twice(cr.Layer):
        def forward(self, x):
            return 2 * x

    with pytest.raises(TypeError, match="Twice"):
        cr.save(cr.Sequential(cr.ReLU(), Twice()), tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_parameter_cast_on_its_own_is_refused_at_save(tmp_path):
    model = small_model()
    model[4].bias.to(np.float64)  # describe says float32: load would reject the file
    with pytest.raises(ValueError, match=r"4\.bias is float64"):
        cr.save(model, tmp_path / "m.safetensors")


# ---------------------------------------------------------------------- atomic writes

@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_save_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, failing):
    path = cr.save(small_model(seed=0), tmp_path / "m.safetensors")
    old = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("simulated failure mid-write")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError, match="simulated failure"):
        cr.save(small_model(seed=1), path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_save_replaces_an_existing_file(tmp_path):
    path = cr.save(small_model(seed=0), tmp_path / "m.safetensors")
    new = small_model(seed=1)
    cr.save(new, path)
    assert_same_state(cr.load(path).state_dict(), new.state_dict())
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


# ---------------------------------------------------------------------- broken files

def _header_file(header: bytes, length: int | None = None, tail: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header) if length is None else length) + header + tail


@pytest.mark.parametrize("content, message", [
    (b"", "truncated: 0 bytes"),
    (b"\x01\x02\x03", "truncated: 3 bytes"),
    (_header_file(b"{}", length=1000), "header length 1000 bytes runs past the end"),
    (_header_file(b"{}", length=MAX_HEADER_BYTES + 1), "exceeds the limit"),
    (_header_file(b"{}", length=2**63), "exceeds the limit"),
    (_header_file(b"{not json}"), "corrupt header"),
    (_header_file(b"\xff\xfe{}"), "corrupt header"),
    (_header_file(b"[1, 2]"), "expected a JSON object"),
    (safetensors.numpy.save({"w": np.zeros(3)}), "not a chainrule checkpoint .no format tag"),
    (safetensors.numpy.save({"w": np.zeros(3)}, metadata={"format": "pt"}),
     "not a chainrule checkpoint .format 'pt'"),
])
def test_corrupt_or_foreign_files_raise_checkpoint_error(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(cr.CheckpointError, match=message) as info:
        cr.load_checkpoint(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_file_or_directory_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        cr.load(tmp_path / "nowhere.safetensors")
    with pytest.raises(FileNotFoundError, match="no directory .*missing"):
        cr.save(small_model(), tmp_path / "missing" / "m.safetensors")


@pytest.mark.parametrize("keep", [20, -7])
def test_truncated_checkpoint_raises_checkpoint_error(tmp_path, keep):
    path = cr.save(small_model(), tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(cr.CheckpointError, match="runs past the end|corrupt tensor data"):
        cr.load(path)


def _rewrite(path: Path, tensors=None, meta=None) -> None:
    """Re-save ``path`` after ``tensors(dict)`` / ``meta(dict)`` edited its content."""
    arrays = {k: np.array(v) for k, v in safetensors.numpy.load_file(path).items()}
    with safe_open(path, framework="np") as f:
        header = f.metadata()
    if tensors:
        tensors(arrays)
    if meta:
        meta(header)
    path.write_bytes(safetensors.numpy.save(arrays, metadata=header))


def _set_type(header: dict) -> None:
    arch = json.loads(header["architecture"])
    arch["layers"][2]["type"] = "builtins.eval"
    header["architecture"] = json.dumps(arch)


@pytest.mark.parametrize("tensors, meta, message", [
    (lambda t: t.update({"model.0.weight": np.zeros((2, 1, 3, 4), np.float32)}), None,
     r"model\.0\.weight is float32 \(2, 1, 3, 4\), the architecture needs float32 \(2, 1, 3, 3\)"),
    (lambda t: t.update({"model.4.bias": t["model.4.bias"].astype(np.float64)}), None,
     r"model\.4\.bias is float64 \(3,\), the architecture needs float32"),
    (lambda t: t.pop("model.1.running_mean"), None, r"missing model\.1\.running_mean"),
    (lambda t: t.update({"model.9.weight": np.zeros(2, np.float32)}), None,
     r"unexpected model\.9\.weight"),
    (lambda t: t.update({"extra": np.zeros(2, np.float32)}), None, r"unexpected tensor.* extra"),
    (lambda t: t.update({"optimizer.state.0.m": np.zeros(2)}), None,
     "optimizer tensors but no 'optimizer' header"),
    (None, lambda h: h.update(version="2"), "version '2'.*upgrade chainrule"),
    (None, lambda h: h.update(architecture="{oops"), "corrupt header entry 'architecture'"),
    (None, lambda h: h.pop("architecture"), "no 'architecture' entry"),
    (None, _set_type, r"model\.2: unknown layer type 'builtins.eval'"),
    (None, lambda h: h.update(metadata="[1]"), "'metadata' must be a JSON object"),
])
def test_contents_not_matching_the_architecture_are_named(tmp_path, tensors, meta, message):
    path = cr.save(small_model(), tmp_path / "m.safetensors")
    _rewrite(path, tensors, meta)
    with pytest.raises(cr.CheckpointError, match=message):
        cr.load_checkpoint(path)


def test_optimizer_state_for_an_unknown_parameter_is_refused(tmp_path):
    model = small_model()
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    path = cr.save(model, tmp_path / "m.safetensors", optimizer=optimizer)
    _rewrite(path, lambda t: t.update({"optimizer.state.99.momentum_buffer": np.zeros(2)}))
    with pytest.raises(cr.CheckpointError, match="'99' is not the index of a parameter"):
        cr.load_checkpoint(path)


# ---------------------------------------------------------------------- other readers

def test_file_is_plain_safetensors(tmp_path):
    model = small_model()
    optimizer = Adam(model.parameters())
    train_step(model, cr.CrossEntropyLoss(), optimizer, np.ones((2, 1, 4, 4)), np.array([0, 1]))
    path = cr.save(model, tmp_path / "m.safetensors", optimizer=optimizer, epoch=1)
    tensors = safetensors.numpy.load_file(path)
    model_keys = sorted(k for k in tensors if k.startswith("model."))
    assert model_keys == sorted("model." + k for k in model.state_dict())
    assert "optimizer.state.0.exp_avg" in tensors
    with safe_open(path, framework="np") as f:
        header = f.metadata()
    assert header["format"] == "chainrule-checkpoint" and header["version"] == "1"
    assert json.loads(header["architecture"]) == describe(model)
    optimizer_header = json.loads(header["optimizer"])
    assert optimizer_header["type"] == "Adam"
    assert optimizer_header["scalar_state"]["0"] == {"step": 1}
    assert json.loads(header["metadata"]) == {"epoch": 1}


def _to_torch(desc: dict):
    """The torch.nn module equivalent to a description (what a PyTorch user writes)."""
    import torch

    class TorchResidual(torch.nn.Module):
        def __init__(self, block, shortcut):
            super().__init__()
            self.block, self.shortcut = block, shortcut

        def forward(self, x):
            return self.block(x) + (x if self.shortcut is None else self.shortcut(x))

    class TorchGraph(torch.nn.Module):
        """Runs a Graph description's nodes in order, each layer a child of its name."""

        def __init__(self, desc):
            super().__init__()
            for key, entry in desc["layers"].items():   # dotted names: nested modules
                *parents, leaf = key.split(".")
                owner = self
                for part in parents:
                    if not hasattr(owner, part):
                        owner.add_module(part, torch.nn.Module())
                    owner = getattr(owner, part)
                owner.add_module(leaf, _to_torch(entry))
            ins = desc["inputs"]
            self.input_names = [e["name"] for e in ins] if isinstance(ins, list) else [ins["name"]]
            self.nodes, self.outputs = desc["nodes"], desc["outputs"]

        def forward(self, *xs):
            values = dict(zip(self.input_names, xs[0] if len(self.input_names) > 1 else xs))
            for node in self.nodes:
                args = [values[t] for t in node["inputs"]]
                layer = self.get_submodule(node["layer"])
                out = layer(args if node["packed"] else args[0])
                outs = list(out) if node["outputs"] != [node["name"]] else [out]
                values.update(zip(node["outputs"], outs))
            outs = self.outputs
            return values[outs] if isinstance(outs, str) else [values[t] for t in outs]

    class TorchFunction(torch.nn.Module):   # a merge or shape layer: no parameters
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x)

    args = desc.get("args", {})
    merge = {
        "Add": lambda xs: functools.reduce(operator.add, xs),
        "Multiply": lambda xs: functools.reduce(operator.mul, xs),
        "Concat": lambda xs: torch.cat(xs, args.get("dim", 1)),
        "Split": lambda x: torch.split(x, args["split_size_or_sections"], args.get("dim", 1)),
        "Chunk": lambda x: torch.chunk(x, args["chunks"], args.get("dim", 1)),
        "Reshape": lambda x: x.reshape(x.shape[0], *args["shape"]),
        "Permute": lambda x: x.permute(*args["dims"]),
        "Mean": lambda x: x.mean(args["dims"], keepdim=args.get("keepdim", False)),
    }
    if desc["type"] in merge:
        return TorchFunction(merge[desc["type"]])
    if desc["type"] == "Graph":
        return TorchGraph(desc)
    if desc["type"] == "Sequential":
        return torch.nn.Sequential(*map(_to_torch, desc["layers"]))
    if desc["type"] == "Residual":
        shortcut = desc["shortcut"]
        return TorchResidual(_to_torch(desc["block"]), shortcut and _to_torch(shortcut))
    args = dict(desc["args"])
    dtype = getattr(torch, args.pop("dtype", "float32"))
    return getattr(torch.nn, desc["type"])(**args).to(dtype)


@pytest.mark.parametrize("name", ["every_layer", *cr.models.MODELS])
def test_pytorch_loads_the_checkpoint(tmp_path, name):
    torch = pytest.importorskip("torch")
    if name == "every_layer":
        model, shape = every_layer_model(np.float64), INPUT_SHAPE
        train_a_little(model)  # running statistics that are not the defaults
    else:
        model, shape = cr.models.MODELS[name](3, 16, 10, seed=0), (2, 3, 16, 16)
    path = cr.save(model, tmp_path / "m.safetensors")

    tensors = safetensors.numpy.load_file(path)
    state = {k.removeprefix("model."): torch.tensor(np.array(v)) for k, v in tensors.items()}
    torch_model = _to_torch(describe(model))
    torch_model.load_state_dict(state)  # strict: same keys and shapes
    torch_model.eval()

    x = np.random.default_rng(4).standard_normal(shape).astype(model.dtype)
    expected = torch_model(torch.tensor(x)).detach().numpy()
    error = rel_error(model.eval().forward(x), expected)
    assert error < (1e-10 if model.dtype == np.float64 else 1e-5), error
