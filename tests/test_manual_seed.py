"""chainrule.manual_seed: like torch.manual_seed, one call makes every draw without an
explicit seed reproducible (layer initialization, Dropout masks, fit's shuffling,
chainrule.init, the model zoo), across processes; explicit seeds still win; without it
draws come from OS entropy as before; NumPy's global random state is never touched."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import chainrule as cr
import chainrule.random as cr_random

SRC = Path(cr.__file__).resolve().parents[1]

# Every kind of draw that has no seed of its own, after an optional manual_seed.
SCRIPT = textwrap.dedent('''
    import numpy as np
    import chainrule as cr


    def draws(seed):
        """Weights and masks drawn with no explicit seed (after manual_seed(seed) unless
        seed is None): a CNN with Dropout trained by fit without a seed, Dropout masks,
        chainrule.init, reset_parameters() and a model-zoo builder."""
        if seed is not None:
            cr.manual_seed(seed)
        model = cr.Sequential(cr.Conv2d(1, 4, 3, padding=1), cr.ReLU(), cr.MaxPool2d(2),
                              cr.Flatten(), cr.Dropout(0.3), cr.Linear(4 * 4 * 4, 3))
        cr.init.kaiming_normal_(model[0].weight)
        data = np.random.default_rng(123)
        X = data.standard_normal((24, 1, 8, 8)).astype(np.float32)
        y = data.integers(0, 3, 24)
        out = {"mask": cr.Dropout(0.5).forward(np.ones((4, 16), np.float32))}
        cr.fit(model, cr.CrossEntropyLoss(), cr.optim.Adam(model.parameters(), lr=1e-2),
               (X, y), epochs=2, batch_size=8, seed=None)
        out.update({"fit." + k: v for k, v in model.state_dict().items()})
        out["reset"] = cr.Linear(5, 4).reset_parameters().weight.data
        out["trunc_normal"] = cr.init.trunc_normal_(np.empty(10))
        out.update({"zoo." + k: v for k, v in cr.models.lenet5(input_size=8).state_dict().items()})
        return out
''')

namespace: dict = {}
exec(compile(SCRIPT, "<manual_seed script>", "exec"), namespace)
draws = namespace["draws"]


@pytest.fixture(autouse=True)
def restore_library_generator():
    """Leave the library generator as this test found it (unseeded, for other tests)."""
    saved = cr_random._GENERATOR
    state = None if saved is None else saved.bit_generator.state
    yield
    cr_random._GENERATOR = saved
    if saved is not None:
        saved.bit_generator.state = state


def _in_subprocess(out: Path) -> tuple[dict, dict]:
    """draws(7) and draws(None) in a fresh interpreter (which inherits this process's
    environment, only adding the source tree to PYTHONPATH: the same BLAS kernels)."""
    script = SCRIPT + textwrap.dedent(f'''
        np.savez({str(out)!r}, **{{"seeded." + k: v for k, v in draws(7).items()}})
        cr.random._GENERATOR = None  # back to the state of a fresh process
        np.savez({str(out)!r} + ".unseeded.npz", **draws(None))
    ''')
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120, env=env)
    results = []
    for path in (f"{out}.npz", f"{out}.unseeded.npz"):
        with np.load(path, allow_pickle=False) as saved:
            results.append({k.removeprefix("seeded."): saved[k] for k in saved.files})
    return results[0], results[1]


def _differing(a: dict, b: dict) -> list[str]:
    assert list(a) == list(b)
    return [k for k in a if a[k].tobytes() != b[k].tobytes()]


def test_manual_seed_gives_bitwise_identical_runs_across_processes(tmp_path):
    seeded_1, unseeded_1 = _in_subprocess(tmp_path / "first")
    seeded_2, unseeded_2 = _in_subprocess(tmp_path / "second")
    assert _differing(seeded_1, seeded_2) == []
    here = draws(7)
    assert _differing(seeded_1, {k: np.asarray(v) for k, v in here.items()}) == []
    # Without manual_seed: fresh OS entropy, so every kind of draw differs.
    assert _differing(unseeded_1, unseeded_2) == list(unseeded_1)


def test_a_different_seed_differs_in_every_draw():
    a, b = draws(7), draws(8)
    assert _differing(a, b) == list(a)


def test_an_explicit_seed_wins_and_leaves_the_library_generator_alone():
    cr.manual_seed(7)
    expected = cr.Linear(4, 4).weight.data.copy()
    cr.manual_seed(7)
    explicit = cr.Linear(4, 4, rng=5).weight.data.copy()
    cr.Conv2d(2, 3, 3, rng=np.random.default_rng(1))
    cr.Dropout(0.5, rng=2)
    cr.init.normal_(np.empty(5), generator=3)
    cr.fit(cr.Sequential(cr.Linear(2, 2, rng=0)), cr.MSELoss(), None, (np.zeros((4, 2)),
           np.zeros((4, 2))), epochs=0, seed=4)
    np.testing.assert_array_equal(cr.Linear(4, 4).weight.data, expected)
    cr.manual_seed(8)
    np.testing.assert_array_equal(cr.Linear(4, 4, rng=5).weight.data, explicit)


def test_each_draw_is_reproducible_in_process():
    def dropout_mask():
        return cr.Dropout(0.5).forward(np.ones((8, 8)))

    for make in (dropout_mask,
                 lambda: cr.models.cifar_cnn(input_size=8).state_dict()["0.weight"],
                 lambda: cr.Sequential(cr.Linear(3, 3)).reset_parameters().state_dict()["0.weight"],
                 lambda: cr.init.orthogonal_(np.empty((4, 6)))):
        cr.manual_seed(11)
        first = make()
        cr.manual_seed(11)
        np.testing.assert_array_equal(make(), first)
        assert not np.array_equal(make(), first)  # the generator moved on


def test_numpys_global_state_is_untouched():
    np.random.seed(1234)
    before = np.random.get_state()
    draws(3)
    cr.manual_seed(5)
    draws(None)
    after = np.random.get_state()
    assert before[0] == after[0] and before[2:] == after[2:]
    np.testing.assert_array_equal(before[1], after[1])
    # Nor does np.random.seed seed chainrule.
    cr_random._GENERATOR = None
    np.random.seed(0)
    a = cr.Linear(4, 4).weight.data.copy()
    np.random.seed(0)
    assert not np.array_equal(a, cr.Linear(4, 4).weight.data)


def test_manual_seed_reseeds_the_same_generator():
    g = cr.manual_seed(3)
    assert cr_random.default_generator() is g and cr_random.is_seeded()
    first = g.random(4)
    assert cr.manual_seed(np.int64(3)) is g  # reseeded in place, as torch's
    np.testing.assert_array_equal(g.random(4), first)
    np.testing.assert_array_equal(cr.manual_seed(3).random(4), np.random.default_rng(3).random(4))


@pytest.mark.parametrize("seed, error", [(-1, ValueError), (1.5, TypeError), ("1", TypeError),
                                         (True, TypeError), (None, TypeError)])
def test_manual_seed_refuses_bad_seeds(seed, error):
    with pytest.raises(error, match="manual_seed: seed must be a non-negative int"):
        cr.manual_seed(seed)


def test_default_generator_before_manual_seed_seeds_nothing():
    """Asking for the library Generator before manual_seed neither seeds the library nor
    makes the draws without a seed share one stream (each stays fresh OS entropy)."""
    cr_random._GENERATOR = None  # a fresh process
    first = cr_random.default_generator()
    assert not cr_random.is_seeded() and cr_random._GENERATOR is None
    assert cr_random.generator(None) is not first
    assert cr_random.generator(None) is not cr_random.generator(None)
    g = cr.manual_seed(3)
    assert cr_random.default_generator() is g and cr_random.generator(None) is g
