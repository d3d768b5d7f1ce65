"""Run the code blocks of a documentation page, in order, as a reader would, and keep what
they print and draw.

The documentation's numbers and figures come from these runs, never from typing: the
MkDocs hook (``tools/mkdocs_hooks.py``) shows each block's output under it in the built
site, and the test suite (``tests/docs/``) runs every page the same way.

What each fenced block of a page does:

- `````python``: runs in the page's namespace (one per page, shared by its blocks, as in a
  notebook). What it prints is its output; every matplotlib figure still open when it ends
  is its figure (then closed).
- `````python title="name.py"``: is written to ``name.py`` in the page's working directory,
  not run: a script that a later ``bash`` block starts (``mpiexec -n 2 python name.py``).
- `````bash``: runs in bash (``-e``: the first failing command fails the page) in the
  working directory, with this interpreter's ``bin/`` first on PATH (``python`` and
  ``chainrule`` are the ones under test). What it prints on stdout is its output; stderr
  (progress bars) is shown only when it fails.
- `````text`` and other languages: shown, not run (outputs, folder listings, install lines).

Every page runs in a fresh temporary working directory, with matplotlib's Agg backend.
That directory is first on ``sys.path`` while the page runs, as it is for ``python``
started there, so a ``python`` block can import a module that a ``title="name.py"`` block
wrote (modules imported from it are forgotten when the page ends).
Run one page from the command line: ``python -m tools.docexec docs/how-to/own-images.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

# A fence: ``` or more backticks at any indentation, an info string, the body, and the
# same fence at the same indentation.
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,})[ \t]*(?P<info>[^\n`]*)\n"
                   r"(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$", re.M | re.S)
ATTRIBUTE = re.compile(r'(\w[\w-]*)="([^"]*)"')
RUN_LANGUAGES = ("python", "bash")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# Open MPI refuses to start as root (containers, CI) and to start more processes than it
# counts cores unless told; a page's `mpiexec -n 2 ...` should run as a reader's does.
MPI_ENV = {"OMPI_MCA_rmaps_base_oversubscribe": "1"}
MPI_ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


class DocExecError(RuntimeError):
    """A block of a page failed: the message names the page, the block's line and why."""


@dataclass
class Block:
    """One fenced block: ``language`` and ``attributes`` from its info string, its source
    (indentation removed), where it is in the page (``line``, 1-based, of the opening
    fence; ``end``: offset just after the closing fence) and its indentation."""

    language: str
    attributes: dict[str, str]
    source: str
    line: int
    end: int
    indent: str

    @property
    def runs(self) -> bool:
        return self.language in RUN_LANGUAGES and not (
            self.language == "python" and "title" in self.attributes)

    @property
    def is_file(self) -> bool:
        return self.language == "python" and "title" in self.attributes


@dataclass
class BlockRun:
    """What one block did: its printed ``output``, its ``figures`` (PNG bytes) and the
    wall time it took."""

    block: Block
    output: str = ""
    figures: list[bytes] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class PageRun:
    """The runs of a page's blocks, in order, and the whole page's wall time."""

    path: str
    runs: list[BlockRun]
    seconds: float


def parse(markdown: str) -> list[Block]:
    """Every fenced block of ``markdown``, in order."""
    blocks = []
    for match in FENCE.finditer(markdown):
        info = match["info"].strip()
        language = info.split(maxsplit=1)[0].lower() if info else ""
        indent = match["indent"]
        body = match["body"]
        if indent:
            body = "".join(line[len(indent):] if line.startswith(indent) else line.lstrip()
                           for line in body.splitlines(keepends=True))
        blocks.append(Block(language, dict(ATTRIBUTE.findall(info)), body,
                            markdown.count("\n", 0, match.start()) + 1, match.end(), indent))
    return blocks


def _bash_env() -> dict[str, str]:
    env = dict(os.environ, MPLBACKEND="Agg", **MPI_ENV)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.update(MPI_ROOT_ENV)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _figures() -> list[bytes]:
    """PNG bytes of every open matplotlib figure, which are then closed."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return []
    pictures = []
    for number in pyplot.get_fignums():
        figure = pyplot.figure(number)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        pictures.append(buffer.getvalue())
        pyplot.close(figure)
    return pictures


def _run_python(block: Block, namespace: dict, page: str) -> BlockRun:
    # Blank lines before the source make tracebacks name the page's own line numbers.
    code = compile("\n" * block.line + block.source, page, "exec")
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(code, namespace)
    except BaseException as error:  # a reader sees any failure, SystemExit included
        raise DocExecError(
            f"{page}:{block.line}: the python block raised {type(error).__name__}: {error}\n"
            f"{''.join(traceback.format_exception(error))}\nIt had printed:\n{out.getvalue()}"
        ) from error
    return BlockRun(block, out.getvalue(), _figures())


def _run_bash(block: Block, workdir: Path, page: str, timeout: float) -> BlockRun:
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.source], cwd=workdir,
                          env=_bash_env(), capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise DocExecError(f"{page}:{block.line}: the bash block exited with "
                           f"{done.returncode}:\n{block.source}\nstdout:\n{done.stdout}\n"
                           f"stderr:\n{done.stderr[-4000:]}")
    # Numba's colorama.init() (when colorama is installed) writes a colour reset at exit
    # when stdout is a terminal, as under mpiexec's forwarding pty: no escape codes in a page.
    return BlockRun(block, ANSI_ESCAPE.sub("", done.stdout))


def _forget_modules_from(workdir: Path) -> None:
    """Take ``workdir`` off ``sys.path`` and drop the modules imported from it, so the
    next page (or a rerun of this one) imports its own files afresh."""
    with contextlib.suppress(ValueError):
        sys.path.remove(str(workdir))
    root = os.path.realpath(workdir) + os.sep
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        if origin and os.path.realpath(origin).startswith(root):
            del sys.modules[name]


def run_markdown(markdown: str, page: str, workdir: str | Path,
                 timeout: float = 600.0) -> PageRun:
    """Run the blocks of ``markdown`` (the page ``page``, for messages) in ``workdir``.

    Raises DocExecError at the first block that fails. The working directory, the
    matplotlib backend and the environment are restored afterwards.
    """
    import matplotlib

    workdir = Path(workdir)
    namespace: dict = {"__name__": "__main__"}
    runs = []
    start = time.perf_counter()
    previous_dir, previous_backend = os.getcwd(), matplotlib.get_backend()
    matplotlib.use("Agg")
    os.chdir(workdir)
    sys.path.insert(0, str(workdir))
    try:
        for block in parse(markdown):
            began = time.perf_counter()
            if block.is_file:
                (workdir / block.attributes["title"]).write_text(block.source)
                continue
            if not block.runs:
                continue
            if block.language == "python":
                run = _run_python(block, namespace, page)
            else:
                run = _run_bash(block, workdir, page, timeout)
            run.seconds = time.perf_counter() - began
            runs.append(run)
    finally:
        os.chdir(previous_dir)
        _forget_modules_from(workdir)
        _figures()  # a failed block's figures are not the next page's
        matplotlib.use(previous_backend)
    return PageRun(page, runs, time.perf_counter() - start)


def run_page(path: str | Path, workdir: str | Path | None = None) -> PageRun:
    """Run the page at ``path`` in ``workdir`` (a fresh temporary directory if None)."""
    path = Path(path)
    if workdir is not None:
        return run_markdown(path.read_text(encoding="utf-8"), str(path), workdir)
    with tempfile.TemporaryDirectory(prefix="chainrule-docs-") as temporary:
        return run_markdown(path.read_text(encoding="utf-8"), str(path), temporary)


def render(markdown: str, page_run: PageRun) -> str:
    """``markdown`` with each run block's output (a ``text`` block titled Output) and
    figures (inline PNG images) inserted right after it."""
    import base64

    pieces, position = [], 0
    for run in page_run.runs:
        block = run.block
        pieces.append(markdown[position:block.end])
        position = block.end
        added = []
        if run.output.strip():
            fence = "`" * max(3, _longest_backtick_run(run.output) + 1)
            added.append(f'{fence}text title="Output"\n{run.output.rstrip()}\n{fence}')
        for index, png in enumerate(run.figures, 1):
            data = base64.b64encode(png).decode("ascii")
            added.append(f"![Figure {index} of the block above](data:image/png;base64,{data})")
        if added:
            text = "\n\n".join(added)
            pieces.append("\n\n" + "\n".join(block.indent + line if line else line
                                              for line in text.splitlines()))
    pieces.append(markdown[position:])
    return "".join(pieces)


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a documentation page's code blocks.")
    parser.add_argument("pages", nargs="+", help="Markdown pages to run")
    parser.add_argument("--workdir", help="run in this directory (default: a temporary one)")
    args = parser.parse_args(argv)
    for page in args.pages:
        page_run = run_page(page, args.workdir)
        for run in page_run.runs:
            print(f"--- {page}:{run.block.line} ({run.block.language}, {run.seconds:.2f} s, "
                  f"{len(run.figures)} figure(s))")
            print(run.output, end="")
        print(f"=== {page}: {len(page_run.runs)} blocks ran in {page_run.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
