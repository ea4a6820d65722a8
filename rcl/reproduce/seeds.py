"""Published runs of several seeds side by side: ``results/README.md``.

    python -m rcl.reproduce.seeds 'seed 0=results/laptop-cifar10' 'seed 1=results/laptop-cifar10-seed1' \\
        --out results/README.md --readme README.md

Every figure comes from the runs' files: ``run.json`` (commit, seed, wall time), the chapters' ``claims.json``
combined by :func:`rcl.verdicts.combine_seeds` (a claim holds, or does not, only when every seed says so outside its
noise) and chapter 04's ``robustness.csv`` (the run summary's table, one figure per seed in each cell). ``--readme``
also rewrites the block of the project README between :data:`README_BEGIN` and :data:`README_END`.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
from collections.abc import Sequence
from pathlib import Path

from rcl import fileio
from rcl.fileio import printable
from rcl.reproduce.publish import earlier_chapters
from rcl.reproduce.summary import duration_text, main_table
from rcl.results import markdown_table, read_table
from rcl.verdicts import FLOOR_MARGIN, collect_claims, combine_seeds, paper_verdicts, verdict_counts

SCENARIO_TITLE = "Chapter 04: robust accuracy per scheme and scenario, {runs}"


def _record(run_dir: str | Path) -> dict:
    """A published run's ``run.json``, checked: a ``ValueError`` naming the file says what is wrong with it."""
    path = Path(run_dir) / "run.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} cannot be read ({type(err).__name__}: {printable(err)}){_REPUBLISH}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} holds {type(record).__name__}, not a run's record{_REPUBLISH}")
    wall = record.get("wall_seconds")
    if isinstance(wall, bool) or not isinstance(wall, int | float) or not math.isfinite(wall) or wall < 0:
        raise ValueError(f"{path}: wall_seconds must be a number of seconds >= 0, got {wall!r}{_REPUBLISH}")
    for key in ("profile", "dataset"):
        if not isinstance(record.get(key), str):
            raise ValueError(f"{path}: {key} must be a name, got {record.get(key)!r}{_REPUBLISH}")
    if isinstance(record.get("seed"), bool) or not isinstance(record.get("seed"), int):
        raise ValueError(f"{path}: seed must be an integer, got {record.get('seed')!r}{_REPUBLISH}")
    return record


_REPUBLISH = ": give the folder of a run published by python -m rcl.reproduce --publish, or publish it again"


def _dataset(name: object) -> str:
    """A dataset as runs on two machines name it: an image tree by its folder's name, not its absolute path."""
    kind, _, path = str(name).partition(":")
    return f"{kind}:{Path(path).name}" if kind == "imagefolder" else str(name)


def check_runs(runs: dict[str, str | Path], records: dict[str, dict]) -> None:
    """Refuse runs that are not seeds of one experiment: the same folder twice, two runs with one seed, or runs
    whose profile, dataset or other settings differ (a smoke run beside a laptop run); ``ValueError`` naming them."""
    folders: dict[Path, str] = {}
    seeds_seen: dict[object, str] = {}
    first = next(iter(runs))
    for label, run_dir in runs.items():
        where = Path(run_dir).resolve()
        if where in folders:
            raise ValueError(f"runs {folders[where]!r} and {label!r} are the same folder {where}: give each run once")
        folders[where] = label
        seed = records[label]["seed"]
        if seed in seeds_seen:
            raise ValueError(
                f"runs {seeds_seen[seed]!r} and {label!r} both say seed {seed} ({run_dir}/run.json): one seed counted "
                "twice is not two seeds. Give runs of different seeds (-p seed=N)"
            )
        seeds_seen[seed] = label
        differ = _differences(records[first], records[label])
        if differ:
            raise ValueError(
                f"runs {first!r} and {label!r} are not seeds of one experiment: {'; '.join(differ)}. Combine only runs "
                "with the same profile, dataset and settings, differing in -p seed alone"
            )


def _differences(a: dict, b: dict) -> list[str]:
    """What differs between two runs' records other than the seed (and where they ran)."""
    out = [f"{key} {a[key]!r} vs {b[key]!r}" for key in ("profile",) if a[key] != b[key]]
    if _dataset(a["dataset"]) != _dataset(b["dataset"]):
        out.append(f"dataset {a['dataset']!r} vs {b['dataset']!r}")
    ignored = {"seed", "device", "dataset", "profile", "run_dir", "data_root"}
    settings_a, settings_b = a.get("settings") or {}, b.get("settings") or {}
    for key in sorted((set(settings_a) | set(settings_b)) - ignored):
        if settings_a.get(key, "<missing>") != settings_b.get(key, "<missing>"):
            out.append(f"{key} {settings_a.get(key, '<missing>')!r} vs {settings_b.get(key, '<missing>')!r}")
    return out


class _Runs:
    """Published runs read once and checked (:func:`check_runs`): records, claims, the seeds' combined table."""

    def __init__(self, runs: dict[str, str | Path]):
        self.runs = runs
        self.labels = list(runs)
        self.records = {label: _record(run_dir) for label, run_dir in runs.items()}
        check_runs(runs, self.records)
        self.claims = {label: collect_claims(run_dir) for label, run_dir in runs.items()}
        self.table = combine_seeds(self.claims)
        self.by_seed = {label: paper_verdicts(frame).set_index("paper") for label, frame in self.claims.items()}

    def command(self, out: str) -> str:
        runs = " ".join(shlex.quote(f"{label}={Path(folder).as_posix()}") for label, folder in self.runs.items())
        return f"python -m rcl.reproduce.seeds {runs} {out}"

    def runs_table(self) -> list[str]:
        """One row per run: folder, commit, seed, machine, its load before the run (the load at its end counts the
        run itself), wall time; a run that resumed after an interruption has its wall time marked as a lower bound
        and a sentence under the table that says why (:func:`rcl.reproduce.publish.earlier_chapters`)."""
        lines = [
            "| run | folder | commit | profile | dataset | seed | machine | load before (1 min) | wall time |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        resumed = []
        for label, run_dir in self.runs.items():
            record = self.records[label]
            wall = duration_text(record["wall_seconds"])
            if earlier_chapters(record):
                resumed.append(label)
                wall = f"at least {wall} (resumed)"
            lines.append(
                f"| {label} | `{Path(run_dir).as_posix()}` | `{str(record.get('commit'))[:7]}` | "
                f"{record.get('profile')} | `{record.get('dataset')}` | {record.get('seed')} | {_machine(record)} | "
                f"{_load(record)} | {wall} |"
            )
        if resumed:
            lines += [
                "",
                f"{' and '.join(resumed)} resumed after an interruption (the run's README names the chapters an "
                "earlier invocation ran): a chapter interrupted part-way counts only the part that finished it, so "
                "the wall time is a lower bound, and the load before is the resumed invocation's. A run timed in "
                "one go on an idle machine is the one to quote.",
            ]
        return lines

    def chapter_times(self) -> list[str]:
        """Each chapter's wall time per run (``run.json``'s ``chapters``), one column per run."""
        times = {label: _chapter_seconds(record) for label, record in self.records.items()}
        chapters = list(dict.fromkeys(name for per_run in times.values() for name in per_run))
        if not chapters:
            return []
        lines = [f"| chapter | {' | '.join(self.labels)} |", "| --- |" + " --- |" * len(self.labels)]
        for chapter in chapters:
            cells = [duration_text(times[label][chapter]) if chapter in times[label] else "-" for label in self.labels]
            lines.append(f"| {chapter} | {' | '.join(cells)} |")
        return lines

    def counts(self) -> list[str]:
        """The verdict counts of each run, then of all of them together (:func:`rcl.verdicts.verdict_counts`)."""
        each = [f"- {label}: {verdict_counts(self.claims[label])}" for label in self.labels]
        return [*each, f"- all seeds together: {verdict_counts(self.table)}"]

    def left_out(self) -> dict[str, list[str]]:
        """Per run, its claims that not every other run states alike (``"chapter: claim"``), which the combined
        table leaves out: a claim whose text differs between runs (it named a number the run chose) or that only
        one run checked."""
        combined = {(row.chapter, row.claim) for row in self.table.itertuples()}
        out = {}
        for label, frame in self.claims.items():
            papers = {(chapter, paper) for paper, chapter in self.by_seed[label].chapter.items()}
            others = {(row.chapter, row.claim) for row in frame[frame.kind != "paper"].itertuples()}
            missing = sorted((papers | others) - combined)
            if missing:
                out[label] = [f'{chapter}: "{claim}"' for chapter, claim in missing]
        return out

    def paper_table(self) -> str:
        paper = self.table[self.table.kind == "paper"]
        return markdown_table(paper.drop(columns=["kind", "paper", "parts"]).rename(columns=_RENAMED))

    def scenarios(self, heading: str) -> list[str]:
        """Chapter 04's table over the runs under a ``heading`` (markdown prefix, e.g. ``"## "``)."""
        found = scenario_table(self.runs)
        if found is None:
            return []
        table_md, caption = found
        return [heading + SCENARIO_TITLE.format(runs=" / ".join(self.labels)), "", caption, "", table_md]


_RENAMED = {"verdict": "all seeds", "spread": "effect per seed"}
_RULE = (
    "Each of the papers' claims gets one verdict per seed from its parts (clean and robust accuracy, every "
    "fine-tuning mode, each scheme: the register's rule, rcl.verdicts.paper_verdicts): it holds when every part "
    "holds outside its 95 % noise band, does not hold when a part goes the other way outside it, is untestable "
    f"when a part could not be tested (a model not {100 * FLOOR_MARGIN:.0f} points above its random-encoder "
    "control, a floor, a ceiling) and undecided otherwise. Across the seeds a claim holds (or does not hold) only "
    "when every seed says so; it is untestable when a seed could not test it, and undecided when the seeds "
    "otherwise disagree. The counts are of claims (register keys), not of rows."
)
_EFFECT = (
    "Effect: the difference that decides the claim (a - b, in points: accuracy points, or CKA x 100) and its 95 % "
    "interval, per seed; for a claim with parts, the part that goes the other way, else the one with the smallest "
    "effect."
)


def _machine(record: dict) -> str:
    machine = record.get("machine_at_start") or {}
    cpu, cores = machine.get("cpu"), machine.get("cpu_count")
    device = machine.get("cuda") or (f"{cpu}, {cores} cores" if cpu else "")
    return printable(device) or "-"


def _load(record: dict) -> str:
    load = (record.get("machine_at_start") or {}).get("load_average_1_5_15_min")
    return f"{load[0]:.2f}" if isinstance(load, list) and load and isinstance(load[0], int | float) else "-"


def _chapter_seconds(record: dict) -> dict[str, float]:
    out = {}
    for chapter in record.get("chapters") or []:
        if isinstance(chapter, dict) and isinstance(chapter.get("seconds"), int | float):
            out[Path(str(chapter.get("notebook"))).stem[:2]] = float(chapter["seconds"])
    return out


def report(runs: dict[str, str | Path]) -> str:
    """The markdown of ``results/README.md`` for published runs (``{label: run_dir}``, seeds of one experiment: see
    :func:`check_runs`): the runs, the verdict counts per seed and for all seeds together, each paper claim with every
    seed's verdict, effect and evidence, the other checks, and chapter 04's table."""
    read = _Runs(runs)
    lines = [
        "# Reference runs",
        "",
        f"Written by `{read.command('--out results/README.md')}` from the runs' `run.json`, "
        "`claims.json` and chapter 04's `robustness.csv`; do not edit by hand.",
        "",
        *read.runs_table(),
    ]
    times = read.chapter_times()
    if times:
        lines += ["", "Wall time per chapter (`run.json`):", "", *times]
    lines += ["", "## Verdicts", "", _RULE, "", *read.counts()]
    left_out = read.left_out()
    if left_out:
        lines.append(
            "- left out of the seeds together, as not every run states them alike: "
            + "; ".join(f"{label}: {', '.join(claims)}" for label, claims in left_out.items())
        )
    lines += [
        "",
        "## The papers' claims",
        "",
        f"The register and its sources: [docs/claims.md](../docs/claims.md). {_EFFECT}",
        "",
        read.paper_table(),
        "",
        "### Evidence, per seed",
        "",
    ]
    for row in read.table[read.table.kind == "paper"].itertuples():
        lines.append(f"- **{row.chapter}: `{row.paper}`** (all seeds: {row.verdict})")
        for label in read.labels:
            match = read.by_seed[label].loc[row.paper]
            parts = f" ({match.parts})" if match.parts else ""
            lines.append(f"  - {label}: {match.verdict}{parts}; {match.evidence}")
    other = read.table[read.table.kind != "paper"]
    lines += [
        "",
        "## Other checks (method checks of the code, observations about the runs)",
        "",
        markdown_table(other.drop(columns=["paper", "parts"]).rename(columns=_RENAMED)),
    ]
    scenarios = read.scenarios("## ")
    if scenarios:
        lines += ["", *scenarios]
    return "\n".join(lines) + "\n"


README_BEGIN = "<!-- reference runs: begin -->"
README_END = "<!-- reference runs: end -->"


def readme_block(runs: dict[str, str | Path]) -> str:
    """The part of the project README between :data:`README_BEGIN` and :data:`README_END`: the runs, their
    verdict counts, each paper claim's verdict per seed with its effect and interval, chapter 04's table, and each
    chapter's wall time; every figure read from the runs' files (results/README.md adds the evidence)."""
    read = _Runs(runs)
    lines = [
        README_BEGIN,
        f"<!-- written by {read.command('--readme README.md')}; do not edit by hand -->",
        "",
        *read.runs_table(),
        "",
        _RULE,
        "",
        *read.counts(),
        "",
        f"{_EFFECT} The evidence of each is in [results/README.md](results/README.md).",
        "",
        read.paper_table().replace("(../docs/", "(docs/"),
    ]
    scenarios = read.scenarios("### ")
    if scenarios:
        lines += ["", *scenarios]
    times = read.chapter_times()
    if times:
        lines += ["", "Wall time per chapter (`run.json`):", "", *times]
    return "\n".join([*lines, README_END])


def update_readme(path: Path, block: str) -> str:
    """``path``'s text with the part between the markers replaced by ``block``; ``ValueError`` when the markers are
    missing or out of order."""
    text = path.read_text()
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(f"{path} has no {README_BEGIN} ... {README_END} block to write the reference runs into")
    return text[:begin] + block + text[end + len(README_END) :]


def scenario_table(runs: dict[str, str | Path]) -> tuple[str, str] | None:
    """Chapter 04's table of the run summary (:func:`rcl.reproduce.summary.main_table`: scenario x scheme, robust
    accuracy with the clean one in brackets) over several runs, each cell one figure per run joined by ``" / "``;
    with the first run's caption. ``None`` when a run lacks ``04_scenarios/robustness.csv``."""
    paths = [Path(run_dir) / "04_scenarios" / "robustness.csv" for run_dir in runs.values()]
    if not all(path.exists() for path in paths):
        return None
    tables = [main_table(read_table(path)) for path in paths]
    (first, caption), rest = tables[0], [t for t, _ in tables[1:]]
    first = first.set_index("scenario")
    joined = first.copy()
    for other in rest:
        other = other.set_index("scenario").reindex(index=first.index, columns=first.columns).fillna("-")
        joined = joined + " / " + other
    return markdown_table(joined.reset_index()), caption


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rcl.reproduce.seeds", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR, one per published run (e.g. 'seed 0=results/x')")
    parser.add_argument("--out", help="write the report here (default: print it)")
    parser.add_argument("--readme", help="also rewrite the reference-runs block of this README (e.g. README.md)")
    args = parser.parse_args(argv)
    runs = {}
    for item in args.runs:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            parser.error(f"runs: {item!r} is not LABEL=RUN_DIR; write e.g. 'seed 0=results/laptop-cifar10'")
        if not (Path(folder) / "run.json").exists():
            parser.error(
                f"runs: {folder} holds no run.json; give the folder of a published run (rcl.reproduce --publish)"
            )
        if label in runs:
            parser.error(f"runs: the label {label!r} is given twice ({runs[label]} and {folder}): give each a label")
        runs[label] = folder
    if args.out and not Path(args.out).parent.is_dir():
        parser.error(f"--out {args.out}: the folder {Path(args.out).parent} does not exist; create it first")
    if args.out and Path(args.out).is_dir():
        parser.error(f"--out {args.out} is a folder: give the file to write, e.g. {Path(args.out) / 'README.md'}")
    if args.readme and not Path(args.readme).is_file():
        parser.error(f"--readme {args.readme}: no such file; give the project README (README.md)")
    try:
        text = report(runs)
        readme = update_readme(Path(args.readme), readme_block(runs)) if args.readme else None
    except ValueError as err:
        parser.error(f"runs: {err}")
    if readme is not None:
        fileio.write_atomic(Path(args.readme), lambda f: f.write(readme.encode()))
    if args.out:
        fileio.write_atomic(Path(args.out), lambda f: f.write(text.encode()))
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
