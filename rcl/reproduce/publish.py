"""Publish a finished run as a reference run: a small, git-tracked copy a reader can browse.

``python -m rcl.reproduce --profile laptop --dataset imagefolder:data/cifar10-jpeg --publish results/laptop-cifar10``
runs the course and then calls :func:`publish`, which copies from the run folder

- ``summary.md``, ``summary.csv``, ``claims.csv`` (the run's summary, ``rcl.reproduce.summary``);
- every chapter's tables and figures (``*.csv``, ``*.json``, ``*.png``; never checkpoints);
- the executed notebooks, outputs included;

and writes ``run.json``: where it ran (machine, CPU, torch, Python), what it ran (profile, dataset, seed, the full
settings, the command), the git commit, and the wall time of every chapter (from the executed notebooks' papermill
records, so a run that resumed after an interruption still reports every chapter). :func:`check_clean` refuses to
start a published run from a checkout with local changes: a reference run names the commit that produced it.

Publishing never deletes what it did not write. :func:`check_destination` (called before the run starts) accepts a
folder that does not exist yet, an empty one, or one that holds an earlier publication and nothing else (its
``run.json`` lists every file it wrote); anything else, the run folder itself, a folder around the run folder or
around the checkout, is refused with the reason. The new publication is built beside the old one and swapped in
with one atomic rename (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames, and an interrupted swap is
repaired by the next publication), so an interrupt leaves either the old publication or the new one, never neither.
Symbolic links in the run folder are not followed (a link could point at a private file). No absolute path of the
machine that ran it is published: every text file (notebooks, JSON, CSV, Markdown) and ``run.json`` name the run
folder ``<run>``, the data folder ``<data>``, an image tree ``<data>/<its name>`` and the checkout ``<checkout>``
(:func:`machine_paths`, :func:`without_machine_paths`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rcl import fileio
from rcl.fileio import printable
from rcl.reproduce import provenance
from rcl.reproduce.summary import duration_text
from rcl.runtime import precision_choice

PROVENANCE = "run.json"
COPIED_SUFFIXES = (".csv", ".json", ".png", ".md")
SKIPPED_NAMES = {".lock", "jobs"}  # the run-folder lock; the launcher's job logs and status files
MARKER = ".rcl-publication"  # in every published folder: what a later --publish may replace


class NotPublishable(RuntimeError):
    """The checkout or the run folder cannot give a reference run (local changes, chapters missing)."""


def check_clean(root: Path) -> str:
    """The full commit hash of the checkout at ``root``; ``NotPublishable`` when it is not a git checkout or when
    tracked files have local changes (a reference run must name the commit that produced it)."""
    state = provenance.git_state(root)
    if state is None:
        raise NotPublishable(f"--publish needs a git checkout (none at {root}): a reference run names its commit")
    if state["changed"]:
        raise NotPublishable(
            f"--publish needs a clean checkout; tracked files have local changes ({', '.join(state['changed'][:5])}). "
            "Commit them (or run from a fresh clone) so the reference run names the commit that produced it."
        )
    return state["commit"]


def _published_files(folder: Path) -> set[str] | None:
    """The files an earlier publication wrote into ``folder`` (from its ``run.json``), or None when ``folder``
    holds no publication of rcl's; ``NotPublishable`` naming ``run.json`` when a publication's record is damaged."""
    try:
        record = json.loads((folder / PROVENANCE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        record, damage = None, f"{type(err).__name__}: {printable(err)}"
    else:
        damage = "it lists no files"
    if isinstance(record, dict) and "commit" in record and isinstance(record.get("files"), list):
        return {*map(str, record["files"]), PROVENANCE, "README.md", MARKER}
    if (folder / MARKER).exists():
        raise NotPublishable(
            f"--publish {folder}: its {PROVENANCE}, which lists the files the earlier publication wrote, is damaged "
            f"({damage}), so what may be replaced is unknown. Restore it (git checkout -- {folder / PROVENANCE}) or "
            "move the folder away"
        )
    return None


def _stray_entry(folder: Path) -> str | None:
    """The first entry of ``folder`` that no earlier publication wrote (None when there is none)."""
    published = _published_files(folder)
    for path in sorted(folder.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        rel = path.relative_to(folder).as_posix()
        if published is None or rel not in published:
            return rel
    return None


def _recover_interrupted_swap(dest: Path) -> None:
    """Put back the old publication if a swap was interrupted between its two renames (non-Linux fallback)."""
    if dest.exists() or not dest.parent.is_dir():
        return
    olds = sorted(dest.parent.glob(f".{dest.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.rename(olds[-1], dest)


def check_destination(dest: str | Path, run_dir: str | Path, root: str | Path) -> Path:
    """``dest`` resolved, once it is safe to publish into; ``NotPublishable`` saying why not otherwise.

    Safe: ``dest`` does not exist, or is an empty folder, or holds an earlier publication and nothing else; and it
    is neither the run folder ``run_dir``, nor inside it, nor around it, nor around the checkout ``root``.
    """
    dest = Path(dest).expanduser().absolute()
    if dest.is_symlink():
        raise NotPublishable(f"--publish {dest} is a symbolic link: give the folder itself")
    dest = dest.resolve()
    run_dir, root = Path(run_dir).resolve(), Path(root).resolve()
    where = "a new folder of its own, e.g. results/<profile>-<dataset>"
    if dest == run_dir or run_dir in dest.parents or dest in run_dir.parents:
        raise NotPublishable(
            f"--publish {dest} overlaps the run folder {run_dir} (checkpoints live there): use {where}"
        )
    if dest == root or dest in root.parents:
        raise NotPublishable(f"--publish {dest} would replace the folder holding the checkout {root}: use {where}")
    staging = f".{dest.name}.publishing-{'x' * 8}"  # the name publish() builds the new copy under, beside dest
    limit = _name_max(dest.parent)
    if len(os.fsencode(staging)) > limit:
        raise NotPublishable(
            f"--publish {dest}: the name {dest.name!r} is too long ({len(os.fsencode(dest.name))} bytes) for the "
            f"folder the new copy is built in first ({staging}, at most {limit} bytes here): give a shorter name"
        )
    _recover_interrupted_swap(dest)
    if not dest.exists():
        return dest
    if not dest.is_dir():
        raise NotPublishable(f"--publish {dest} is a file, not a folder: use {where}")
    stray = _stray_entry(dest)
    if stray is not None:
        raise NotPublishable(
            f"--publish {dest} holds '{printable(stray)}', which no earlier publication wrote there; --publish "
            f"replaces only a folder it created, so nothing of yours is deleted. Use {where}, or move that folder's "
            "contents away"
        )
    return dest


def _name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system of ``folder`` (or of its nearest existing parent) takes."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return done == 0


def _swap_in(staging: Path, dest: Path) -> None:
    """Make ``staging`` the folder at ``dest``; the old ``dest`` (if any) is removed afterwards."""
    if not dest.exists():
        os.rename(staging, dest)
        return
    if _exchange(staging, dest):
        shutil.rmtree(staging)  # it now holds the old publication
        return
    old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
    os.rmdir(old)
    os.rename(dest, old)
    os.rename(staging, dest)  # an interrupt just before this is repaired by _recover_interrupted_swap
    shutil.rmtree(old)


def chapter_times(notebook_dir: Path) -> list[dict]:
    """``[{"notebook", "seconds", "start", "end"}]`` from each executed notebook's papermill record."""
    rows = []
    for path in sorted(notebook_dir.glob("[0-9][0-9]_*.ipynb")):
        if path.name.endswith((".running.ipynb", ".failed.ipynb")):
            continue
        meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
        rows.append(
            {
                "notebook": path.name,
                "seconds": round(float(meta.get("duration") or 0.0), 1),
                "start": meta.get("start_time"),
                "end": meta.get("end_time"),
            }
        )
    return rows


TEXT_SUFFIXES = (".csv", ".json", ".md", ".ipynb")


def machine_paths(run_dir: str | Path, settings: dict, root: str | Path | None) -> list[tuple[str, str]]:
    """The absolute paths of the machine that ran a run and what a publication says instead, longest first: the run
    folder -> ``<run>``, an image tree (``imagefolder:<path>``) -> ``<data>/<name>``, the data folder -> ``<data>``,
    the checkout -> ``<checkout>``. Each path also in its resolved spelling (a link such as ``/tmp`` on macOS)."""
    named = [(run_dir, "<run>"), (settings.get("data_root"), "<data>"), (root, "<checkout>")]
    dataset = str(settings.get("dataset") or "")
    if dataset.startswith("imagefolder:"):
        tree = Path(dataset.removeprefix("imagefolder:"))
        named.append((tree, f"<data>/{tree.name}"))
    pairs = {}
    for path, label in named:
        if path:
            for spelling in {str(Path(path)), str(Path(path).resolve())}:
                if Path(spelling).is_absolute() and spelling != "/":
                    pairs[spelling] = label
    return sorted(pairs.items(), key=lambda pair: -len(pair[0]))


TRUNCATED = "..."  # how pandas ends a cell cut to its column width (``display.max_colwidth``)


def without_machine_paths(text: str, pairs: list[tuple[str, str]]) -> str:
    """``text`` with every path of :func:`machine_paths` replaced by its label (only at a path boundary, so that
    ``/tmp/run`` never rewrites ``/tmp/run1``), and a path cut short by a display (a table cell shown as
    ``imagefolder:/tmp/cifar...``) by its label followed by ``...``."""
    import re

    for path, label in pairs:  # cut paths first: a shorter path of the list may begin the cut one
        second = path.find("/", 1)  # a cut path keeps its first folder and a character more: "/tmp..." is no path
        cut = "|".join(re.escape(path[:end]) for end in range(len(path) - 1, second + 1, -1)) if second > 0 else ""
        if cut:
            text = re.sub(rf"(?<![\w/])(?:{cut}){re.escape(TRUNCATED)}", lambda _, label=label: label + TRUNCATED, text)
    for path, label in pairs:
        text = re.sub(re.escape(path) + r"(?![\w-]|\.\w)", lambda _, label=label: label, text)
    return text


def _copy_tree(run_dir: Path, dest: Path, pairs: list[tuple[str, str]] = ()) -> list[str]:
    """Copy the run's tables, figures and executed notebooks into ``dest``, text files with the machine's paths
    replaced (``pairs``: :func:`machine_paths`); returns their relative paths. Symbolic links are skipped (never
    followed: one could point at a private file)."""
    copied = []
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if path.is_symlink() or any(p.is_symlink() for p in path.parents if run_dir in p.parents):
            continue
        if not path.is_file() or SKIPPED_NAMES & set(rel.parts) or rel.name.startswith("."):
            continue
        in_notebooks = rel.parts[0] == "notebooks"
        if in_notebooks and (
            not path.name.endswith(".ipynb") or path.name.endswith((".running.ipynb", ".failed.ipynb"))
        ):
            continue
        if not in_notebooks and path.suffix not in COPIED_SUFFIXES:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix in TEXT_SUFFIXES and pairs:
            target.write_text(without_machine_paths(path.read_text(encoding="utf-8"), pairs), encoding="utf-8")
        else:
            shutil.copyfile(path, target)
        copied.append(str(rel))
    return copied


def publish(
    run_dir: str | Path,
    dest: str | Path,
    *,
    commit: str,
    settings: dict,
    expected: list[str],
    command: list[str] | None = None,
    started: float | None = None,
    machine_at_start: dict | None = None,
    note: str | None = None,
    root: str | Path | None = None,
) -> Path:
    """Copy the run at ``run_dir`` into ``dest`` and write its ``run.json``; returns ``dest`` (resolved).

    ``dest`` must pass :func:`check_destination` (``root``: the checkout, default the run folder's parent); an
    earlier publication there is replaced in one atomic swap.

    ``commit``: from :func:`check_clean`, taken before the run; ``settings``: the run's ``Config.as_dict()``;
    ``expected``: the notebook names the run was asked for (``NotPublishable`` if any has no executed copy);
    ``command``: the command line (default ``sys.argv``); ``started``: the run's ``time.time()`` at the start;
    ``machine_at_start``: :func:`machine` taken then (its load average says how idle the machine was);
    ``note``: a line for ``README.md`` (e.g. where the data came from).
    """
    run_dir = Path(run_dir).resolve()
    dest = check_destination(dest, run_dir, root if root is not None else run_dir.parent)
    times = chapter_times(run_dir / "notebooks")
    missing = sorted(set(expected) - {row["notebook"] for row in times})
    if missing:
        raise NotPublishable(f"cannot publish {run_dir}: no executed copy of {', '.join(missing)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.publishing-"))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would keep others from reading a reference run
    try:
        pairs = machine_paths(run_dir, settings, root)
        _build(staging, run_dir, commit, settings, command, started, machine_at_start, note, times, pairs)
        _swap_in(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _build(staging, run_dir, commit, settings, command, started, machine_at_start, note, times, pairs) -> None:
    """Write the publication into the empty folder ``staging``, the machine's paths replaced (``pairs``)."""
    copied = _copy_tree(run_dir, staging, pairs)
    record = {
        "commit": commit,
        "command": shlex.join(command if command is not None else ["python", "-m", "rcl.reproduce", *sys.argv[1:]]),
        "profile": settings.get("profile"),
        "dataset": settings.get("dataset"),
        "seed": settings.get("seed"),
        "precision": dict(
            zip(("used", "why"), precision_choice(settings.get("device", "cpu"), settings.get("precision", "auto")))
        ),
        "machine_at_start": machine_at_start,
        "machine_at_end": provenance.machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)) if started else None,
        "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "chapters": times,
        "wall_seconds": round(sum(row["seconds"] for row in times), 1),
        "settings": {k: v for k, v in settings.items() if k not in ("run_dir", "data_root")},
        "files": copied,
    }
    text = without_machine_paths(json.dumps(record, indent=1) + "\n", pairs).encode()
    fileio.write_atomic(staging / PROVENANCE, lambda f: f.write(text))
    readme = readme_text(
        record, (staging / "summary.md").read_text() if (staging / "summary.md").exists() else "", note
    )
    readme = without_machine_paths(readme, pairs)
    fileio.write_atomic(staging / "README.md", lambda f: f.write(readme.encode()))
    marker = f"Published by rcl.reproduce --publish at commit {commit}; a later --publish may replace this folder.\n"
    fileio.write_atomic(staging / MARKER, lambda f: f.write(marker.encode()))


def earlier_chapters(record: dict) -> list[str]:
    """The chapters (``"00"``, ...) an earlier invocation of the run's command executed, from their papermill start
    times against the run's ``started``: the run resumed after an interruption. Empty when all ran in one go."""
    from datetime import datetime, timezone

    def when(text):
        try:
            stamp = datetime.fromisoformat(str(text))
        except ValueError:
            return None
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)

    started = when(record.get("started"))
    return [
        row["notebook"][:2]
        for row in record.get("chapters") or []
        if started is not None and when(row.get("start")) is not None and when(row.get("start")) < started
    ]


def _earlier_invocations(record: dict) -> list[str]:
    """A paragraph naming the chapters an earlier invocation executed (:func:`earlier_chapters`); none when all ran
    in one go."""
    earlier = earlier_chapters(record)
    if not earlier:
        return []
    return [
        f"The run resumed after an interruption: chapter{'s' * (len(earlier) > 1)} {', '.join(earlier)} "
        f"{'were' if len(earlier) > 1 else 'was'} executed by an earlier invocation of the same command; every time "
        "above is the execution that finished its chapter (a chapter interrupted part-way and finished later counts "
        "only the later part), and the summary below counts only the last invocation's chapters as run.",
        "",
    ]


def readme_text(record: dict, summary_md: str, note: str | None = None) -> str:
    """The published folder's README: what produced it (command, commit, machine, wall times), then the summary."""
    start = record.get("machine_at_start") or {}
    end = record.get("machine_at_end") or {}
    load = start.get("load_average_1_5_15_min")
    lines = [
        f"# Reference run: profile `{record['profile']}`, dataset `{record['dataset']}`, seed {record['seed']}",
        "",
        "Produced by one command from a clean checkout of commit "
        f"`{record['commit']}`, and copied here by its `--publish` option:",
        "",
        "```",
        record["command"],
        "```",
        "",
    ]
    if note:
        lines += [note, ""]
    lines += [
        f"- machine: {end.get('cpu') or 'unknown CPU'}, {end.get('cpu_count')} cores, torch {end.get('torch')} "
        f"({end.get('torch_threads')} threads), Python {end.get('python')}, {end.get('platform')}"
        + (f", GPU {end['cuda']}" if end.get("cuda") else ", no GPU"),
        f"- started {record.get('started')}; load average at the start {load} (1, 5, 15 min)" if load else "",
        f"- wall time {duration_text(record['wall_seconds'], aligned=True)} for {len(record['chapters'])} chapters:",
        "",
        "| chapter | wall time |",
        "| --- | --- |",
        *[f"| {row['notebook']} | {duration_text(row['seconds'], aligned=True)} |" for row in record["chapters"]],
        "",
        *_earlier_invocations(record),
        "`run.json` holds every setting, the machine and the list of files; `notebooks/` the executed chapters "
        "with their outputs; each chapter's folder its tables (CSV/JSON) and figures. Checkpoints are not kept.",
        "",
    ]
    body = summary_md.split("\n", 1)[1] if summary_md.startswith("# ") else summary_md
    return "\n".join(line for line in lines if line is not None) + "\n" + body.lstrip("\n")
