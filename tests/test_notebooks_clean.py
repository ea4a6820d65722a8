"""Committed notebooks are clean: no outputs, no execution counts, kernel metadata, a tagged parameters cell.

papermill refuses a notebook without kernel language metadata, and ``python -m rcl.reproduce`` injects
the profile through the cell tagged ``parameters``, which must be the first code cell.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

_FOLDER = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(_FOLDER.glob("*.ipynb")) + sorted((_FOLDER / "solutions").glob("*.ipynb"))


def problems(path: Path) -> list[str]:
    """What is wrong with the committed notebook at ``path`` (empty when it is clean)."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    found = []
    meta = notebook.get("metadata", {})
    kernelspec = meta.get("kernelspec", {})
    if kernelspec.get("name") != "python3" or not kernelspec.get("display_name"):
        found.append(f"kernelspec must name python3 with a display_name, got {kernelspec!r}")
    if meta.get("language_info", {}).get("name") != "python":
        found.append("language_info.name must be 'python' (papermill: 'No language found in notebook')")
    cells = notebook.get("cells", [])
    ids = [cell.get("id") for cell in cells]
    if (notebook.get("nbformat"), notebook.get("nbformat_minor", 0)) >= (4, 5) and (
        None in ids or len(set(ids)) < len(ids)
    ):
        found.append("every cell needs its own id (nbformat 4.5; nbformat.validator.normalize adds them)")
    code = [cell for cell in cells if cell.get("cell_type") == "code"]
    for number, cell in enumerate(code):
        if cell.get("outputs"):
            found.append(f"code cell {number} has outputs: strip them (e.g. jupyter nbconvert --clear-output)")
        if cell.get("execution_count") is not None:
            found.append(f"code cell {number} has execution_count {cell['execution_count']}: strip it")
    if not code or "parameters" not in code[0].get("metadata", {}).get("tags", []):
        found.append("the first code cell must be tagged 'parameters' (papermill injects the profile after it)")
    return found


@pytest.mark.skipif(not NOTEBOOKS, reason="no notebooks under notebooks/ yet")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[str(p.relative_to(_FOLDER)) for p in NOTEBOOKS])
def test_committed_notebook_is_clean(path):
    assert problems(path) == [], f"{path.name}: " + "; ".join(problems(path))


def test_problems_catches_a_dirty_notebook(tmp_path):
    dirty = {
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
        "cells": [
            {"cell_type": "code", "metadata": {}, "source": "x = 1", "execution_count": 3, "outputs": [{}]},
        ],
    }
    path = tmp_path / "dirty.ipynb"
    path.write_text(json.dumps(dirty))
    found = " | ".join(problems(path))
    for fragment in ("kernelspec", "language_info", "has outputs", "execution_count 3", "parameters", "own id"):
        assert fragment in found


def test_every_chapter_has_its_solutions():
    """Issue 13: every exercise gets a solution, executed by the tests (nbval runs notebooks/solutions too)."""
    chapters = sorted(p.name[:2] for p in _FOLDER.glob("[0-9][0-9]_*.ipynb"))
    solutions = sorted(p.name[:2] for p in (_FOLDER / "solutions").glob("[0-9][0-9]_solutions.ipynb"))
    assert solutions == chapters
    for path in sorted(_FOLDER.glob("[0-9][0-9]_*.ipynb")):
        text = path.read_text(encoding="utf-8")
        assert f"solutions/{path.name[:2]}_solutions.ipynb" in text, f"{path.name} does not point to its solutions"
