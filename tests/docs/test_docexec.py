"""tools/docexec.py, the runner of the documentation's examples: what it runs, what it keeps,
and that a failing example fails loudly, naming its page and line."""

from __future__ import annotations

import sys

import pytest

from tools import docexec

PAGE = '''# A page

```python
x = 6 * 7
print("x is", x)
```

Some text.

- In a list:

    ```python
    print(x + 1)
    ```

```python title="script.py"
print("from the script")
```

```bash
python script.py
echo "done"
```

```text
not run
```

````python
print("```")
````
'''


def test_parse_reads_languages_attributes_lines_and_indentation():
    blocks = docexec.parse(PAGE)
    assert [(b.language, b.line, b.runs, b.is_file) for b in blocks] == [
        ("python", 3, True, False), ("python", 12, True, False),
        ("python", 16, False, True), ("bash", 20, True, False), ("text", 25, False, False),
        ("python", 29, True, False)]
    assert blocks[1].source == "print(x + 1)\n" and blocks[1].indent == "    "
    assert blocks[2].attributes == {"title": "script.py"}
    assert blocks[5].source == 'print("```")\n'


def test_a_page_runs_in_order_in_one_namespace_in_its_working_dir(tmp_path):
    run = docexec.run_markdown(PAGE, "page.md", tmp_path)
    assert [r.output for r in run.runs] == ["x is 42\n", "43\n", "from the script\ndone\n",
                                            "```\n"]
    assert (tmp_path / "script.py").read_text() == 'print("from the script")\n'


def test_render_puts_each_output_under_its_block_with_its_indentation(tmp_path):
    page_run = docexec.run_markdown(PAGE, "page.md", tmp_path)
    rendered = docexec.render(PAGE, page_run)
    assert '```\n\n```text title="Output"\nx is 42\n```\n\nSome text.' in rendered
    assert '    ```\n\n    ```text title="Output"\n    43\n    ```' in rendered
    # an output holding a fence gets a longer one
    assert '````text title="Output"\n```\n````' in rendered
    assert "not run" in rendered and rendered.count('title="Output"') == 4


def test_open_figures_become_the_blocks_figures(tmp_path):
    page = "```python\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.figure()\n```\n"
    page_run = docexec.run_markdown(page, "page.md", tmp_path)
    figures = page_run.runs[0].figures
    assert len(figures) == 2 and all(f.startswith(b"\x89PNG") for f in figures)
    import matplotlib.pyplot as plt
    assert plt.get_fignums() == []
    rendered = docexec.render(page, page_run)
    assert rendered.count("](data:image/png;base64,iVBOR") == 2


def test_a_failing_python_block_names_the_page_and_its_line(tmp_path):
    page = "# T\n\n```python\nprint('before')\n1 / 0\n```\n"
    with pytest.raises(docexec.DocExecError, match=r"page.md:3: the python block raised "
                                                   r"ZeroDivisionError") as error:
        docexec.run_markdown(page, "page.md", tmp_path)
    assert 'File "page.md", line 5' in str(error.value)  # the traceback's line is the page's
    assert "before" in str(error.value)


def test_a_failing_bash_block_names_the_page_its_line_and_stderr(tmp_path):
    page = "```bash\necho one\nls no-such-file\necho never\n```\n"
    with pytest.raises(docexec.DocExecError, match=r"page.md:1: the bash block exited with 2"
                       ) as error:
        docexec.run_markdown(page, "page.md", tmp_path)
    assert "stdout:\none\n\nstderr:\nls: cannot access" in str(error.value)  # stopped at ls


def test_bash_output_loses_terminal_escape_codes(tmp_path):
    page = "```bash\nprintf 'plain\\033[0m\\n'\n```\n"
    assert docexec.run_markdown(page, "p.md", tmp_path).runs[0].output == "plain\n"


def test_the_working_directory_is_restored_after_a_failure(tmp_path):
    import os
    before = os.getcwd()
    with pytest.raises(docexec.DocExecError):
        docexec.run_markdown("```python\nraise SystemExit(3)\n```\n", "p.md", tmp_path)
    assert os.getcwd() == before


IMPORTING_PAGE = '''
```python title="helper_mod_for_docexec.py"
VALUE = {value}
```

```python
from helper_mod_for_docexec import VALUE
print(VALUE)
```
'''


def test_a_python_block_imports_a_file_block_and_each_run_gets_its_own(tmp_path):
    before = list(sys.path)
    for value in (1, 2):                   # a rerun imports the new file, not the cached one
        workdir = tmp_path / str(value)
        workdir.mkdir()
        run = docexec.run_markdown(IMPORTING_PAGE.format(value=value), "page.md", workdir)
        assert run.runs[0].output == f"{value}\n"
        assert "helper_mod_for_docexec" not in sys.modules
        assert sys.path == before
