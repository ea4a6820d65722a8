"""Where a GPU check's working tree is and where it came from: its root, the commit (git, or what ``--prepare``
recorded in ``.carry/source.json`` for a machine whose copy of the tree has no git), and the time of a record.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from rcl.reproduce.provenance import git_state
from rcl.runtime import project_root

WHEELS_DIR = ".whl"  # the carried wheels (git-ignored), filled by --prepare
CARRY_DIR = ".carry"  # the carried data and source.json (git-ignored), filled by --prepare


def tree_root() -> Path:
    """The folder holding this package's ``pyproject.toml`` (the working tree, here and on the GPU machine)."""
    return project_root(Path(__file__).resolve().parent)


def source(root: Path) -> dict:
    """The commit the tree came from: git when the tree has it, else what ``--prepare`` recorded in .carry/.

    ``{"commit": hash or None, "dirty": tracked files changed (or None), "from": "git" | ".carry/source.json" |
    "unknown"}``, plus whatever else ``source.json`` recorded (``prepared``: when).
    """
    state = git_state(root)
    if state is not None:
        return {"commit": state["commit"], "dirty": bool(state["changed"]), "from": "git"}
    recorded = root / CARRY_DIR / "source.json"
    if recorded.is_file():
        try:
            return {**json.loads(recorded.read_text()), "from": f"{CARRY_DIR}/source.json"}
        except (OSError, json.JSONDecodeError):
            pass
    return {"commit": None, "dirty": None, "from": "unknown"}


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
