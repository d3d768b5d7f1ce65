"""export_onnx: the file passes onnx.checker and ONNX Runtime gives chainrule's (and
torch's) numbers, at two batch sizes through the one dynamic batch dimension."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import chainrule as cr  # noqa: E402
from chainrule.interop import UnsupportedModuleError  # noqa: E402

from ..helpers import rel_error  # noqa: E402
from .cases import ALL_CASES, NO_ONNX_EXPORT, float32_output_tolerance, inputs, warm_up  # noqa: E402

# torch's own note on even-kernel "same" padding; the case is there on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")


def run_onnx(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": x})[0]


EXPORTABLE = [c for c in ALL_CASES if c[0] not in NO_ONNX_EXPORT]
NOT_EXPORTABLE = [c for c in ALL_CASES if c[0] in NO_ONNX_EXPORT]


@pytest.mark.parametrize("name, build, shape", EXPORTABLE, ids=[c[0] for c in EXPORTABLE])
def test_onnx_runtime_agrees_with_chainrule_and_torch(name, build, shape, tmp_path):
    model = warm_up(build(), shape)
    before = model.state_dict()
    path = tmp_path / "model.onnx"
    proto = cr.export_onnx(model, path, shape)

    onnx.checker.check_model(onnx.load(path), full_check=True)
    assert proto.opset_import[0].version == 17
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "N"
    for key, value in model.state_dict().items():  # the export changed nothing
        np.testing.assert_array_equal(value, before[key], err_msg=key)

    torch = pytest.importorskip("torch")
    module = cr.interop.to_torch(model)
    for batch, seed in ((2, 1), (5, 2)):
        x = inputs(shape, batch, seed)
        ours = model.forward(x)
        theirs = run_onnx(path, x)
        with torch.no_grad():
            torch_out = module(torch.from_numpy(x)).numpy()
        errors = {"onnx-chainrule": rel_error(theirs, ours), "onnx-torch": rel_error(theirs, torch_out)}
        assert max(errors.values()) <= float32_output_tolerance(model, x), f"{name}, batch {batch}: {errors}"


@pytest.mark.parametrize("name, build, shape", NOT_EXPORTABLE, ids=[c[0] for c in NOT_EXPORTABLE])
def test_layer_without_an_exact_onnx_operator_is_refused_by_name(name, build, shape, tmp_path):
    model = cr.Sequential(cr.Sequential(warm_up(build(), shape)))
    with pytest.raises(UnsupportedModuleError, match=r"^0\.0: " + NO_ONNX_EXPORT[name]):
        cr.export_onnx(model, tmp_path / "m.onnx", shape)
    assert not (tmp_path / "m.onnx").exists()


def test_float64_model_exports_as_double(tmp_path):
    # No Conv here: ONNX Runtime's CPU provider has no double Conv kernel (the file is
    # still valid ONNX; the checker below accepts it).
    model = warm_up(cr.Sequential(cr.MaxPool2d(2), cr.BatchNorm2d(2), cr.Flatten(),
                                  cr.Linear(2 * 3 * 3, 4, rng=1), cr.BatchNorm1d(4), cr.Tanh(),
                                  cr.Linear(4, 2, rng=2)), (2, 6, 6)).double()
    proto = cr.export_onnx(model, tmp_path / "m.onnx", (2, 6, 6))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    x = inputs((2, 6, 6), 3, 0).astype(np.float64)
    assert rel_error(run_onnx(tmp_path / "m.onnx", x), model.forward(x)) <= 1e-12
    conv = cr.Sequential(cr.Conv2d(2, 3, 3, rng=0)).double()
    onnx.checker.check_model(cr.export_onnx(conv, tmp_path / "c.onnx", (2, 6, 6)), full_check=True)


def test_initializers_are_named_by_state_dict_key(tmp_path):
    model = cr.Sequential(cr.Conv2d(1, 2, 3, rng=0), cr.BatchNorm2d(2))
    proto = cr.export_onnx(model, tmp_path / "m.onnx", (1, 5, 5))
    names = {t.name for t in proto.graph.initializer}
    assert set(model.state_dict()) - {"1.num_batches_tracked"} == names


def test_unsupported_layer_is_named_with_its_path(tmp_path):
    class Scale(cr.Layer):
        def forward(self, x):
            return 2 * x

    with pytest.raises(UnsupportedModuleError, match=r"^0\.1: .*Scale has no ONNX export"):
        cr.export_onnx(cr.Sequential(cr.Sequential(cr.ReLU(), Scale())), tmp_path / "m.onnx", (3,))
    with pytest.raises(UnsupportedModuleError, match=r"^1: Flatten.*batch axis"):
        cr.export_onnx(cr.Sequential(cr.ReLU(), cr.Flatten(0)), tmp_path / "m.onnx", (3, 4))


@pytest.mark.parametrize("bad_shape", [(1, 4, 4, 4), (2, 4), (), (3, 0, 4), (3.0, 4, 4)])
def test_wrong_input_shape_is_refused(bad_shape, tmp_path):
    with pytest.raises(ValueError):
        cr.export_onnx(cr.Sequential(cr.Conv2d(3, 2, 3)), tmp_path / "m.onnx", bad_shape)


def test_a_shape_with_the_batch_axis_gets_told_what_input_shape_is(tmp_path):
    # torch.onnx.export takes a batch; export_onnx takes one sample's shape.
    with pytest.raises(ValueError, match=r"input_shape \(1, 3, 32, 32\) does not fit the model "
                                         r"\(.*\)\. input_shape is the shape of one sample "
                                         r"without the batch axis .* pass \(3, 32, 32\)"):
        cr.export_onnx(cr.Sequential(cr.Conv2d(3, 2, 3)), tmp_path / "m.onnx", (1, 3, 32, 32))
    assert not (tmp_path / "m.onnx").exists()


def test_mixed_dtypes_are_refused(tmp_path):
    model = cr.Sequential(cr.Linear(3, 3), cr.Linear(3, 3, dtype=np.float64))
    with pytest.raises(ValueError, match="mixes dtypes"):
        cr.export_onnx(model, tmp_path / "m.onnx", (3,))
