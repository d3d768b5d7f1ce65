"""Fetch the official data files, only when asked (``--download``), and verify them.

Every file is checked against the SHA-256 written below before it is kept: it is
streamed into a temporary file next to its destination, hashed on the way, fsynced and
renamed into place only when the hash matches, so an interrupted or tampered download
never leaves a file that looks complete.

Checksums: the official sites publish MD5 sums (MNIST none at all); the SHA-256 sums
below are the ones torchvision's dataset code (``prototype/datasets/_builtin/mnist.py``)
and TensorFlow Datasets' URL checksum lists record for the same files, and agree with
several independent projects that pin them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import ChecksumError, MissingFilesError


@dataclass(frozen=True)
class Resource:
    """One official file: its name, the mirrors to try in order, and its SHA-256."""

    filename: str
    urls: tuple[str, ...]
    sha256: str


def _idx_resources(bases: tuple[str, ...], sums: dict[str, str]) -> tuple[Resource, ...]:
    return tuple(Resource(name, tuple(f"{base}/{name}" for base in bases), digest)
                 for name, digest in sums.items())


RESOURCES: dict[str, tuple[Resource, ...]] = {
    # yann.lecun.com now often refuses downloads; the PyTorch mirror serves the same bytes.
    "mnist": _idx_resources(
        ("https://ossci-datasets.s3.amazonaws.com/mnist",
         "https://storage.googleapis.com/cvdf-datasets/mnist"),
        {"train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
         "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
         "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
         "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"}),
    "fashion-mnist": _idx_resources(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",),
        {"train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
         "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
         "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
         "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"}),
    "kmnist": _idx_resources(
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist",),
        {"train-images-idx3-ubyte.gz": "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
         "train-labels-idx1-ubyte.gz": "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
         "t10k-images-idx3-ubyte.gz": "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
         "t10k-labels-idx1-ubyte.gz": "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"}),
    "cifar10": (Resource(
        "cifar-10-binary.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
        "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),),
}

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _open_url(url: str) -> BinaryIO:
    """Open ``url`` for reading (the one place that touches the network; tests replace it)."""
    return urllib.request.urlopen(url, timeout=60)  # noqa: S310 - fixed https/http URLs


def fetch(resource: Resource, directory: str | Path) -> Path:
    """Download ``resource`` into ``directory`` unless a verified copy is already there.

    Mirrors are tried in order; a download with the wrong SHA-256 is deleted and the
    next mirror tried. Returns the file's path.

    Raises:
        ChecksumError: a mirror answered with the wrong bytes and none with the right ones.
        MissingFilesError: no mirror could be reached (offline); says where to put the file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dest = directory / resource.filename
    if dest.exists() and sha256_file(dest) == resource.sha256:
        return dest
    unreachable, wrong = [], []
    for url in resource.urls:
        try:
            actual = _download(url, dest, resource.sha256)
        except (urllib.error.URLError, OSError) as exc:  # TimeoutError is an OSError
            unreachable.append(f"{url}: {exc}")
            continue
        if actual == resource.sha256:
            return dest
        wrong.append(f"{url}: got SHA-256 {actual}, expected {resource.sha256}")
    if wrong:
        raise ChecksumError(f"refused {resource.filename}: its SHA-256 is not the official "
                            "one, so nothing was kept:\n  " + "\n  ".join(wrong + unreachable))
    raise MissingFilesError(
        f"could not download {resource.filename} (offline?):\n  " + "\n  ".join(unreachable)
        + f"\nFetch it by other means from {resource.urls[0]} and put it at {dest}")


def _download(url: str, dest: Path, expected: str) -> str:
    """Stream ``url`` into a temporary file beside ``dest``, and rename it to ``dest`` only
    when its SHA-256 is ``expected``; the temporary file is removed in every other case.
    Returns the SHA-256 of what was received."""
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, _open_url(url) as response:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() == expected:
            os.replace(tmp, dest)
        return digest.hexdigest()
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def extract_members(archive: str | Path, members: dict[str, Path]) -> None:
    """Copy the named regular files out of a tar archive, each written atomically.

    ``members`` maps a name inside the archive to its destination. Only those names are
    read, so a hostile archive cannot write elsewhere (no ``extractall``).

    Raises:
        MissingFilesError: a named member is not in the archive.
    """
    with tarfile.open(archive, "r:*") as tar:
        for name, dest in members.items():
            try:
                info = tar.getmember(name)
            except KeyError:
                raise MissingFilesError(f"{archive} has no member {name}") from None
            source = tar.extractfile(info) if info.isfile() else None
            if source is None:
                raise MissingFilesError(f"{archive}: {name} is not a regular file")
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            try:
                with os.fdopen(fd, "wb") as out, source:
                    shutil.copyfileobj(source, out, _CHUNK)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
