"""`chainrule train --inspect`: the arguments, starting a recorder, and saving it (also
for a resumed run, which continues the file)."""

from __future__ import annotations

import argparse

import chainrule as cr
from chainrule.inspect import load_stats
from chainrule.inspect.cli_inspect import add_train_arguments, finish_recorder, start_recorder
from chainrule.train import train_step
from tests.inspect.conftest import batch, small_convnet


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resume")
    add_train_arguments(parser)
    return parser.parse_args(argv)


def steps(model, optimizer, n: int) -> None:
    x, y = batch()
    for _ in range(n):
        train_step(model, cr.CrossEntropyLoss(), optimizer, x, y)


def test_no_recorder_without_the_flag(tmp_path):
    model = small_convnet()
    optimizer = cr.optim.SGD(model.parameters(), lr=0.1)
    recorder = start_recorder(parse(), model, optimizer, tmp_path)
    assert recorder is None
    assert finish_recorder(recorder, tmp_path) is None
    assert not any(tmp_path.iterdir())


def test_inspect_records_into_the_run_folder_and_resume_continues(tmp_path):
    run_dir = tmp_path / "run"  # not created yet, as before a run's first save
    model = small_convnet()
    optimizer = cr.optim.SGD(model.parameters(), lr=0.1)
    recorder = start_recorder(parse("--inspect", "--inspect-every", "2"), model, optimizer,
                              run_dir)
    steps(model, optimizer, 4)
    logged = []
    path = finish_recorder(recorder, run_dir, log=logged.append)
    assert path == run_dir / "inspect.json" and "inspect: wrote" in logged[0]
    assert load_stats(run_dir)["step"] == [0, 2]
    assert "step" not in optimizer.__dict__  # detached

    resumed = start_recorder(parse("--inspect", "--resume", str(run_dir)), model, optimizer,
                             run_dir)
    steps(model, optimizer, 3)
    finish_recorder(resumed, run_dir, log=logged.append)
    assert load_stats(run_dir)["step"] == [0, 2, 4, 6]


def test_overhead_benchmark_runs(capsys):
    from benchmarks.inspect_overhead import main

    main(["--quick"])
    out = capsys.readouterr().out
    assert "overhead per round: median" in out and "recorded steps: 4" in out
