"""A cr.save checkpoint read by a PyTorch user, exactly as docs/how-to/interop.md shows."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import chainrule as cr  # noqa: E402
from chainrule.models import lenet5, resnet_mini  # noqa: E402

from ..helpers import rel_error  # noqa: E402
from .cases import inputs, warm_up  # noqa: E402

nn = torch.nn


def read_for_torch(path) -> dict:
    """The recipe of docs/how-to/interop.md: safetensors' NumPy reader, strip ``model.``."""
    from safetensors.numpy import load_file

    return {key.removeprefix("model."): torch.from_numpy(array)
            for key, array in load_file(path).items() if key.startswith("model.")}


def test_hand_written_torch_lenet_loads_a_chainrule_checkpoint(tmp_path):
    model = warm_up(lenet5(in_channels=1, input_size=28, num_classes=10, seed=0), (1, 28, 28))
    cr.save(model, tmp_path / "lenet.safetensors", in_channels=1, input_size=28)

    net = nn.Sequential(  # what a PyTorch user writes from lenet5's docstring
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    net.load_state_dict(read_for_torch(tmp_path / "lenet.safetensors"))  # strict: every key
    net.eval()

    x = inputs((1, 28, 28), 3, 1)
    with torch.no_grad():
        theirs = net(torch.from_numpy(x)).numpy()
    assert rel_error(theirs, model.forward(x)) <= 1e-5


def test_to_torch_architecture_loads_a_residual_checkpoint(tmp_path):
    model = warm_up(resnet_mini(in_channels=3, input_size=16, num_classes=5, seed=0), (3, 16, 16))
    cr.save(model, tmp_path / "resnet.safetensors")

    net = cr.interop.to_torch(resnet_mini(in_channels=3, input_size=16, num_classes=5, seed=1))
    net.load_state_dict(read_for_torch(tmp_path / "resnet.safetensors"))
    net.eval()
    x = inputs((3, 16, 16), 2, 2)
    with torch.no_grad():
        theirs = net(torch.from_numpy(x)).numpy()
    assert rel_error(theirs, model.forward(x)) <= 1e-5
    assert np.array_equal(net[0].weight.detach().numpy(), model[0].weight.data)
