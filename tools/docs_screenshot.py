"""Build the documentation site (every example run) and save a screenshot of a built page,
taken by headless Chromium, for the README: ``docs/images/tutorial.png``.

    python -m tools.docs_screenshot                 # the tutorial, 1280 x 2400 pixels
    python -m tools.docs_screenshot --page how-to/graph-models/ --out /tmp/graph.png

Needs Chromium (Debian's package ``chromium``) and the ``[docs]`` extra.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_site(site: Path) -> None:
    """``mkdocs build --strict`` into ``site``, running every page's blocks."""
    env = dict(os.environ, CHAINRULE_DOCS_EXECUTE="1", NO_MKDOCS_2_WARNING="1")
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
                   cwd=ROOT, env=env, check=True)


def screenshot(html: Path, out: Path, width: int, height: int) -> None:
    """A PNG of ``html`` as Chromium draws it in a ``width`` x ``height`` window."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs headless Chromium (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", f"--user-data-dir={profile}",
                        f"--window-size={width},{height}", "--virtual-time-budget=5000",
                        f"--screenshot={out.resolve()}", html.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", default="tutorial/backprop/", help="a page of the built site")
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "tutorial.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chainrule-site-") as temporary:
        site = Path(temporary) / "site"
        build_site(site)
        screenshot(site / args.page / "index.html", Path(args.out), args.width, args.height)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
