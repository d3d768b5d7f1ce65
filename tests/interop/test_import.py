"""The interop dependencies stay optional: importing chainrule loads none of them, and
calling an interop function without its package says which extra to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60)


def test_import_chainrule_imports_neither_torch_nor_onnx():
    result = run_python("""
        import sys
        import chainrule as cr
        assert callable(cr.export_onnx) and callable(cr.interop.from_torch)
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("torch", "onnx", "onnxruntime"))
        print(heavy)
        assert not heavy, heavy
    """)
    assert result.returncode == 0, result.stdout + result.stderr


def test_missing_packages_name_the_extra():
    # A None entry in sys.modules makes `import onnx` / `import torch` fail as if absent.
    result = run_python("""
        import sys
        sys.modules["onnx"] = None
        sys.modules["torch"] = None
        import chainrule as cr
        for call, extra in [(lambda: cr.export_onnx(cr.ReLU(), "x.onnx", (3,)), "onnx"),
                            (lambda: cr.interop.to_torch(cr.ReLU()), "torch")]:
            try:
                call()
            except ImportError as err:
                assert f'pip install "chainrule[{extra}]"' in str(err), str(err)
            else:
                raise AssertionError("no ImportError")
    """)
    assert result.returncode == 0, result.stdout + result.stderr
