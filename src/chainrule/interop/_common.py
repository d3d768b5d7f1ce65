"""What the converters share: the error for a module they cannot translate, and the
dotted paths that name a module's place in a model (``"3"``, ``"1.block.0"``)."""

from __future__ import annotations


class UnsupportedModuleError(ValueError):
    """A module (or an option of one) that a converter cannot translate exactly.

    The message starts with the module's path in the model and its class, e.g.
    ``"3: torch.nn.Softsign"``, so the offending layer can be found in a printed model.
    """


def child_path(prefix: str, name: str) -> str:
    """The dotted path of child ``name`` of the module at ``prefix`` (``""`` is the root)."""
    return f"{prefix}.{name}" if prefix else name


def shown_path(path: str) -> str:
    """A path as messages show it: the root module has the empty path, shown ``(root)``."""
    return path or "(root)"
