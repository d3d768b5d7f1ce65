"""cr.Graph: declaration, forward in topological order, backward with gradients summed
where a tensor fans out; shared layers, several inputs and outputs, nesting; errors at
declaration and at call time. Gradients are proven by float64 finite differences and
against torch autograd on equivalent torch modules."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule.layers.symbolic import Node
from tests.helpers import assert_gradcheck, float32_tolerance, rel_error

torch = pytest.importorskip("torch")

TOL = 1e-6  # finite differences in float64: a right backward is near 1e-8


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ---------------------------------------------------------------- graphs under test
def fan_out_two_outputs():
    """One tensor read by two branches; the graph returns both."""
    x = cr.Input((2, 5, 5))
    a = cr.Conv2d(2, 3, 1)(x)
    b = cr.Tanh()(cr.Conv2d(2, 3, 3, padding=1)(x))
    return cr.Graph(x, [a, b])


def shared_layer_twice():
    """One Conv2d applied twice in a row: its weight gets both uses' gradients."""
    conv = cr.Conv2d(3, 3, 3, padding=1)
    x = cr.Input((3, 5, 5))
    y = conv(cr.Tanh()(conv(x)))
    return cr.Graph(x, y)


def two_inputs_two_outputs():
    x1, x2 = cr.Input((4,), name="left"), cr.Input((6,), name="right")
    h1 = cr.Tanh()(cr.Linear(4, 3)(x1))
    h2 = cr.Linear(6, 3)(x2)
    shared = cr.Linear(3, 2)
    return cr.Graph([x1, x2], [shared(h1), shared(h2)])


def nested():
    """A graph inside a graph (called twice: shared), a Sequential and a Residual inside."""
    xi = cr.Input((3, 4, 4))
    inner = cr.Graph(xi, cr.Tanh()(cr.Conv2d(3, 3, 3, padding=1)(xi)))
    x = cr.Input((3, 4, 4))
    h = inner(x)
    h = cr.Sequential(cr.Conv2d(3, 3, 1), cr.Sigmoid())(h)
    h = cr.Residual(cr.Sequential(cr.Conv2d(3, 3, 3, padding=1), cr.Tanh()))(h)
    return cr.Graph(x, inner(h))


def graph_in_sequential():
    x = cr.Input((2, 4, 4))
    g = cr.Graph(x, [cr.Conv2d(2, 2, 1)(x), cr.Conv2d(2, 2, 3, padding=1)(x)][1])
    return cr.Sequential(cr.Conv2d(2, 2, 1), g, cr.Flatten(), cr.Linear(32, 3))


GRAPHS = {
    "fan_out": (fan_out_two_outputs, [(2, 2, 5, 5)]),
    "shared": (shared_layer_twice, [(2, 3, 5, 5)]),
    "two_in_two_out": (two_inputs_two_outputs, [(3, 4), (3, 6)]),
    "nested": (nested, [(2, 3, 4, 4)]),
    "graph_in_sequential": (graph_in_sequential, [(2, 2, 4, 4)]),
}


def inputs_for(shapes, seed=0):
    xs = [rand(*s, seed=seed + i) for i, s in enumerate(shapes)]
    return xs if len(xs) > 1 else xs[0]


@pytest.mark.parametrize("name", GRAPHS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_finite_differences(name, mode):
    build, shapes = GRAPHS[name]
    model = build().reset_parameters(0)   # fixed weights: no ReLU kink left to chance
    model.train(mode == "train")
    assert_gradcheck(model, inputs_for(shapes), TOL)


# ---------------------------------------------------------------- torch autograd
def _torch(a):
    return torch.tensor(a, requires_grad=True)


def test_shared_layer_matches_torch_applying_one_module_twice():
    model = shared_layer_twice().double()
    conv_t = torch.nn.Conv2d(3, 3, 3, padding=1).double()
    conv_t.load_state_dict({k.split(".", 1)[1]: torch.tensor(v)
                            for k, v in model.state_dict().items()})
    x = rand(2, 3, 5, 5)
    g = rand(2, 3, 5, 5, seed=1)
    out = model(x)
    dx = model.backward(g)
    xt = _torch(x)
    yt = conv_t(torch.tanh(conv_t(xt)))
    yt.backward(torch.tensor(g))
    assert rel_error(out, yt.detach().numpy()) < 1e-12
    assert rel_error(dx, xt.grad.numpy()) < 1e-9
    assert rel_error(model.conv2d.weight.grad, conv_t.weight.grad.numpy()) < 1e-9
    assert rel_error(model.conv2d.bias.grad, conv_t.bias.grad.numpy()) < 1e-9


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_two_inputs_two_outputs_match_torch(dtype):
    model = two_inputs_two_outputs().to(dtype)
    lin1, lin2, shared = (torch.nn.Linear(4, 3), torch.nn.Linear(6, 3), torch.nn.Linear(3, 2))
    state = model.state_dict()
    for module, name in ((lin1, "linear"), (lin2, "linear_1"), (shared, "linear_2")):
        module.to(torch.float64 if dtype == np.float64 else torch.float32)
        module.load_state_dict({"weight": torch.tensor(state[f"{name}.weight"]),
                                "bias": torch.tensor(state[f"{name}.bias"])})
    x1, x2 = rand(5, 4).astype(dtype), rand(5, 6, seed=1).astype(dtype)
    g1, g2 = rand(5, 2, seed=2).astype(dtype), rand(5, 2, seed=3).astype(dtype)
    o1, o2 = model([x1, x2])
    d1, d2 = model.backward([g1, g2])
    t1, t2 = _torch(x1), _torch(x2)
    p1, p2 = shared(torch.tanh(lin1(t1))), shared(lin2(t2))
    torch.autograd.backward([p1, p2], [torch.tensor(g1), torch.tensor(g2)])
    tol = 1e-9 if dtype == np.float64 else float32_tolerance(8, layers=3)
    for mine, theirs in ((o1, p1), (o2, p2), (d1, t1.grad), (d2, t2.grad),
                         (model.linear_2.weight.grad, shared.weight.grad),
                         (model.linear.weight.grad, lin1.weight.grad)):
        assert rel_error(mine, theirs.detach().numpy()) < tol


# ---------------------------------------------------------------- the Layer contract
def test_needs_input_grad_false_gives_the_same_parameter_gradients():
    model = two_inputs_two_outputs().double()
    xs = [rand(3, 4), rand(3, 6, seed=1)]
    gs = [rand(3, 2, seed=2), rand(3, 2, seed=3)]
    model(xs)
    model.backward(gs)
    full = {k: p.grad.copy() for k, p in model.named_parameters()}
    model.zero_grad()
    model(xs)
    assert model.backward(gs, needs_input_grad=False) is None
    for k, p in model.named_parameters():
        np.testing.assert_array_equal(p.grad, full[k])


def test_graph_as_first_layer_of_a_sequential_skips_its_input_gradient(monkeypatch):
    model = graph_in_sequential()
    inner = model[1]
    calls = []
    original = cr.Graph.backward
    monkeypatch.setattr(cr.Graph, "backward",
                        lambda self, g, needs_input_grad=True: calls.append(needs_input_grad)
                        or original(self, g, needs_input_grad))
    seq = cr.Sequential(inner)
    seq(rand(2, 2, 4, 4))
    assert seq.backward(rand(2, 2, 4, 4), needs_input_grad=False) is None
    assert calls == [False]


def test_names_give_state_dict_keys_and_a_shared_layer_counts_once():
    x = cr.Input((3, 8, 8))
    stem = cr.Conv2d(3, 4, 3, padding=1)
    h = stem(x, name="stem")
    h = cr.ReLU()(h)
    head = cr.Conv2d(4, 4, 1)
    y = head(head(h, name="head"))
    model = cr.Graph(x, y)
    assert list(model.state_dict()) == ["stem.weight", "stem.bias", "head.weight", "head.bias"]
    assert model.num_parameters() == stem.num_parameters() + head.num_parameters()
    assert [n.name for n in model.nodes] == ["stem", "relu", "head", "head@1"]
    assert model.fan_out() == {}


def test_state_dict_round_trip_and_dtype():
    model = nested()
    other = nested()
    other.load_state_dict(model.state_dict())
    x = rand(2, 3, 4, 4).astype(np.float32)
    np.testing.assert_array_equal(model.eval()(x), other.eval()(x))
    model.to(np.float64)
    assert model.dtype == np.float64 and model(x).dtype == np.float64


def test_subclass_attribute_names_become_keys():
    class Block(cr.Graph):
        def __init__(self):
            self.expand = cr.Conv2d(2, 4, 1)
            self.project = cr.Conv2d(4, 2, 1)
            x = cr.Input((2, 3, 3))
            super().__init__(x, self.project(cr.ReLU()(self.expand(x))))

    block = Block()
    assert list(block.state_dict()) == ["expand.weight", "expand.bias",
                                        "project.weight", "project.bias"]
    assert_gradcheck(block, rand(2, 2, 3, 3), TOL)
    copy = block.copy()
    assert isinstance(copy, Block)
    np.testing.assert_array_equal(copy(np.ones((1, 2, 3, 3))), block(np.ones((1, 2, 3, 3))))


def test_replacing_a_layer_by_name_is_used_by_forward():
    x = cr.Input((4,))
    model = cr.Graph(x, cr.Linear(4, 3)(cr.ReLU()(x), name="fc"))
    model.fc = cr.Linear(4, 7)
    assert model(np.ones((2, 4))).shape == (2, 7)


def test_eval_mode_keeps_no_caches_and_train_mode_one_backward():
    model = nested()
    model.eval()
    model(rand(2, 3, 4, 4))
    assert all(m._cache is None for m in model.modules())
    with pytest.raises(RuntimeError, match="without a cached forward"):
        model.backward(rand(2, 3, 4, 4))
    model.train()
    model(rand(2, 3, 4, 4))
    model.backward(rand(2, 3, 4, 4))
    with pytest.raises(RuntimeError, match="without a cached forward"):
        model.backward(rand(2, 3, 4, 4))


def test_an_output_without_gradient_adds_nothing():
    model = fan_out_two_outputs().double()
    x = rand(2, 2, 5, 5)
    a, b = model(x)
    dx_a = model.backward([rand(*a.shape, seed=3), None])
    grads = {k: p.grad.copy() for k, p in model.named_parameters()}
    assert not grads["conv2d_1.weight"].any()   # the second branch got no gradient
    single = cr.Graph(*_first_branch(model))
    single(x)
    np.testing.assert_allclose(single.backward(rand(*a.shape, seed=3)), dx_a, rtol=1e-12)


def _first_branch(model):
    x = cr.Input((2, 5, 5))
    return x, model.conv2d(x)


def test_identity_graph_and_an_input_used_as_output():
    x = cr.Input((3,))
    model = cr.Graph(x, [x, cr.Tanh()(x)])
    a = rand(2, 3)
    out = model(a)
    np.testing.assert_array_equal(out[0], a)
    g0, g1 = rand(2, 3, seed=1), rand(2, 3, seed=2)
    np.testing.assert_allclose(model.backward([g0, g1]), g0 + g1 * (1 - np.tanh(a) ** 2),
                               rtol=1e-6)


# ---------------------------------------------------------------- errors, named
def test_declaration_errors_name_the_node():
    x = cr.Input((3, 8, 8))
    with pytest.raises(ValueError, match="node 'head'.*Linear"):
        cr.Linear(10, 2)(cr.Flatten()(x), name="head")
    with pytest.raises(ValueError, match="is not used by any output"):
        other = cr.Input((3,))
        cr.Graph([x, other], cr.ReLU()(x))
    with pytest.raises(ValueError, match="not among the graph's inputs"):
        cr.Graph(cr.Input((3,)), cr.ReLU()(x))
    with pytest.raises(TypeError, match=r"outputs\[1\] must be a symbolic tensor"):
        cr.Graph(x, [cr.ReLU()(x), np.zeros(3)])
    with pytest.raises(ValueError, match="listed twice"):
        cr.Graph([x, x], cr.ReLU()(x))
    with pytest.raises(ValueError, match="inputs must come from cr.Input"):
        h = cr.ReLU()(x)
        cr.Graph(h, cr.ReLU()(h))


def test_two_names_for_one_layer_and_one_name_for_two_layers():
    x = cr.Input((3,))
    relu = cr.ReLU()
    with pytest.raises(ValueError, match="named both 'a' and 'b'"):
        cr.Graph(x, relu(relu(x, name="a"), name="b"))
    with pytest.raises(ValueError, match="two different layers are named 'a'"):
        cr.Graph(x, cr.ReLU()(cr.ReLU()(x, name="a"), name="a"))
    with pytest.raises(ValueError, match="taken by the Graph class"):
        cr.Graph(x, cr.ReLU()(x, name="forward"))


def test_a_cycle_is_named():
    x = cr.Input((3,))
    a = cr.ReLU()(x)
    b = cr.Tanh()(a)
    a.node.inputs = (b,)        # only a hand-made node list can close a loop
    with pytest.raises(ValueError, match="cycle through node"):
        cr.Graph(x, b)


def test_call_time_errors():
    x = cr.Input((3, 8, 8), name="image")
    model = cr.Graph(x, cr.Conv2d(3, 2, 3)(x))
    with pytest.raises(ValueError, match=r"input 'image' expects arrays of shape \(N, 3, 8, 8\)"):
        model(np.zeros((2, 3, 9, 8)))
    model(np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"expected a gradient of shape \(2, 2, 6, 6\)"):
        model.backward(np.zeros((2, 2, 6, 5)))
    two = two_inputs_two_outputs()
    with pytest.raises(TypeError, match=r"a list of 2 arrays \(inputs \['left', 'right'\]\)"):
        two(np.zeros((2, 4)))
    with pytest.raises(TypeError, match="name= names a node"):
        cr.ReLU()(np.zeros(3), name="x")
    with pytest.raises(TypeError, match="has no values"):
        np.asarray(x)


def test_unknown_dimensions_are_checked_when_the_graph_runs():
    x = cr.Input((1, None, None))
    y = cr.Conv2d(1, 2, 3, padding=1)(x)
    assert y.shape is None
    model = cr.Graph(x, cr.ReLU()(y))
    assert model(np.zeros((1, 1, 7, 9))).shape == (1, 2, 7, 9)
    with pytest.raises(ValueError, match=r"expects arrays of shape \(N, 1, \?, \?\)"):
        model(np.zeros((1, 2, 7, 9)))


def test_declaring_does_not_change_the_layer():
    bn = cr.BatchNorm2d(3)
    bn.running_mean[...] = 0.5
    x = cr.Input((3, 4, 4))
    bn(x)
    assert bn.training and bn._cache is None
    np.testing.assert_array_equal(bn.running_mean, 0.5)


# ---------------------------------------------------------------- the classic joints
def inception_block():
    """GoogLeNet: four branches of one input, concatenated on channels."""
    x = cr.Input((4, 6, 6))
    b1 = cr.Conv2d(4, 2, 1)(x)
    b2 = cr.Conv2d(3, 3, 3, padding=1)(cr.ReLU()(cr.Conv2d(4, 3, 1)(x)))
    b3 = cr.Conv2d(4, 2, 5, padding=2)(x)
    b4 = cr.Conv2d(4, 2, 1)(cr.MaxPool2d(3, stride=1, padding=1)(x))
    return cr.Graph(x, cr.Tanh()(cr.Concat(dim=1)([b1, b2, b3, b4])))


def squeeze_excitation():
    """MobileNetV3/EfficientNet: an (N, C, 1, 1) gate times the (N, C, H, W) map."""
    x = cr.Input((4, 5, 5))
    h = cr.Conv2d(4, 4, 3, padding=1)(x)
    s = cr.Mean((2, 3), keepdim=True)(h)
    s = cr.Sigmoid()(cr.Conv2d(2, 4, 1)(cr.ReLU()(cr.Conv2d(4, 2, 1)(s))))
    return cr.Graph(x, cr.Multiply()([h, s]))


def unet_skip():
    """U-Net: an encoder map concatenated into the upsampled decoder."""
    x = cr.Input((2, 8, 8))
    e = cr.Tanh()(cr.Conv2d(2, 3, 3, padding=1)(x))
    d = cr.Tanh()(cr.Conv2d(3, 3, 3, padding=1)(cr.MaxPool2d(2)(e)))
    u = cr.Upsample(scale_factor=2, mode="bilinear", align_corners=False)(d)
    return cr.Graph(x, cr.Conv2d(6, 1, 1)(cr.Concat(1)([e, u])))


def shuffle_unit():
    """ShuffleNetV2: split the channels, transform one half, concatenate, shuffle."""
    x = cr.Input((4, 5, 5))
    left, right = cr.Chunk(2, dim=1)(x)
    right = cr.Tanh()(cr.Conv2d(2, 2, 3, padding=1)(right))
    return cr.Graph(x, cr.ChannelShuffle(2)(cr.Concat(1)([left, right])))


def dense_block():
    """DenseNet: every layer reads the concatenation of all earlier maps."""
    x = cr.Input((2, 4, 4))
    maps = [x]
    for _ in range(3):
        h = cr.Concat(1)(maps) if len(maps) > 1 else maps[0]
        maps.append(cr.Conv2d(2 * len(maps), 2, 3, padding=1)(cr.Tanh()(h)))
    return cr.Graph(x, cr.Concat(1)(maps))


def split_reshape_permute():
    """Split with unused piece, Reshape, Permute, Add with broadcasting."""
    x = cr.Input((6, 4))
    a, b, c = cr.Split([1, 2, 3], dim=1)(x)
    h = cr.Permute((0, 2, 1))(cr.Reshape((2, 4))(b))
    bias = cr.Mean(1, keepdim=True)(c)         # (N, 1, 4)
    return cr.Graph(x, cr.Add()([cr.Linear(2, 4)(h), bias]))


JOINTS = {
    "inception": (inception_block, (2, 4, 6, 6)),
    "squeeze_excitation": (squeeze_excitation, (2, 4, 5, 5)),
    "unet_skip": (unet_skip, (2, 2, 8, 8)),
    "shuffle_unit": (shuffle_unit, (2, 4, 5, 5)),
    "dense_block": (dense_block, (2, 2, 4, 4)),
    "split_reshape_permute": (split_reshape_permute, (3, 6, 4)),
}


@pytest.mark.parametrize("name", JOINTS)
def test_classic_joints_by_finite_differences(name):
    build, shape = JOINTS[name]
    assert_gradcheck(build().reset_parameters(0), rand(*shape), TOL)


def test_dense_block_sums_the_gradients_of_every_reader():
    model = dense_block()
    assert model.fan_out() == {"input": 4, "conv2d": 3, "conv2d_1": 2}


class TorchSE(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.down = torch.nn.Conv2d(4, 2, 1)
        self.up = torch.nn.Conv2d(2, 4, 1)

    def forward(self, x):
        h = self.conv(x)
        s = torch.sigmoid(self.up(torch.relu(self.down(h.mean((2, 3), keepdim=True)))))
        return h * s


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_squeeze_excitation_matches_torch(dtype):
    model = squeeze_excitation().to(dtype)
    ref = TorchSE().to(torch.float64 if dtype == np.float64 else torch.float32)
    names = {"conv2d": "conv", "conv2d_1": "down", "conv2d_2": "up"}
    ref.load_state_dict({f"{names[k.split('.')[0]]}.{k.split('.')[1]}": torch.tensor(v)
                         for k, v in model.state_dict().items()})
    x, g = rand(2, 4, 5, 5).astype(dtype), rand(2, 4, 5, 5, seed=1).astype(dtype)
    out = model(x)
    dx = model.backward(g)
    xt = _torch(x)
    yt = ref(xt)
    yt.backward(torch.tensor(g))
    tol = 1e-9 if dtype == np.float64 else float32_tolerance(36, layers=5)
    assert rel_error(out, yt.detach().numpy()) < tol
    assert rel_error(dx, xt.grad.numpy()) < tol
    for key, p in model.named_parameters():
        theirs = dict(ref.named_parameters())[f"{names[key.split('.')[0]]}.{key.split('.')[1]}"]
        assert rel_error(p.grad, theirs.grad.numpy()) < tol, key


def test_split_on_an_unknown_shape_knows_its_outputs_from_its_sections():
    x = cr.Input((None, 3))
    a, b = cr.Split([1, 2], dim=2)(x)
    model = cr.Graph(x, [cr.Tanh()(a), b])
    assert [o.shape for o in model(np.zeros((2, 5, 3)))] == [(2, 5, 1), (2, 5, 2)]
    with pytest.raises(ValueError, match="number of outputs depends on the input's shape"):
        cr.Chunk(2, dim=1)(x)


def test_a_deep_graph_copies_without_recursion():
    # densenet121 from from_torch has ~400 nodes; a built graph must not keep the chain
    # of declared tensors that a deep copy would follow one frame per node.
    x = cr.Input((4,))
    h = x
    for _ in range(3000):
        h = cr.Tanh()(h)
    model = cr.Graph(x, h).copy()
    assert len(model.nodes) == 3000
    np.testing.assert_array_equal(model(np.zeros((1, 4))), np.zeros((1, 4)))


def test_merge_shape_mismatches_name_the_node_where_declared():
    x = cr.Input((3, 8, 8))
    a = cr.Conv2d(3, 4, 3)(x)               # (4, 6, 6)
    b = cr.Conv2d(3, 4, 3, padding=1)(x)    # (4, 8, 8)
    with pytest.raises(ValueError, match=r"node 'merge' Concat\(dim=1\) called on .*"
                                         r"\(N, 4, 6, 6\).*\(N, 4, 8, 8\)"):
        cr.Concat(dim=1)([a, b], name="merge")
    with pytest.raises(ValueError, match=r"node 'sum' Add\(\) called on"):
        cr.Add()([a, b], name="sum")


def test_gradients_in_eval_lets_an_eval_graph_backpropagate():
    model = squeeze_excitation().reset_parameters(0).double().eval()
    x = rand(2, 4, 5, 5)
    with pytest.raises(RuntimeError, match="without a cached forward"):
        model(x)
        model.backward(rand(2, 4, 5, 5))
    model.gradients_in_eval()
    model(x)
    assert model.backward(rand(2, 4, 5, 5)).shape == x.shape
    assert_gradcheck(model, x, TOL)
