"""Run under mpiexec by tests/test_distributed.py: trains a small net with
fit(distributed=True) and rank 0 writes the final weights to an .npz file.

    mpiexec -n K python -m tests.mpi_worker OUT.npz --dtype float64 --batch 12 [--bn sync]
"""

from __future__ import annotations

import argparse

import numpy as np

import chainrule as cr


def build(bn: str, dtype: str, seed: int = 0) -> cr.Sequential:
    cr.manual_seed(seed)
    layers = [cr.Conv2d(2, 4, 3, padding=1, dtype=dtype)]
    if bn == "batch":
        layers.append(cr.BatchNorm2d(4, dtype=dtype))
    elif bn == "sync":
        layers.append(cr.SyncBatchNorm(4, dtype=dtype))
    layers += [cr.ReLU(), cr.Flatten(), cr.Linear(4 * 6 * 6, 8, dtype=dtype), cr.Tanh(),
               cr.Linear(8, 3, dtype=dtype)]
    return cr.Sequential(*layers)


def data(n: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 2, 6, 6)).astype(dtype), rng.integers(0, 3, size=n)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--dtype", default="float64")
    p.add_argument("--batch", type=int, default=12, help="the global batch size")
    p.add_argument("--samples", type=int, default=48)
    p.add_argument("--bn", choices=("none", "batch", "sync"), default="none")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--single", action="store_true", help="one process, no distributed")
    p.add_argument("--bucket-bytes", type=int, default=cr.distributed.DEFAULT_BUCKET_BYTES)
    args = p.parse_args()
    k = 1 if args.single else cr.distributed.world_size()
    assert args.batch % k == 0, "the global batch must split evenly"
    model = build(args.bn, args.dtype, seed=cr.distributed.rank())  # rank 0's weights win
    opt = cr.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    X, y = data(args.samples, args.dtype)
    history = cr.fit(model, cr.CrossEntropyLoss(), opt, (X, y), epochs=args.epochs,
                     batch_size=args.batch // k, val=(X[:10], y[:10]), progress=False,
                     seed=3, distributed=not args.single, bucket_bytes=args.bucket_bytes)
    if cr.distributed.rank() == 0:
        arrays = {k: np.asarray(v) for k, v in model.state_dict().items()}
        arrays["_loss"] = np.array(history.as_dict()["loss"])
        arrays["_val_loss"] = np.array(history.as_dict()["val_loss"])
        np.savez(args.out, **arrays)


if __name__ == "__main__":
    main()
