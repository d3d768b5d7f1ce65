"""Errors of the data sets, each with a message that says what to do about it."""

from __future__ import annotations


class DatasetError(Exception):
    """Base class: a data set could not be loaded."""


class DataFormatError(DatasetError, ValueError):
    """A data file is truncated, corrupt or not in the format its name promises."""


class MissingFilesError(DatasetError, FileNotFoundError):
    """The files of a data set are not in the data directory (and were not downloaded)."""


class ChecksumError(DatasetError, ValueError):
    """A downloaded file's SHA-256 differs from the official one; the file is refused."""


class MissingDependencyError(DatasetError, ImportError):
    """A data set needs an optional package; the message names the install command."""


EXTRAS_HINT = 'pip install "chainrule[datasets]"'


def missing_dependency(dataset: str, package: str) -> MissingDependencyError:
    """The error for ``dataset`` needing ``package``, which is not installed."""
    return MissingDependencyError(
        f"the {dataset!r} data set needs the {package!r} package, which is not installed; "
        f"install it with: {EXTRAS_HINT}")
