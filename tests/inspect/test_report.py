"""report.html: self-contained (every figure embedded, nothing fetched), with and without
recorded statistics, from a run folder and from the command line, and rendered by
headless Chromium."""

from __future__ import annotations

import argparse
import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import chainrule as cr
from chainrule.inspect import Recorder, build_report, inspect_run, load_stats
from chainrule.inspect.cli_inspect import add_inspect_parser
from chainrule.inspect.inputs import synthetic_input
from chainrule.train import train_step
from tests.inspect.conftest import batch, small_convnet

ALL_FIGURES = ["gradient_flow.png", "activation_histograms.png", "filters.png",
               "feature_maps.png", "saliency.png", "maxpool_routing.png"]
CHROMIUM = Path("/usr/bin/chromium")


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(data) for data in
            re.findall(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)]


def trained_run(run_dir: Path, record: bool = True) -> cr.Sequential:
    """A run folder as `chainrule train --inspect` leaves it: checkpoint and statistics."""
    model = small_convnet()
    optimizer = cr.optim.SGD(model.parameters(), lr=0.05)
    recorder = Recorder().attach(model, optimizer) if record else None
    x, y = batch(n=16)
    for _ in range(4):
        train_step(model, cr.CrossEntropyLoss(), optimizer, x, y)
    run_dir.mkdir(parents=True, exist_ok=True)
    if recorder:
        recorder.detach().save(run_dir)
    cr.save(model, run_dir / "last.safetensors", in_channels=1, input_size=8,
            classes=["a", "b", "c"], mean=[0.5], std=[0.25])
    return model


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    model = trained_run(run_dir)
    state = model.state_dict()
    path = build_report(model, run_dir / "report", synthetic_input(1, 8, seed=0, count=16),
                        stats=load_stats(run_dir), classes=["a", "b", "c"], mean=[0.5],
                        std=[0.25])
    # Drawing the report leaves the model exactly as it was.
    assert all(m.training and not m.__dict__.keys() & {"forward", "backward"}
               for m in model.modules())
    assert all(np.array_equal(v, model.state_dict()[k]) for k, v in state.items())
    return path


def test_report_embeds_every_figure_and_fetches_nothing(report):
    html = report.read_text()
    assert "No recorded statistics" not in html
    pngs = embedded_pngs(html)
    assert len(pngs) == len(ALL_FIGURES)
    for name, png in zip(ALL_FIGURES, pngs):
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert (report.parent / name).read_bytes() == png, name
    # Self-contained: no external resource of any kind.
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert "Flags (last recorded step" in html
    assert "synthetic" in html  # the input's caveat is stated


def test_report_without_statistics_or_data_says_so_and_draws_the_rest(tmp_path):
    model = small_convnet()
    cr.save(model, tmp_path / "best.safetensors", in_channels=1, input_size=8,
            data="no-such-data-set")
    path = inspect_run(tmp_path)
    html = path.read_text()
    assert path == tmp_path / "report.html"
    assert "No recorded statistics" in html and "--inspect" in html
    assert "could not be loaded" in html and "synthetic" in html
    assert len(embedded_pngs(html)) == len(ALL_FIGURES) - 1
    assert not (tmp_path / "gradient_flow.png").exists()


def test_inspect_command_with_an_image(tmp_path, capsys):
    from PIL import Image

    trained_run(tmp_path / "run")
    pixels = (np.arange(100 * 80).reshape(80, 100) % 255).astype(np.uint8)
    Image.fromarray(pixels).convert("RGB").save(tmp_path / "digit.png")
    parser = argparse.ArgumentParser()
    add_inspect_parser(parser.add_subparsers())
    args = parser.parse_args(["inspect", str(tmp_path / "run"), "--image",
                              str(tmp_path / "digit.png"), "--out", str(tmp_path / "out")])
    assert args.func(args) == 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert "digit.png (--image)" in html
    assert len(embedded_pngs(html)) == len(ALL_FIGURES)
    assert "wrote" in capsys.readouterr().out


def test_report_uses_a_test_image_of_the_run_data_set(tmp_path):
    pytest.importorskip("sklearn")  # the "digits" data set ships with scikit-learn
    model = cr.Sequential(cr.Conv2d(1, 4, 3, padding=1), cr.ReLU(), cr.MaxPool2d(2),
                          cr.Flatten(), cr.Linear(64, 10)).reset_parameters(0)
    cr.save(model, tmp_path / "last.safetensors", data="digits", in_channels=1, input_size=8,
            classes=[str(d) for d in range(10)], mean=[0.3], std=[0.4])
    html = inspect_run(tmp_path).read_text()
    assert "of digits (seed 0)" in html and "synthetic" not in html


def test_a_folder_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="best.safetensors or last.safetensors"):
        inspect_run(tmp_path)


def render(html_path: Path, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", html_path.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs headless Chromium at /usr/bin/chromium "
                    "(Debian package 'chromium', which .ci/run installs)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    # A copy with one image broken shows the check can fail.
    broken = tmp_path / "broken.html"
    html = report.read_text()
    broken.write_text(html.replace("base64,iVBOR", "base64,AAAA", 1))
    result = render(report, tmp_path / "profile")
    assert result.returncode == 0, result.stderr[-2000:]
    n = len(ALL_FIGURES)
    assert f'data-images-loaded="{n}/{n}"' in result.stdout
    assert "Uncaught" not in result.stderr  # no JavaScript error
    assert f'data-images-loaded="{n - 1}/{n}"' in render(broken, tmp_path / "profile").stdout
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
