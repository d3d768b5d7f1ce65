"""chainrule.distributed and fit(distributed=True): the world of one process here, and
K = 2 and 3 processes under mpiexec (skipped, with the reason, without mpi4py/mpiexec).

The mpiexec cases train a small conv net for one epoch (48 samples, 4 steps); each
launch takes about 2 s on two cores, the whole file about 30 s."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import chainrule as cr
from chainrule import distributed as dist
from chainrule.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]


def mpiexec() -> str | None:
    found = shutil.which("mpiexec") or shutil.which("mpiexec", path=str(Path(sys.executable).parent))
    return found


def _mpi_missing() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'chainrule[mpi]')"
    if mpiexec() is None:
        return "no mpiexec on PATH (pip install 'chainrule[mpi]' brings Open MPI's)"
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))


def mpi_env() -> dict[str, str]:
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", CHAINRULE_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT),
                                         env.get("PYTHONPATH", "")])
    for name in [v for v in env if v.startswith(("OMPI_COMM_WORLD", "PMIX_"))]:
        del env[name]   # (a test run under mpiexec itself)
    return env


def run_mpi(k: int, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [mpiexec(), "-n", str(k), "--oversubscribe", sys.executable, *args]
    done = subprocess.run(cmd, env=mpi_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def train(tmp_path: Path, k: int | None, *options: str) -> dict[str, np.ndarray]:
    out = tmp_path / f"w{k}{'-'.join(options)}.npz"
    if k is None:
        subprocess.run([sys.executable, "-m", "tests.mpi_worker", str(out), "--single",
                        *options], env=mpi_env(), cwd=ROOT, check=True, timeout=120)
    else:
        run_mpi(k, "-m", "tests.mpi_worker", str(out), *options)
    with np.load(out) as f:
        return dict(f)


def assert_close(a: dict, b: dict, rtol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        scale = max(np.abs(a[key]).max(), 1e-30)
        err = np.abs(a[key].astype(np.float64) - b[key]).max() / scale
        assert err <= rtol, f"{key}: relative error {err:.3g} > {rtol:g}"


# ---------------------------------------------------------------------- one process

def test_a_world_of_one_without_mpi():
    dist.init()
    dist.init()   # idempotent
    assert dist.is_initialized() and dist.rank() == 0 and dist.world_size() == 1
    x = np.arange(5.0)
    np.testing.assert_array_equal(dist.allreduce_sum(x), x)
    p = cr.Parameter(np.ones(3))
    p.grad[:] = 2.0
    assert dist.allreduce_gradients([p]) == 0 and np.all(p.grad == 2.0)


def test_gradients_are_bucketed_by_size_and_dtype():
    sizes = [(100, np.float64), (100, np.float64), (300, np.float64), (10, np.float32),
             (10, np.float64)]
    params = [cr.Parameter(np.full(n, 1.0, dtype)) for n, dtype in sizes]
    for p in params:
        p.grad[:] = 3.0
    reducer = dist.GradientReducer(bucket_bytes=2000)
    reducer.add(params)
    assert [[params.index(p) for p in bucket] for bucket, *_ in reducer._sent] == [[0, 1], [2], [3]]
    assert reducer.finish() == 4      # [0, 1], [2], [3], [4]
    assert all(np.all(p.grad == 3.0) for p in params)   # a world of one: unchanged
    one = dist.GradientReducer(bucket_bytes=10**6)
    one.add(params[:2])
    assert one.finish() == 1


@pytest.mark.parametrize("n, k, batch", [(48, 2, 6), (48, 3, 4), (50, 3, 4), (7, 3, 2)])
def test_shards_split_every_epoch_like_distributed_sampler(n, k, batch):
    X, y = np.arange(n)[:, None], np.arange(n)
    whole = DataLoader((X, y), batch_size=batch * k, seed=5)
    shards = [DataLoader((X, y), batch_size=batch, seed=5).shard(k, r) for r in range(k)]
    for epoch in (0, 1):
        whole.set_epoch(epoch)
        for s in shards:
            s.set_epoch(epoch)
        assert len({len(s) for s in shards}) == 1, "every rank takes as many steps"
        steps = [list(s) for s in shards]
        taken = np.concatenate([yb for rank in steps for _, yb in rank])
        order = np.concatenate([yb for _, yb in whole])
        # Every sample once, plus the first ones again as padding to a multiple of k.
        assert len(taken) == -(-n // k) * k
        np.testing.assert_array_equal(np.sort(taken), np.sort(np.resize(order, len(taken))))
        if n % (batch * k) == 0:   # nothing padded: step s of the ranks = step s of one
            for s, (_, yb) in enumerate(whole):
                together = np.concatenate([steps[r][s][1] for r in range(k)])
                np.testing.assert_array_equal(np.sort(together), np.sort(yb))


def test_sync_batchnorm_in_one_process_is_batchnorm():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 4, 4))
    g = rng.normal(size=x.shape)
    sync, plain = cr.SyncBatchNorm(3, dtype="float64"), cr.BatchNorm2d(3, dtype="float64")
    sync.weight.data[:] = plain.weight.data[:] = rng.normal(size=3)
    np.testing.assert_allclose(sync.forward(x), plain.forward(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sync.backward(g), plain.backward(g), rtol=1e-10, atol=1e-12)
    for a, b in zip(sync.parameters(), plain.parameters()):
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-10)
    np.testing.assert_allclose(sync.running_var, plain.running_var, rtol=1e-12)
    sync.eval(), plain.eval()
    np.testing.assert_allclose(sync.forward(x), plain.forward(x), rtol=1e-12)


def test_a_mid_epoch_checkpoint_of_another_world_size_is_refused(tmp_path):
    from tests.mpi_worker import build, data
    model = build("none", "float64")
    opt = cr.optim.SGD(model.parameters(), lr=0.1)
    X, y = data(48, "float64")
    path = tmp_path / "mid.safetensors"   # as rank 0 of 2 writes it on Ctrl-C, at step 2
    cr.save(model, path, optimizer=opt, epoch=0, step=2, seed=0, history=[],
            rng_state=DataLoader((X, y), seed=0).epoch_generator(0).bit_generator.state,
            partial={"loss": 0.0, "correct": 0, "counted": 0, "seen": 24, "time": 0.0,
                     "lr": 0.1}, world_size=2)
    with pytest.raises(ValueError, match="2 process"):
        cr.fit(model, cr.CrossEntropyLoss(), opt, (X, y), batch_size=6, progress=False,
               resume=path)


# ---------------------------------------------------------------------- K processes

@needs_mpi
@pytest.mark.parametrize("k", [2, 3])
def test_k_ranks_at_batch_b_over_k_equal_one_process_at_batch_b(tmp_path, k):
    one = train(tmp_path, None)
    assert_close(train(tmp_path, k), one, rtol=1e-10)


@needs_mpi
def test_many_small_buckets_overlapping_backward_give_the_same_weights(tmp_path):
    one = train(tmp_path, None)
    assert_close(train(tmp_path, 2, "--bucket-bytes", "300"), one, rtol=1e-10)


@needs_mpi
def test_float32_equals_one_process_to_rounding(tmp_path):
    one = train(tmp_path, None, "--dtype", "float32")
    assert_close(train(tmp_path, 2, "--dtype", "float32"), one, rtol=2e-5)


@needs_mpi
@pytest.mark.parametrize("k", [2, 3])
def test_sync_batchnorm_on_k_ranks_equals_batchnorm_on_the_whole_batch(tmp_path, k):
    one = train(tmp_path, None, "--bn", "batch")
    assert_close(train(tmp_path, k, "--bn", "sync"), one, rtol=1e-10)


@needs_mpi
def test_per_rank_batchnorm_differs_from_the_whole_batch(tmp_path):
    # The default (as DDP): each rank normalizes its own samples; the test above can fail.
    one = train(tmp_path, None, "--bn", "batch")
    with pytest.raises(AssertionError, match="relative error"):
        assert_close(train(tmp_path, 2, "--bn", "batch"), one, rtol=1e-6)


@needs_mpi
def test_the_same_k_gives_bitwise_identical_weights(tmp_path):
    first = train(tmp_path, 3, "--dtype", "float32", "--epochs", "2")
    (tmp_path / "again").mkdir()
    again = train(tmp_path / "again", 3, "--dtype", "float32", "--epochs", "2")
    for key in first:
        np.testing.assert_array_equal(first[key], again[key], err_msg=key)


ALLREDUCE = """
import numpy as np
import chainrule as cr
d = cr.distributed
rng = np.random.default_rng(d.rank())
for n in (1, 5, 7, 1000):            # fewer elements than ranks, and uneven chunks
    x = rng.normal(size=n).astype(np.float32)
    parts = d.allgather_object(x)
    in_rank_order = parts[0].copy()
    for part in parts[1:]:
        in_rank_order += part
    got = d.allreduce_sum(x)
    assert np.array_equal(got, in_rank_order), (n, got, in_rank_order)
    assert all(np.array_equal(got, other) for other in d.allgather_object(got))
    assert np.allclose(d.allreduce_sum(x, deterministic=False), in_rank_order, rtol=1e-5)
print("ok")
"""


@needs_mpi
def test_allreduce_sum_adds_in_rank_order_bitwise_on_every_rank(tmp_path):
    script = tmp_path / "allreduce.py"
    script.write_text(ALLREDUCE)
    assert run_mpi(3, str(script)).stdout.split() == ["ok"] * 3


CTRL_C = """
import os, signal, sys
import numpy as np
import chainrule as cr
from chainrule.train import Interrupted
from tests.mpi_worker import data
mode, out = sys.argv[1], sys.argv[2]
cr.manual_seed(0)
model = cr.Sequential(cr.Flatten(), cr.Linear(72, 16, dtype="float64"), cr.ReLU(),
                      cr.Dropout(0.3), cr.Linear(16, 3, dtype="float64"))
opt = cr.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
X, y = data(48, "float64")
def press(batch, logs):   # Ctrl-C on rank 1 alone, after step 1 of the first epoch
    if mode == "interrupt" and cr.distributed.rank() == 1 and batch == 1:
        os.kill(os.getpid(), signal.SIGINT)
ckpt = cr.callbacks.ModelCheckpoint(out + ".ckpt.safetensors")
try:
    cr.fit(model, cr.CrossEntropyLoss(), opt, (X, y), epochs=2, batch_size=6, seed=3,
           progress=False, distributed=True, callbacks=[ckpt],
           on_batch=lambda e, b, loss: press(b, None) if e == 0 else None,
           resume=out + ".ckpt.safetensors" if mode == "resume" else None)
except Interrupted as exc:
    print(f"interrupted {cr.distributed.rank()} {exc.epoch} {exc.step}")
    sys.exit(0)
if cr.distributed.rank() == 0:
    np.savez(out, **{k: np.asarray(v) for k, v in model.state_dict().items()})
"""


@needs_mpi
def test_ctrl_c_on_one_rank_stops_all_after_the_same_step_and_resumes_bitwise(tmp_path):
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C)
    straight, resumed = str(tmp_path / "straight.npz"), str(tmp_path / "resumed.npz")
    run_mpi(2, str(script), "straight", straight)
    out = run_mpi(2, str(script), "interrupt", resumed).stdout
    # Both ranks stop after step 3 (the step after the Ctrl-C carries the news).
    assert sorted(out.split("\n")[:2]) == ["interrupted 0 0 3", "interrupted 1 0 3"], out
    meta = cr.load_checkpoint(resumed + ".ckpt.safetensors").metadata
    assert (meta["epoch"], meta["step"], meta["world_size"]) == (0, 3, 2)
    assert len(meta["dropout_states"]) == 2    # one Generator state per rank
    run_mpi(2, str(script), "resume", resumed)
    with np.load(straight) as a, np.load(resumed) as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


DEAD_RANK = """
import os, signal, sys
import chainrule as cr
from tests.mpi_worker import build, data
model = build("none", "float64")
opt = cr.optim.SGD(model.parameters(), lr=0.01)
X, y = data(48, "float64")
def kill(epoch, logs):
    if epoch == 2 and cr.distributed.rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
cr.fit(model, cr.CrossEntropyLoss(), opt, (X, y), epochs=10**6, batch_size=6,
       progress=False, distributed=True, on_epoch=kill,
       callbacks=[cr.callbacks.ModelCheckpoint(sys.argv[1])])
"""


@needs_mpi
def test_a_killed_rank_stops_the_others_and_the_checkpoint_stays_loadable(tmp_path):
    script = tmp_path / "dead.py"
    script.write_text(DEAD_RANK)
    ckpt = tmp_path / "last.safetensors"
    start = time.monotonic()
    done = subprocess.run([mpiexec(), "-n", "2", "--oversubscribe", sys.executable,
                           str(script), str(ckpt)], env=mpi_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    took = time.monotonic() - start
    assert done.returncode != 0
    # Open MPI: "exited on signal 9 (Killed)"; MPICH: "KILLED BY SIGNAL: 9".
    assert re.search(r"signal:? 9", done.stdout + done.stderr, re.I), done.stdout + done.stderr
    assert took < 100, f"the others took {took:.0f} s to stop"
    assert cr.load_checkpoint(ckpt).metadata["epoch"] >= 2


# ---------------------------------------------------------------------- the command line

CLI_RUN = ["--data", "digits", "--batch-size", "24", "--limit", "240", "--scheduler", "step",
           "--step-size", "1", "--gamma", "0.5", "--dtype", "float64", "--no-progress"]


def chainrule_cli(*args: str, cwd: Path, launcher: list[str] = ()) -> str:
    done = subprocess.run([*launcher, sys.executable, "-m", "chainrule", *args], cwd=cwd,
                          env=mpi_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@needs_mpi
def test_workers_then_mpiexec_resume_with_another_k_equals_one_process(tmp_path):
    chainrule_cli("train", *CLI_RUN, "--epochs", "2", "--out", "one", cwd=tmp_path)
    out = chainrule_cli("train", *CLI_RUN, "--epochs", "1", "--out", "k", "--workers", "2",
                        cwd=tmp_path)
    assert "2 processes" in out and out.count("epoch 1/1") == 1, out   # rank 0 alone prints
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == [
        "best.safetensors", "curves.png", "last.safetensors", "metrics.csv"]
    # The same run continued by 3 processes that mpiexec started (an epoch boundary:
    # any number of processes may continue it).
    chainrule_cli("train", "--resume", "k", "--epochs", "2", "--no-progress", cwd=tmp_path,
                  launcher=[mpiexec(), "-n", "3", "--oversubscribe"])
    one = cr.load_checkpoint(tmp_path / "one" / "last.safetensors")
    k = cr.load_checkpoint(tmp_path / "k" / "last.safetensors")
    assert k.metadata["epoch"] == 2
    assert_close(k.model.state_dict(), one.model.state_dict(), rtol=1e-10)
    assert (tmp_path / "k" / "metrics.csv").read_text().count("\n") == 3


def test_workers_needs_a_positive_count(capsys):
    from chainrule.cli import main
    assert main(["train", "--workers", "0"]) == 1
    assert "--workers must be >= 1" in capsys.readouterr().err


def test_workers_and_inspect_do_not_mix(capsys):
    from chainrule.cli import main
    assert main(["train", "--workers", "2", "--inspect"]) == 1
    assert "--inspect records a single process" in capsys.readouterr().err


def test_workers_share_the_cores_and_may_run_as_root(monkeypatch):
    from chainrule.cli import mpiexec_command
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("CHAINRULE_NUM_THREADS", "3")
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    if _mpi_missing() is not None:
        pytest.skip(_mpi_missing())
    cmd, env = mpiexec_command(2, ["train", "--epochs", "1"])
    assert cmd[1:4] == ["-n", "2", "--oversubscribe"]
    assert cmd[4:] == [sys.executable, "-m", "chainrule", "train", "--epochs", "1"]
    assert env["OMP_NUM_THREADS"] == "4" and env["CHAINRULE_NUM_THREADS"] == "3"
    if os.geteuid() == 0:
        assert env["OMPI_ALLOW_RUN_AS_ROOT"] == env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] == "1"


def test_workers_is_left_out_of_the_command_mpiexec_runs():
    from chainrule.cli import _without_workers
    assert _without_workers(["train", "--workers", "2", "--epochs", "1", "--workers=3"]) == [
        "train", "--epochs", "1"]
