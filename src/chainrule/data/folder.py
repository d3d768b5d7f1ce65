"""Your own images: a folder of PNG/JPEG/... files per class, read with Pillow.

The layout is torchvision's ``ImageFolder``::

    PATH/
      cat/  001.jpg  002.png  more/003.jpg ...
      dog/  001.jpg ...

- The classes are the subfolders of ``PATH``, sorted by name: label ``k`` is the k-th
  (torchvision's ``find_classes``). Files and folders whose names start with ``.`` are
  skipped everywhere.
- A class's images are the files anywhere below its folder (links followed) whose names
  end, in any case, with one of ``IMG_EXTENSIONS``, in sorted order.
- If ``PATH`` has a ``train/`` folder and a ``test/`` folder (or, without ``test/``, a
  ``val/`` one), each laid out as above with the same classes, those are the training
  and test splits. Otherwise ``PATH`` itself holds the classes, and the test split is
  the fixed, seeded fifth the bundled sets without one use
  (``datasets.TEST_FRACTION``, ``datasets._fixed_test_split``): it never changes with
  ``--seed``. Either way the validation split is carved out of the training images
  (``--val-fraction``), as for every data set.

Pixels: each image is turned the way its EXIF orientation says (as ``chainrule predict``
does), then

- colour: if every image is grayscale (Pillow modes ``1``, ``L``, ``LA``, ``I``,
  ``I;16*``, ``F``) the set has one channel, read with ``convert("L")`` (an alpha
  channel is dropped); otherwise three, read with ``convert("RGB")``: a palette image
  becomes its palette's colours, RGBA drops its alpha (no blending with a background),
  CMYK goes through Pillow's naive ``R = 255 - C - K`` formulas, and grayscale images
  among colour ones repeat their value in R, G and B. 16-bit grayscale (modes ``I;16*``
  and ``I``, as 16-bit PNGs open) keeps its top 8 bits (``v >> 8``, values clipped to
  0..65535) rather than Pillow's ``convert("L")``, which would clip every value above
  255 to white. 32-bit float images (``F``) are clipped to 0..255 as Pillow does.
- size: every image must have the same size unless ``image_size`` (``--image-size``)
  is given; then each is resized to ``image_size x image_size`` with Pillow's bilinear
  filter (torchvision's ``Resize((N, N))`` on PIL images; the aspect ratio is not kept,
  so crop first if that matters). The models take square images, so a set whose shared
  size is not square needs ``image_size`` too.

The result is uint8 (N, C, H, W) pixels, 0..255, that ``chainrule.data.load_dataset``
normalizes like every other set (``load_dataset("folder:PATH")``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataFormatError, DatasetError, MissingFilesError, missing_dependency

PREFIX = "folder:"
# torchvision.datasets.folder.IMG_EXTENSIONS
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# Grayscale modes with more than 8 bits of integers: 16-bit PNG/TIFF files.
WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
# The EXIF orientations that turn an image by 90 degrees (width and height swap).
TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
EXIF_ORIENTATION = 0x0112
SPLIT_DIRS = ("test", "val")  # beside train/: the first found is the test split
SIZE = re.compile(r"^\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?$")


def is_folder(name: str) -> bool:
    """Whether a data set name is ``folder:PATH``."""
    return name.startswith(PREFIX)


def folder_path(name: str) -> Path:
    """The ``PATH`` of ``folder:PATH`` (``~`` expanded)."""
    if not is_folder(name) or not name[len(PREFIX):]:
        raise DatasetError(f"expected folder:PATH, got {name!r}")
    return Path(name[len(PREFIX):]).expanduser()


def run_name(name: str) -> str:
    """A name for a run folder: the data set's name, or ``folder-<last part of PATH>``."""
    if not is_folder(name):
        return name
    return "folder-" + (folder_path(name).resolve().name or "root")


def parse_image_size(value: int | str) -> int:
    """``N``, ``"N"`` or ``"NxN"`` (also ``"N X N"``) as the int N.

    Raises:
        ValueError: not a positive size, or ``HxW`` with H != W (the models take square
            images).
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        size = int(value)
    else:
        match = SIZE.match(str(value))
        if match is None:
            raise ValueError(f"image size must be N or HxW (e.g. 32 or 32x32), got {value!r}")
        height, width = match.group(1), match.group(2) or match.group(1)
        if int(height) != int(width):
            raise ValueError(f"image size {value!r} is not square; the models take square "
                             "images: give N or NxN")
        size = int(height)
    if size < 1:
        raise ValueError(f"image size must be >= 1, got {value!r}")
    return size


def find_classes(directory: Path) -> list[str]:
    """The class folders of ``directory``: its subfolders not starting with ``.``, sorted."""
    return sorted(entry.name for entry in os.scandir(directory)
                  if entry.is_dir() and not entry.name.startswith("."))


def find_images(directory: Path) -> list[Path]:
    """The image files anywhere below ``directory`` (links followed, hidden names skipped),
    sorted as torchvision's ``make_dataset`` walks them."""
    found = []
    # sorted() walks the whole tree first (as torchvision does), so hidden folders are
    # skipped by their path rather than pruned from the walk.
    for root, _, files in sorted(os.walk(directory, followlinks=True)):
        if any(part.startswith(".") for part in Path(root).relative_to(directory).parts):
            continue
        found += [Path(root) / f for f in sorted(files)
                  if not f.startswith(".") and f.lower().endswith(IMG_EXTENSIONS)]
    return found


@dataclass
class _Header:
    """What an image file says before its pixels are decoded."""

    path: Path
    mode: str
    size: tuple[int, int]  # (height, width), after the EXIF orientation


@dataclass
class ImageFolder:
    """A folder of images per class, scanned (headers read, pixels not yet).

    Build it with ``scan_image_folder``; ``read`` decodes the pixels.

    Attributes:
        root: the folder.
        classes: class names (the folder names, sorted); label ``k`` is ``classes[k]``.
        train_files, test_files: ``(path, label)`` of each image of the two splits;
            ``test_files`` is None when ``root`` has no ``train/``+``test/`` (or ``val/``)
            folders (the test split is then carved out of ``train_files`` by
            ``chainrule.data.load_dataset``).
        in_channels: 1 if every image is grayscale, else 3.
        input_size: the height (= width) every image has, or is resized to.
        resize: whether the images are resized (``image_size`` was given).
        test_dir: the ``test/`` (or ``val/``) folder of the test split, or None.
    """

    root: Path
    classes: list[str]
    train_files: list[tuple[Path, int]]
    test_files: list[tuple[Path, int]] | None
    in_channels: int
    input_size: int
    resize: bool = False
    test_dir: Path | None = None

    @property
    def files(self) -> list[tuple[Path, int]]:
        return self.train_files + (self.test_files or [])

    def read(self, files: list[tuple[Path, int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Decode ``files`` (default: the training files) into uint8 (N, C, S, S) pixels and
        int64 (N,) labels; an unreadable image is a DataFormatError naming the file."""
        files = self.train_files if files is None else files
        size, channels = self.input_size, self.in_channels
        x = np.empty((len(files), size, size, channels), dtype=np.uint8)  # (N, H, W, C)
        for i, (path, _) in enumerate(files):  # one file at a time; pixels stay in NumPy
            x[i] = read_pixels(path, channels, size if self.resize else None).reshape(
                size, size, channels)
        y = np.array([label for _, label in files], dtype=np.int64)
        return x.transpose(0, 3, 1, 2).copy(), y  # (N, C, H, W)


def _pil():
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise missing_dependency("folder:PATH", "pillow") from None
    return Image, ImageOps


def _read_header(path: Path) -> _Header:
    Image, _ = _pil()
    try:
        with Image.open(path) as img:
            width, height = img.size
            mode = img.mode
            # A PNG whose eXIf chunk (if any) comes after its pixels would decode them
            # all to look: the chunk almost always comes first, so a header read suffices.
            exif = (img.getexif() if img.format != "PNG" or "exif" in img.info else {})
            if exif.get(EXIF_ORIENTATION) in TRANSPOSING_ORIENTATIONS:
                width, height = height, width
    except (OSError, ValueError, SyntaxError) as exc:  # incl. PIL.UnidentifiedImageError
        raise DataFormatError(f"cannot read {path} as an image: {exc}") from exc
    return _Header(path, mode, (height, width))


def read_pixels(path: str | Path, channels: int, size: int | None) -> np.ndarray:
    """One image as uint8 (H, W) or (H, W, 3): oriented, converted, resized if ``size``.

    Training on a folder, ``chainrule predict`` and ``chainrule inspect --image`` all read
    images through it, so an image is resized the same way wherever it goes."""
    Image, ImageOps = _pil()
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in WIDE_MODES:
                # Pillow's convert("L") clips 16-bit values at 255: keep the top 8 bits.
                wide = np.asarray(img).astype(np.int64)
                img = Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8))
            img = img.convert("L" if channels == 1 else "RGB")
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
        raise DataFormatError(f"cannot read {path} as an image: {exc}") from exc


def _classes_and_files(directory: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    classes = find_classes(directory)
    if not classes:
        raise DataFormatError(
            f"{directory} has no class folders: expected one folder per class holding its "
            f"images, e.g. {directory / 'cat' / '001.jpg'} and {directory / 'dog' / '001.jpg'}")
    files, empty = [], []
    for label, name in enumerate(classes):
        images = find_images(directory / name)
        if not images:
            empty.append(name)
        files += [(path, label) for path in images]
    if empty:
        raise DataFormatError(
            f"{directory}: no image files in the class folder(s) {', '.join(empty)} (looked "
            f"for names ending in {', '.join(IMG_EXTENSIONS)}, in any case)")
    return classes, files


def _fmt(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def scan_image_folder(root: str | Path, image_size: int | str | None = None) -> ImageFolder:
    """Find the classes, splits and image files under ``root`` and read every file's
    header (mode and size, no pixels): enough to know the set's channels and size.

    Args:
        root: the folder (see the module docstring for the layout).
        image_size: resize every image to this square size (``N`` or ``"NxN"``); None:
            all images must already share one square size.

    Raises:
        MissingFilesError: ``root`` is not a folder.
        DataFormatError: no class folders, a class folder without images, a file Pillow
            cannot read, ``train/`` and ``test/`` with different classes, or images of
            different (or non-square) sizes without ``image_size``.
        ValueError: an ``image_size`` that does not parse.
    """
    root = Path(root).expanduser()
    size = None if image_size is None else parse_image_size(image_size)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise MissingFilesError(f"{root} {what}; expected a folder of class folders of "
                                f"images: {root / '<class>' / '<image files>'}")
    test_dir = next((root / d for d in SPLIT_DIRS if (root / d).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        classes, train_files = _classes_and_files(root / "train")
        test_classes, test_files = _classes_and_files(test_dir)
        if test_classes != classes:
            only_train = sorted(set(classes) - set(test_classes))
            only_test = sorted(set(test_classes) - set(classes))
            raise DataFormatError(
                f"{root / 'train'} and {test_dir} must hold the same class folders; only in "
                f"train: {', '.join(only_train) or '-'}; only in {test_dir.name}: "
                f"{', '.join(only_test) or '-'}")
    else:
        (classes, train_files), test_files = _classes_and_files(root), None

    headers = [_read_header(path) for path, _ in train_files + (test_files or [])]
    channels = 1 if all(h.mode in GRAY_MODES for h in headers) else 3
    if size is None:
        first = headers[0]
        other = next((h for h in headers if h.size != first.size), None)
        if other is not None:
            raise DataFormatError(
                f"images of different sizes: {first.path} is {_fmt(first.size)} and "
                f"{other.path} is {_fmt(other.size)} (height x width); pass --image-size N "
                f"(image_size=N) to resize every image to NxN")
        if first.size[0] != first.size[1]:
            raise DataFormatError(
                f"the images are {_fmt(first.size)} (height x width, e.g. {first.path}); the "
                f"models take square images: pass --image-size N (image_size=N) to resize "
                f"every image to NxN")
        size = first.size[0]
    return ImageFolder(root, classes, train_files, test_files, channels, size,
                       resize=image_size is not None,
                       test_dir=test_dir if test_files is not None else None)


def load_image_folder(root: str | Path, image_size: int | str | None = None
                      ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray | None,
                                 np.ndarray | None]:
    """Read a folder of images per class into arrays (see the module docstring).

    Args:
        root: ``root/<class>/<image files>``, or ``root/train/...`` and ``root/test/...``.
        image_size: resize every image to ``image_size x image_size`` (bilinear); None:
            they must already share one square size.

    Returns:
        ``(classes, x_train, y_train, x_test, y_test)``: the class names (sorted folder
        names), uint8 (N, C, H, W) pixels 0..255 and int64 (N,) labels; ``x_test`` and
        ``y_test`` are None when ``root`` has no ``train/`` and ``test/`` (or ``val/``)
        folders. ``load_dataset(f"folder:{root}")`` gives the same images split and
        normalized.

    Raises:
        MissingFilesError, DataFormatError, ValueError: as ``scan_image_folder``;
            DataFormatError also for a file whose pixels cannot be decoded.
    """
    folder = scan_image_folder(root, image_size)
    x_train, y_train = folder.read(folder.train_files)
    if folder.test_files is None:
        return folder.classes, x_train, y_train, None, None
    return (folder.classes, x_train, y_train, *folder.read(folder.test_files))
