"""Results on disk: tidy records per chapter, and the small tables a chapter shows.

Every chapter writes its numbers under ``run_dir/<chapter>/`` as CSV (tidy records, one row per
measurement) and JSON (anything else), atomically. Robustness records share the columns in ``COLUMNS``, so
:func:`collect` can lay every scheme x scenario x attack of a run side by side (the headless runner's
summary and chapter 09 both read them). The verdicts a chapter draws from them are :mod:`rcl.verdicts`;
the run's summary is :mod:`rcl.reproduce.summary`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from rcl.fileio import write_atomic

if TYPE_CHECKING:
    pass

COLUMNS = ["chapter", "scheme", "scenario", "attack", "norm", "eps", "steps", "clean_acc", "robust_acc"]
ROBUSTNESS_FILE = "robustness.csv"
CKA_SUMMARY_FILE = "cka_summary.csv"  # chapter 06's table of CKA(clean, adversarial) per model, read by the summary


def save_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically: a reader sees the old file or the new one, never half."""
    data = text.encode("utf-8")
    write_atomic(path, lambda handle: handle.write(data), size_hint=len(data))


def save_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` as CSV atomically; returns the path."""
    path = Path(path)
    save_text(path, frame.to_csv(index=False))
    return path


def save_json(obj, path: str | Path) -> Path:
    """Write a JSON-serialisable object atomically (indented); returns the path."""
    path = Path(path)
    save_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
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


def damaged_file(path: Path, err: Exception) -> ValueError:
    """The error for a damaged file a chapter wrote: names it, its chapter and the command that writes it again."""
    chapter = path.parent.name[:2]
    return ValueError(
        f"{path} is damaged ({type(err).__name__}: {err}); it is written by chapter {chapter}: delete it and run that "
        f"chapter again (python -m rcl.reproduce --only {chapter}, with the run's other options)"
    )


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV a chapter wrote; a damaged or emptied one is a ``ValueError`` naming the file and the fix."""
    path = Path(path)
    try:
        return pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise damaged_file(path, err) from None


def collect(run_dir: str | Path) -> pd.DataFrame:
    """All robustness records under ``run_dir`` (every ``*/robustness.csv``), one DataFrame."""
    run_dir = Path(run_dir)
    frames = [read_table(path) for path in sorted(run_dir.glob(f"*/{ROBUSTNESS_FILE}"))]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------ formatting
def format_eps(eps) -> str:
    """Pixel units of [0, 1] as k/255: ``8/255`` -> ``"8/255"``, ``0.02`` -> ``"5.1/255"``, ``0`` -> ``"0"``."""
    if eps is None or pd.isna(eps):
        return ""
    k = round(float(eps) * 255, 2)
    return "0" if k == 0 else f"{k:g}/255"


def format_pct(value, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage without the sign: ``0.1289`` -> ``"12.9"``; NaN/None -> ``""``."""
    if value is None or pd.isna(value):
        return ""
    return f"{100 * float(value):.{digits}f}"


def _cell(value) -> str:
    """One markdown table cell: integers without ``.0``, other floats to 3 significant decimals, NaN empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int,)) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame, index: bool = False) -> str:
    """``frame`` as a GitHub markdown table (no title); cells formatted by :func:`_cell`."""
    if index:
        frame = frame.reset_index()
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def summary_markdown(frame: pd.DataFrame, title: str = "Results") -> str:
    """A markdown table of ``frame`` under a ``## title`` (accuracies as percentages, eps as k/255, ``n`` as int).

    Columns that are empty in every row are left out."""
    if frame.empty:
        return f"## {title}\n\n(no results yet)\n"
    shown = frame.copy().dropna(axis=1, how="all")
    for column in ("clean_acc", "robust_acc"):
        if column in shown:
            shown[column] = shown[column].map(format_pct)
    for column in ("eps", "alpha"):
        if column in shown:
            shown[column] = shown[column].map(format_eps)
    shown = shown.astype(object).where(shown.notna(), None)
    return "\n".join([f"## {title}", "", markdown_table(shown), ""])


# ------------------------------------------------------------------------------------- small table helpers
def config_table(cfg, names: Sequence[str]) -> pd.DataFrame:
    """Chosen settings of a ``rcl.profiles.Config`` as a one-column table; radii and step sizes (fields ending in
    ``_eps`` or ``_alpha``, and ``eps_grid``) shown as k/255, everything else as it is (``train_steps`` stays 2)."""
    values = cfg.as_dict() if hasattr(cfg, "as_dict") else dict(cfg)
    shown = {}
    for name in names:
        value = values[name]
        if name.endswith(("_eps", "_alpha")):
            value = format_eps(value)
        elif name == "eps_grid":
            value = ", ".join(format_eps(v) for v in value)
        shown[name] = value
    return pd.Series(shown, name="value").to_frame()


def readable(frame: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``frame`` with every float shown to ``digits`` significant digits (small values in scientific notation:
    an input gradient of 3.1e-06 is not printed as 0.0000); other values unchanged."""

    def show(value):
        if isinstance(value, float) and not math.isnan(value):
            return f"{value:.{digits}g}"
        return value

    return frame.map(show)


def flip_rate(y, pred_clean, pred_adv) -> tuple[int, int]:
    """How often an attack changes a right answer: ``(flipped, right)`` where ``right`` counts the examples
    classified correctly on the clean input and ``flipped`` those of them misclassified after the attack.

    Examples already wrong on the clean input are left out: the attack cannot be credited with them.
    ``y``, ``pred_clean``, ``pred_adv``: int tensors or arrays ``[N]``.
    """
    import torch

    y, pred_clean, pred_adv = (torch.as_tensor(v).cpu() for v in (y, pred_clean, pred_adv))
    right = pred_clean == y
    return int((right & (pred_adv != y)).sum()), int(right.sum())
