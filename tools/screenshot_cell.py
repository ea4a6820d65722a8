"""Render one cell of an executed notebook (with the markdown just above it) to a PNG, through headless Chromium.

    python tools/screenshot_cell.py NOTEBOOK TEXT OUT.png [WIDTH,HEIGHT]

TEXT picks the first code cell whose source contains it. Used for the README's picture of a chapter's claims
block (docs/img/claims-ch01-laptop.png, from the reference run's chapter 01). Needs /usr/bin/chromium
(tools/install_browser.sh) or RCL_CHROMIUM.
"""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter


def main(argv: list[str]) -> None:
    if len(argv) not in (3, 4):
        raise SystemExit(__doc__)
    source, text, out = Path(argv[0]), argv[1], Path(argv[2]).resolve()
    size = argv[3] if len(argv) == 4 else "1100,900"
    notebook = nbformat.read(source, as_version=4)
    found = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and text in c.source]
    if not found:
        raise SystemExit(f"no code cell of {source} contains {text!r}")
    i = found[0]
    cells = (
        notebook.cells[i - 1 : i + 1]
        if i > 0 and notebook.cells[i - 1].cell_type == "markdown"
        else [notebook.cells[i]]
    )
    html, _ = HTMLExporter(template_name="lab").from_notebook_node(
        nbformat.v4.new_notebook(cells=cells, metadata=notebook.metadata)
    )
    page = out.with_suffix(".html")
    page.write_text(html)
    chromium = os.environ.get("RCL_CHROMIUM", "/usr/bin/chromium")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={size}"]
    subprocess.run([chromium, *flags, f"--screenshot={out}", page.as_uri()], check=True, capture_output=True)
    page.unlink()
    print(f"{out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main(sys.argv[1:])
