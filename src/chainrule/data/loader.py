"""Mini-batches for training: ``DataLoader``, reproducible epoch by epoch.

Epoch ``e`` draws everything random (its shuffling order, then each batch's
augmentation, in order) from one Generator, ``np.random.default_rng([seed, e])``. So an
epoch's batches depend only on the seed and the epoch number, never on what ran before
(a resumed run redraws them exactly), and ``state_dict()`` needs only the epoch, the
batches already taken and that Generator's state to continue in the middle of an epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from ..random import generator

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class DataLoader:
    """Iterate ``(x_batch, y_batch)`` over a data set, one epoch per ``iter()``.

    Args:
        data: ``(X, y)`` arrays with a leading sample axis ``(N, ...)``, or a dataset: an
            object with ``__len__`` and ``__getitem__(indices)`` that takes an int array
            of sample indices and returns ``(x_batch, y_batch)``.
        batch_size: samples per batch; the last one may be smaller.
        shuffle: a new order every epoch (else the data's order).
        drop_last: leave out a last batch smaller than ``batch_size``.
        transform: ``transform(x_batch, rng) -> x_batch``, e.g. augmentation
            (``chainrule.data.augment``); it must draw only from ``rng``.
        seed: seeds every epoch's Generator (None: drawn once from the library
            generator of ``chainrule.manual_seed``, or from OS entropy).

    ``len(loader)`` is the number of batches per epoch. ``set_epoch(e)`` chooses the
    epoch the next ``iter()`` yields (``fit`` does this); an iteration that stops early
    continues, at the next ``iter()``, where it stopped.

    ``shard(num_replicas, rank)`` (``fit(distributed=True)`` calls it) makes it yield
    only one rank's part of every epoch, as torch's ``DistributedSampler``: the epoch's
    order (the same on every rank) is padded with its own first indices to a multiple
    of ``num_replicas``, and rank ``r`` takes ``order[r::num_replicas]``; so every rank
    takes the same number of batches of the same sizes, and the ranks' batches of step
    ``s`` together are the batch of ``num_replicas * batch_size`` samples a single
    process would take at step ``s`` (when nothing was padded).
    """

    def __init__(self, data: Any, batch_size: int = 32, shuffle: bool = True,
                 drop_last: bool = False, transform: Transform | None = None,
                 seed: int | None = None) -> None:
        if isinstance(data, tuple):
            if len(data) != 2:
                raise ValueError(f"DataLoader: expected data (X, y), got a tuple of {len(data)}")
            X, y = np.asarray(data[0]), np.asarray(data[1])
            if X.ndim < 1 or len(X) != len(y):
                raise ValueError(f"DataLoader: X has {len(X) if X.ndim else 0} samples but y "
                                 f"has {len(y) if y.ndim else 0}")
            self.dataset: Any = None
            self.arrays: tuple[np.ndarray, np.ndarray] | None = (X, y)
        elif hasattr(data, "__len__") and hasattr(data, "__getitem__"):
            self.dataset, self.arrays = data, None
        else:
            raise TypeError(f"DataLoader: expected (X, y) arrays or a dataset with __len__ "
                            f"and __getitem__, got {type(data).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be an int >= 1, got {batch_size!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable, got "
                            f"{type(transform).__name__}")
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.transform = transform
        self.seed = int(generator(None).integers(2**63)) if seed is None else int(seed)
        self.num_replicas, self.rank = 1, 0
        self.epoch = 0
        self.position = 0     # batches of this epoch already yielded
        self._rng: np.random.Generator | None = None      # the epoch's, once it started
        self._saved_rng: dict[str, Any] | None = None     # from load_state_dict

    def __len__(self) -> int:
        n = self.shard_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def shard(self, num_replicas: int, rank: int) -> "DataLoader":
        """Yield only rank ``rank``'s share of each epoch (see the class docstring);
        ``shard(1, 0)``: every sample again. Returns the loader."""
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, (int, np.integer)) \
                or num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"DataLoader.shard: expected num_replicas >= 1 and 0 <= rank < "
                             f"num_replicas, got {num_replicas!r}, {rank!r}")
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        return self

    @property
    def shard_size(self) -> int:
        """Samples this rank takes per epoch (all of them unless sharded)."""
        return -(-self.num_samples // self.num_replicas)

    @property
    def num_samples(self) -> int:
        return len(self.arrays[0]) if self.arrays is not None else len(self.dataset)

    def samples(self) -> tuple[np.ndarray, np.ndarray]:
        """Every sample in the data's order, untransformed: ``(X, y)`` (for validation)."""
        return self.arrays if self.arrays is not None else self._take(np.arange(self.num_samples))

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` yield epoch ``epoch`` from its first batch."""
        self.epoch, self.position = int(epoch), 0
        self._rng = self._saved_rng = None

    def epoch_generator(self, epoch: int) -> np.random.Generator:
        """The Generator epoch ``epoch`` draws its order and augmentation from."""
        return np.random.default_rng([self.seed, epoch])

    def _take(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.arrays is not None:
            return self.arrays[0][idx], self.arrays[1][idx]
        return self.dataset[idx]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        n = self.num_samples
        rng = self.epoch_generator(self.epoch)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.num_replicas > 1:
            padded = self.shard_size * self.num_replicas
            order = np.resize(order, padded)[self.rank::self.num_replicas]  # (shard_size,)
        if self.position > 0:
            # Continue mid-epoch: the same order (redrawn above), then the Generator
            # where the batches taken so far left it.
            if self._saved_rng is not None:
                rng.bit_generator.state = self._saved_rng
            elif self._rng is not None:
                rng = self._rng
        self._rng, self._saved_rng = rng, None
        for step in range(self.position, len(self)):
            idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            xb, yb = self._take(idx)
            if self.transform is not None:
                xb = self.transform(xb, rng)
            self.position = step + 1  # counted before the consumer sees the batch
            yield xb, yb

    def state_dict(self) -> dict[str, Any]:
        """``{"seed", "epoch", "position", "rng_state"}``: where the next batch comes from.
        After an epoch's last batch, that is the next epoch's first one."""
        if self.position >= len(self):
            return {"seed": self.seed, "epoch": self.epoch + 1, "position": 0,
                    "rng_state": self.epoch_generator(self.epoch + 1).bit_generator.state}
        if self.position == 0 or self._rng is None:
            state = self._saved_rng or self.epoch_generator(self.epoch).bit_generator.state
        else:
            state = self._rng.bit_generator.state
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position,
                "rng_state": state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a ``state_dict`` (also one taken mid-epoch)."""
        if "seed" in state and int(state["seed"]) != self.seed:
            raise ValueError(f"DataLoader.load_state_dict: the state is of a loader with seed "
                             f"{state['seed']}, this one has seed {self.seed}; the batches "
                             "would differ")
        position = int(state["position"])
        if not 0 <= position <= len(self):
            raise ValueError(f"DataLoader.load_state_dict: position {position} is outside the "
                             f"epoch's {len(self)} batches")
        self.epoch, self.position = int(state["epoch"]), position
        self._rng = None
        self._saved_rng = state.get("rng_state") if position > 0 else None
