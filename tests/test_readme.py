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


def test_readme_graph_example_runs(capsys):
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
              if "cr.Input(" in b]
    assert blocks, "README has no graph example"
    exec(compile(blocks[0], "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "['branch1.weight', 'branch1.bias'] {'input': 2, 'silu': 2}"
    assert float(printed[1]) < 1e-6, f"gradcheck in the README's graph example: {printed[1]}"
