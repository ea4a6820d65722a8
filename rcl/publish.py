"""Publish a finished run as a reference run: a small, git-tracked copy a reader can browse.

``python -m rcl.reproduce --profile laptop --dataset imagefolder:data/cifar10-jpeg --publish results/laptop-cifar10``
runs the course and then calls :func:`publish`, which copies from the run folder

- ``summary.md``, ``summary.csv``, ``claims.csv`` (the run's summary, ``rcl.results.summary``);
- every chapter's tables and figures (``*.csv``, ``*.json``, ``*.png``; never checkpoints);
- the executed notebooks, outputs included;

and writes ``run.json``: where it ran (machine, CPU, torch, Python), what it ran (profile, dataset, seed, the full
settings, the command), the git commit, and the wall time of every chapter (from the executed notebooks' papermill
records, so a run that resumed after an interruption still reports every chapter). :func:`check_clean` refuses to
start a published run from a checkout with local changes: a reference run names the commit that produced it.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rcl import fileio

PROVENANCE = "run.json"
COPIED_SUFFIXES = (".csv", ".json", ".png", ".md")
SKIPPED_NAMES = {".lock", "jobs"}  # the run-folder lock; the launcher's job logs and status files


class NotPublishable(RuntimeError):
    """The checkout or the run folder cannot give a reference run (local changes, chapters missing)."""


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def check_clean(root: Path) -> str:
    """The full commit hash of the checkout at ``root``; ``NotPublishable`` when it is not a git checkout or when
    tracked files have local changes (a reference run must name the commit that produced it)."""
    commit = (_git(root, "rev-parse", "HEAD") or "").strip()
    if not commit:
        raise NotPublishable(f"--publish needs a git checkout (none at {root}): a reference run names its commit")
    changed = _git(root, "status", "--porcelain", "--untracked-files=no")
    if changed and changed.strip():
        files = ", ".join(line[3:] for line in changed.splitlines()[:5])
        raise NotPublishable(
            f"--publish needs a clean checkout; tracked files have local changes ({files}). Commit them (or run "
            "from a fresh clone) so the reference run names the commit that produced it."
        )
    return commit


def machine() -> dict:
    """Where this process runs: OS, CPU model and cores, torch's threads, Python and torch versions, load average."""
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1_5_15_min"] = [round(x, 2) for x in os.getloadavg()]
    return info


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


def _copy_tree(run_dir: Path, dest: Path) -> list[str]:
    copied = []
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
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
) -> Path:
    """Copy the run at ``run_dir`` into ``dest`` (replaced whole) and write its ``run.json``; returns ``dest``.

    ``commit``: from :func:`check_clean`, taken before the run; ``settings``: the run's ``Config.as_dict()``;
    ``expected``: the notebook names the run was asked for (``NotPublishable`` if any has no executed copy);
    ``command``: the command line (default ``sys.argv``); ``started``: the run's ``time.time()`` at the start;
    ``machine_at_start``: :func:`machine` taken then (its load average says how idle the machine was);
    ``note``: a line for ``README.md`` (e.g. where the data came from).
    """
    run_dir, dest = Path(run_dir).resolve(), Path(dest)
    times = chapter_times(run_dir / "notebooks")
    missing = sorted(set(expected) - {row["notebook"] for row in times})
    if missing:
        raise NotPublishable(f"cannot publish {run_dir}: no executed copy of {', '.join(missing)}")
    staging = dest.with_name(dest.name + ".publishing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    copied = _copy_tree(run_dir, staging)
    record = {
        "commit": commit,
        "command": shlex.join(command if command is not None else ["python", "-m", "rcl.reproduce", *sys.argv[1:]]),
        "profile": settings.get("profile"),
        "dataset": settings.get("dataset"),
        "seed": settings.get("seed"),
        "machine_at_start": machine_at_start,
        "machine_at_end": machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)) if started else None,
        "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "chapters": times,
        "wall_seconds": round(sum(row["seconds"] for row in times), 1),
        "settings": {k: v for k, v in settings.items() if k not in ("run_dir", "data_root")},
        "files": copied,
    }
    text = (json.dumps(record, indent=1) + "\n").encode()
    fileio.write_atomic(staging / PROVENANCE, lambda f: f.write(text))
    readme = readme_text(
        record, (staging / "summary.md").read_text() if (staging / "summary.md").exists() else "", note
    )
    fileio.write_atomic(staging / "README.md", lambda f: f.write(readme.encode()))
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(staging, dest)
    return dest


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min {secs:02d} s"


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
        f"- wall time {_duration(record['wall_seconds'])} for {len(record['chapters'])} chapters:",
        "",
        "| chapter | wall time |",
        "| --- | --- |",
        *[f"| {row['notebook']} | {_duration(row['seconds'])} |" for row in record["chapters"]],
        "",
        "`run.json` holds every setting, the machine and the list of files; `notebooks/` the executed chapters "
        "with their outputs; each chapter's folder its tables (CSV/JSON) and figures. Checkpoints are not kept.",
        "",
    ]
    body = summary_md.split("\n", 1)[1] if summary_md.startswith("# ") else summary_md
    return "\n".join(line for line in lines if line is not None) + "\n" + body.lstrip("\n")
