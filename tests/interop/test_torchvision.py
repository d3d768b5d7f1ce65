"""torchvision's architectures through from_torch: resnet18, densenet121, mobilenet_v2 and
squeezenet1_1 (random initialization, weights=None: nothing is downloaded) give torch's
output, input gradient and every parameter gradient, in training and in eval mode: to
1e-9 in float64, within float32's rounding bound in float32 (in training mode with torch
taking chainrule's decisions at the kinks: see SameKinks)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import chainrule as cr  # noqa: E402
from chainrule.inspect._hooks import call_counts, call_names, install, leaf_layers  # noqa: E402
from chainrule.interop import from_torch  # noqa: E402

from ..helpers import FLOAT32_UNIT_ROUNDOFF, rel_error  # noqa: E402
from .torchvision_models import MODULES, builder  # noqa: E402

SHAPE = (2, 3, 64, 64)
NUM_CLASSES = 1000


def build(name: str, dtype, training: bool):
    """The torch model, seeded, in the mode asked, with Dropout off (its masks differ
    between the libraries) and BatchNorm's running statistics and affine parameters drawn
    away from their 0/1 start, so that a converter that dropped or mixed them up shows."""
    torch.manual_seed(0)
    module = builder(name)(weights=None)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return module.to(dtype).train(training)


def torch_run(module, x: np.ndarray, grad: np.ndarray):
    xt = torch.from_numpy(x).requires_grad_(True)
    y = module(xt)
    y.backward(torch.from_numpy(grad))
    return (y.detach().numpy(), xt.grad.numpy(),
            {k: p.grad.numpy() for k, p in module.named_parameters()})


def rounding_tolerance(module, x: np.ndarray, factor: float = 16.0) -> float:
    """``factor * u * sum over the layers' calls of sqrt(elements of the input)``: the
    float32 bound of tests/interop/cases.py (float32_output_tolerance), measured on a
    fresh conversion in eval mode (nothing of the tested model changes)."""
    probe = from_torch(module).eval()
    sizes: list[int] = []
    for _, leaf in leaf_layers(probe):
        install(leaf, "forward", lambda _leaf, a, _y: sizes.append(
            sum(v.size for v in a) if isinstance(a, (list, tuple)) else a.size))
    probe.forward(x)
    return factor * FLOAT32_UNIT_ROUNDOFF * float(np.sum(np.sqrt(sizes)))


class SameKinks:
    """Makes torch's float32 run take chainrule's float32 decisions at the kinks of the
    piecewise-linear layers, so that a training-mode comparison compares one function.

    Why: in training mode torch's float32 run puts 3 of densenet121's ~2.6M ReLU inputs
    on the other side of zero than chainrule's does (inputs within 4e-7 times the layer
    input's largest magnitude of zero, rounded differently), and a flip moves the gradient
    of a BatchNorm it feeds by up to 0.11 of its scale (features.denseblock3.denselayer7.
    norm1: the batch statistics spread it over the whole channel), far past the rounding
    bound, while the output moves by rounding. Neither library is wrong: each
    differentiates a different, equally valid rounding of the network. (The other three
    models show no such flip with these inputs; their kinks are forced all the same.) So
    chainrule runs first and every kink decision it takes is recorded: per element of
    each ReLU (``x > 0``) and ReLU6/Hardtanh (which of its three pieces), per call (a
    module called twice, as resnet18's block ReLU, is keyed ``name`` and ``name@1``, as
    chainrule's graph names the calls). Forward hooks on the matching torch modules then
    replace the module's output by the same pieces of torch's *own* input (the identity
    where chainrule passed, the clip value elsewhere), so torch's gradient passes exactly
    where chainrule's does. Nothing else changes: torch computes every value itself, and
    where both decisions agree (all but a handful of elements) the hooked output and its
    gradient are torch's own (a hooked in-place ReLU is made out-of-place so that the
    hook sees its input: the same values). ``report`` fails unless every decision torch would have
    taken differently sits within the rounding tolerance of its kink, so no real
    difference can be forced away.

    Kinks that cannot be forced are checked instead: a functional ``F.relu`` (densenet121's
    last one; no module to hook) must take chainrule's decisions on torch's own values
    (read from the module whose output it gets), and max-pool winners must be the same
    element (measured: no window of the four models has a different winner, so they are
    not forced).
    """

    _KINKS = (cr.ReLU, cr.Hardtanh, cr.MaxPool2d)   # ReLU6 is a Hardtanh in both libraries
    _TORCH_KINKS = (torch.nn.ReLU, torch.nn.Hardtanh, torch.nn.MaxPool2d)

    def __init__(self, model, module) -> None:
        """Hooks ``model`` (chainrule, to run first) and ``module`` (torch, second)."""
        self.chainrule: dict[str, tuple[object, np.ndarray]] = {}   # call -> (layer, decision)
        self.torch_values: dict[str, np.ndarray] = {}   # call -> torch's input at the kink
        self.torch_decisions: dict[str, np.ndarray] = {}   # call -> torch's own decision
        self.forced: set[str] = set()
        self.modules = dict(module.named_modules())
        calls, nodes = call_counts(model), {node.name: node for node in model.nodes}
        watched: dict[str, dict[int, str]] = {}   # torch module -> its call -> unhooked kink
        for name, leaf in leaf_layers(model):
            if not isinstance(leaf, self._KINKS):
                continue
            names = call_names(name, calls[id(leaf)])
            install(leaf, "forward", self._recorder(names))
            if isinstance(self.modules.get(name), self._TORCH_KINKS):
                self._hook(name, self._follow)
                continue
            for call in names:   # functional: read torch's values where the input comes from
                owner, _, k = nodes[call].inputs[0].partition("@")
                assert isinstance(leaf, (cr.ReLU, cr.Hardtanh)) and owner in self.modules, \
                    f"{call}: a kink that is no torch module and whose input is no module's output"
                watched.setdefault(owner, {})[int(k or 0)] = call
        for owner, kinks in watched.items():
            self._hook(owner, lambda _name, _m, _inp, out, k, kinks=kinks:
                       self._watch(kinks.get(k), out))

    @staticmethod
    def bounds(layer) -> tuple[float, float]:
        return (0.0, np.inf) if isinstance(layer, cr.ReLU) else (layer.min_val, layer.max_val)

    @classmethod
    def piece(cls, layer, x: np.ndarray) -> np.ndarray:
        """0 at or below the lower kink, 2 at or above the upper one, 1 between: the
        pieces of the layer's forward (a clip) and of its backward (``lo < x < hi``)."""
        lo, hi = cls.bounds(layer)
        return np.where(x <= lo, 0, np.where(x >= hi, 2, 1)).astype(np.int8)

    def _recorder(self, names: list[str]):
        calls = iter(names)

        def record(layer, x, _y):
            if isinstance(layer, cr.MaxPool2d):   # its winners, as torch's flat indices
                (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
                i, j = np.divmod(layer._cache[0].astype(np.int64), layer.kernel_size[1])
                rows = np.arange(i.shape[-2])[:, None] * sh + i * dh - ph
                cols = np.arange(i.shape[-1])[None, :] * sw + j * dw - pw
                self.chainrule[next(calls)] = (layer, rows * x.shape[-1] + cols)
            else:
                self.chainrule[next(calls)] = (layer, self.piece(layer, x))
        return record

    def _hook(self, name: str, fn) -> None:
        """``fn(name, module, input, output, k)`` after the module's k-th call."""
        calls = iter(range(1 << 30))
        module = self.modules[name]
        if getattr(module, "inplace", False):
            module.inplace = False   # the hook reads the module's input (same values)
        module.register_forward_hook(lambda m, inp, out: fn(name, m, inp, out, next(calls)))

    def _follow(self, name, m, inp, out, k):
        call = call_names(name, k + 1)[k]
        layer, decision = self.chainrule[call]
        x = inp[0]
        if isinstance(m, torch.nn.MaxPool2d):
            self.torch_decisions[call] = torch.nn.functional.max_pool2d(
                x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True)[1].numpy()
            return None   # checked in report, not forced
        self._watch(call, x)
        self.forced.add(call)
        lo, hi = (0.0, 0.0) if isinstance(m, torch.nn.ReLU) else (m.min_val, m.max_val)
        chosen = torch.from_numpy(decision)
        return torch.where(chosen == 1, x,
                           torch.where(chosen == 2, x.new_tensor(hi), x.new_tensor(lo)))

    def _watch(self, call: str | None, x) -> None:
        if call is not None:
            values = x.detach().numpy().copy()
            self.torch_values[call] = values
            self.torch_decisions[call] = self.piece(self.chainrule[call][0], values)

    def report(self, tol: float) -> dict[str, int]:
        """After both runs: torch ran every kink chainrule did, the unforced ones took the
        same decisions, and each decision torch would have taken differently is within
        ``tol`` of its kink (relative to the largest magnitude of the layer's input).
        Returns how many of torch's own decisions were overridden, per call."""
        assert set(self.torch_decisions) == set(self.chainrule), "calls differ"
        overridden = {}
        for call, (layer, decision) in self.chainrule.items():
            own = self.torch_decisions[call]
            differ = own != decision
            if call not in self.forced:
                assert not differ.any(), \
                    f"{call}: {int(differ.sum())} decisions differ, which cannot be forced"
                continue
            x = self.torch_values[call]
            lo, hi = self.bounds(layer)
            kink = np.where(np.minimum(own, decision)[differ] == 0, lo, hi)
            distance = np.max(np.abs(x[differ] - kink), initial=0.0) / np.max(np.abs(x))
            assert distance <= tol, f"{call}: torch's input is {distance:.1e} away from " \
                f"the kink where its decision differs from chainrule's, more than {tol:.1e}"
            overridden[call] = int(differ.sum())
        return overridden

def parity_errors(name: str, dtype, training: bool, same_kinks: bool = False
                  ) -> tuple[dict[str, float], object]:
    """Relative errors (chainrule vs torch autograd) of the output, the input gradient,
    every parameter gradient and, in training mode, the updated running statistics;
    ``same_kinks``: torch takes chainrule's kink decisions (SameKinks, returned too)."""
    module = build(name, dtype, training)
    model = from_torch(module)
    assert isinstance(model, cr.Graph) and model.training == training
    assert set(model.state_dict()) == set(module.state_dict())
    if not training:
        model.gradients_in_eval()
    kinks = SameKinks(model, module) if same_kinks else None

    rng = np.random.default_rng(1)
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    x = rng.standard_normal(SHAPE).astype(np_dtype)
    grad = rng.standard_normal((SHAPE[0], NUM_CLASSES)).astype(np_dtype)
    y, dx = model.forward(x), model.backward(grad)
    y_t, dx_t, grads_t = torch_run(module, x, grad)

    errors = {"output": rel_error(y, y_t), "input gradient": rel_error(dx, dx_t)}
    ours = dict(model.named_parameters())
    assert set(ours) == set(grads_t)
    for key, g_t in grads_t.items():
        # Against the largest gradient of the same module: a BatchNorm's bias gradient is
        # zero up to rounding where its output reaches the loss only through a later
        # training-mode BatchNorm (which removes any constant shift), and its own scale
        # then means nothing; its weight gradient holds the same sums, not cancelled.
        owner = key.rsplit(".", 1)[0]
        scale = max(np.max(np.abs(g)) for k, g in grads_t.items() if k.rsplit(".", 1)[0] == owner)
        errors[f"{key}.grad"] = float(np.max(np.abs(ours[key].grad - g_t)) / max(scale, 1e-30))
    state_t = module.state_dict()
    errors.update({k: rel_error(v, state_t[k].numpy()) for k, v in model.state_dict().items()
                   if "running" in k})
    return errors, (module, x, kinks)


def assert_within(name: str, errors: dict[str, float], tol: float) -> None:
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tol, \
        f"{name}: worst relative error {errors[worst]:.2e} ({worst}) > {tol:.2e}"


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(MODULES))
def test_torchvision_model_matches_torch_in_float64(name, training):
    errors, _ = parity_errors(name, torch.float64, training)
    assert_within(name, errors, 1e-9)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(MODULES))
def test_torchvision_model_matches_torch_in_float32(name, training):
    """With the tolerance float32 rounding explains over the network's layers; in
    training mode torch takes chainrule's kink decisions (SameKinks: each one it would
    have taken otherwise is checked to lie within that tolerance of its kink)."""
    errors, (module, x, kinks) = parity_errors(name, torch.float32, training,
                                               same_kinks=training)
    tol = rounding_tolerance(module, x)
    if training:
        kinks.report(tol)
    assert_within(name, errors, tol)
