"""Every public layer and loss states its shape contract and its backward rule, as
Google-style sections that the API reference renders (``Shape:`` and ``Backward:``, each
a header line followed by indented text), and every public docstring parses without a
griffe warning (the strict docs build fails on one)."""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path

import pytest

import chainrule.layers
import chainrule.losses

PUBLIC = [getattr(chainrule.layers, n) for n in chainrule.layers.__all__] + \
         [getattr(chainrule.losses, n) for n in chainrule.losses.__all__]
SRC = Path(__file__).resolve().parents[2] / "src"


def section(doc: str, title: str) -> str | None:
    """The text of the Google-style section ``title`` of a docstring (a line holding only
    ``title:``, then lines indented deeper), or None when there is none."""
    lines = inspect.cleandoc(doc).splitlines()
    for i, line in enumerate(lines):
        if line.strip() == f"{title}:":
            indent = len(line) - len(line.lstrip())
            body = []
            for below in lines[i + 1:]:
                if below.strip() and len(below) - len(below.lstrip()) <= indent:
                    break
                body.append(below.strip())
            return " ".join(body).strip()
    return None


@pytest.mark.parametrize("cls", PUBLIC, ids=lambda c: c.__name__)
def test_shape_and_backward_sections(cls):
    doc = cls.__dict__.get("__doc__") or ""      # its own docstring, not a base class's
    for title in ("Shape", "Backward"):
        text = section(doc, title)
        assert text, f"{cls.__name__}'s docstring has no {title}: section (a '{title}:' line " \
                     f"followed by indented text)"


def test_section_reader():
    doc = """Summary.

    Shape:
        (N, C) -> same.

    Backward: inline text is not a section.
    """
    assert section(doc, "Shape") == "(N, C) -> same."
    assert section(doc, "Backward") is None


def test_public_docstrings_parse_without_warnings(caplog):
    griffe = pytest.importorskip("griffe")
    package = griffe.load("chainrule", search_paths=[str(SRC)], resolve_aliases=False)
    seen = set()

    def walk(obj):
        if obj.path in seen or obj.is_alias:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.parse("google", warn_missing_types=False)
        for name, member in obj.members.items():
            if not name.startswith("_") and not member.is_alias:
                walk(member)

    with caplog.at_level(logging.WARNING, logger="griffe"):
        walk(package)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(seen) > 500, f"only {len(seen)} objects walked"
    assert not warnings, "griffe warnings (the strict docs build fails on them):\n" + \
        "\n".join(warnings)
