"""Downloads: SHA-256 verification, atomic writes, mirrors, offline messages (no network:
the one function that opens URLs is replaced)."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
import urllib.error

import numpy as np
import pytest

from chainrule.data import download, load_dataset
from chainrule.data.errors import ChecksumError, MissingFilesError

from ._formats import idx_bytes

PAYLOAD = b"the official bytes"
GOOD = hashlib.sha256(PAYLOAD).hexdigest()


def _serve(monkeypatch, pages):
    """Replace the network: ``pages`` maps URL -> bytes, or an exception to raise."""
    calls = []

    def open_url(url):
        calls.append(url)
        page = pages[url]
        if isinstance(page, Exception):
            raise page
        return io.BytesIO(page)

    monkeypatch.setattr(download, "_open_url", open_url)
    return calls


def test_wrong_checksum_is_refused_and_nothing_kept(tmp_path, monkeypatch):
    _serve(monkeypatch, {"https://a/f.gz": b"tampered bytes"})
    resource = download.Resource("f.gz", ("https://a/f.gz",), GOOD)
    with pytest.raises(ChecksumError, match=f"(?s)refused f.gz.*expected {GOOD}"):
        download.fetch(resource, tmp_path)
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left behind


def test_right_checksum_is_kept(tmp_path, monkeypatch):
    _serve(monkeypatch, {"https://a/f.gz": PAYLOAD})
    path = download.fetch(download.Resource("f.gz", ("https://a/f.gz",), GOOD), tmp_path / "sub")
    assert path.read_bytes() == PAYLOAD and [p.name for p in path.parent.iterdir()] == ["f.gz"]


def test_falls_back_to_the_next_mirror(tmp_path, monkeypatch):
    calls = _serve(monkeypatch, {"https://a/f": urllib.error.URLError("down"),
                                 "https://b/f": PAYLOAD})
    download.fetch(download.Resource("f", ("https://a/f", "https://b/f"), GOOD), tmp_path)
    assert calls == ["https://a/f", "https://b/f"]


def test_offline_says_where_to_put_the_file(tmp_path, monkeypatch):
    _serve(monkeypatch, {"https://a/f": urllib.error.URLError("no network")})
    with pytest.raises(MissingFilesError, match=f"put it at {re.escape(str(tmp_path / 'f'))}"):
        download.fetch(download.Resource("f", ("https://a/f",), GOOD), tmp_path)


def test_a_verified_file_is_not_downloaded_again(tmp_path, monkeypatch):
    calls = _serve(monkeypatch, {})
    (tmp_path / "f").write_bytes(PAYLOAD)
    download.fetch(download.Resource("f", ("https://a/f",), GOOD), tmp_path)
    assert calls == []


def test_official_checksums_are_well_formed():
    for name, resources in download.RESOURCES.items():
        for r in resources:
            assert re.fullmatch(r"[0-9a-f]{64}", r.sha256), (name, r.filename)
            assert all(u.startswith(("https://", "http://")) and u.endswith(r.filename)
                       for u in r.urls)


def test_load_dataset_downloads_when_asked(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    files = {}
    for prefix, n in (("train", 10), ("t10k", 4)):
        files[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(
            idx_bytes(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)))
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(
            idx_bytes((np.arange(n) % 10).astype(np.uint8)))
    resources = tuple(download.Resource(name, (f"https://m/{name}",),
                                        hashlib.sha256(data).hexdigest())
                      for name, data in files.items())
    monkeypatch.setitem(download.RESOURCES, "mnist", resources)
    _serve(monkeypatch, {f"https://m/{name}": data for name, data in files.items()})
    with pytest.raises(MissingFilesError):
        load_dataset("mnist", data_dir=tmp_path)  # not without download=True
    ds = load_dataset("mnist", data_dir=tmp_path, download=True, val_fraction=0.2)
    assert ds.train[0].shape == (8, 1, 28, 28) and ds.test[0].shape == (4, 1, 28, 28)
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(files)


def test_extract_members_reads_only_the_named_files(tmp_path):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in (("d/x.bin", b"x" * 10), ("../evil", b"!")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    download.extract_members(archive, {"d/x.bin": tmp_path / "out" / "x.bin"})
    assert (tmp_path / "out" / "x.bin").read_bytes() == b"x" * 10
    # Nothing else was written: not "../evil", not "d/", not a temporary file.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz", "out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x.bin"]
    with pytest.raises(MissingFilesError, match="no member d/y.bin"):
        download.extract_members(archive, {"d/y.bin": tmp_path / "y"})


def test_offline_download_lists_every_file_and_where_it_goes(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "_open_url",
                        lambda url: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    with pytest.raises(MissingFilesError) as info:
        load_dataset("kmnist", data_dir=tmp_path, download=True)
    message = str(info.value)
    assert "The download failed (offline?)" in message and str(tmp_path / "kmnist") in message
    assert all(f in message for f in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))
