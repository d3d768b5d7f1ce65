"""Determinism: a seed fixes a training run bit for bit, in this process or another one,
because every random draw (initialization, shuffling, dropout) comes from a Generator
that the seed creates; the global NumPy random state is never used in src/chainrule."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

import chainrule as cr

SRC = Path(cr.__file__).resolve().parents[1]

# Kept as source text so a fresh interpreter runs exactly the same code.
TRAIN = textwrap.dedent('''
    import numpy as np
    import chainrule as cr


    def train(seed: int) -> dict:
        """A small CNN with BatchNorm and Dropout, 2 shuffled epochs of Adam."""
        model = cr.Sequential(
            cr.Conv2d(1, 4, 3, padding=1), cr.BatchNorm2d(4), cr.ReLU(), cr.MaxPool2d(2),
            cr.Flatten(), cr.Dropout(0.3), cr.Linear(4 * 4 * 4, 3),
        ).reset_parameters(seed)
        data = np.random.default_rng(123)
        X = data.standard_normal((48, 1, 8, 8)).astype(np.float32)
        y = data.integers(0, 3, 48)
        optimizer = cr.optim.Adam(model.parameters(), lr=1e-2)
        cr.fit(model, cr.CrossEntropyLoss(), optimizer, (X, y), epochs=2, batch_size=8,
               shuffle=True, seed=seed)
        return model.state_dict()
''')

namespace: dict = {}
exec(compile(TRAIN, "<determinism train script>", "exec"), namespace)
train = namespace["train"]


def train_in_subprocess(seed: int, out: Path) -> dict[str, np.ndarray]:
    script = TRAIN + f"\nnp.savez({str(out)!r}, **train({seed}))\n"
    # The child inherits the parent's whole environment (OPENBLAS_CORETYPE and thread
    # settings pick the BLAS kernel, and with it the rounding), adding only the path to
    # the source tree.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120, env=env)
    with np.load(out, allow_pickle=False) as saved:
        return {key: saved[key] for key in saved.files}


def assert_bitwise_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert a[key].tobytes() == b[key].tobytes(), f"{key} differs between the two runs"


def test_same_seed_gives_bitwise_identical_weights_across_processes(tmp_path):
    first = train_in_subprocess(0, tmp_path / "first.npz")
    second = train_in_subprocess(0, tmp_path / "second.npz")
    assert_bitwise_equal(first, second)
    assert_bitwise_equal(first, {k: np.asarray(v) for k, v in train(0).items()})


def test_a_different_seed_gives_different_weights():
    a, b = train(0), train(1)
    assert not np.array_equal(a["6.weight"], b["6.weight"])


def test_the_seed_also_fixes_shuffling_and_dropout():
    """Same initial weights, different fit seeds: only shuffling and masks differ."""
    def run(fit_seed: int) -> np.ndarray:
        model = cr.Sequential(cr.Linear(5, 8), cr.ReLU(), cr.Dropout(0.5), cr.Linear(8, 2))
        model.reset_parameters(42)
        data = np.random.default_rng(0)
        X, y = data.standard_normal((32, 5)), data.integers(0, 2, 32)
        cr.fit(model, cr.CrossEntropyLoss(), cr.optim.SGD(model.parameters(), lr=0.1), (X, y),
               epochs=2, batch_size=4, seed=fit_seed)
        return model.state_dict()["3.weight"]

    assert run(3).tobytes() == run(3).tobytes()
    assert run(3).tobytes() != run(4).tobytes()


GLOBAL_RANDOM = re.compile(
    r"\b(?:np|numpy)\.random\.(seed|rand|randn|randint|random_integers|random_sample|random|"
    r"ranf|sample|shuffle|permutation|choice|normal|uniform|standard_normal|bytes|"
    r"get_state|set_state|binomial|beta|exponential|poisson)\s*\("
    r"|from\s+numpy\.random\s+import\s+(?!default_rng\b|Generator\b|PCG64\b|SeedSequence\b)"
    r"|^\s*import\s+random\b|^\s*from\s+random\s+import\b",
    re.MULTILINE)


def test_source_never_uses_the_global_random_state():
    offenders = []
    for path in sorted((SRC / "chainrule").rglob("*.py")):
        for match in GLOBAL_RANDOM.finditer(path.read_text(encoding="utf-8")):
            line = path.read_text(encoding="utf-8").count("\n", 0, match.start()) + 1
            offenders.append(f"{path.relative_to(SRC)}:{line}: {match.group(0).strip()}")
    assert not offenders, "global random state used (draw from a Generator instead):\n" + \
        "\n".join(offenders)


def test_the_grep_catches_what_it_should():
    bad = ["np.random.seed(0)", "x = np.random.randn(3, 4)", "numpy.random.shuffle(a)",
           "np.random.permutation(10)", "np.random.choice(a)", "np.random.uniform(0, 1)",
           "np.random.normal()", "np.random.rand(2)", "np.random.randint(5)",
           "from numpy.random import randn", "import random", "from random import shuffle"]
    good = ["rng = np.random.default_rng(0)", "rng.permutation(10)", "rng.uniform(0, 1)",
            "np.random.Generator", "from numpy.random import default_rng",
            "isinstance(g, np.random.Generator)", "self.rng.random(x.shape)"]
    assert all(GLOBAL_RANDOM.search(text) for text in bad), \
        [t for t in bad if not GLOBAL_RANDOM.search(t)]
    assert not any(GLOBAL_RANDOM.search(text) for text in good), \
        [t for t in good if GLOBAL_RANDOM.search(t)]
