"""The run's summary: ``summary.md`` (a headline and one compact table per question), ``summary.csv`` (every
robustness record, tidy) and ``claims.csv`` (every verdict), written into the run folder when the runner ends.

It reads only what the chapters wrote (``rcl.results``' tables, ``rcl.verdicts``' claims), so it can be rebuilt from
any run folder: ``rcl.reproduce.summary.summary(run_dir)``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from rcl.reproduce.provenance import describe_commit
from rcl.results import (
    CKA_SUMMARY_FILE,
    collect,
    format_eps,
    format_pct,
    markdown_table,
    read_table,
    save_table,
    save_text,
)
from rcl.runtime import project_root
from rcl.verdicts import collect_claims, paper_verdicts, verdict_counts

SUMMARY_FILE, SUMMARY_CSV, CLAIMS_CSV = "summary.md", "summary.csv", "claims.csv"
SYNTHETIC_WARNING = "These numbers show that the code runs end to end; they cannot confirm or refute the papers."


def _read_csv(path: Path) -> pd.DataFrame:
    """A chapter's table, or an empty one when the chapter has not written it (yet)."""
    return read_table(path) if path.exists() else pd.DataFrame()


def _sizes(frame: pd.DataFrame, common: bool = False) -> str:
    """``"n = 64 test images"`` from a frame's ``n`` column (``"n = 48, 256 ..."`` when they differ, or only the
    most frequent one with ``common``); ``""`` without one."""
    if "n" not in frame or frame["n"].dropna().empty:
        return ""
    if common:
        return f"n = {int(frame['n'].dropna().mode().iloc[0])} test images"
    values = sorted({int(v) for v in frame["n"].dropna()})
    return f"n = {', '.join(str(v) for v in values)} test images"


def _acc_cell(robust, clean) -> str:
    """``"12.5 (31.6)"``: robust accuracy with the clean accuracy in brackets, as percentages."""
    if robust is None or pd.isna(robust):
        return ""
    return (
        f"{format_pct(robust)} ({format_pct(clean)})"
        if clean is not None and not pd.isna(clean)
        else format_pct(robust)
    )


def _setting(row) -> str:
    """``"TM-II PGD-5 4/255"`` / ``"autoattack-ce+t 8/255"``: the attack of a robustness record, in words."""
    attack = str(row.get("attack") or "")
    eps = format_eps(row.get("eps"))
    tm = row.get("threat_model")
    if attack.startswith("pgd"):
        steps = row.get("steps")
        steps = "" if steps is None or pd.isna(steps) else f"-{int(steps)}"
        prefix = f"TM-{tm} " if isinstance(tm, str) and tm else ""
        where = " on AutoAttack's images" if "AutoAttack's images" in attack else ""
        return f"{prefix}PGD{steps} {eps}{where}".strip()
    return f"{attack} {eps}".strip()


def settings_table(frame: pd.DataFrame, rows: Sequence[str] = ("scheme", "scenario")) -> pd.DataFrame:
    """Robustness records -> one row per ``rows`` value, a ``clean`` column and one robust column per attack
    setting (:func:`_setting`); percentages as text. A setting measured on another number of test images than the
    rest says so in its column name."""
    frame = frame.copy()
    frame["setting"] = [_setting(r) for r in frame.to_dict("records")]
    sizes = frame.groupby("setting", sort=False)["n"].first() if "n" in frame else pd.Series(dtype=float)
    common = sizes.mode().iloc[0] if not sizes.dropna().empty else None
    rename = {s: f"{s} (n = {int(v)})" for s, v in sizes.items() if not pd.isna(v) and v != common}
    keys = list(rows)
    table = frame.groupby(keys, sort=False)["clean_acc"].first().map(format_pct).rename("clean").to_frame()

    def order(item):  # threat model I, then II, then PGD on AutoAttack's images and AutoAttack; smaller radius first
        row = item[1].iloc[0]
        attack, tm = str(row.get("attack") or ""), row.get("threat_model")
        family = (
            3 if attack.startswith("autoattack") else 2 if "AutoAttack's images" in attack else (0 if tm == "I" else 1)
        )
        return family, float(row.get("eps") or 0)

    for setting, part in sorted(frame.groupby("setting", sort=False), key=order):
        table[rename.get(setting, setting)] = part.groupby(keys, sort=False)["robust_acc"].first().map(format_pct)
    return table.fillna("").reset_index()


def main_table(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Chapter 04: scenario x scheme, robust (clean) at the main setting; with its caption."""
    if "threat_model" in frame:
        frame = frame[frame.threat_model.fillna("II") == "II"]
    eps = frame.eps.dropna()
    if not eps.empty:  # the main study's radius, 4/255, or the closest one measured
        main = eps.iloc[(eps - 4 / 255).abs().argsort().iloc[0]]
        frame = frame[frame.eps == main]
    cells = {(r["scenario"], r["scheme"]): _acc_cell(r["robust_acc"], r["clean_acc"]) for r in frame.to_dict("records")}
    scenarios = list(dict.fromkeys(frame.scenario))
    schemes = list(dict.fromkeys(frame.scheme))
    table = pd.DataFrame([{"scenario": sc, **{s: cells.get((sc, s), "") for s in schemes}} for sc in scenarios])
    first = frame.iloc[0].to_dict() if not frame.empty else {}
    caption = (
        f"{_setting(first)} (threat model II: end-to-end PGD on the cross-entropy): robust accuracy % (clean "
        f"accuracy % in brackets); {_sizes(frame)}."
    )
    return table, caption


def _acl_table(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    cells = {(r["scheme"], r["scenario"]): _acc_cell(r["robust_acc"], r["clean_acc"]) for r in frame.to_dict("records")}
    schemes, modes = list(dict.fromkeys(frame.scheme)), list(dict.fromkeys(frame.scenario))
    table = pd.DataFrame([{"pre-training": s, **{m: cells.get((s, m), "") for m in modes}} for s in schemes])
    first = frame.iloc[0].to_dict() if not frame.empty else {}
    caption = (
        f"Fine-tuning mode per column; {_setting(first)}: robust accuracy % (clean % in brackets); {_sizes(frame)}."
    )
    return table, caption


def _fn_table(frame: pd.DataFrame, gaps: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    table = pd.DataFrame(
        {
            "model": frame.scheme,
            "pre-training": frame.scenario.map({"ST": "standard", "AT": "adversarial"}).fillna(frame.scenario),
            "clean": frame.clean_acc.map(format_pct),
            "robust": frame.robust_acc.map(format_pct),
        }
    )
    if not gaps.empty and {"scheme", "gain", "gap_closed"} <= set(gaps.columns):
        by = gaps.drop_duplicates("scheme").set_index("scheme")
        table["gain (points)"] = [
            "" if s not in by.index or pd.isna(by.gain[s]) else f"{100 * by.gain[s]:+.1f}" for s in frame.scheme
        ]
        table["gap closed"] = [
            "" if s not in by.index or pd.isna(by.gap_closed[s]) else f"{100 * by.gap_closed[s]:.0f} %"
            for s in frame.scheme
        ]
    first = frame.iloc[0].to_dict() if not frame.empty else {}
    return table, f"{_setting(first)}, accuracy %; {_sizes(frame)}."


def _cka_table(chapter_dir: Path) -> tuple[pd.DataFrame, str]:
    summary = _read_csv(chapter_dir / CKA_SUMMARY_FILE)
    if not summary.empty:
        n = f"; CKA on n = {int(summary.n.iloc[0])} test images" if "n" in summary else ""
        shown = summary.drop(columns=[c for c in ("n",) if c in summary])
        shown = shown.apply(lambda col: col.map(lambda v: f"{v:.2f}" if isinstance(v, float) else v))
        return shown, f"CKA between each layer's representation of a clean image and of its adversarial version{n}."
    diagonal = _read_csv(chapter_dir / "cka_diagonal.csv")
    if diagonal.empty:
        return pd.DataFrame(), ""
    layers = list(diagonal["layer"])
    rows = [
        {
            "model": model,
            f"CKA at {layers[0]}": f"{diagonal[model].iloc[0]:.2f}",
            f"CKA at {layers[-1]}": f"{diagonal[model].iloc[-1]:.2f}",
            "lowest": f"{diagonal[model].min():.2f} ({layers[int(diagonal[model].argmin())]})",
        }
        for model in diagonal.columns
        if model != "layer"
    ]
    return pd.DataFrame(rows), "CKA(clean, adversarial) per layer: first layer, last layer, and the lowest."


def _run_settings(run_dir: Path) -> dict:
    """profile, dataset, seed, ... as the executed notebooks printed them (``rcl.profiles.describe``'s line)."""
    import re

    found: dict[str, str] = {}
    for path in sorted((run_dir / "notebooks").glob("*.ipynb")):
        try:
            notebook = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for cell in notebook.get("cells", []):
            for output in cell.get("outputs", []):
                text = output.get("text", "")
                text = "".join(text) if isinstance(text, list) else text
                match = re.search(r"profile=(\S+) dataset=(\S+) device=(\S+) seed=(\d+)", text)
                if match:
                    found = dict(zip(("profile", "dataset", "device", "seed"), match.groups()))
                    precision = re.search(r" precision=(\S+)", text)
                    return found | ({"precision": precision.group(1)} if precision else {})
        params = notebook.get("metadata", {}).get("papermill", {}).get("parameters", {})
        found = found or {k: str(v) for k, v in params.items() if k in ("profile", "dataset", "device", "seed")}
    return found


def duration_text(seconds: float, aligned: bool = False) -> str:
    """``"42 s"``, ``"3 min 5 s"``, ``"1 h 37 min"``: a wall time as a reader takes it in. ``aligned``: the form
    of a table column, ``"0 min 42 s"``, ``"3 min 05 s"``, ``"1 h 07 min"``."""
    if aligned:
        minutes, secs = divmod(round(seconds), 60)
        return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min {secs:02d} s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def summary(
    run_dir: str | Path,
    status: Sequence[dict] | None = None,
    *,
    profile: str | None = None,
    dataset: str | None = None,
    seed: int | None = None,
    fell_back: bool = False,
    commit: str | None = None,
    jobs: Sequence[dict] | None = None,
    wall: float | None = None,
) -> str:
    """Write ``summary.md``, ``summary.csv`` and ``claims.csv`` into ``run_dir``; returns the markdown.

    ``status``: the runner's ``[{"notebook", "status", "seconds"}]`` (wall time and the chapters table).
    ``profile``, ``dataset``, ``seed``: default to what the executed notebooks in ``run_dir/notebooks`` printed.
    ``fell_back``: the requested dataset was missing and the run used the synthetic one. ``commit``: default
    the project's (``provenance.describe_commit``). ``jobs``: the training jobs' rows when a launcher ran them
    (``rcl.reproduce.jobs``), shown as their own table. ``wall``: the run's wall time when its chapters ran beside
    the jobs and each other (default: the chapters' times added up, as when they ran one after the other).
    """
    run_dir = Path(run_dir)
    found = _run_settings(run_dir)
    found.update({k: v for k, v in (("profile", profile), ("dataset", dataset)) if v})
    if seed is not None:
        found["seed"] = seed
    records = collect(run_dir)
    save_table(records, run_dir / SUMMARY_CSV)
    claims = collect_claims(run_dir)
    save_table(claims, run_dir / CLAIMS_CSV)
    ran = [s for s in (status or []) if s.get("status") == "ran"]
    chapters_time = sum(float(s.get("seconds") or 0) for s in ran)
    wall = chapters_time if wall is None else wall
    lines = _headline(found, commit or describe_commit(project_root()), status, ran, wall, fell_back, claims)
    lines += _result_sections(run_dir, records, claims)
    lines += _run_sections(status, jobs, wall, chapters_time)
    lines += [
        f"Every robustness record of the run, tidy: `{SUMMARY_CSV}`; every claim: `{CLAIMS_CSV}`; each chapter's "
        "figures and tables: its folder.",
        "",
    ]
    text = "\n".join(lines)
    save_text(run_dir / SUMMARY_FILE, text)
    return text


def _headline(found: dict, commit: str, status, ran: list, wall: float, fell_back: bool, claims) -> list[str]:
    """The summary's first lines: what ran (profile, dataset, seed, precision, commit, wall time), the warnings a
    reader must see first, and the claims' count."""
    profile, dataset = found.get("profile", "unknown"), found.get("dataset", "unknown")
    head = f"**profile {profile} · dataset {dataset} · seed {found.get('seed', 'unknown')} · precision "
    head += f"{found.get('precision', 'unknown')} · commit {commit}"
    if status is not None:
        skipped = len(status) - len(ran)
        head += (
            f" · wall time {duration_text(wall)}** ({len(ran)} chapter{'s' * (len(ran) != 1)} ran, {skipped} skipped)"
        )
    else:
        head += "**"
    lines = ["# rcl.reproduce summary", "", head, ""]
    if fell_back:
        lines += [f"**The requested dataset was not available: this run fell back to `{dataset}`.**", ""]
    if profile == "smoke" or dataset == "synthetic":
        smoke = "Smoke profile: a tiny network trained for a few epochs on a few hundred images. "
        synthetic = "Synthetic stand-in images, not CIFAR. "
        lines += [
            "> " + (smoke if profile == "smoke" else "") + (synthetic if dataset == "synthetic" else "")
            + SYNTHETIC_WARNING,
            "",
        ]  # fmt: skip
    if not claims.empty:
        lines += [f"**Claims:** {verdict_counts(claims)} (table at the end).", ""]
    return lines


def _section(title: str, table: pd.DataFrame, caption: str) -> list[str]:
    if table.empty:
        return [f"## {title}", "", "(not run yet)", ""]
    return [f"## {title}", "", caption, "", markdown_table(table), ""]


def _result_sections(run_dir: Path, records: pd.DataFrame, claims: pd.DataFrame) -> list[str]:
    """One table per question, in chapter order, then the claims."""
    by_chapter = {c: part for c, part in records.groupby("chapter", sort=False)} if not records.empty else {}
    empty = (pd.DataFrame(), "")
    lines = _section(
        "Robustness by scheme and scenario (chapter 04)",
        *(main_table(by_chapter["04_scenarios"]) if "04_scenarios" in by_chapter else empty),
    )
    first = [by_chapter[c] for c in ("01_supervised", "02_simclr", "03_supcon") if c in by_chapter]
    if first:
        frame = pd.concat(first, ignore_index=True)
        caption = f"Accuracy %; TM-I attacks the representation, TM-II the classifier end to end; {_sizes(frame)}."
        lines += _section("Each scheme's own networks (chapters 01-03)", settings_table(frame), caption)
    if "05_robustness" in by_chapter:
        frame = by_chapter["05_robustness"]
        caption = f"Robust accuracy % per attack setting; {_sizes(frame, common=True)} unless a column says otherwise."
        lines += _section("Threat models, radii and AutoAttack (chapter 05)", settings_table(frame), caption)
    lines += _section("CKA: how much of each layer survives the attack (chapter 06)", *_cka_table(run_dir / "06_cka"))
    lines += _section(
        "ACL pre-training and TRADES fine-tuning (chapter 07)",
        *(_acl_table(by_chapter["07_acl"]) if "07_acl" in by_chapter else empty),
    )
    fn = by_chapter.get("08_false_negatives")
    gaps = _read_csv(run_dir / "08_false_negatives" / "gap.csv")
    lines += _section(
        "False negatives and the robustness gap (chapter 08)", *(_fn_table(fn, gaps) if fn is not None else empty)
    )
    if not claims.empty:
        caption = (
            "One verdict per registered claim (docs/claims.md), from its parts under the register's rule "
            "(rcl.verdicts.paper_verdicts); the rows behind each are in the next table."
        )
        keys = paper_verdicts(claims)[["chapter", "paper", "verdict", "parts"]].rename(columns={"paper": "claim"})
        lines += _section("The papers' claims, one verdict each", keys, caption)
    return lines + _section("Claims checked on this run", *_claims_table(claims))


def _claims_table(claims: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Every claim, paper claims first, with its verdict and evidence; and the caption that counts them."""
    if claims.empty:
        return pd.DataFrame(), ""
    claims = claims.assign(order=(claims.kind != "paper").astype(int)).sort_values(["order"], kind="stable")
    shown = claims.assign(
        kind=[f"paper ({p})" if p else k for k, p in zip(claims.kind, claims.paper)],
        evidence=[e + (f"; n = {int(n)}" if not pd.isna(n) else "") for e, n in zip(claims.evidence, claims.n)],
    )[["chapter", "kind", "claim", "verdict", "evidence"]]
    caption = (
        f"{verdict_counts(claims)}. Undecided: the difference is inside its noise band; untestable: a floor, a "
        "ceiling or a model not above its control (a random encoder with the same head)."
    )
    return shown, caption


def _run_sections(status, jobs, wall: float, chapters_time: float) -> list[str]:
    """The training jobs (when a launcher ran them) and the chapters with their wall times."""
    lines = []
    if jobs:
        caption = "Run by the launcher (rcl.reproduce.jobs); each chapter started once the jobs it needs were done."
        lines += _section("Training jobs", pd.DataFrame(jobs), caption)
    if status:
        chapters = pd.DataFrame(status)
        chapters["seconds"] = chapters["seconds"].map(lambda v: f"{float(v):.0f}")
        caption = f"Wall time {duration_text(wall)} for the chapters that ran."
        if jobs is not None and wall != chapters_time:
            caption = (
                f"Wall time {duration_text(wall)} for the jobs and the chapters, side by side; the chapters' own times "
                f"add up to {duration_text(chapters_time)}."
            )
        lines += _section("Chapters", chapters, caption)
    return lines
