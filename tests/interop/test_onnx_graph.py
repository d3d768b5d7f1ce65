"""export_onnx on graph models: one ONNX input per graph input, one output per graph
output, and ONNX Runtime gives the graph's forward (float32 within rounding, float64
to 1e-12), at two batch sizes through the dynamic batch dimension."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import chainrule as cr  # noqa: E402
from chainrule.interop import UnsupportedModuleError  # noqa: E402

from ..graph_models import GRAPH_MODELS, as_list, batch  # noqa: E402
from .cases import float32_output_tolerance  # noqa: E402
from ..helpers import FLOAT32_UNIT_ROUNDOFF, rel_error  # noqa: E402


def run(path, feed: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _export(model, path, shapes):
    return cr.export_onnx(model, path, shapes if len(shapes) > 1 else shapes[0])


CASES = [(name, np.float32) for name in GRAPH_MODELS] + [("no_conv", np.float64)]


@pytest.mark.parametrize("name, dtype", CASES, ids=[f"{n}-{d.__name__}" for n, d in CASES])
def test_onnx_runtime_agrees_with_the_graph(name, dtype, tmp_path):
    make, shapes = GRAPH_MODELS[name]
    model = make(dtype)
    path = tmp_path / "m.onnx"
    proto = _export(model, path, shapes)
    onnx.checker.check_model(onnx.load(path), full_check=True)

    graph = model if isinstance(model, cr.Graph) else None
    in_names = [i.name for i in proto.graph.input]
    out_names = [o.name for o in proto.graph.output]
    several_in = graph is not None and len(graph.input_names) > 1
    several_out = graph is not None and len(graph.output_names) > 1
    assert in_names == (list(graph.input_names) if several_in else ["input"])
    assert out_names == (list(graph.output_names) if several_out else ["output"])
    for value in (*proto.graph.input, *proto.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "N"

    for n, seed in ((2, 1), (5, 2)):
        x = batch(shapes, n, seed, dtype)
        ours = as_list(model.eval().forward(x))
        theirs = run(path, dict(zip(in_names, as_list(x))))
        bound = float32_output_tolerance(model, x) if dtype == np.float32 else 1e-12
        errors = [rel_error(t, o) for t, o in zip(theirs, ours, strict=True)]
        assert max(errors) <= bound, f"batch {n}: {errors} > {bound:.2g}"


def test_shared_layer_weights_are_one_initializer(tmp_path):
    model = GRAPH_MODELS["shared_split"][0]()
    proto = cr.export_onnx(model, tmp_path / "m.onnx", (8,))
    names = [t.name for t in proto.graph.initializer]
    assert names.count("shared.weight") == 1 and "shared.weight_1" not in names
    readers = [n for n in proto.graph.node if "shared.weight" in n.input]
    assert len(readers) == 2


def test_input_shape_defaults_to_the_declared_shapes(tmp_path):
    model = GRAPH_MODELS["two_in_two_out"][0]()
    proto = cr.export_onnx(model, tmp_path / "m.onnx")
    dims = [[d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim]
            for i in proto.graph.input]
    assert dims == [["N", 1, 4, 4], ["N", 3]]


def test_wrong_input_shapes_are_refused(tmp_path):
    model = GRAPH_MODELS["two_in_two_out"][0]()
    with pytest.raises(ValueError, match=r"takes 2 input\(s\) \['image', 'extra'\], but "
                                         r"input_shape gives 1"):
        cr.export_onnx(model, tmp_path / "m.onnx", (1, 4, 4))
    x = cr.Input((2, None))
    unknown = cr.Graph(x, cr.Tanh()(x))
    with pytest.raises(ValueError, match="input_shape is needed"):
        cr.export_onnx(unknown, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"\(root\): node 'shared': Linear.*got shape \(1, 7\)"):
        cr.export_onnx(GRAPH_MODELS["shared_split"][0](), tmp_path / "m.onnx", (7,))


def test_unsupported_layer_in_a_graph_is_named_by_path(tmp_path):
    class Mine(cr.ReLU):
        pass

    x = cr.Input((3,))
    inner = cr.Graph(x, Mine()(cr.Linear(3, 3)(x), name="odd"))
    y = cr.Input((3,))
    model = cr.Sequential(cr.Graph(y, inner(y, name="inner")))
    with pytest.raises(UnsupportedModuleError, match=r"^0\.inner\.odd: .*Mine has no ONNX"):
        cr.export_onnx(model, tmp_path / "m.onnx", (3,))


def test_an_input_or_a_tensor_returned_as_several_outputs_gets_names_of_its_own(tmp_path):
    x = cr.Input((3,))
    t = cr.Tanh()(x)
    model = cr.Graph(x, [x, t, t])
    proto = cr.export_onnx(model, tmp_path / "m.onnx", (3,))
    names = [o.name for o in proto.graph.output]
    assert names == ["input_output0", "tanh", "tanh_output2"]
    a = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    for theirs, mine in zip(run(tmp_path / "m.onnx", {"input": a}), model(a)):
        # onnxruntime's tanh is its own float32 approximation: a few ulps
        np.testing.assert_allclose(theirs, mine, rtol=8 * FLOAT32_UNIT_ROUNDOFF, atol=0)
