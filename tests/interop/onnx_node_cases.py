"""ONNX's own operator tests, for the importer: each a one-node model (or its function
body, the ``_expanded`` variants) with inputs and the expected outputs, at the tolerances
ONNX's backend runner uses (``TestCase.rtol``/``atol``: 1e-3 and 1e-7).

The ``onnx`` wheel does not ship ``onnx/backend/test/data/node/*`` (the ``.pb`` files of
the source tree); those files are written by ``backend-test-tools generate-data`` from
the generators in ``onnx.backend.test.case.node``, which the wheel does ship. Importing a
generator module runs its ``export_*`` functions (``np.random.seed(0)`` before each),
which register the same models and data as ``TestCase`` objects: this module imports the
generators of the importer's operators only (the full collection takes ~10 s).

``run_case(case)`` returns ``("passed", "")`` or ``("skipped", reason)``, and raises an
AssertionError where the outputs differ.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

import chainrule as cr
from chainrule.interop.onnx_import import UnsupportedOnnxError

# op type -> the generator module in onnx.backend.test.case.node
MODULES = {
    "Conv": "conv", "ConvTranspose": "convtranspose", "Gemm": "gemm", "MatMul": "matmul",
    "Add": "add", "Sum": "sum", "Mul": "mul", "Sub": "sub", "Div": "div", "Relu": "relu",
    "LeakyRelu": "leakyrelu", "PRelu": "prelu", "Sigmoid": "sigmoid", "Tanh": "tanh",
    "Clip": "clip", "HardSigmoid": "hardsigmoid", "HardSwish": "hardswish", "Elu": "elu",
    "Selu": "selu", "Softplus": "softplus", "Softmax": "softmax", "LogSoftmax": "logsoftmax",
    "MaxPool": "maxpool", "AveragePool": "averagepool", "GlobalAveragePool": "globalaveragepool",
    "GlobalMaxPool": "globalmaxpool", "BatchNormalization": "batch_normalization",
    "InstanceNormalization": "instance_normalization", "LRN": "lrn", "Dropout": "dropout",
    "Flatten": "flatten", "Reshape": "reshape", "Transpose": "transpose", "Concat": "concat",
    "Split": "split", "Squeeze": "squeeze", "Unsqueeze": "unsqueeze", "Pad": "pad",
    "Resize": "resize", "Upsample": "upsample", "Identity": "identity",
}
# Operators whose several inputs may all be graph tensors (the others take their
# operands after the first as constants: weights, shapes, scales, pads).
MULTI_DATA = {"Add", "Sub", "Mul", "Div", "Sum", "Concat"}

_CASES: list[tuple[str, Any]] = []


def node_cases() -> list[tuple[str, Any]]:
    """(op type, TestCase) for every generated case of the importer's operators,
    ``_expanded`` variants (the op's function body) included."""
    if _CASES:
        return _CASES
    import onnx.backend.test.case.node as generators
    for module in MODULES.values():
        importlib.import_module(f"onnx.backend.test.case.node.{module}")
    cases = list(generators._NodeTestCases)
    base = {c.name: c.model.graph.node[0].op_type for c in cases
            if "_expanded" not in c.name and len(c.model.graph.node) == 1}
    for case in cases:
        root = case.name.split("_expanded")[0]
        op = base.get(root)
        if op in MODULES:
            _CASES.append((op, case))
    return _CASES


def _bind(case: Any, op: str) -> tuple[Any, list[np.ndarray]]:
    """The case's model with the inputs after the first bound as initializers (weights,
    shapes, scales: the importer reads them as constants), except the graph tensors of
    the operators that take several; and the values of the inputs left."""
    import onnx
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    values = list(case.data_sets[0][0])
    graph = model.graph
    keep, data = [], []
    first = values[0] if values else None
    for i, (info, value) in enumerate(zip(list(graph.input), values)):
        several = (op in MULTI_DATA and isinstance(value, np.ndarray)
                   and isinstance(first, np.ndarray) and value.ndim == first.ndim
                   and value.ndim > 0 and value.shape[0] == first.shape[0]
                   and np.issubdtype(value.dtype, np.floating))
        if i == 0 or several:
            keep.append(info)
            data.append(value)
        else:
            graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(value), info.name))
    del graph.input[:]
    graph.input.extend(keep)
    return model, data


def run_case(op: str, case: Any) -> tuple[str, str]:
    inputs, expected = case.data_sets[0]
    if not inputs:
        return "skipped", "no inputs (a constant model)"
    first = inputs[0]
    if not isinstance(first, np.ndarray) or first.dtype not in (np.float32, np.float64):
        kind = type(first).__name__ if not isinstance(first, np.ndarray) else first.dtype
        return "skipped", f"data of type {kind} (chainrule computes in float32/float64)"
    if first.ndim == 0:
        return "skipped", "a 0-D input has no batch axis"
    model, data = _bind(case, op)
    try:
        graph = cr.interop.from_onnx(model)
    except UnsupportedOnnxError as err:
        return "skipped", "; ".join(sorted({f"{op_type}: {why}" for _, op_type, _, why in
                                            err.nodes}))
    out = graph.forward(data if len(data) > 1 else data[0])
    outs = out if isinstance(out, list) else [out]
    assert len(outs) == len(expected), f"{case.name}: {len(outs)} outputs, expected {len(expected)}"
    for k, (got, want) in enumerate(zip(outs, expected)):
        np.testing.assert_array_equal(got.shape, want.shape,
                                      err_msg=f"{case.name}: output {k} shape")
        assert got.dtype == want.dtype, f"{case.name}: output {k} is {got.dtype}, not {want.dtype}"
        np.testing.assert_allclose(got, want, rtol=case.rtol, atol=case.atol,
                                   err_msg=f"{case.name}: output {k}")
    return "passed", ""
