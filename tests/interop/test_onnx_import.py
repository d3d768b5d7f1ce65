"""from_onnx: unsupported nodes listed at once before anything runs, constant folding
(weights a file computes, torch's dynamic-batch reshape), initializers listed as inputs,
hand-built models against ONNX Runtime and by finite differences, export_onnx round
trips of every zoo model and layer case, fine-tuning an imported model on digits, and
``chainrule import`` on the command line."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import chainrule as cr  # noqa: E402
from chainrule.cli import main  # noqa: E402
from chainrule.interop import UnsupportedOnnxError, from_onnx  # noqa: E402
from chainrule.interop import onnx_import  # noqa: E402

from ..helpers import rel_error  # noqa: E402
from .cases import (ALL_CASES, NO_ONNX_EXPORT, float32_output_tolerance, inputs,  # noqa: E402
                    warm_up)

FLOAT = TensorProto.FLOAT
pytestmark = [pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript"),
              pytest.mark.filterwarnings("ignore:The feature will be removed")]


def model_of(nodes, inputs_, outputs, initializers=(), opset=17, name="test"):
    graph = helper.make_graph(nodes, name, inputs_, outputs,
                              [numpy_helper.from_array(np.asarray(v), k)
                               for k, v in dict(initializers).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=8)


def run_ort(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def tensor(name, shape, elem=FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


# ---------------------------------------------------------------------------- errors
def test_every_unsupported_node_is_named_at_once_before_anything_runs(monkeypatch):
    def no_computation(*args, **kwargs):
        raise AssertionError("from_onnx computed something before refusing the model")
    monkeypatch.setattr(onnx_import, "_evaluate", no_computation)
    monkeypatch.setattr(onnx_import, "call_symbolic", no_computation)
    nodes = [
        helper.make_node("Constant", [], ["w"], name="make_w",
                         value=numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32))),
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Erf", ["c"], ["e"], name="erf_1"),
        helper.make_node("Foo", ["e"], ["f"], name="custom_1", domain="my.ops"),
        helper.make_node("Sin", ["f"], ["y"], name="sin_1"),
    ]
    model = model_of(nodes, [tensor("x", ["N", 3, 4, 4])], [tensor("y", ["N", 2, 4, 4])])
    model.opset_import.append(helper.make_opsetid("my.ops", 1))
    with pytest.raises(UnsupportedOnnxError) as info:
        from_onnx(model)
    assert [n[:3] for n in info.value.nodes] == [
        ("erf_1", "Erf", 17), ("custom_1", "my.ops.Foo", 17), ("sin_1", "Sin", 17)]
    text = str(info.value)
    assert "3 node(s) cannot be converted" in text
    assert "'erf_1': Erf (opset 17): no converter, and a graph tensor among its inputs" in text


def test_refused_attributes_are_gathered_into_one_error():
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="swap", perm=[1, 0, 2, 3]),
             helper.make_node("Relu", ["t"], ["r"], name="relu"),
             helper.make_node("Flatten", ["x"], ["y"], name="flat2", axis=2)]
    model = model_of(nodes, [tensor("x", [2, 3, 4, 4])],
                     [tensor("r", [3, 2, 4, 4]), tensor("y", [6, 16])])
    with pytest.raises(UnsupportedOnnxError) as info:
        from_onnx(model)
    reasons = {name: why for name, _, _, why in info.value.nodes}
    assert set(reasons) == {"swap", "flat2"}     # relu only reads the refused tensor
    assert "perm [1, 0, 2, 3] moves the batch axis" in reasons["swap"]
    assert "axis 2 merges the batch axis" in reasons["flat2"]


def test_a_resize_rule_upsample_lacks_is_refused_not_approximated():
    # Upsample (opsets 7-9) interpolates linearly in asymmetric coordinates; chainrule's
    # Upsample has half-pixel and align-corners ones only
    node = helper.make_node("Upsample", ["x", "scales"], ["y"], name="up", mode="linear")
    model = model_of([node], [tensor("x", ["N", 1, 2, 3])], [tensor("y", None)],
                     {"scales": np.array([1, 1, 2, 2], np.float32)}, opset=9)
    with pytest.raises(UnsupportedOnnxError, match="'up': Upsample \\(opset 9\\): mode 'linear' "
                                                   "with coordinate_transformation_mode "
                                                   "'asymmetric'"):
        from_onnx(model)


def test_inputs_must_be_float_tensors_with_a_batch_axis():
    model = model_of([helper.make_node("Relu", ["x"], ["y"])],
                     [tensor("x", [2, 3], TensorProto.INT64)], [tensor("y", [2, 3])])
    with pytest.raises(ValueError, match="input 'x' is int64; chainrule models take float32"):
        from_onnx(model)
    with pytest.raises(TypeError, match="expected a path or an onnx.ModelProto, got int"):
        from_onnx(3)


# ---------------------------------------------------------------------------- folding
def folding_model():
    """A conv weight the file computes (Constant * ConstantOfShape, Cast), then torch's
    ``y.view(y.size(0), -1)`` (Shape, Gather, Unsqueeze, Concat, Reshape) and a Gemm."""
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((5, 4 * 3 * 3)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w0"], value=numpy_helper.from_array(w0)),
        helper.make_node("Constant", [], ["wshape"], value=numpy_helper.from_array(
            np.array([4, 3, 3, 3], np.int64))),
        helper.make_node("ConstantOfShape", ["wshape"], ["twos"],
                         value=numpy_helper.from_array(np.array([2.0], np.float64))),
        helper.make_node("Cast", ["twos"], ["twos32"], to=FLOAT),
        helper.make_node("Mul", ["w0", "twos32"], ["w"]),
        helper.make_node("Conv", ["x", "w"], ["c"], name="/features/conv/Conv", pads=[0, 0, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="/features/relu/Relu"),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["r", "target"], ["flat"], name="/view"),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["y"], name="/fc/Gemm",
                         transB=1, alpha=0.5, beta=2.0),
    ]
    inits = {"zero": np.array(0, np.int64), "axes0": np.array([0], np.int64),
             "minus1": np.array([-1], np.int64), "fc.weight": fc,
             "fc.bias": rng.standard_normal(5).astype(np.float32)}
    return model_of(nodes, [tensor("x", ["N", 3, 4, 4])], [tensor("y", ["N", 5])], inits), w0


def test_constant_subgraphs_fold_into_weights_and_the_batch_stays_dynamic():
    model, w0 = folding_model()
    graph = from_onnx(model)
    conv = graph.get_layer("features.conv")
    assert isinstance(conv, cr.Conv2d) and conv.padding == (0, 0)   # asymmetric: a pad first
    np.testing.assert_array_equal(conv.weight.data, 2 * w0)
    assert isinstance(graph.get_layer("features.conv_pad"), cr.ZeroPad2d)
    assert isinstance(graph.get_layer("view"), cr.Reshape)
    assert set(graph.state_dict()) == {"features.conv.weight", "fc.weight", "fc.bias"}
    for batch in (2, 5):     # one graph, any batch size, as the file's dynamic N
        x = inputs((3, 4, 4), batch, seed=batch)
        (want,) = run_ort(model, {"x": x})
        got = graph.forward(x)
        assert rel_error(got, want) < float32_output_tolerance(graph, x)


def test_initializers_listed_as_graph_inputs_are_weights():
    rng = np.random.default_rng(1)
    w, b = rng.standard_normal((6, 4)).astype(np.float32), np.zeros(6, np.float32)
    model = model_of([helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)],
                     [tensor("x", [None, 4]), tensor("W", [6, 4]), tensor("B", [6])],
                     [tensor("y", [None, 6])], {"W": w, "B": b})
    graph = from_onnx(model)
    assert graph.input_names == ("x",)
    layer = graph.get_layer("gemm")        # no node name, no "*.weight": the op type
    assert isinstance(layer, cr.Linear) and [p.shape for p in graph.parameters()] == [(6, 4), (6,)]
    x = inputs((4,), 3, seed=2)
    np.testing.assert_allclose(graph.forward(x), x @ w.T + b, rtol=1e-6)


# ---------------------------------------------------------------------------- operators
def mixed_model(dtype=np.float32, opset=11):
    """Conv (SAME_UPPER, stride 2) -> BatchNormalization -> LeakyRelu -> MaxPool
    (asymmetric pads) -> Mul by a per-channel constant -> Sub from a constant -> PRelu
    -> Pad (reflect) -> AveragePool -> Flatten -> Gemm (alpha, beta, transB) -> Softmax
    (opset 11: coerced to 2-D); the model's inputs in ``dtype``."""
    rng = np.random.default_rng(3)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    a = lambda *s: rng.standard_normal(s).astype(dtype)   # noqa: E731
    inits = {"conv.weight": a(4, 3, 3, 3), "conv.bias": a(4), "bn.weight": 1 + 0.1 * a(4),
             "bn.bias": a(4), "bn.mean": a(4), "bn.var": (1 + rng.random(4)).astype(dtype),
             "scale": a(4, 1, 1), "offset": a(1, 1, 1), "act.weight": (0.3 * a(4, 1, 1)),
             "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
             "fc.weight": a(3, 4 * 3 * 3), "fc.bias": a(1, 3)}
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], auto_pad="SAME_UPPER",
                         strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c", "bn.weight", "bn.bias", "bn.mean", "bn.var"],
                         ["b"], epsilon=1e-3),
        helper.make_node("LeakyRelu", ["b"], ["l"], alpha=0.2),
        helper.make_node("MaxPool", ["l"], ["m"], kernel_shape=[2, 2], pads=[0, 0, 1, 1]),
        helper.make_node("Mul", ["m", "scale"], ["s"]),
        helper.make_node("Sub", ["offset", "s"], ["d"]),
        helper.make_node("PRelu", ["d", "act.weight"], ["p"]),
        helper.make_node("Pad", ["p", "pads"], ["q"], mode="reflect"),
        helper.make_node("AveragePool", ["q"], ["v"], kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Flatten", ["v"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["g"], transB=1, alpha=0.5,
                         beta=1.5),
        helper.make_node("Softmax", ["g"], ["y"], axis=1),
    ]
    return model_of(nodes, [tensor("x", ["N", 3, 9, 9], elem)], [tensor("y", ["N", 3], elem)],
                    inits, opset=opset)


def test_a_model_of_many_operators_matches_onnx_runtime():
    model = mixed_model()
    graph = from_onnx(model)
    kinds = [type(graph.get_layer(n.layer_name)).__name__ for n in graph.nodes]
    # SAME_UPPER here pads (1, 1): Conv2d's own padding; MaxPool's end pads: a pad first
    assert kinds == ["Conv2d", "BatchNorm2d", "LeakyReLU", "ConstantPad2d",
                     "MaxPool2d", "ConstantArithmetic", "ConstantArithmetic", "PReLU",
                     "ReflectionPad2d", "AvgPool2d", "Flatten", "Linear", "Softmax"]
    x = inputs((3, 9, 9), 3, seed=4)
    (want,) = run_ort(model, {"x": x})
    assert rel_error(graph.forward(x), want) < float32_output_tolerance(graph, x)


def test_an_imported_model_has_the_gradients_of_finite_differences():
    graph = from_onnx(mixed_model(np.float64))
    assert graph.dtype == np.float64 and not graph.training
    x = np.random.default_rng(5).standard_normal((2, 3, 9, 9))
    # eval mode (the file's inference semantics: BatchNorm's running statistics); a step
    # of 1e-5, where truncation (1e-4: 5e-7) and rounding (1e-6: 4e-7) errors balance
    # through these 13 layers; a wrong backward gives errors near 1
    assert cr.gradcheck(graph.gradients_in_eval(True), x, eps=1e-5) < 1e-7


def test_softmax_before_opset_13_is_over_the_flattened_trailing_axes():
    model = model_of([helper.make_node("LogSoftmax", ["x"], ["y"], axis=1)],
                     [tensor("x", ["N", 2, 3, 4])], [tensor("y", ["N", 2, 3, 4])], opset=11)
    graph = from_onnx(model)
    x = inputs((2, 3, 4), 2, seed=6)
    (want,) = run_ort(model, {"x": x})
    np.testing.assert_allclose(graph.forward(x), want, rtol=1e-5, atol=1e-6)
    assert [type(graph.get_layer(n.layer_name)).__name__ for n in graph.nodes] == \
        ["Reshape", "LogSoftmax", "Reshape"]


# ---------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", list(cr.models.MODELS))
def test_export_onnx_then_from_onnx_gives_every_zoo_model_back(name, tmp_path):
    """Outputs, input gradient and every parameter gradient, in float64, under the same
    state-dict keys (export_onnx names initializers by them, from_onnx names layers by
    the weights). 1e-9: ONNX stores eps and other attributes as float32."""
    model = cr.models.MODELS[name](in_channels=3, input_size=16, num_classes=5, seed=0)
    model = warm_up(model, (3, 16, 16)).double().gradients_in_eval(True)
    model.zero_grad()
    cr.export_onnx(model, tmp_path / "m.onnx", (3, 16, 16))
    graph = from_onnx(tmp_path / "m.onnx").gradients_in_eval(True)
    assert set(graph.state_dict()) == set(model.state_dict())
    rng = np.random.default_rng(7)
    x, upstream = rng.standard_normal((2, 3, 16, 16)), rng.standard_normal((2, 5))
    errors = {"output": rel_error(graph.forward(x), model.forward(x)),
              "input gradient": rel_error(graph.backward(upstream), model.backward(upstream))}
    ours = dict(graph.named_parameters())
    errors.update({key: rel_error(ours[key].grad, p.grad)
                   for key, p in model.named_parameters()})
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-9, f"{name}: {worst} differs by {errors[worst]:.2e}"


# export_onnx writes these layer cases with operators beyond the importer's list (its
# AveragePool with end pads that exclude the padding imports: a pad, the pool, a rescale)
NOT_IMPORTED = {
    "adaptive_uneven": {"MatMul"}, "adaptive_avg_keep_columns": {"MatMul"},
    "adaptive_max_uneven": {"Gather", "ReduceMax"},
    "adaptive_max_keep_rows": {"Gather", "ReduceMax"},
    "batchnorm2d_batch_stats": {"Sqrt"}, "lrn_even": {"Pow"}, "lrn_sequence": {"Pow"},
    "gelu": {"Erf"}, "softplus": {"Greater", "Where"},
    "softplus_beta_threshold": {"Greater", "Where"},
    "zeropad_asym_crop": {"Slice"}, "constpad_crop": {"Slice"}, "reflectpad_crop": {"Slice"},
    "replpad_crop_into_border": {"Slice"},
}
EXPORTABLE = [c for c in ALL_CASES if c[0] not in NO_ONNX_EXPORT]


@pytest.mark.parametrize("name, build, shape", EXPORTABLE, ids=[c[0] for c in EXPORTABLE])
def test_export_onnx_then_from_onnx_gives_every_layer_case_back(name, build, shape, tmp_path):
    model = warm_up(build(), shape)
    cr.export_onnx(model, tmp_path / "m.onnx", shape)
    if name in NOT_IMPORTED:
        with pytest.raises(UnsupportedOnnxError) as info:
            from_onnx(tmp_path / "m.onnx")
        assert {op for _, op, _, _ in info.value.nodes} == NOT_IMPORTED[name]
        return
    graph = from_onnx(tmp_path / "m.onnx")
    x = inputs(shape, 3, seed=8)
    want = model.forward(x)
    got = graph.forward(x)
    for g, w in zip(got if isinstance(got, list) else [got], want if isinstance(want, list)
                    else [want]):
        assert rel_error(g, w) <= float32_output_tolerance(model, x), name


# ---------------------------------------------------------------------------- training
def digits_onnx(tmp_path):
    """A small torch CNN for 8x8 digits, exported by torch.onnx (TorchScript exporter)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Dropout(0.1),
        torch.nn.Linear(8 * 4 * 4, 10)).eval()
    path = tmp_path / "digits.onnx"
    torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    return path, net


def test_an_imported_model_fine_tunes_on_digits_and_saves(tmp_path):
    pytest.importorskip("sklearn")
    path, _ = digits_onnx(tmp_path)
    graph = from_onnx(path)
    assert set(graph.state_dict()) >= {"0.weight", "1.running_mean", "6.weight"}
    data = cr.data.load_dataset("digits")
    X, y = data.train[0][:256], data.train[1][:256]
    loss_fn = cr.CrossEntropyLoss()
    before = loss_fn(cr.predict(graph, X), y)
    graph.train()
    history = cr.fit(graph, loss_fn, cr.optim.Adam(graph.parameters(), lr=1e-2), (X, y),
                     epochs=3, batch_size=32, seed=0)
    graph.eval()
    after = loss_fn(cr.predict(graph, X), y)
    assert history.loss[-1] < history.loss[0] and after < 0.5 * before, (before, after)
    loaded = cr.load(cr.save(graph, tmp_path / "tuned.safetensors"))
    np.testing.assert_array_equal(loaded.eval().forward(X[:8]), graph.forward(X[:8]))


# ---------------------------------------------------------------------------- command line
def test_chainrule_import_writes_a_checkpoint_that_evaluate_and_explain_read(tmp_path, capsys):
    pytest.importorskip("sklearn")
    path, net = digits_onnx(tmp_path)
    out = tmp_path / "ckpt" / "digits.safetensors"
    assert main(["import", str(path), str(out), "--data", "digits"]) == 0
    assert "wrote" in capsys.readouterr().out
    ckpt = cr.load_checkpoint(out)
    assert ckpt.metadata["data"] == "digits" and ckpt.metadata["in_channels"] == 1
    x = inputs((1, 8, 8), 4, seed=9)
    import torch
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert rel_error(ckpt.model.eval().forward(x), want) < 1e-5
    assert main(["evaluate", str(out)]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["explain", "--checkpoint", str(out), "--data", "digits"]) == 0
    assert "dL/dx" in capsys.readouterr().out


def test_chainrule_import_names_the_unsupported_nodes(tmp_path):
    model = model_of([helper.make_node("Erf", ["x"], ["y"], name="erf_node")],
                     [tensor("x", ["N", 3])], [tensor("y", ["N", 3])])
    onnx.save(model, tmp_path / "erf.onnx")
    with pytest.raises(SystemExit, match="'erf_node': Erf \\(opset 17\\)"):
        main(["import", str(tmp_path / "erf.onnx"), str(tmp_path / "out.safetensors")])
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(SystemExit, match="chainrule import: "):
        main(["import", str(tmp_path / "junk.onnx"), str(tmp_path / "out.safetensors")])


# ---------------------------------------------------------------------------- opset rules
def _i64(*values):
    return np.array(values, np.int64)


def _f32(*values):
    return np.array(values, np.float32)


# (id, opset, node (input "x", output "y"), sample shape, initializers): one operator in
# the attribute form of an old opset and the input form of a newer one, each against
# ONNX Runtime at that opset.
OPSET_CASES = [
    ("clip_attrs_7", 7, dict(op="Clip", min=-0.5, max=0.5), (3, 4), {}),
    ("clip_inputs_13", 13, dict(op="Clip", inputs=["lo", "hi"]), (3, 4),
     {"lo": _f32(-0.5)[0], "hi": _f32(0.5)[0]}),
    ("relu6_clip_11", 11, dict(op="Clip", inputs=["lo", "hi"]), (3, 4),
     {"lo": _f32(0)[0], "hi": _f32(6)[0]}),
    ("squeeze_attr_11", 11, dict(op="Squeeze", axes=[2]), (3, 1, 4), {}),
    ("squeeze_input_13", 13, dict(op="Squeeze", inputs=["axes"]), (3, 1, 4), {"axes": _i64(-2)}),
    ("unsqueeze_attr_7", 7, dict(op="Unsqueeze", axes=[1, 3]), (3, 4), {}),
    ("unsqueeze_input_13", 13, dict(op="Unsqueeze", inputs=["axes"]), (3, 4), {"axes": _i64(1, -1)}),
    ("split_attr_7", 7, dict(op="Split", axis=1, split=[1, 3], outputs=2), (4, 2), {}),
    ("split_input_13", 13, dict(op="Split", axis=1, inputs=["split"], outputs=2), (4, 2),
     {"split": _i64(1, 3)}),
    ("split_num_outputs_18", 18, dict(op="Split", axis=-1, num_outputs=2, outputs=2), (2, 5), {}),
    ("pad_attrs_7", 7, dict(op="Pad", pads=[0, 0, 1, 2, 0, 0, 2, 1], value=1.5), (2, 3, 3), {}),
    ("pad_inputs_11", 11, dict(op="Pad", mode="edge", inputs=["pads"]), (2, 3, 3),
     {"pads": _i64(0, 0, 1, 0, 0, 0, 2, 1)}),
    ("pad_axes_18", 18, dict(op="Pad", mode="reflect", inputs=["pads", "", "axes"]), (2, 4, 4),
     {"pads": _i64(1, 2, 2, 1), "axes": _i64(2, 3)}),
    ("softmax_coerced_7", 7, dict(op="Softmax"), (3, 2, 2), {}),
    ("logsoftmax_axis2_11", 11, dict(op="LogSoftmax", axis=2), (3, 2, 2), {}),
    ("softmax_last_13", 13, dict(op="Softmax"), (3, 2, 2), {}),
    ("dropout_ratio_attr_7", 7, dict(op="Dropout", ratio=0.3), (3, 4), {}),
    ("dropout_ratio_input_12", 12, dict(op="Dropout", inputs=["ratio"]), (3, 4),
     {"ratio": _f32(0.3)[0]}),
    ("batchnorm_spatial_7", 7, dict(op="BatchNormalization", epsilon=1e-3,
                                    inputs=["s", "b", "m", "v"]), (2, 3, 3),
     {"s": _f32(1, 2), "b": _f32(0.5, -1), "m": _f32(0.1, 0.2), "v": _f32(1.5, 0.5)}),
    ("batchnorm_15", 15, dict(op="BatchNormalization", inputs=["s", "b", "m", "v"]), (2, 3, 3),
     {"s": _f32(1, 2), "b": _f32(0.5, -1), "m": _f32(0.1, 0.2), "v": _f32(1.5, 0.5)}),
    ("maxpool_7", 7, dict(op="MaxPool", kernel_shape=[2, 2], pads=[1, 1, 1, 1],
                          strides=[2, 2]), (2, 5, 5), {}),
    ("maxpool_ceil_dilated_11", 11, dict(op="MaxPool", kernel_shape=[2, 2], strides=[2, 2],
                                         dilations=[2, 1], ceil_mode=1), (2, 6, 7), {}),
    ("avgpool_count_pad_7", 7, dict(op="AveragePool", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                    count_include_pad=1), (2, 4, 4), {}),
    ("avgpool_ceil_10", 10, dict(op="AveragePool", kernel_shape=[3, 3], strides=[2, 2],
                                 ceil_mode=1), (2, 6, 6), {}),
    ("gemm_c_required_7", 7, dict(op="Gemm", inputs=["B", "C"], transB=1, alpha=2.0,
                                  beta=0.5), (3,), {"B": np.ones((2, 3), np.float32) / 4,
                                                    "C": _f32(1, -1)}),
    ("gemm_no_c_11", 11, dict(op="Gemm", inputs=["B"]), (3,),
     {"B": np.arange(6, dtype=np.float32).reshape(3, 2)}),
    ("upsample_attr_7", 7, dict(op="Upsample", scales=[1.0, 1.0, 2.0, 3.0]), (1, 2, 2), {}),
    ("upsample_input_9", 9, dict(op="Upsample", inputs=["scales"]), (1, 2, 3),
     {"scales": _f32(1, 1, 2, 2)}),
    ("resize_10", 10, dict(op="Resize", inputs=["scales"]), (1, 2, 3), {"scales": _f32(1, 1, 2, 2)}),
    ("resize_align_11", 11, dict(op="Resize", mode="linear", inputs=["roi", "scales"],
                                 coordinate_transformation_mode="align_corners"), (1, 3, 3),
     {"roi": np.zeros(0, np.float32), "scales": _f32(1, 1, 2, 2)}),
    ("resize_sizes_13", 13, dict(op="Resize", mode="linear", inputs=["", "", "sizes"]), (2, 3, 3),
     {"sizes": _i64(2, 2, 5, 4)}),
    ("reducemean_attr_13", 13, dict(op="ReduceMean", axes=[2, 3], keepdims=0), (2, 3, 3), {}),
    ("reducemean_input_18", 18, dict(op="ReduceMean", inputs=["axes"]), (2, 3, 3),
     {"axes": _i64(-1)}),
    ("leakyrelu_default_7", 7, dict(op="LeakyRelu"), (3, 4), {}),
    ("hardsigmoid_default_7", 7, dict(op="HardSigmoid"), (3, 4), {}),
    ("selu_default_7", 7, dict(op="Selu"), (3, 4), {}),
    ("flatten_default_9", 9, dict(op="Flatten"), (2, 3, 4), {}),
    ("flatten_rank1_9", 9, dict(op="Flatten"), (), {}),
    # pads a torch pool cannot take, left out of the mean (count_include_pad=0): Caffe2's
    # end-only pads (inception_v1), with ceil_mode, and 1-D pads beyond half the kernel
    ("avgpool_end_pads_9", 9, dict(op="AveragePool", kernel_shape=[3, 3],
                                   pads=[0, 0, 1, 1]), (2, 5, 5), {}),
    ("avgpool_pads_ceil_10", 10, dict(op="AveragePool", kernel_shape=[3, 3], strides=[2, 2],
                                      pads=[1, 0, 0, 1], ceil_mode=1), (2, 6, 7), {}),
    ("avgpool1d_wide_pads_11", 11, dict(op="AveragePool", kernel_shape=[3], pads=[2, 0]),
     (2, 7), {}),
]


@pytest.mark.parametrize("name, opset, spec, sample, inits", OPSET_CASES,
                         ids=[c[0] for c in OPSET_CASES])
def test_each_opsets_attribute_rules_match_onnx_runtime(name, opset, spec, sample, inits):
    spec = dict(spec)
    op, extra = spec.pop("op"), spec.pop("inputs", [])
    outputs = [f"y{k}" for k in range(spec.pop("outputs", 1))]
    node = helper.make_node(op, ["x", *extra], outputs, name=name, **spec)
    model = model_of([node], [tensor("x", ["N", *sample])], [tensor(o, None) for o in outputs],
                     inits, opset=opset)
    graph = from_onnx(model)
    x = inputs(sample, 2, seed=10)
    want = run_ort(model, {"x": x})
    got = graph.forward(x)
    got = got if isinstance(got, list) else [got]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=name)


# ---------------------------------------------------------------------------- zoo fixes
# (found by the model tests that ship with onnx: tests/interop/test_onnx_import_zoo.py)
def test_constants_fold_at_the_files_opset():
    """Unsqueeze-1 (axes an attribute, densenet121's batch-norm weights) folds: onnx's
    reference evaluator runs a bare node at its latest opset, so the importer gives it
    a graph with the file's opset."""
    w = np.arange(1, 4, dtype=np.float32)
    nodes = [helper.make_node("Unsqueeze", ["w"], ["w3"], axes=[1, 2]),
             helper.make_node("Mul", ["x", "w3"], ["y"])]
    model = model_of(nodes, [tensor("x", ["N", 3, 2, 2])], [tensor("y", None)], {"w": w},
                     opset=9)
    x = inputs((3, 2, 2), 2, seed=11)
    np.testing.assert_allclose(from_onnx(model).forward(x), run_ort(model, {"x": x})[0],
                               rtol=1e-6)


def test_a_dropout_mask_is_refused_only_where_something_reads_it():
    node = helper.make_node("Dropout", ["x"], ["d", "mask"], name="drop", ratio=0.5)
    relu = helper.make_node("Relu", ["d"], ["y"])
    unread = model_of([node, relu], [tensor("x", ["N", 4])], [tensor("y", None)], opset=9)
    x = inputs((4,), 3, seed=12)
    np.testing.assert_array_equal(from_onnx(unread).forward(x), np.maximum(x, 0))
    read = model_of([node, relu], [tensor("x", ["N", 4])],
                    [tensor("y", None), tensor("mask", None, TensorProto.BOOL)], opset=9)
    with pytest.raises(UnsupportedOnnxError, match="the mask output"):
        from_onnx(read)


def test_an_average_pool_without_its_pads_has_the_gradients_of_finite_differences():
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                            pads=[1, 0, 0, 1], ceil_mode=1)
    graph = from_onnx(model_of([node], [tensor("x", ["N", 2, 6, 7], TensorProto.DOUBLE)],
                               [tensor("y", None, TensorProto.DOUBLE)], opset=10))
    assert [type(graph.get_layer(n.layer_name)).__name__ for n in graph.nodes] == \
        ["ZeroPad2d", "AvgPool2d", "ConstantArithmetic"]
    x = np.random.default_rng(13).standard_normal((2, 2, 6, 7))
    assert cr.gradcheck(graph.gradients_in_eval(True), x) < 1e-8
