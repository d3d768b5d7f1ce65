"""The model tests that ship inside the ``onnx`` wheel (``onnx/backend/test/data/``),
through from_onnx, the way ONNX's backend runner runs them.

- ``light/``: nine classic CNNs of the ONNX model zoo (opset 9; weights replaced by
  ``ConstantOfShape`` fills, graph inputs that are also initializers), fed the runner's
  own dummy input (``Runner.generate_dummy_data(x, seed=0, random=False)``, imported,
  not re-implemented) and compared with ``light_<name>_output_<i>.pb`` by the runner's
  own ``assert_similar_outputs`` at each model's rtol/atol from
  ``onnx.backend.test.case.model.collect_testcases``. Every fill is one number, so every
  class gets the same logit: eight of the nine expected outputs are a uniform 0.001 and
  prove the import and the shapes, not the numbers. The second test therefore scales
  each fill elementwise by a seeded factor in [0.5, 1.5] and compares the logits (the
  Softmax's input) and the outputs with ONNX Runtime on that model.
- ``simple/``, ``pytorch-converted/``, ``pytorch-operator/``: ``model.onnx`` with
  ``test_data_set_*``, at the runner's defaults (rtol 1e-3, atol 1e-7, or the case's
  ``data.json``). Most of the pytorch cases are written at opset 6, below the
  importer's opsets (7 to 21): those run as ``onnx.version_converter`` makes them at
  opset 9 (ONNX's own rewrite; the expected outputs are PyTorch's, unchanged). A case is
  skipped with the importer's reason (the unsupported node, its op type and why) or
  because its data are not float tensors. ``pytest -rs`` lists the reasons.
- Backward through an imported classic CNN (squeezenet, 224x224): finite gradients,
  checked along one random direction of the input and every parameter at once.

vgg19 is marked ``slow`` (measured on 2 shared cores: 8 s for the runner's test, 28 s
against ONNX Runtime; most of its import is Linear's random initialisation of 102M
weights before the file's are copied in).
"""

from __future__ import annotations

import collections
import copy
import glob
import os
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import numpy_helper, version_converter  # noqa: E402
from onnx.backend.test.case.model import collect_testcases  # noqa: E402
from onnx.backend.test.loader import DATA_DIR, load_model_tests  # noqa: E402
from onnx.backend.test.runner import Runner  # noqa: E402

import chainrule as cr  # noqa: E402
from chainrule.interop import UnsupportedOnnxError, from_onnx  # noqa: E402
from chainrule.interop.onnx_import import MIN_OPSET  # noqa: E402

from ..helpers import rel_error  # noqa: E402
from .cases import float32_output_tolerance  # noqa: E402

LIGHT_DIR = os.path.join(DATA_DIR, "light")
KINDS = ("simple", "pytorch-converted", "pytorch-operator")
FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)
# the opset the opset-6 pytorch cases are converted to (ONNX's version_converter)
CONVERTED_OPSET = 9
SLOW = {"vgg19"}
# How many cases of each directory this onnx release ships that pass: a regression that
# skips more fails here rather than hiding among the skips.
MIN_PASSED = {"simple": 1, "pytorch-converted": 59, "pytorch-operator": 16}

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    LIGHT = [(c.model_name, c.rtol, c.atol) for c in collect_testcases() if c.kind == "real"]


def _light(cases):
    return [pytest.param(*c, id=c[0], marks=[pytest.mark.slow] if c[0] in SLOW else [])
            for c in cases]


def _read(path):
    tensor = onnx.TensorProto()
    with open(path, "rb") as f:
        tensor.ParseFromString(f.read())
    return numpy_helper.to_array(tensor)


def _data_inputs(model):
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _run(graph, inputs):
    out = graph.forward(inputs if len(inputs) > 1 else inputs[0])
    return out if isinstance(out, list) else [out]


# ---------------------------------------------------------------------------- light
def test_the_runner_lists_the_nine_classic_cnns():
    assert sorted(name for name, _, _ in LIGHT) == [
        "bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
        "shufflenet", "squeezenet", "vgg19", "zfnet512"]


@pytest.mark.parametrize("name, rtol, atol", _light(LIGHT))
def test_a_classic_cnn_gives_the_runners_expected_output(name, rtol, atol, monkeypatch):
    # im2col for every convolution here: with one number per fill, every channel is
    # equal in exact arithmetic and the logits reach ~1e10, so the expected uniform
    # Softmax holds only while each channel rounds alike. OpenBLAS's Haswell sgemm
    # rounds rows differently (a constant-row (64, 16) @ (16, 784) product differs in
    # rows 6-11, 18-23, ...), and under it squeezenet's Winograd layers (issue 18) let a
    # one-ulp difference through: Softmax one-hot over 32 classes. The numbers, Winograd
    # included, are checked by the scaled-fills test against ONNX Runtime below.
    monkeypatch.setattr(cr.Conv2d, "winograd", False)
    model = onnx.load(os.path.join(LIGHT_DIR, f"light_{name}.onnx"))
    feeds = [Runner.generate_dummy_data(x, seed=0, name=name, random=False)
             for x in _data_inputs(model)]
    expected = [_read(os.path.join(LIGHT_DIR, f"light_{name}_output_{i}.pb"))
                for i in range(len(model.graph.output))]
    Runner.assert_similar_outputs(expected, _run(from_onnx(model), feeds), rtol=rtol,
                                  atol=atol, model_dir=name)


def _scaled_fills(model, seed=0, logits=True):
    """The model with each ConstantOfShape fill (the zoo's stand-in weights) an
    initializer: a kernel's fill times a seeded factor in [-1, 1] per element (zero
    mean: all-positive kernels grow the activations to 1e19 and saturate the Softmax),
    a vector's (biases, batch-norm statistics) in [0.5, 1.5] (variances stay positive);
    and the Softmax's input as an extra output."""
    model = copy.deepcopy(model)
    graph, rng = model.graph, np.random.default_rng(seed)
    values = {t.name: t for t in graph.initializer}
    kept, shapes = [], set()
    for node in graph.node:
        if node.op_type == "ConstantOfShape":
            shape = tuple(numpy_helper.to_array(values[node.input[0]]))
            fill = numpy_helper.to_array(node.attribute[0].t).reshape(())
            factor = rng.uniform(-1, 1, shape) if len(shape) > 1 else \
                rng.uniform(0.5, 1.5, shape)
            graph.initializer.append(numpy_helper.from_array(
                (fill * factor).astype(fill.dtype), node.output[0]))
            shapes.add(node.input[0])
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    for listing in (graph.initializer, graph.input):   # the shapes, now unused
        for entry in [e for e in listing if e.name in shapes]:
            listing.remove(entry)
    softmax = [n for n in kept if n.op_type == "Softmax"]
    if softmax and logits:
        graph.output.append(onnx.helper.make_tensor_value_info(
            softmax[-1].input[0], onnx.TensorProto.FLOAT, None))
    return model


@pytest.mark.parametrize("name, rtol, atol", _light(LIGHT))
def test_a_classic_cnn_with_varied_weights_matches_onnx_runtime(name, rtol, atol):
    model = _scaled_fills(onnx.load(os.path.join(LIGHT_DIR, f"light_{name}.onnx")))
    (x,) = [Runner.generate_dummy_data(i, seed=0, name=name, random=False)
            for i in _data_inputs(model)]
    options = ort.SessionOptions()
    options.log_severity_level = 3          # resnet50's unused initializer, named aloud
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    want = session.run(None, {_data_inputs(model)[0].name: x})
    graph = from_onnx(model)
    got = _run(graph, [x])
    assert np.ptp(want[-1]) > 1e-3 * np.abs(want[-1]).max(), "the logits are still alike"
    tolerance = float32_output_tolerance(graph, x)
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape and g.dtype == w.dtype
        assert rel_error(g, w) < tolerance, f"{name}: output {k}"


def test_an_imported_classic_cnn_runs_backward():
    """squeezenet at 224x224 in float64 (the eval semantics: Dropout the identity; the
    fills scaled as above: with the runner's one-number weights every class's gradient
    cancels in the last convolution and the input gets exact zeros): the gradients are
    finite and not zero, and along one random direction of the input and of every
    parameter together they match a central difference. A full
    ``cr.gradcheck``, even of 1 element per array, is out of reach here: 52 parameter
    arrays and the input, 2 forward passes each (~0.5 s each in float64)."""
    model = _scaled_fills(onnx.load(os.path.join(LIGHT_DIR, "light_squeezenet.onnx")),
                          logits=False)
    (info,) = _data_inputs(model)
    graph = from_onnx(model).double().gradients_in_eval(True)
    x = Runner.generate_dummy_data(info, seed=0, name="squeezenet").astype(np.float64)
    rng = np.random.default_rng(0)
    params = dict(graph.named_parameters())
    graph.zero_grad()
    y = graph.forward(x)
    upstream = rng.standard_normal(y.shape)
    dx = graph.backward(upstream)
    grads = {k: p.grad.copy() for k, p in params.items()}
    assert np.all(np.isfinite(dx)) and np.abs(dx).max() > 0
    assert all(np.all(np.isfinite(g)) and np.abs(g).max() > 0 for g in grads.values())

    v = rng.standard_normal(x.shape)
    u = {k: rng.standard_normal(p.shape) * max(np.abs(p.data).max(), 1e-3)
         for k, p in params.items()}
    analytic = np.sum(dx * v) + sum(np.sum(grads[k] * u[k]) for k in params)
    originals = {k: p.data.copy() for k, p in params.items()}

    def f(t):
        for k, p in params.items():
            p.data[...] = originals[k] + t * u[k]
        return np.sum(graph.forward(x + t * v) * upstream)

    eps = 1e-6
    numeric = (f(eps) - f(-eps)) / (2 * eps)
    for k, p in params.items():
        p.data[...] = originals[k]
    assert abs(numeric - analytic) <= 1e-5 * max(abs(analytic), 1e-12), (numeric, analytic)


# ---------------------------------------------------------------------------- data dirs
def _dir_cases():
    cases = []
    for kind in KINDS:
        for case in sorted(load_model_tests(kind=kind), key=lambda c: c.name):
            cases.append(pytest.param(kind, case, id=f"{kind}/{case.name}"))
    return cases


DIR_CASES = _dir_cases()


def run_dir_case(case):
    """("passed", "") or ("skipped", reason); raises where the outputs differ."""
    model = onnx.load(os.path.join(case.model_dir, "model.onnx"))
    for info in _data_inputs(model):
        elem = info.type.tensor_type.elem_type
        if not info.type.HasField("tensor_type") or elem not in FLOATS:
            kind = onnx.TensorProto.DataType.Name(elem) if elem else \
                info.type.WhichOneof("value")
            return "skipped", (f"input {info.name!r} is {kind} (chainrule computes in "
                               "float32/float64)")
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    note = ""
    if opset < MIN_OPSET:
        model = version_converter.convert_version(model, CONVERTED_OPSET)
        note = f" (opset {opset}, converted to {CONVERTED_OPSET})"
    try:
        graph = from_onnx(model)
    except UnsupportedOnnxError as err:
        return "skipped", "; ".join(sorted({f"{op}: {why}" for _, op, _, why in err.nodes})) \
            + note
    sets = sorted(glob.glob(os.path.join(case.model_dir, "test_data_set_*")))
    assert sets, case.name
    for folder in sets:
        count = len(glob.glob(os.path.join(folder, "input_*.pb")))
        inputs = [_read(os.path.join(folder, f"input_{i}.pb")) for i in range(count)]
        count = len(glob.glob(os.path.join(folder, "output_*.pb")))
        expected = [_read(os.path.join(folder, f"output_{i}.pb")) for i in range(count)]
        Runner.assert_similar_outputs(expected, _run(graph, inputs), rtol=case.rtol,
                                      atol=case.atol, model_dir=case.model_dir)
    return "passed", ""


@pytest.mark.parametrize("kind, case", DIR_CASES)
def test_a_shipped_model_case(kind, case):
    status, reason = run_dir_case(case)
    if status == "skipped":
        pytest.skip(reason)


def test_the_counts_per_directory():
    counts = collections.defaultdict(collections.Counter)
    for param in DIR_CASES:
        kind, case = param.values
        counts[kind][run_dir_case(case)[0]] += 1
    lines = [f"{kind}: {sum(c.values())} cases, {c['passed']} passed, {c['skipped']} skipped"
             for kind, c in counts.items()]
    print("\nONNX model tests: " + "; ".join(lines))
    for kind, c in counts.items():
        assert c["passed"] >= MIN_PASSED[kind], (kind, c)
        assert set(c) <= {"passed", "skipped"}
