"""``folder:PATH``: torchvision's ImageFolder layout read with Pillow (chainrule.data.folder),
and the command line trained, evaluated and asked to predict on such a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import chainrule as cr
from chainrule.cli import main
from chainrule.data import (DataFormatError, DatasetError, MissingFilesError, load_dataset,
                            load_image_folder, scan_image_folder)
from chainrule.data.datasets import (TEST_FRACTION, _fixed_test_split, availability,
                                     describe_datasets, get_dataset_info)
from chainrule.data.folder import IMG_EXTENSIONS, parse_image_size

Image = pytest.importorskip("PIL.Image")


def _save(path: Path, pixels: np.ndarray, **kw) -> Path:
    """Write uint8 (H, W) or (H, W, 3) pixels (or uint16 (H, W)) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kw)
    return path


def _gray(rng, size=(6, 6)) -> np.ndarray:
    return rng.integers(0, 256, size, dtype=np.uint8)


def _pixels(folder_x: np.ndarray, i: int) -> np.ndarray:
    """Image i of uint8 (N, C, H, W) as written: (H, W) or (H, W, C)."""
    x = folder_x[i].transpose(1, 2, 0)
    return x[..., 0] if x.shape[-1] == 1 else x


# ---------------------------------------------------------------------- layout

def test_classes_are_sorted_folders_and_files_sorted_with_hidden_and_other_files_skipped(tmp_path):
    rng = np.random.default_rng(0)
    written = {}
    # Created out of order; "B" sorts before "a" (code points, as sorted() and torchvision).
    for cls, names in (("dog", ["b.png", "a.PNG", "sub/c.png"]), ("B", ["z.png"]),
                       ("cat", ["y.png", "x.png"])):
        for name in names:
            written[(cls, name)] = _save(tmp_path / cls / name, _gray(rng))
    _save(tmp_path / "cat" / ".hidden.png", _gray(rng))            # hidden file
    _save(tmp_path / "cat" / ".thumbs" / "t.png", _gray(rng))      # hidden folder in a class
    _save(tmp_path / ".cache" / "q.png", _gray(rng))               # hidden class folder
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "README.md").write_text("files beside the classes are ignored")

    folder = scan_image_folder(tmp_path)
    assert folder.classes == ["B", "cat", "dog"]
    assert [(p.relative_to(tmp_path).as_posix(), k) for p, k in folder.train_files] == [
        ("B/z.png", 0), ("cat/x.png", 1), ("cat/y.png", 1),
        ("dog/a.PNG", 2), ("dog/b.png", 2), ("dog/sub/c.png", 2)]
    classes, x, y, x_test, y_test = load_image_folder(tmp_path)
    assert classes == ["B", "cat", "dog"] and x_test is None and y_test is None
    assert y.tolist() == [0, 1, 1, 2, 2, 2] and y.dtype == np.int64
    assert x.dtype == np.uint8 and x.shape == (6, 1, 6, 6)
    order = ["B/z.png", "cat/x.png", "cat/y.png", "dog/a.PNG", "dog/b.png", "dog/sub/c.png"]
    for i, rel in enumerate(order):  # PNG is lossless: the very pixels written
        cls, name = rel.split("/", 1)
        np.testing.assert_array_equal(_pixels(x, i), np.asarray(Image.open(written[cls, name])))


def test_every_torchvision_extension_in_any_case_is_an_image(tmp_path):
    rng = np.random.default_rng(1)
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".ppm": "PPM", ".bmp": "BMP",
               ".pgm": "PPM", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}
    assert set(formats) == set(IMG_EXTENSIONS)
    for i, ext in enumerate(IMG_EXTENSIONS):
        name = f"{i}{ext.upper() if i % 2 else ext}"
        _save(tmp_path / "a" / name, _gray(rng, (8, 8)), format=formats[ext])
    (tmp_path / "a" / "x.gif").write_bytes(b"GIF89a")  # not an ImageFolder extension
    folder = scan_image_folder(tmp_path)
    assert len(folder.train_files) == len(IMG_EXTENSIONS)
    x, _ = folder.read()
    modes = {Image.open(path).mode for path, _ in folder.train_files}
    assert "RGB" in modes  # WebP decodes to RGB even when saved from grayscale
    assert x.shape == (len(IMG_EXTENSIONS), 3, 8, 8)


def test_jpeg_pixels_are_what_pillow_decodes(tmp_path):
    rng = np.random.default_rng(2)
    smooth = np.kron(rng.integers(0, 256, (2, 2, 3), dtype=np.uint8), np.ones((8, 8, 1),
                                                                            dtype=np.uint8))
    path = _save(tmp_path / "a" / "photo.jpg", smooth, quality=95, subsampling=0)
    _, x, _, _, _ = load_image_folder(tmp_path)
    decoded = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(_pixels(x, 0), decoded)
    assert np.abs(decoded.astype(int) - smooth).mean() < 8  # and close to what was written


# ---------------------------------------------------------------------- colour

def test_all_grayscale_is_one_channel_and_one_colour_image_makes_three(tmp_path):
    rng = np.random.default_rng(3)
    gray = _gray(rng)
    _save(tmp_path / "a" / "0.png", gray)
    assert scan_image_folder(tmp_path).in_channels == 1
    rgb = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    _save(tmp_path / "b" / "0.png", rgb)
    classes, x, y, _, _ = load_image_folder(tmp_path)
    assert x.shape == (2, 3, 6, 6)
    np.testing.assert_array_equal(_pixels(x, 0), np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_array_equal(_pixels(x, 1), rgb)


def test_palette_rgba_cmyk_and_gray_alpha_convert_as_pillow_does(tmp_path):
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).quantize(colors=16)               # mode P
    (tmp_path / "a").mkdir()
    palette.save(tmp_path / "a" / "p.png")
    rgba = np.concatenate([rgb, rng.integers(0, 256, (5, 5, 1), dtype=np.uint8)], axis=2)
    _save(tmp_path / "a" / "q.png", rgba)                            # RGBA: alpha dropped
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "a" / "r.tiff")
    _, x, _, _, _ = load_image_folder(tmp_path)
    np.testing.assert_array_equal(_pixels(x, 0), np.asarray(palette.convert("RGB")))
    np.testing.assert_array_equal(_pixels(x, 1), rgb)
    cmyk = Image.open(tmp_path / "a" / "r.tiff")
    assert cmyk.mode == "CMYK"
    np.testing.assert_array_equal(_pixels(x, 2), np.asarray(cmyk.convert("RGB")))

    gray, alpha = _gray(rng, (5, 5)), _gray(rng, (5, 5))
    gray_dir = tmp_path / "gray"
    (gray_dir / "a").mkdir(parents=True)
    Image.merge("LA", [Image.fromarray(gray), Image.fromarray(alpha)]).save(
        gray_dir / "a" / "0.png")
    assert Image.open(gray_dir / "a" / "0.png").mode == "LA"
    _, x, _, _, _ = load_image_folder(gray_dir)
    assert x.shape == (1, 1, 5, 5)                                   # LA counts as grayscale
    np.testing.assert_array_equal(_pixels(x, 0), gray)


def test_sixteen_bit_grayscale_keeps_its_top_eight_bits(tmp_path):
    wide = np.array([[0, 255, 256, 4095], [32768, 40000, 65280, 65535],
                     [1, 511, 512, 1023], [257, 30000, 60000, 65534]], dtype=np.uint16)
    path = _save(tmp_path / "a" / "deep.png", wide)
    assert Image.open(path).mode in ("I;16", "I")
    _, x, _, _, _ = load_image_folder(tmp_path)
    assert x.shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(_pixels(x, 0), (wide >> 8).astype(np.uint8))
    # Beside a colour image it becomes three equal channels of the same values.
    _save(tmp_path / "b" / "c.png", np.zeros((4, 4, 3), dtype=np.uint8))
    _, x, _, _, _ = load_image_folder(tmp_path)
    np.testing.assert_array_equal(_pixels(x, 0), np.repeat((wide >> 8).astype(np.uint8)[..., None],
                                                           3, axis=2))


def test_exif_orientation_is_applied_as_predict_does(tmp_path):
    rng = np.random.default_rng(5)
    pixels = _gray(rng, (4, 6))                                      # 4 high, 6 wide
    exif = Image.Exif()
    exif[0x0112] = 6                                                 # rotate 90 degrees on show
    path = tmp_path / "a" / "turned.jpg"
    path.parent.mkdir()
    Image.fromarray(pixels).save(path, exif=exif, quality=100)
    _save(tmp_path / "a" / "square.png", _gray(rng, (6, 4)))         # already 6 high, 4 wide
    folder = scan_image_folder(tmp_path, image_size=6)
    x, _ = folder.read()
    from PIL import ImageOps
    turned = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("L"))
    assert turned.shape == (6, 4)
    expected = np.asarray(Image.fromarray(turned).resize((6, 6), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(_pixels(x, 1), expected)
    with pytest.raises(DataFormatError, match="6x4 .*--image-size"):  # both 6x4 upright
        scan_image_folder(tmp_path)


# ---------------------------------------------------------------------- splits

def _digit_folder(root: Path, per_class: int = 20, classes=("zero", "one", "seven"),
                  digits=(0, 1, 7), start: int = 0) -> None:
    """``per_class`` of scikit-learn's 8x8 digits per class, as 0..255 PNGs."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    for name, digit in zip(classes, digits):
        images = bunch.images[bunch.target == digit][start:start + per_class]
        for i, img in enumerate(images):
            _save(root / name / f"{i:03d}.png", np.rint(img * 255 / 16).astype(np.uint8))


def test_one_folder_gets_the_fixed_seeded_test_split_of_the_bundled_sets(tmp_path):
    pytest.importorskip("sklearn")
    _digit_folder(tmp_path, per_class=20)
    classes, x, y, _, _ = load_image_folder(tmp_path)
    x_tr, y_tr, x_te, y_te = _fixed_test_split(x, y)
    assert len(x_te) == round(len(x) * TEST_FRACTION) == 12
    a = load_dataset(f"folder:{tmp_path}", val_fraction=0.25, seed=0)
    b = load_dataset(f"folder:{tmp_path}", val_fraction=0.25, seed=1)
    assert a.classes == classes == ["one", "seven", "zero"]
    assert len(a.train[0]) == 36 and len(a.val[0]) == 12
    assert (a.in_channels, a.input_size, a.num_classes) == (1, 8, 3)
    for ds in (a, b):                                                 # --seed moves val only
        np.testing.assert_array_equal(ds.test[1], y_te)
        pixels = np.rint((ds.test[0] * np.float32(ds.std[0]) + np.float32(ds.mean[0])) * 255)
        np.testing.assert_array_equal(pixels.astype(np.uint8), x_te)  # normalized as the rest


@pytest.mark.parametrize("test_dir", ["test", "val"])
def test_train_and_test_folders_are_the_splits(tmp_path, test_dir):
    pytest.importorskip("sklearn")
    _digit_folder(tmp_path / "train", per_class=10)
    _digit_folder(tmp_path / test_dir, per_class=4, start=10)
    folder = scan_image_folder(tmp_path)
    assert folder.test_dir == tmp_path / test_dir
    ds = load_dataset(f"folder:{tmp_path}", val_fraction=0.1)
    assert ds.classes == ["one", "seven", "zero"]
    assert len(ds.test[0]) == 12 and len(ds.train[0]) + len(ds.val[0]) == 30
    assert ds.test[1].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    _, x_train, _, x_test, y_test = load_image_folder(tmp_path)
    assert x_train.shape == (30, 1, 8, 8) and x_test.shape == (12, 1, 8, 8)
    assert y_test.tolist() == ds.test[1].tolist()
    pixels = np.rint((ds.test[0] * np.float32(ds.std[0]) + np.float32(ds.mean[0])) * 255)
    np.testing.assert_array_equal(pixels.astype(np.uint8), x_test)


def test_a_test_folder_prevails_over_val(tmp_path):
    rng = np.random.default_rng(6)
    for split in ("train", "val", "test"):
        _save(tmp_path / split / "a" / "0.png", _gray(rng))
    assert scan_image_folder(tmp_path).test_dir == tmp_path / "test"


def test_train_and_test_with_different_classes_is_an_error(tmp_path):
    rng = np.random.default_rng(7)
    for cls in ("cat", "dog"):
        _save(tmp_path / "train" / cls / "0.png", _gray(rng))
    for cls in ("cat", "emu"):
        _save(tmp_path / "test" / cls / "0.png", _gray(rng))
    with pytest.raises(DataFormatError, match="only in train: dog; only in test: emu"):
        scan_image_folder(tmp_path)


# ---------------------------------------------------------------------- sizes

def test_image_size_resizes_bilinear_and_mixed_sizes_need_it(tmp_path):
    rng = np.random.default_rng(8)
    small = _save(tmp_path / "a" / "small.png", _gray(rng, (6, 6)))
    big = _save(tmp_path / "b" / "big.png", rng.integers(0, 256, (10, 14, 3), dtype=np.uint8))
    with pytest.raises(DataFormatError) as err:
        scan_image_folder(tmp_path)
    message = str(err.value)
    for part in (str(small), "6x6", str(big), "10x14", "--image-size N"):
        assert part in message
    for size in (8, "8", "8x8", " 8 X 8 "):
        _, x, _, _, _ = load_image_folder(tmp_path, image_size=size)
        assert x.shape == (2, 3, 8, 8)
        for i, path in enumerate((small, big)):
            expected = Image.open(path).convert("RGB").resize((8, 8), Image.Resampling.BILINEAR)
            np.testing.assert_array_equal(_pixels(x, i), np.asarray(expected))
    # At its own size an image is not resampled at all.
    _, x, _, _, _ = load_image_folder(tmp_path, image_size=6)
    np.testing.assert_array_equal(_pixels(x, 0)[..., 0], np.asarray(Image.open(small)))
    assert load_dataset(f"folder:{tmp_path}", image_size=8).input_size == 8


def test_predict_and_inspect_read_and_resize_an_image_as_folder_training_does(tmp_path):
    # A model trained on a resized folder sees at predict/inspect time the pixels it
    # trained on (predict once resized with Lanczos, inspect without EXIF orientation).
    from chainrule.cli import read_image
    from chainrule.inspect.inputs import load_image

    rng = np.random.default_rng(5)
    _save(tmp_path / "data" / "a" / "big.png", _gray(rng, (32, 40)))
    _save(tmp_path / "data" / "b" / "small.png", _gray(rng, (20, 20)))
    _, x, _, _, _ = load_image_folder(tmp_path / "data", image_size=28)
    for i, name in enumerate(["a/big.png", "b/small.png"]):
        path = tmp_path / "data" / name
        np.testing.assert_array_equal(read_image(path, 1, 28), x[i])
        np.testing.assert_array_equal(load_image(path, 1, 28),
                                      x[i].astype(np.float32) / np.float32(255))


def test_a_shared_size_that_is_not_square_needs_image_size(tmp_path):
    rng = np.random.default_rng(9)
    _save(tmp_path / "a" / "0.png", _gray(rng, (4, 6)))
    with pytest.raises(DataFormatError, match="4x6 .*square.*--image-size N"):
        scan_image_folder(tmp_path)
    assert scan_image_folder(tmp_path, image_size=5).input_size == 5


@pytest.mark.parametrize("bad", ["", "x", "8x", "8x9", "-3", "0", "3.5", "8 8"])
def test_an_image_size_that_does_not_parse_is_a_value_error(bad):
    with pytest.raises(ValueError, match="image size"):
        parse_image_size(bad)
    assert parse_image_size("12x12") == parse_image_size(12) == 12


# ---------------------------------------------------------------------- errors

def test_clear_errors_for_a_missing_or_malformed_folder(tmp_path):
    rng = np.random.default_rng(10)
    with pytest.raises(MissingFilesError, match="does not exist.*<class>"):
        load_dataset(f"folder:{tmp_path / 'nowhere'}")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(MissingFilesError, match="is not a folder"):
        scan_image_folder(tmp_path / "file.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "loose.png").write_bytes(b"x")
    with pytest.raises(DataFormatError, match="no class folders.*one folder per class"):
        scan_image_folder(empty)
    root = tmp_path / "root"
    _save(root / "cat" / "0.png", _gray(rng))
    (root / "dog").mkdir()
    (root / "dog" / "readme.txt").write_text("no images here")
    (root / "emu").mkdir()
    with pytest.raises(DataFormatError, match=r"class folder\(s\) dog, emu .*\.jpg, \.jpeg"):
        scan_image_folder(root)


def test_a_corrupt_or_truncated_image_is_named(tmp_path):
    rng = np.random.default_rng(11)
    _save(tmp_path / "a" / "good.png", _gray(rng, (32, 32)))
    bad = tmp_path / "a" / "garbage.png"
    bad.write_bytes(b"this is not a PNG file at all")
    with pytest.raises(DataFormatError, match=f"cannot read {bad}"):
        scan_image_folder(tmp_path)
    bad.unlink()
    # A header that reads but pixels that stop half way: found when decoding.
    data = (tmp_path / "a" / "good.png").read_bytes()
    cut = tmp_path / "a" / "cut.png"
    cut.write_bytes(data[:len(data) // 2])
    folder = scan_image_folder(tmp_path)
    with pytest.raises(DataFormatError, match=f"cannot read {cut}"):
        folder.read()


def test_image_size_belongs_to_folders_only_and_errors_reach_the_cli(tmp_path, capsys):
    with pytest.raises(DatasetError, match="folder:PATH data only"):
        get_dataset_info("digits", image_size=8)
    with pytest.raises(DatasetError, match="folder:PATH"):
        get_dataset_info("imagenet")
    assert main(["train", "--data", f"folder:{tmp_path / 'nowhere'}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("chainrule: error:") and "does not exist" in err
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", f"folder:{tmp_path}", "--image-size", "big"])
    assert exit_.value.code == 2
    assert "argument --image-size: image size must be N or HxW" in capsys.readouterr().err
    assert main(["train", "--data", "digits", "--image-size", "8", "--out",
                 str(tmp_path / "r")]) == 1
    assert "--image-size" in capsys.readouterr().err


def test_availability_and_the_listing_know_folders(tmp_path):
    rng = np.random.default_rng(12)
    assert availability(f"folder:{tmp_path / 'nowhere'}")[0] is False
    for cls in ("a", "b"):
        _save(tmp_path / cls / "0.png", _gray(rng))
    ok, where = availability(f"folder:{tmp_path}")
    assert ok and where == f"2 images in 2 classes in {tmp_path}"
    assert describe_datasets()[-1][0] == "folder:PATH"


# ---------------------------------------------------------------------- end to end

# A step schedule, so that a run of 1 epoch resumed to 2 is the run of 2 (a cosine one
# keeps the length it was created with).
_FOLDER_RUN = ["--image-size", "8", "--batch-size", "16", "--scheduler", "step", "--step-size",
               "1", "--gamma", "0.5", "--no-progress"]


@pytest.fixture(scope="module")
def digit_run(tmp_path_factory):
    """Three classes of digits, half of them stored 12x12 (so --image-size 8 is needed),
    trained for 2 epochs through the command line."""
    pytest.importorskip("sklearn")
    root = tmp_path_factory.mktemp("own")
    data = root / "digits"
    _digit_folder(data, per_class=150)
    for path in sorted(data.glob("*/*.png"))[::2]:
        Image.open(path).resize((12, 12), Image.Resampling.BILINEAR).save(path)
    out = root / "run"
    argv = ["train", *_FOLDER_RUN, "--data", f"folder:{data}", "--epochs", "2", "--out",
            str(out)]
    assert main(argv) == 0
    return root, data, out


def test_train_on_a_folder_reaches_well_above_chance(digit_run):
    root, data, out = digit_run
    meta = cr.load_checkpoint(out / "best.safetensors").metadata
    assert meta["classes"] == ["one", "seven", "zero"]
    assert (meta["data"], meta["in_channels"], meta["input_size"]) == (f"folder:{data}", 1, 8)
    assert meta["args"]["image_size"] == 8
    best = meta["best"]["value"]
    assert best > 0.8, f"validation accuracy {best:.2%} on three easy classes (chance 33%)"


def test_evaluate_and_predict_a_folder_run(digit_run, tmp_path, capsys):
    root, data, out = digit_run
    ckpt = str(out / "best.safetensors")
    assert main(["evaluate", ckpt, "--out", str(tmp_path)]) == 0   # the run's --image-size
    text = capsys.readouterr().out
    accuracy = float(text.split("accuracy ")[1].split("%")[0]) / 100
    assert accuracy > 0.8, text
    rows = [line.split()[0] for line in text.splitlines()
            if line.split()[:1] and line.split()[0] in ("one", "seven", "zero")]
    assert rows == ["one", "seven", "zero"]
    assert (tmp_path / "confusion.png").is_file()

    files = [data / "seven" / "001.png", data / "zero" / "000.png"]
    assert main(["predict", ckpt, *map(str, files)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[1].split()[0] for line in lines] == ["seven", "zero"]


def test_evaluate_refuses_a_folder_with_other_classes(digit_run, tmp_path, capsys):
    root, data, out = digit_run
    _digit_folder(tmp_path / "other", per_class=5, classes=("a", "b", "c"))
    assert main(["evaluate", str(out / "best.safetensors"), "--data",
                 f"folder:{tmp_path / 'other'}"]) == 1
    assert "the model was trained on one, seven, zero" in capsys.readouterr().err


def test_resume_of_a_folder_run_ends_where_an_uninterrupted_run_does(digit_run, tmp_path):
    root, data, out = digit_run
    assert main(["train", *_FOLDER_RUN, "--data", f"folder:{data}", "--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    assert main(["train", "--resume", str(tmp_path / "r"), "--epochs", "2"]) == 0
    resumed = cr.load_checkpoint(tmp_path / "r" / "last.safetensors").model.state_dict()
    whole = cr.load_checkpoint(out / "last.safetensors").model.state_dict()
    assert resumed.keys() == whole.keys()
    for key in whole:
        np.testing.assert_array_equal(resumed[key], whole[key], err_msg=key)


def test_train_config_reads_image_size_strings_and_names_a_bad_one(tmp_path):
    from chainrule.runner import RunError, TrainConfig

    rng = np.random.default_rng(13)
    _save(tmp_path / "a" / "0.png", _gray(rng, (8, 8)))
    assert TrainConfig(data=f"folder:{tmp_path}", image_size="8x8").image_size == 8
    with pytest.raises(RunError, match="--image-size: image size must be N or HxW"):
        TrainConfig(data=f"folder:{tmp_path}", image_size="huge").validate()
    assert TrainConfig(data=f"folder:{tmp_path}").out_dir.as_posix() == \
        f"runs/lenet5-folder-{tmp_path.name}"
