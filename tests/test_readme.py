"""The README's API example must run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    exec(compile(blocks[0], "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert float(printed[0]) < 1e-6, f"gradcheck in the README reported {printed[0]}"


def _training_script() -> str:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
              if "cr.fit(" in b and "ModelCheckpoint" in b]
    assert len(blocks) == 1, "README has no (or several) training scripts"
    return blocks[0]


def test_readme_training_script_runs_and_resumes_after_ctrl_c_bit_for_bit(tmp_path,
                                                                          monkeypatch):
    """The README's cr.fit script, exactly: run once straight, and once with Ctrl-C in
    the middle of epoch 3 then run again; both end with the same weights and metrics."""
    import numpy as np
    import pytest

    import chainrule as cr
    from tests.helpers import interrupt_after

    pytest.importorskip("sklearn", reason="the script trains on digits (chainrule[datasets])")
    script = compile(_training_script(), "README.md", "exec")
    assert len(_training_script().splitlines()) <= 20
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    exec(script, {})

    monkeypatch.chdir(tmp_path / "b")
    interrupt_after(monkeypatch, 2 * 41 + 10)  # 41 steps per epoch: step 10 of epoch 3
    with pytest.raises(cr.Interrupted) as info:
        exec(script, {})
    assert (info.value.epoch, info.value.step) == (2, 10)
    monkeypatch.undo()                 # train_step back (and the working directory)
    monkeypatch.chdir(tmp_path / "b")
    exec(script, {})

    a = cr.load_checkpoint(tmp_path / "a" / "runs/mine/last.safetensors")
    b = cr.load_checkpoint(tmp_path / "b" / "runs/mine/last.safetensors")
    wa, wb = a.model.state_dict(), b.model.state_dict()
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    drop_time = lambda path: [line.rsplit(",", 1)[0] for line in path.read_text().splitlines()]  # noqa: E731
    assert drop_time(tmp_path / "a" / "runs/mine/metrics.csv") == drop_time(
        tmp_path / "b" / "runs/mine/metrics.csv")
    assert a.metadata["epoch"] == b.metadata["epoch"] >= 3


def test_readme_graph_example_runs(capsys):
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
              if "cr.Input(" in b]
    assert blocks, "README has no graph example"
    exec(compile(blocks[0], "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "['branch1.weight', 'branch1.bias'] {'input': 2, 'silu': 2}"
    assert float(printed[1]) < 1e-6, f"gradcheck in the README's graph example: {printed[1]}"
