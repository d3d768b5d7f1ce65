"""The API reference (docs/reference/*.md) documents every public name of chainrule, and
each of its ``::: path`` entries names something that exists.

The public names are those of ``chainrule.__all__`` and, recursively, of the ``__all__``
of every public subpackage it lists (``chainrule.optim``, ``chainrule.optim.lr_scheduler``,
``chainrule.callbacks``, ...), plus ``chainrule.serialize``, whose ``describe`` and
``build`` write and read a checkpoint's architecture (docs/reference/checkpoints.md).

A name counts as documented when an entry renders that very object under that name: the
entry's path resolves to the same object and ends in the same name, so ``::: chainrule.History``
documents both ``chainrule.History`` and ``chainrule.callbacks.History``. A subpackage (a
module listed in an ``__all__``) counts as documented through its members only because
this test checks each of those members itself; an entry that names a module documents
that module, not its members.

A path resolves as mkdocstrings (griffe) resolves it: the longest importable module
first. So where a function shares its module's name (``chainrule.gradcheck``,
``chainrule.data.augment``), ``::: chainrule.gradcheck`` renders the module and the
function's entry must be ``::: chainrule.gradcheck.gradcheck``; this test sees that.
"""

from __future__ import annotations

import importlib
import re
import types
from pathlib import Path
from typing import Any

import chainrule

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference"
EXTRA_PUBLIC_MODULES = ["chainrule.serialize"]
ENTRY = re.compile(r"^::: *(\S+)\s*$", re.M)


def public_names() -> dict[str, Any]:
    """Dotted public name -> object, for every name of every public ``__all__``; modules
    themselves are not listed (their members are)."""
    names: dict[str, Any] = {}
    todo = [chainrule] + [importlib.import_module(m) for m in EXTRA_PUBLIC_MODULES]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module.__name__ in seen:
            continue
        seen.add(module.__name__)
        assert hasattr(module, "__all__"), f"public module {module.__name__} has no __all__"
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, types.ModuleType):
                todo.append(obj)
            else:
                names[f"{module.__name__}.{name}"] = obj
    return names


def entries() -> dict[str, str]:
    """``::: path`` entry -> the page it is on, over docs/reference/*.md."""
    found: dict[str, str] = {}
    for page in sorted(REFERENCE.glob("*.md")):
        for path in ENTRY.findall(page.read_text()):
            assert path not in found, f"{path} is documented twice ({found[path]}, {page.name})"
            found[path] = page.name
    return found


def resolve(path: str) -> Any:
    """The object a dotted path names: the longest importable module prefix, then
    attributes. Raises LookupError when nothing of that name exists."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                raise LookupError(f"{path}: {'.'.join(parts[:cut])} has no {attr!r}")
            obj = getattr(obj, attr)
        return obj
    raise LookupError(f"{path}: no module of that name")


def undocumented(names: dict[str, Any], documented: dict[str, Any]) -> list[str]:
    """The public names that no entry renders (same object, same last name)."""
    by_name: dict[str, list[Any]] = {}
    for path, obj in documented.items():
        by_name.setdefault(path.rsplit(".", 1)[-1], []).append(obj)
    return sorted(full for full, obj in names.items()
                  if not any(o is obj for o in by_name.get(full.rsplit(".", 1)[-1], [])))


def test_every_entry_names_something_that_exists():
    missing = []
    for path, page in entries().items():
        try:
            resolve(path)
        except LookupError as error:
            missing.append(f"{page}: {error}")
    assert not missing, "reference entries naming nothing:\n" + "\n".join(missing)


def test_every_entry_is_under_chainrule():
    outside = [p for p in entries() if not (p == "chainrule" or p.startswith("chainrule."))]
    assert not outside, f"entries outside the chainrule package: {outside}"


def test_every_public_name_is_documented():
    documented = {path: resolve(path) for path in entries()}
    names = public_names()
    assert len(names) > 200, f"only {len(names)} public names collected: collection broke"
    missing = undocumented(names, documented)
    assert not missing, ("public names that no ::: entry of docs/reference/*.md documents:\n"
                         + "\n".join(missing))


def test_the_check_sees_a_missing_entry():
    """Without its entry, a public name (and its aliases) is reported."""
    documented = {path: resolve(path) for path in entries() if path != "chainrule.History"}
    missing = undocumented(public_names(), documented)
    assert missing == ["chainrule.History", "chainrule.callbacks.History"]
