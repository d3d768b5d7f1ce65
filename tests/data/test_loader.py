"""cr.data.DataLoader: batches, per-epoch Generators from (seed, epoch), augmentation,
and state_dict() for a resume in the middle of an epoch."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule.data import DataLoader


def arrays(n: int = 10) -> tuple[np.ndarray, np.ndarray]:
    X = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    return X, np.arange(n)


def noise(xb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return xb + rng.standard_normal(xb.shape)


def epoch_batches(loader: DataLoader, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    loader.set_epoch(epoch)
    return list(loader)


def assert_same_batches(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize("drop_last, sizes", [(False, [4, 4, 2]), (True, [4, 4])])
def test_batches_cover_the_data_once_per_epoch(drop_last, sizes):
    loader = DataLoader(arrays(), batch_size=4, drop_last=drop_last, seed=0)
    batches = list(loader)
    assert len(loader) == len(sizes) and [len(y) for _, y in batches] == sizes
    seen = np.concatenate([y for _, y in batches])
    assert len(set(seen.tolist())) == len(seen)
    if not drop_last:
        assert sorted(seen.tolist()) == list(range(10))
    for x, y in batches:  # rows stay with their labels
        np.testing.assert_array_equal(x[:, 0], 2 * y)


def test_without_shuffle_the_order_is_the_datas():
    loader = DataLoader(arrays(), batch_size=3, shuffle=False)
    assert [y.tolist() for _, y in loader] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


def test_an_epochs_batches_depend_only_on_seed_and_epoch():
    loader = DataLoader(arrays(), batch_size=4, transform=noise, seed=5)
    for epoch in range(3):
        list(loader)
        loader.set_epoch(epoch + 1)
    third_after_two = list(loader)                                # epoch 3, after 0..2
    fresh = epoch_batches(DataLoader(arrays(), batch_size=4, transform=noise, seed=5), 3)
    assert_same_batches(third_after_two, fresh)
    other_epoch = epoch_batches(DataLoader(arrays(), batch_size=4, transform=noise, seed=5), 2)
    other_seed = epoch_batches(DataLoader(arrays(), batch_size=4, transform=noise, seed=6), 3)
    assert not np.array_equal(other_epoch[0][1], fresh[0][1])
    assert not np.array_equal(other_seed[0][0], fresh[0][0])
    # the order and the augmentation come from default_rng([seed, epoch]), in that order
    rng = np.random.default_rng([5, 3])
    order = rng.permutation(10)
    np.testing.assert_array_equal(fresh[0][1], order[:4])
    np.testing.assert_array_equal(fresh[0][0], arrays()[0][order[:4]] + rng.standard_normal((4, 2)))


@pytest.mark.parametrize("taken", [0, 1, 2, 3])
def test_state_dict_resumes_in_the_middle_of_an_epoch(taken):
    whole = epoch_batches(DataLoader(arrays(), batch_size=3, transform=noise, seed=1), 4)
    loader = DataLoader(arrays(), batch_size=3, transform=noise, seed=1)
    loader.set_epoch(4)
    it = iter(loader)
    first = [next(it) for _ in range(taken)]
    state = loader.state_dict()
    resumed = DataLoader(arrays(), batch_size=3, transform=noise, seed=1)
    resumed.load_state_dict(state)
    if taken == len(whole):  # the epoch is done: the state is the next epoch's start
        assert (state["epoch"], state["position"]) == (5, 0)
        assert_same_batches(list(resumed), epoch_batches(
            DataLoader(arrays(), batch_size=3, transform=noise, seed=1), 5))
    else:
        assert (state["epoch"], state["position"]) == (4, taken)
        assert_same_batches(first + list(resumed), whole)


class Squares:
    """A dataset object: __len__ and __getitem__(indices) -> (x_batch, y_batch)."""

    def __len__(self) -> int:
        return 7

    def __getitem__(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return idx[:, None].astype(np.float64) ** 2, idx


def test_a_dataset_object_is_batched_like_arrays():
    loader = DataLoader(Squares(), batch_size=3, seed=2)
    batches = list(loader)
    assert [len(y) for _, y in batches] == [3, 3, 1]
    for x, y in batches:
        np.testing.assert_array_equal(x[:, 0], y ** 2)
    X, y = loader.samples()
    np.testing.assert_array_equal(y, np.arange(7))


def test_seed_none_draws_from_the_library_generator():
    cr.manual_seed(11)
    a = DataLoader(arrays(), batch_size=4).seed
    cr.manual_seed(11)
    assert DataLoader(arrays(), batch_size=4).seed == a


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(data=(np.zeros((3, 2)),)), ValueError, r"expected data \(X, y\), got a tuple of 1"),
    (dict(data=(np.zeros((3, 2)), np.zeros(4))), ValueError, "X has 3 samples but y has 4"),
    (dict(data=42), TypeError, "expected .* or a dataset .* got int"),
    (dict(data=arrays(), batch_size=0), ValueError, "batch_size must be an int >= 1, got 0"),
    (dict(data=arrays(), transform="flip"), TypeError, "transform must be callable, got str"),
])
def test_bad_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=f"DataLoader: {message}"):
        DataLoader(**kwargs)


def test_a_state_of_another_seed_or_position_is_refused():
    loader = DataLoader(arrays(), batch_size=4, seed=1)
    state = loader.state_dict()
    with pytest.raises(ValueError, match="seed 1, this one has seed 2"):
        DataLoader(arrays(), batch_size=4, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="position 9 is outside the epoch's 3 batches"):
        loader.load_state_dict({**state, "position": 9})
