"""Small graph models for the tests of what works *on* graphs (serialize, ONNX export,
summary, the inspect recorder, explain): fan-out, a shared layer, several inputs and
outputs, split and merge layers, a graph inside a Sequential and inside a graph.

``GRAPH_MODELS[name] = (build, input shapes)``: ``build(dtype)`` returns the model with
seeded weights; the shapes are one sample's, without the batch axis (a list: one per
input). ``batch(shapes, n, seed)`` makes matching inputs (one array, or a list)."""

from __future__ import annotations

import numpy as np

import chainrule as cr


def fan_out_concat(dtype=np.float32) -> cr.Graph:
    """'stem' read by three branches (Inception-style) that a Concat joins."""
    x = cr.Input((2, 6, 6))
    stem = cr.ReLU()(cr.Conv2d(2, 4, 3, padding=1)(x, name="stem_conv"), name="stem")
    a = cr.Conv2d(4, 2, 1)(stem, name="branch_a")
    b = cr.Tanh()(cr.Conv2d(4, 3, 3, padding=1)(stem, name="branch_b"))
    c = cr.MaxPool2d(3, stride=1, padding=1)(stem, name="branch_c")
    y = cr.Concat(1)([a, b, c], name="cat")                              # (9, 6, 6)
    y = cr.Linear(9 * 36, 5)(cr.Flatten()(y), name="head")
    return cr.Graph(x, y).reset_parameters(0).to(dtype)


def shared_split(dtype=np.float32) -> cr.Graph:
    """A Linear applied at two nodes (shared weights) and a Chunk whose pieces an Add
    and a Multiply join (a squeeze-excitation-like gate)."""
    x = cr.Input((8,), name="features")
    shared = cr.Linear(8, 8)
    h = cr.Tanh()(shared(x, name="shared"))
    left, right = cr.Chunk(2, dim=1)(h, name="halves")                   # (4,), (4,)
    gate = cr.Sigmoid()(right)
    y = cr.Multiply()([cr.Add()([left, right]), gate])
    y = shared(cr.Concat(1)([y, left]), name="shared")                   # (8,)
    return cr.Graph(x, y).reset_parameters(1).to(dtype)


def two_in_two_out(dtype=np.float32) -> cr.Graph:
    """Two inputs (an image and a vector), two outputs; the image features fan out."""
    image, extra = cr.Input((1, 4, 4), name="image"), cr.Input((3,), name="extra")
    feats = cr.Flatten()(cr.ReLU()(cr.Conv2d(1, 2, 3, padding=1)(image)))   # (32,)
    joined = cr.Concat(1)([cr.Linear(32, 5)(feats), cr.Linear(3, 5)(extra)])  # (10,)
    logits = cr.Linear(10, 4)(cr.Tanh()(joined), name="logits")
    aux = cr.Mean(1, keepdim=True)(feats, name="aux")                         # (1,)
    return cr.Graph([image, extra], [logits, aux]).reset_parameters(2).to(dtype)


def nested(dtype=np.float32) -> cr.Sequential:
    """A graph (called twice: shared) inside a graph inside a Sequential, with a
    Sequential and a Residual inside the outer graph and a two-output inner graph."""
    xi = cr.Input((3, 4, 4))
    inner = cr.Graph(xi, cr.Tanh()(cr.Conv2d(3, 3, 3, padding=1)(xi)))
    xs = cr.Input((3, 4, 4))
    top, bottom = cr.Split([1, 2], dim=1)(xs)
    splitter = cr.Graph(xs, [top, cr.Sigmoid()(bottom)])                 # two outputs
    x = cr.Input((3, 4, 4))
    h = inner(x, name="inner")
    h = cr.Sequential(cr.Conv2d(3, 3, 1), cr.Sigmoid())(h, name="seq")
    h = cr.Residual(cr.Sequential(cr.Conv2d(3, 3, 3, padding=1), cr.Tanh()))(h, name="res")
    a, b = splitter(inner(h, name="inner"), name="splitter")
    outer = cr.Graph(x, cr.Concat(1)([b, a]))
    model = cr.Sequential(cr.Conv2d(2, 3, 1), outer, cr.Flatten(), cr.Linear(48, 3))
    return model.reset_parameters(3).to(dtype)


def no_conv(dtype=np.float64) -> cr.Graph:
    """Fan-out, a shared layer, merges and two outputs without a convolution (ONNX
    Runtime's CPU provider has no double Conv kernel)."""
    x = cr.Input((2, 3, 4), name="x")
    p = cr.Permute((0, 2, 1, 3))(x)                                       # (3, 2, 4)
    r = cr.Reshape((3, 8))(p)
    lin = cr.Linear(8, 8)
    h = cr.Tanh()(lin(r))
    a, b, c = cr.Split(3, dim=2)(h)                                        # (3, 3|3|2)
    s = cr.Multiply()([cr.Add()([a, b]), cr.Mean(2, keepdim=True)(h)])
    y = lin(cr.Concat(2)([s, c, b]))                                        # (3, 8)
    return cr.Graph(x, [y, cr.Mean((1, 2))(h, name="pooled")]).reset_parameters(4).to(dtype)


GRAPH_MODELS = {
    "fan_out_concat": (fan_out_concat, [(2, 6, 6)]),
    "shared_split": (shared_split, [(8,)]),
    "two_in_two_out": (two_in_two_out, [(1, 4, 4), (3,)]),
    "nested": (nested, [(2, 4, 4)]),
    "no_conv": (no_conv, [(2, 3, 4)]),
}


def batch(shapes, n: int = 2, seed: int = 0, dtype=np.float32):
    """Random inputs of ``n`` samples for ``shapes``: one array, or a list for several."""
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((n, *s)).astype(dtype) for s in shapes]
    return xs if len(xs) > 1 else xs[0]


def as_list(value):
    """One output or a list of them, as a list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]
