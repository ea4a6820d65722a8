"""Results on disk: tidy records per chapter, collected into one table.

Every chapter writes its numbers under ``run_dir/<chapter>/`` as CSV (tidy records, one row per
measurement) and JSON (anything else). Robustness records share the columns in ``COLUMNS``, so
``collect`` can lay every scheme x scenario x attack of a run side by side (the headless runner's
summary and chapter 09 both read them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from rcl.fileio import write_atomic

COLUMNS = ["chapter", "scheme", "scenario", "attack", "norm", "eps", "steps", "clean_acc", "robust_acc"]
ROBUSTNESS_FILE = "robustness.csv"


def _atomic_write_text(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    write_atomic(path, lambda handle: handle.write(data), size_hint=len(data))


def save_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` as CSV atomically; returns the path."""
    path = Path(path)
    _atomic_write_text(path, frame.to_csv(index=False))
    return path


def save_json(obj, path: str | Path) -> Path:
    """Write a JSON-serialisable object atomically (indented); returns the path."""
    path = Path(path)
    _atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return path


def save_robustness(records: list[dict] | pd.DataFrame, chapter_dir: str | Path) -> pd.DataFrame:
    """Write robustness records to ``chapter_dir/robustness.csv`` with the shared columns first.

    Each record holds at least ``scheme, scenario, attack, eps, steps, clean_acc, robust_acc``
    (accuracies as fractions in [0, 1], ``eps`` in [0, 1] pixel units). Extra columns are kept.
    """
    chapter_dir = Path(chapter_dir)
    frame = records if isinstance(records, pd.DataFrame) else pd.DataFrame.from_records(records)
    frame = frame.copy()
    frame["chapter"] = chapter_dir.name
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    frame = frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS]]
    save_table(frame, chapter_dir / ROBUSTNESS_FILE)
    return frame


def collect(run_dir: str | Path) -> pd.DataFrame:
    """All robustness records under ``run_dir`` (every ``*/robustness.csv``), one DataFrame."""
    run_dir = Path(run_dir)
    frames = [pd.read_csv(path) for path in sorted(run_dir.glob(f"*/{ROBUSTNESS_FILE}"))]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)


def summary_markdown(frame: pd.DataFrame, title: str = "Results") -> str:
    """A markdown table of ``frame`` (accuracies as percentages, eps as k/255)."""
    if frame.empty:
        return f"## {title}\n\n(no results yet)\n"
    shown = frame.copy()
    for column in ("clean_acc", "robust_acc"):
        if column in shown:
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{100 * float(v):.1f}")
    if "eps" in shown:
        shown["eps"] = shown["eps"].map(lambda v: "" if pd.isna(v) else f"{float(v) * 255:g}/255")
    shown = shown.astype(object).where(shown.notna(), "")
    header = "| " + " | ".join(str(c) for c in shown.columns) + " |"
    rule = "| " + " | ".join("---" for _ in shown.columns) + " |"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([f"## {title}", "", header, rule, *rows, ""])
