"""The zoo's graph models, inception_mini and densenet_mini: they build for every data set
the command line offers, name their nodes as torchvision names its modules, have the
gradients finite differences and torch autograd give, overfit a tiny batch, and train through
``chainrule train``. (tests/test_models.py runs the checks every zoo model shares.)"""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule import models
from chainrule.data import DATASETS
from chainrule.models import densenet_mini, inception_mini
from tests.helpers import rel_error

GRAPH_MODELS = {"inception_mini": inception_mini, "densenet_mini": densenet_mini}
TOL = 1e-6  # finite differences in float64: a right backward is near 1e-8


@pytest.mark.parametrize("data", list(DATASETS))
@pytest.mark.parametrize("name", list(GRAPH_MODELS))
def test_builds_for_every_data_set(name, data):
    info = DATASETS[data]
    shape = (info.in_channels, info.input_size, info.input_size)
    model = GRAPH_MODELS[name](*shape[:2], num_classes=len(info.classes), seed=0)
    assert isinstance(model, cr.Graph) and model.input_shapes == (shape,)
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    out = model.forward(x)
    assert out.shape == (2, len(info.classes)) and out.dtype == np.float32
    dx = model.backward(np.ones_like(out))
    assert dx.shape == x.shape and np.all(np.isfinite(dx))
    for key, p in model.named_parameters():
        assert np.all(np.isfinite(p.grad)) and np.any(p.grad != 0), key


def test_inception_mini_blocks_concatenate_four_branches():
    model = inception_mini(in_channels=1, input_size=28, num_classes=10, seed=0)
    keys = model.state_dict()
    for key in ("stem.conv.weight", "inception3a.branch1.conv.weight",
                "inception3a.branch2.1.conv.weight", "inception3b.branch3.1.bn.running_var",
                "inception4b.branch4.1.conv.weight", "fc.weight"):
        assert key in keys, key
    # 3x3 in branch 2, 5x5 in branch 3, a stride-1 3x3 max pool before branch 4's 1x1.
    assert model.get_layer("inception3a.branch2.1.conv").kernel_size == (3, 3)
    assert model.get_layer("inception3a.branch3.1.conv").kernel_size == (5, 5)
    assert model.get_layer("inception3a.branch4.0").kernel_size == (3, 3)
    cats = [n for n in model.nodes if n.layer_name.endswith(".cat")]
    assert [n.name for n in cats] == ["inception3a.cat", "inception3b.cat", "inception4a.cat",
                                      "inception4b.cat"]
    assert all(n.inputs[0].endswith("branch1.relu") and n.inputs[3].endswith("branch4.1.relu")
               for n in cats)
    # Each block's input feeds its four branches: backward sums four gradients there.
    fan_out = model.fan_out()
    assert fan_out["stem.pool"] == 4 and fan_out["inception3a.cat"] == 4
    assert fan_out["pool3"] == 4 and fan_out["pool4"] == 4
    # Channels: the sum of the branches' (1x1 + 3x3 + 5x5 + pool projection).
    assert model.get_layer("fc").in_features == 40 + 56 + 24 + 24


def test_densenet_mini_layers_read_every_earlier_map():
    model = densenet_mini(in_channels=1, input_size=28, num_classes=10, seed=0)
    keys = model.state_dict()
    for key in ("conv0.weight", "denseblock1.denselayer1.norm1.weight",
                "denseblock2.denselayer3.conv2.weight", "transition1.conv.weight",
                "norm5.running_mean", "classifier.weight"):
        assert key in keys, key
    by_name = {n.name: n for n in model.nodes}
    # Layer i of a block reads the block's input and the i - 1 earlier layers' outputs.
    assert by_name["denseblock1.denselayer1.norm1"].inputs == ("pool0",)
    assert by_name["denseblock1.denselayer4.cat"].inputs == (
        "pool0", "denseblock1.denselayer1.conv2", "denseblock1.denselayer2.conv2",
        "denseblock1.denselayer3.conv2")
    assert len(by_name["denseblock1.cat"].inputs) == 5
    # The block's input is read by every layer and the block's concatenation (5 readers);
    # layer 1's new maps by layers 2-4 and the block's concatenation (4).
    fan_out = model.fan_out()
    assert fan_out["pool0"] == 5 and fan_out["denseblock1.denselayer1.conv2"] == 4
    assert "denseblock1.denselayer4.conv2" not in fan_out   # read once: by the block's cat
    # 24 -> 72 -> (transition) 36 -> 84 -> 42 -> 90 channels; a 1x1 bottleneck of 48.
    assert model.get_layer("transition1.conv").out_channels == 36
    assert model.get_layer("transition2.conv").out_channels == 42
    assert model.get_layer("denseblock3.denselayer4.conv1").in_channels == 42 + 3 * 12
    assert model.get_layer("denseblock3.denselayer4.conv1").out_channels == 48
    assert model.get_layer("classifier").in_features == 90
    assert isinstance(model.get_layer("transition1.pool"), cr.AvgPool2d)


def test_the_stem_halves_only_inputs_of_16_and_more():
    for builder, pool in ((inception_mini, "stem.pool"), (densenet_mini, "pool0")):
        small = {n.name for n in builder(1, 15, 10).nodes}
        large = {n.name for n in builder(1, 16, 10).nodes}
        assert pool not in small and large - small == {pool}


def test_parameter_counts_of_the_default_configurations():
    # inception_mini (3x32x32): bias-free convs, BatchNorm (2 per channel) after each.
    def conv(c_in, c_out, k):
        return c_in * c_out * k * k + 2 * c_out

    def block(c_in, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        return (conv(c_in, ch1x1, 1) + conv(c_in, ch3x3red, 1) + conv(ch3x3red, ch3x3, 3)
                + conv(c_in, ch5x5red, 1) + conv(ch5x5red, ch5x5, 5) + conv(c_in, pool_proj, 1))
    assert inception_mini().num_parameters() == (
        conv(3, 32, 3) + block(32, 16, 16, 24, 4, 8, 8) + block(56, 24, 24, 32, 8, 16, 16)
        + block(88, 32, 24, 48, 8, 16, 16) + block(112, 40, 32, 56, 12, 24, 24)
        + (144 * 10 + 10)) == 79_274

    # densenet_mini (3x32x32): BN - 1x1 to 48 - BN - 3x3 to 12 per layer, BN - 1x1 per
    # transition, the stem without BatchNorm, BN before the head.
    def dense_layer(c_in):
        return 2 * c_in + c_in * 48 + 2 * 48 + 48 * 12 * 9

    def dense_block(c_in):
        return sum(dense_layer(c_in + 12 * i) for i in range(4))
    assert densenet_mini().num_parameters() == (
        3 * 24 * 9 + dense_block(24) + (2 * 72 + 72 * 36) + dense_block(36)
        + (2 * 84 + 84 * 42) + dense_block(42) + 2 * 90 + (90 * 10 + 10)) == 102_730


@pytest.fixture
def tiny_widths(monkeypatch):
    """The graph models with a few channels per branch and two layers per dense block:
    the same graphs, small enough to check every parameter array by finite differences."""
    monkeypatch.setattr(models, "INCEPTION_MINI_STAGES", (
        (("inception3a", 2, 2, 3, 1, 2, 2),), (("inception4a", 3, 2, 2, 1, 1, 2),)))
    monkeypatch.setattr(models, "DENSENET_MINI_BLOCKS", (2, 2))
    monkeypatch.setattr(models, "DENSENET_MINI_GROWTH", 2)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", list(GRAPH_MODELS))
def test_gradients_match_finite_differences(name, mode, tiny_widths):
    model = GRAPH_MODELS[name](in_channels=2, input_size=8, num_classes=3, seed=0)
    if mode == "eval":
        # Running statistics away from 0/1, so that eval-mode BatchNorm is not the identity.
        model.train().forward(np.random.default_rng(1).standard_normal((4, 2, 8, 8)) * 2 + 1)
        model.eval()
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8))
    error = cr.gradcheck(model, x, max_elements=4)
    assert error < TOL, f"{name} ({mode}): gradcheck relative error {error:.2e}"


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16)], ids=["1x8x8", "3x16x16"])
@pytest.mark.parametrize("name", list(GRAPH_MODELS))
def test_gradients_match_torch_autograd_in_float64(name, shape):
    """The full-width model against torch autograd on ``to_torch`` of it, training mode
    (batch statistics) with dropout off: output, dL/dx and every parameter gradient."""
    torch = pytest.importorskip("torch")
    from chainrule.interop import to_torch

    model = GRAPH_MODELS[name](shape[0], shape[1], num_classes=5, seed=0).double().train()
    for m in model.modules():
        if isinstance(m, cr.Dropout):
            m.p = 0.0
    module = to_torch(model).double().train()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, *shape))
    out = model.forward(x)
    upstream = rng.standard_normal(out.shape)
    dx = model.backward(upstream)
    tx = torch.tensor(x, requires_grad=True)
    tout = module(tx)
    tout.backward(torch.tensor(upstream))
    assert rel_error(tout.detach().numpy(), out) < 1e-9
    assert rel_error(tx.grad.numpy(), dx) < 1e-9
    theirs = dict(module.named_parameters())
    assert sorted(theirs) == sorted(k for k, _ in model.named_parameters())
    for key, p in model.named_parameters():
        error = rel_error(theirs[key].grad.numpy(), p.grad)
        assert error < 1e-9, f"{name} {key}: relative error {error:.2e}"


@pytest.mark.parametrize("name", list(GRAPH_MODELS))
def test_overfits_a_tiny_batch(name):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 1, 8, 8)).astype(np.float32)
    y = np.arange(8) % 4
    model = GRAPH_MODELS[name](1, 8, 4, seed=0)
    history = cr.fit(model, cr.CrossEntropyLoss(), cr.optim.Adam(model.parameters(), lr=1e-2),
                     (X, y), epochs=12, batch_size=8, seed=0)
    assert all(np.isfinite(history.loss))
    assert history.loss[-1] < 0.02 * history.loss[0], history.loss   # 1.3-1.5 -> 0.002-0.012


@pytest.mark.parametrize("name", list(GRAPH_MODELS))
def test_chainrule_train_runs_end_to_end(name, tmp_path):
    pytest.importorskip("sklearn", reason="digits comes from scikit-learn")
    from tests.test_cli import chainrule   # runs `python -m chainrule` in a subprocess

    done = chainrule("train", "--model", name, "--data", "digits", "--limit", "64",
                     "--batch-size", "16", "--epochs", "1", "--val-fraction", "0.05",
                     "--no-progress", "--out", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test (best checkpoint" in done.stdout
    ckpt = cr.load_checkpoint(tmp_path / "run" / "best.safetensors")
    assert isinstance(ckpt.model, cr.Graph) and ckpt.metadata["model_name"] == name
    reference = GRAPH_MODELS[name](1, 8, 10)
    assert [n.name for n in ckpt.model.nodes] == [n.name for n in reference.nodes]
