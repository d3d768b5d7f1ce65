"""tools/docexec.py: a page's python blocks import the modules its file blocks write."""

from __future__ import annotations

import sys

from tools import docexec

PAGE = '''
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
        run = docexec.run_markdown(PAGE.format(value=value), "page.md", workdir)
        assert run.runs[0].output == f"{value}\n"
        assert "helper_mod_for_docexec" not in sys.modules
        assert sys.path == before
