"""MkDocs hooks: run every page's code blocks while the site is built and show what they
printed and drew under each block (see tools/docexec.py for what each block does).

``CHAINRULE_DOCS_EXECUTE=0`` skips the runs (a quick preview while writing).
``CHAINRULE_DOCS_REPORT=DIR`` writes one JSON file per page into DIR: each block's line,
language, source, wall time, output and number of figures, and runs each page in
``DIR/<page>/`` (kept, instead of a temporary directory) so that the tests can also read
the files a page wrote.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tools.docexec

from tools import docexec  # noqa: E402


def on_page_markdown(markdown, page, config, files):
    if os.environ.get("CHAINRULE_DOCS_EXECUTE", "1") == "0":
        return markdown
    if not any(block.runs or block.is_file for block in docexec.parse(markdown)):
        return markdown
    source = page.file.src_uri
    report_dir = os.environ.get("CHAINRULE_DOCS_REPORT")
    if not report_dir:
        with tempfile.TemporaryDirectory(prefix="chainrule-docs-") as workdir:
            return docexec.render(markdown, docexec.run_markdown(markdown, f"docs/{source}",
                                                                 workdir))
    name = source.replace("/", "__").removesuffix(".md")
    workdir = Path(report_dir, name)
    workdir.mkdir()
    page_run = docexec.run_markdown(markdown, f"docs/{source}", workdir)
    report = {"page": source, "workdir": str(workdir), "seconds": page_run.seconds,
              "blocks": [{"line": run.block.line, "language": run.block.language,
                          "source": run.block.source, "seconds": run.seconds,
                          "output": run.output, "figures": len(run.figures)}
                         for run in page_run.runs]}
    Path(report_dir, name + ".json").write_text(json.dumps(report, indent=1))
    return docexec.render(markdown, page_run)
