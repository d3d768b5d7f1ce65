"""from_torch on traced modules (torch.fx) and to_torch on graphs: same numbers, same
state dicts, round trips, and errors that name the traced node."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import chainrule as cr  # noqa: E402
from chainrule.interop import UnsupportedModuleError, from_torch, to_torch  # noqa: E402

from ..helpers import rel_error  # noqa: E402
from .test_torch import assert_same_state  # noqa: E402

nn = torch.nn
F = torch.nn.functional


class Block(nn.Module):
    """Size arithmetic, chunk/split, functional layers, a module called twice, a Sequential
    of supported modules (kept whole), F.dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 2 * 2, 5))

    def forward(self, x):
        b, c, h, w = x.size()
        y = self.act(self.bn(self.conv(x)))
        left, right = torch.chunk(y, 2, dim=1)
        y = torch.cat([F.relu6(left) * torch.sigmoid(right), left + right], 1)
        y = y.view(b, 2, c, h, w).transpose(1, 2).contiguous().view(x.size(0), -1, h, w)
        a, rest = y.split([3, 5], dim=1)
        y = self.act(torch.cat((a, F.gelu(rest)), dim=1))
        y = F.max_pool2d(F.dropout(y, 0.5, self.training), 2, stride=2) + y.mean([2, 3], True)
        return self.head(y.permute(0, 1, 3, 2))


def make_block(dtype=torch.float64, training=False):
    torch.manual_seed(0)
    module = Block().to(dtype)
    with torch.no_grad():
        module.bn.running_mean.uniform_(-0.5, 0.5)
        module.bn.running_var.uniform_(0.5, 2.0)
    return module.train(training)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_traced_module_matches_torch_forward_and_backward(training):
    module = make_block(training=training)
    model = from_torch(module, input_shape=(4, 4, 4))
    assert isinstance(model, cr.Graph) and model.training == training
    assert model.input_names == ("x",) and model.input_shapes == ((4, 4, 4),)
    assert type(model.get_layer("head")) is cr.Sequential   # kept whole
    assert [n.name for n in model.nodes].count("act@1") == 1   # one ReLU called twice
    assert_same_state(model.state_dict(), {k: v.numpy() for k, v in module.state_dict().items()})
    if training:   # F.dropout became a Dropout layer; p=0 for the comparison
        dropouts = [m for m in model.modules() if isinstance(m, cr.Dropout)]
        assert len(dropouts) == 1 and dropouts[0].p == 0.5
        dropouts[0].p = 0.0
        module.training = False   # torch's F.dropout then is the identity
    model.gradients_in_eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 4, 4))
    g = rng.standard_normal((3, 5))
    y, dx = model.forward(x), model.backward(g)
    module.bn.train(training)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = module(xt)
    yt.backward(torch.from_numpy(g))
    assert rel_error(y, yt.detach().numpy()) <= 1e-12
    assert rel_error(dx, xt.grad.numpy()) <= 1e-12
    ours, theirs = dict(model.named_parameters()), dict(module.named_parameters())
    for key, p in theirs.items():
        # against the module's largest gradient: conv.bias feeds a training-mode
        # BatchNorm, so its gradient is zero up to rounding
        scale = max(float(q.grad.abs().max()) for k, q in theirs.items()
                    if k.rsplit(".", 1)[0] == key.rsplit(".", 1)[0])
        error = np.max(np.abs(ours[key].grad - p.grad.numpy())) / scale
        assert error <= 1e-12, f"{key}: {error:.2e}"


def test_shapes_come_from_input_shape_when_the_trace_reads_sizes():
    with pytest.raises(UnsupportedModuleError, match=r"traced node 'size' .*pass input_shape"):
        from_torch(make_block())


def small_graph() -> cr.Graph:
    x = cr.Input((4, 6, 6), name="image")
    z = cr.Input((2, 6, 6), name="extra")
    a = cr.Conv2d(4, 6, 3, padding=1, rng=0)(x, name="stem.conv")
    a = cr.Sequential(cr.BatchNorm2d(6), cr.ReLU())(a, name="stem.post")
    p, q, r = cr.Split([2, 2, 2])(a, name="split")
    s = cr.Concat(1)([cr.Multiply()([p, q]), z], name="cat")
    inner_in = cr.Input((4, 6, 6))
    inner = cr.Graph(inner_in, cr.Tanh()(inner_in))
    t = inner(cr.Add()([s, cr.Concat(1)([r, r])]), name="inner")
    shared = cr.Conv2d(4, 4, 1, rng=1)
    u = shared(shared(t, name="mix"), name="mix")
    c1, c2 = cr.Chunk(2)(u, name="chunk")
    head = cr.Residual(cr.Sequential(cr.Conv2d(2, 2, 3, padding=1, rng=2)))
    return cr.Graph([x, z], [head(c1, name="head"), cr.Mean((2, 3))(c2, name="pool")])


def test_to_torch_of_a_graph_is_a_graph_module_with_the_same_outputs_and_state():
    model = small_graph().double().eval()
    module = to_torch(model)
    assert isinstance(module, torch.fx.GraphModule) and not module.training
    placeholders = [n.target for n in module.graph.nodes if n.op == "placeholder"]
    assert placeholders == ["image", "extra"]
    targets = [n.target for n in module.graph.nodes if n.op == "call_module"]
    assert targets == [n.layer_name for n in model.nodes]
    assert_same_state({k: v.numpy() for k, v in module.state_dict().items()}, model.state_dict())
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((3, 4, 6, 6)), rng.standard_normal((3, 2, 6, 6))]
    with torch.no_grad():
        theirs = module(*(torch.from_numpy(x) for x in xs))
    for ours, t in zip(model.forward(xs), theirs):
        assert rel_error(ours, t.numpy()) <= 1e-12


def describe(graph: cr.Graph):
    return (graph.nodes, graph.input_names, graph.input_shapes, graph.output_names,
            [(n, type(m), repr(m), m.training) for n, m in graph.named_modules()])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_graph_round_trips_through_torch(dtype):
    model = small_graph().to(dtype)
    model.get_layer("stem.post").eval()   # a mixed-mode model keeps each module's mode
    back = from_torch(to_torch(model))
    assert type(back) is cr.Graph
    assert describe(back) == describe(model)
    assert_same_state(back.state_dict(), model.state_dict())


def test_graphs_nested_in_sequential_and_residual_convert_both_ways():
    x = cr.Input((3, 5, 5))
    graph = cr.Graph(x, cr.Add()([cr.Conv2d(3, 3, 3, padding=1, rng=0)(x, name="c"), x]))
    model = cr.Sequential(cr.Residual(graph.copy()), graph, cr.Flatten()).double().eval()
    module = to_torch(model)
    assert isinstance(module, nn.Sequential) and isinstance(module[1], torch.fx.GraphModule)
    back = from_torch(module)
    assert type(back) is cr.Sequential and repr(back) == repr(model)
    assert_same_state(back.state_dict(), model.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    with torch.no_grad():
        assert rel_error(module(torch.from_numpy(x)).numpy(), model.forward(x)) <= 1e-12


class Unsupported(nn.Module):
    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what
        self.conv = nn.Conv2d(2, 2, 1)
        self.conv3d = nn.Conv3d(2, 2, 1)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        y = self.conv(x)
        if self.what == "function":
            return torch.sin(y)
        if self.what == "module":
            return self.conv3d(y)
        if self.what == "constant":
            return y * 2.0
        if self.what == "batch":
            return y.view(x.size(0) * 2, -1)
        if self.what == "attribute":
            return y * self.scale
        return y[:, 0]


@pytest.mark.parametrize("what, message", [
    ("function", r"^traced node 'sin' \(op call_function, target torch\.sin\): is not supported"),
    ("module", r"^conv3d: torch\.nn\.Conv3d is not supported.*\(traced node 'conv3d', op "
               r"call_module, target 'conv3d'\)$"),
    ("constant", r"^traced node 'mul' \(op call_function, target operator\.mul\): mixes the "
                 r"tensor"),
    ("batch", r"^traced node 'mul' .*arithmetic on the batch size N"),
    ("attribute", r"^traced node 'scale' \(op get_attr, target 'scale'\): reads a parameter"),
    ("index", r"^traced node 'getitem' .*indexes the tensor"),
])
def test_unsupported_trace_names_the_node_its_op_and_its_target(what, message):
    with pytest.raises(UnsupportedModuleError, match=message):
        from_torch(Unsupported(what), input_shape=(2, 3, 3))
