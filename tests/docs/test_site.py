"""The documentation site builds strictly, with every example run by the build, and shows
what each one printed and drew."""

from __future__ import annotations

import html
import re
import shutil

import pytest

from tools import docexec

from .conftest import DOCS, ROOT

PAGES = sorted(DOCS.rglob("*.md"))
SHOWN_ONLY = {"text"}  # outputs, folder listings and install lines: shown, not run


def runnable(page) -> list[docexec.Block]:
    return [block for block in docexec.parse(page.read_text()) if block.runs]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_every_block_of_a_page_runs_or_is_text(page):
    for block in docexec.parse(page.read_text()):
        assert block.language in docexec.RUN_LANGUAGES or block.language in SHOWN_ONLY, (
            f"{page.relative_to(ROOT)}:{block.line}: a ```{block.language} block is neither run "
            f"(python, bash) nor text")


def test_the_site_builds_strictly_and_runs_every_block(built_site):
    for page in PAGES:
        name = str(page.relative_to(DOCS))
        blocks = runnable(page)
        if not blocks:
            continue
        assert name in built_site.reports, f"{name}: the build did not run its blocks"
        ran = built_site.reports[name]["blocks"]
        assert [b["line"] for b in ran] == [b.line for b in blocks], name
    # every page of the nav was built
    for page in PAGES:
        built = built_site.site / page.relative_to(DOCS).with_suffix("") / "index.html"
        if page.name == "index.md":
            built = built_site.site / page.relative_to(DOCS).parent / "index.html"
        assert built.exists(), built


def test_the_built_pages_show_the_printed_output_and_the_figures(built_site):
    for name, report in built_site.reports.items():
        page = built_site.site / name.removesuffix(".md").removesuffix("index") / "index.html"
        # whitespace collapsed: Markdown expands the tabs of an output (`ls`)
        text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", page.read_text())).split())
        for block in report["blocks"]:
            for line in block["output"].strip().splitlines()[:3]:
                assert " ".join(line.split()) in text, (
                    f"{name}:{block['line']}: output {line!r} not shown")
        figures = sum(block["figures"] for block in report["blocks"])
        assert page.read_text().count("data:image/png;base64,") >= figures, name


def test_the_tutorial_runs_end_to_end_and_trains(built_site):
    report = built_site.reports["tutorial/backprop.md"]
    print(f"\nthe tutorial ran in {report['seconds']:.1f} s "
          f"({len(report['blocks'])} blocks) within the site build")
    output = "".join(block["output"] for block in report["blocks"])
    errors = [float(e) for e in re.findall(r"worst relative error (\S+)", output)]
    assert len(errors) == 4 and max(errors) < 1e-6, errors
    accuracy = float(re.search(r"test accuracy (\S+)%", output)[1])
    assert accuracy > 80, output
    assert sum(block["figures"] for block in report["blocks"]) == 4  # curves + 3 inspect figures
    assert "dL/dweight" in output  # chainrule explain's per-layer gradients


def test_the_readme_shows_the_tutorial_page_and_how_to_serve_the_site():
    readme = (ROOT / "README.md").read_text()
    assert "docs/images/tutorial.png" in readme
    assert 'pip install -e ".[docs]" && mkdocs serve' in readme
    png = (ROOT / "docs" / "images" / "tutorial.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 50_000


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="needs headless Chromium (Debian package 'chromium', which .ci/run "
                    "installs)")
def test_the_built_tutorial_page_renders_in_headless_chromium(built_site, tmp_path):
    from tools.docs_screenshot import screenshot

    out = tmp_path / "tutorial.png"
    screenshot(built_site.site / "tutorial" / "backprop" / "index.html", out, 800, 1000)
    import matplotlib.image

    pixels = matplotlib.image.imread(out)          # (1000, 800, 3 or 4), floats in [0, 1]
    assert pixels.shape[:2] == (1000, 800)
    # The page drew: the header bar, text and code, not a blank or error page.
    assert pixels[..., :3].std() > 0.1
