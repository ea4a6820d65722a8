"""Run the whole course headless: every notebook in order through papermill.

    python -m rcl.reproduce [--profile P] [--dataset D] [--device cpu|cuda] [--out DIR]
                            [--only 02,03] [--force] [--wait] [--debug] [-p name=value ...]
                            [--launcher none|local|slurm] [--gpus 0,1,2,3 | --workers N] [--jobs-only]
                            [--partition P] [--time T] [--gpus-per-job N] [--slurm-arg key=value ...]

Each executed notebook lands in ``DIR/notebooks/`` and its results in ``DIR/<chapter>/``
(``DIR`` is the notebooks' ``run_dir``). ``-p name=value`` sets any profile setting
(``rcl.profiles.Config``: ``-p n_train=60 -p train_eps=8/255``) for every chapter, or a chapter's own
parameter (``-p scenarios=['ST','AT']``); an unknown name is an error that lists the valid ones.

A chapter counts as complete when its executed copy ran to the end with the same settings and the
files it wrote are still there; complete chapters are skipped unless ``--force``, so an interrupted
study picks up where it stopped, and a moved run folder is not run again. A chapter runs into
``NN_name.running.ipynb`` and replaces its executed copy only when it succeeds: a failed or
interrupted run is kept as ``NN_name.failed.ipynb`` beside the last complete one, and the runner
stops, naming the notebook, the cell and the error. One run at a time per run folder: a second one
says which process holds the folder (or waits for it with ``--wait``). It ends with a summary table
(markdown and CSV) of every scheme x scenario x attack found under ``DIR``.

``--launcher local`` or ``slurm`` first trains the chapters' models as a graph of jobs (``rcl.jobs``), in parallel:
``local`` on this machine, one job per GPU of ``--gpus`` (default: every visible GPU) or ``--workers`` jobs at a
time on the CPU; ``slurm`` submits one batch job per model to a cluster (``--partition``, ``--time``,
``--gpus-per-job``, ``--cpus-per-job``, ``--slurm-arg account=lab``), what a job needs as ``afterok`` dependencies.
Each chapter starts as soon as the jobs it needs are done (and the chapters it reads: 03 after 01 and 02, 09 last),
beside the jobs still training and the other chapters, and only loads: locally a chapter takes one of the launcher's
slots (its GPU, or a CPU worker), so jobs and chapters together never use more; on SLURM the chapters run here, one
at a time. A job that dies is started again (``--retries``) and resumes from its last epoch; a job or chapter that
fails keeps only what needs it from running, the others run on, and the summary names them. ``--jobs-only`` stops
after the jobs. The runner keeps the run folder's lock while the jobs run.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import fcntl
import hashlib
import html
import json
import os
import re
import shlex
import signal
import socket
import stat
import sys
import threading
import time
import types
import typing
from collections.abc import Iterator
from pathlib import Path

from rcl import profiles
from rcl.course import setup
from rcl.profiles import resolve
from rcl.reproduce import jobs, provenance, publish
from rcl.results import PUBLISHING_ENV, git_commit, summary
from rcl.runtime import PRECISION_ENV, precision_choice, project_root

NOTEBOOK_DIR = project_root(Path(__file__).resolve().parent) / "notebooks"
LOCK_NAME = ".rcl-reproduce.lock"
# the chapters' own arguments: set with the runner's options, not with -p
_OPTIONS = {"profile": "--profile", "dataset": "--dataset", "device": "--device", "run_dir": "--out"}
# profile settings -p can change (each chapter takes them as its own parameter or through `overrides`)
SETTINGS = tuple(sorted(f.name for f in dataclasses.fields(profiles.Config) if f.name not in _OPTIONS))
# the kernel's start-up warning about unencrypted TCP would break the runner's progress bar
# and after a Ctrl-C the kernel logs its replies to the closed client as ZMQ errors: errors of a cell still reach the
# notebook (they are messages, not log lines), only the kernel's own plumbing is silenced
_KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]


class ReproduceError(Exception):
    """A problem the runner reports in one line (a traceback only with ``--debug``)."""


class RunFolderBusy(ReproduceError):
    """Another run holds the run folder's lock."""


class ChapterFailed(SystemExit):
    """A chapter stopped (a failing cell, a dead kernel, Ctrl-C); the message names it and what to do next."""


# --------------------------------------------------------------------------------------------
# chapters and their parameters
# --------------------------------------------------------------------------------------------


CHAPTER_NAME = re.compile(r"^(\d\d)_[A-Za-z0-9_]+\.ipynb$")  # 02_simclr.ipynb; not 02_simclr-Copy1.ipynb


def find_notebooks(folder: Path = NOTEBOOK_DIR, only: list[str] | None = None) -> list[Path]:
    """The numbered chapters ``NN_name.ipynb`` in order, optionally only those whose number is in ``only``.

    Copies JupyterLab makes (``02_simclr-Copy1.ipynb``) and checkpoints are not chapters; two chapters with one number
    are an error. ``only``: chapter numbers (``["02", "3"]``); an empty entry is an error, not "every chapter".
    """
    notebooks = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if CHAPTER_NAME.match(p.name))
    numbers: dict[str, list[str]] = {}
    for path in notebooks:
        numbers.setdefault(path.name[:2], []).append(path.name)
    doubled = {n: names for n, names in numbers.items() if len(names) > 1}
    if doubled:
        number, names = sorted(doubled.items())[0]
        raise ReproduceError(f"two notebooks for chapter {number} in {folder}: {', '.join(names)}; keep one")
    if only is not None:
        blank = [number for number in only if not str(number).strip()]
        if blank or not only:
            raise ReproduceError(
                f"--only needs chapter numbers separated by commas, e.g. --only 01,02; got {','.join(only)!r}"
            )
        wanted = {number.strip().zfill(2) for number in only}
        unknown = wanted - {p.name[:2] for p in notebooks}
        if unknown:
            have = ", ".join(p.name[:2] for p in notebooks)
            raise SystemExit(f"--only names chapter(s) {sorted(unknown)} that do not exist; chapters are: {have}")
        notebooks = [p for p in notebooks if p.name[:2] in wanted]
    return notebooks


def notebook_parameters(notebook: Path) -> list[str]:
    """Names assigned in the notebook's cell tagged ``parameters`` (empty when it has none)."""
    cells = json.loads(Path(notebook).read_text()).get("cells", [])
    for cell in cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = cell.get("source", "")
            tree = ast.parse("".join(source) if isinstance(source, list) else source)
            names = []
            for node in tree.body:
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                names += [t.id for t in targets if isinstance(t, ast.Name)]
            return names
    return []


# --------------------------------------------------------------------------------------------
# -p name=value: each value read with its setting's type
# --------------------------------------------------------------------------------------------

_NUMBER_HINT = "e.g. 0.001, 3e-4 or 8/255"


def _number(name: str, text: str) -> float:
    """A float from ``"0.5"``, ``"3e-4"`` or a fraction ``"8/255"``."""
    numerator, slash, denominator = text.partition("/")
    try:
        return float(numerator) / float(denominator) if slash else float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number ({_NUMBER_HINT}), got {text!r}") from None
    except ZeroDivisionError:
        raise ValueError(f"{name} divides by zero, got {text!r}") from None


def _parse_typed(name: str, text: str, kind) -> object:
    """``text`` read as ``kind`` (a field type of Config); errors name the setting."""
    text = text.strip()
    args = typing.get_args(kind)
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        if text.lower() in ("none", "null"):
            return None
        inner = [a for a in args if a is not type(None)]
        try:
            return _parse_typed(name, text, inner[0])
        except ValueError as err:
            raise ValueError(f"{err} (or None)") from None
    if typing.get_origin(kind) is tuple:
        body = text[1:-1] if text[:1] + text[-1:] in ("()", "[]") else text
        items = [item.strip() for item in body.split(",") if item.strip()]
        try:
            return [_number(name, item) for item in items]
        except ValueError:
            raise ValueError(f"{name} must be numbers separated by commas (e.g. 0,4/255,8/255), got {text!r}") from None
    if kind is bool:
        word = text.lower()
        if word in ("true", "yes", "on", "1"):
            return True
        if word in ("false", "no", "off", "0"):
            return False
        raise ValueError(f"{name} must be true or false, got {text!r}")
    if kind is int:
        if re.fullmatch(r"[+-]?\d+", text.replace("_", "")):
            return int(text.replace("_", ""))
        raise ValueError(f"{name} must be an integer, got {text!r}")
    if kind is float:
        return _number(name, text)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":  # a quoted string
        return text[1:-1]
    return text


def _parse_value(text: str):
    """A chapter parameter's value: a Python literal; else true/false/none in any case; else a comma-separated list
    of words (``ST,AT`` -> ``["ST", "AT"]``); else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    words = {"true": True, "false": False, "none": None, "null": None}
    if text.lower() in words:
        return words[text.lower()]
    if "," in text:
        return [_parse_value(item.strip()) for item in text.split(",") if item.strip()]
    return text


def parse_params(pairs: list[str]) -> dict:
    """``["width=4", "train_eps=8/255", "scenarios=['ST']"]`` -> ``{"width": 4, "train_eps": 0.0313..., ...}``.

    A profile setting (a field of ``rcl.profiles.Config``) is read with its type: integers, numbers (fractions
    ``a/b`` too), ``true``/``false``, ``None`` where the setting allows it, and comma-separated numbers for
    ``eps_grid``; every error names the setting. Any other name is read as a Python literal, ``true``/``false``, a
    comma-separated list, else kept as a string (``run`` checks that some chapter has a parameter of that name).
    """
    hints = typing.get_type_hints(profiles.Config)
    params = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"-p expects name=value, got {pair!r}")
        name, value = (part.strip() for part in pair.split("=", 1))
        if name in _OPTIONS:
            raise ReproduceError(f"-p {name}=...: use the option {_OPTIONS[name]} instead")
        if name == "overrides":
            raise ReproduceError("-p overrides=...: give each setting as its own -p name=value")
        if name in SETTINGS:
            params[name] = _parse_typed(name, value, hints[name])
        else:
            params[name] = _parse_value(value)
    return params


def _jsonable(value):
    """What papermill can write into a parameters cell (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(value, default=str))


def route_params(params: dict, notebooks: list[Path], every: list[Path] | None = None) -> dict[Path, dict]:
    """The ``-p`` values each notebook receives.

    A chapter gets a value as its own parameter when it has one by that name; any other profile setting goes into
    its ``overrides`` parameter, so every chapter sees the same settings (a model trained in chapter 01 is the one
    chapter 05 loads). A name that is neither a profile setting nor a parameter of any chapter in ``every``
    (default: ``notebooks``) is an error listing the valid names.
    """
    every = every or notebooks
    declared = {nb: notebook_parameters(nb) for nb in {*notebooks, *every}}
    chapter_names: dict[str, list[str]] = {}
    for nb in sorted(every):
        for name in declared[nb]:
            if name not in SETTINGS and name not in _OPTIONS and name != "overrides":
                chapter_names.setdefault(name, []).append(nb.name[:2])
    unknown = sorted(name for name in params if name not in SETTINGS and name not in chapter_names)
    if unknown:
        own = ", ".join(f"{name} ({' '.join(chapters)})" for name, chapters in sorted(chapter_names.items()))
        raise ReproduceError(
            f"unknown parameter {', '.join(unknown)} for -p. Valid names: any profile setting "
            f"({', '.join(SETTINGS)}); chapter parameters: {own or 'none'}"
        )
    routed = {}
    for nb in notebooks:
        names = declared[nb]
        given = {k: v for k, v in params.items() if k in names and not (v is None and k in SETTINGS)}
        rest = {k: v for k, v in params.items() if k in SETTINGS and k not in given}
        if rest:
            if "overrides" not in names:
                raise ReproduceError(
                    f"{nb.name} has no parameter {', '.join(sorted(rest))} and no 'overrides' parameter to take them"
                )
            given["overrides"] = rest
        routed[nb] = _jsonable(given)
    return routed


# --------------------------------------------------------------------------------------------
# completion: the executed copy ran to the end with the same settings, and its outputs are there
# --------------------------------------------------------------------------------------------

_NOT_RESULTS = ("run_dir",)  # where the results live, not what they are: a moved run folder is still complete


def _defining(parameters: dict) -> dict:
    """The parameters that decide a chapter's results: not where the run folder is, nor where the data lie."""
    out = {k: v for k, v in _jsonable(parameters).items() if k not in _NOT_RESULTS}
    if isinstance(out.get("overrides"), dict):
        out["overrides"] = {k: v for k, v in out["overrides"].items() if k != "data_root"}
        if not out["overrides"]:
            del out["overrides"]
    return out


def code_version() -> str:
    """A hash of the rcl package's source files, the code every chapter imports (16 hex digits)."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent  # rcl/, the runner included
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def notebook_version(notebook: Path) -> str:
    """A hash of a chapter's cells as written (type and source; not outputs, ids or metadata; 16 hex digits)."""
    digest = hashlib.sha256()
    for cell in json.loads(Path(notebook).read_text()).get("cells", []):
        source = cell.get("source", "")
        digest.update(f"{cell.get('cell_type')}\0{''.join(source) if isinstance(source, list) else source}\0".encode())
    return digest.hexdigest()[:16]


def _read_chapters(notebook: Path, run_dir: Path) -> dict[str, str | None]:
    """When each chapter ``notebook`` reads (``CHAPTER_NEEDS``) last finished in ``run_dir`` (None: never)."""
    stamps: dict[str, str | None] = {}
    for number in CHAPTER_NEEDS.get(notebook.name[:2], ()):
        stamps[number] = None
        for path in (run_dir / "notebooks").glob(f"{number}_*.ipynb"):
            if CHAPTER_NAME.match(path.name):
                stamps[number] = str(path.stat().st_mtime_ns)
    return stamps


def _stamp(path: Path) -> list[int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return [info.st_mtime_ns, info.st_size]


def incomplete_reason(
    executed: Path, parameters: dict, run_dir: Path | None = None, source: Path | None = None
) -> str | None:
    """Why ``executed`` does not count as complete (None when it does).

    Complete: it ran every cell without error, with ``parameters`` (``run_dir`` aside), from the chapter ``source``
    as it is now (default: the course's notebook of that name) and the rcl code as it is now; every file it wrote
    under ``run_dir`` (default: the folder above ``executed``'s ``notebooks/``) is as it left it (size and
    modification time; copy a run folder with ``cp -a`` or ``rsync -a`` to keep them); and the chapters it reads
    (``CHAPTER_NEEDS``) have not run again since.
    """
    if not executed.exists():
        return "not run yet"
    try:
        notebook = json.loads(executed.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return f"its executed copy is unreadable ({err})"
    meta = notebook.get("metadata", {})
    papermill = meta.get("papermill", {})
    if papermill.get("exception"):
        return "its last run failed"
    if _defining(papermill.get("parameters") or {}) != _defining(parameters):
        return "its settings changed"
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("execution_count") is None and cell.get("source"):
            return "its last run stopped before the end"
        if any(output.get("output_type") == "error" for output in cell.get("outputs", [])):
            return "its last run failed"
    record = meta.get("rcl", {})
    outputs = record.get("outputs")
    if not isinstance(outputs, dict) or "code" not in record or "notebook" not in record:
        return "its outputs were not recorded (run by an older rcl.reproduce)"
    source = Path(source) if source is not None else NOTEBOOK_DIR / executed.name
    if source.exists() and notebook_version(source) != record["notebook"]:
        return f"its notebook {source.name} changed since it ran"
    if record["code"] != code_version():
        return "the rcl code changed since it ran"
    run_dir = Path(run_dir) if run_dir is not None else executed.parent.parent
    missing = [name for name in outputs if not (run_dir / name).exists()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return f"its outputs are missing ({missing[0]}{more})"
    changed = [name for name, stamp in outputs.items() if _stamp(run_dir / name) != list(stamp)]
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        return f"its outputs changed since it ran ({changed[0]}{more})"
    reads = record.get("reads", {})
    for number, stamp in _read_chapters(executed, run_dir).items():
        if reads.get(number) != stamp:
            return f"chapter {number}, which it reads, ran again since"
    return None


def is_complete(executed: Path, parameters: dict, run_dir: Path | None = None, source: Path | None = None) -> bool:
    """True when ``executed`` ran to the end with ``parameters`` and its outputs exist (see ``incomplete_reason``)."""
    return incomplete_reason(executed, parameters, run_dir, source) is None


def _snapshot(run_dir: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (mtime_ns, size)}`` of the result files under ``run_dir``.

    Leaves out the executed notebooks, the summary, and hidden files (the lock, atomic writes' temporaries).
    """
    files = {}
    for path in run_dir.rglob("*"):
        rel = path.relative_to(run_dir)
        if rel.parts[0] == "notebooks" or any(part.startswith(".") for part in rel.parts):
            continue
        if rel.as_posix() in ("summary.md", "summary.csv"):
            continue
        try:
            info = path.stat()
        except FileNotFoundError:  # removed meanwhile (a job or a chapter beside this one replaced it)
            continue
        if stat.S_ISREG(info.st_mode):
            files[rel.as_posix()] = (info.st_mtime_ns, info.st_size)
    return files


# --------------------------------------------------------------------------------------------
# one run per run folder
# --------------------------------------------------------------------------------------------


def _describe_holder(text: str) -> str:
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on {holder['host']} since {holder['started']} ({holder['command']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def run_lock(run_dir: Path, wait: bool = False) -> Iterator[None]:
    """Hold the run folder (a flock on the folder itself) while the body runs; ``run_dir/.rcl-reproduce.lock``
    records the holder's pid, host and command.

    Held by a live process: ``RunFolderBusy`` naming it, or with ``wait`` block until it is free. The kernel
    releases a flock when its holder dies, so the lock of a killed run is taken over (with a note). The lock is on
    the folder, not on the file, so deleting the lock file does not let a second run in.
    """
    path = Path(run_dir) / LOCK_NAME
    folder_fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(folder_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(path.read_text() if path.exists() else "")
            if not wait:
                raise RunFolderBusy(
                    f"run folder {run_dir} is in use by {holder}. Wait for it to finish, add --wait to start "
                    "when it has, or pick another folder with --out"
                ) from None
            print(f"rcl.reproduce: waiting for {holder} to release {run_dir} ...", file=sys.stderr, flush=True)
            fcntl.flock(folder_fd, fcntl.LOCK_EX)
        left = path.read_text(errors="replace").strip() if path.exists() else ""
        if left:
            print(f"rcl.reproduce: taking over the lock left by {_describe_holder(left)}, no longer running")
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(["python -m rcl.reproduce", shlex.join(sys.argv[1:])]).strip(),
        }
        path.write_text(json.dumps(me) + "\n")
        try:
            yield
        finally:
            path.write_text("")  # a clean exit leaves an empty lock file: nothing to take over
    finally:
        os.close(folder_fd)  # releases the flock


# --------------------------------------------------------------------------------------------
# executed notebooks
# --------------------------------------------------------------------------------------------


def settle_progress_bars(notebook: dict) -> int:
    """Give every tqdm widget in an executed notebook the text of its final state; returns how many.

    Under papermill, a tqdm widget's text fallback is the bar as first displayed (``0%| | 0/32``); its final state
    is only in the saved widget state, which a reader without the widget's JavaScript (GitHub, a terminal, an
    HTML export) never sees. The widget stays for JupyterLab.
    """
    state = notebook.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    models = state.get("state", {})

    def model(ref: str) -> dict:
        return models.get(ref.removeprefix("IPY_MODEL_"), {}).get("state", {})

    settled = 0
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            view = data.get("application/vnd.jupyter.widget-view+json")
            box = model(view["model_id"]) if view else {}
            children = box.get("children", [])
            if box.get("_model_name") != "HBoxModel" or len(children) != 3:
                continue
            left, bar, right = (model(ref) for ref in children)
            if "max" not in bar:
                continue
            frac = min(max(float(bar.get("value") or 0) / float(bar["max"] or 1), 0.0), 1.0)
            filled = round(10 * frac)

            def text(widget: dict) -> str:
                return html.unescape(str(widget.get("value", ""))).replace("\u2007", " ")

            data["text/plain"] = f"{text(left)}|{'█' * filled}{' ' * (10 - filled)}|{text(right)}"
            settled += 1
    return settled


def _finish(running: Path, executed: Path, record: dict) -> None:
    """Record what decides the chapter's completeness (``incomplete_reason``) and its final progress bars in its
    executed copy, then move it into place."""
    import nbformat

    notebook = nbformat.read(running, as_version=4)
    settle_progress_bars(notebook)
    notebook.metadata["rcl"] = record
    nbformat.write(notebook, running)
    os.replace(running, executed)


def _keep_failed(running: Path, failed: Path) -> Path | None:
    """Move a failed run's notebook to ``NN_name.failed.ipynb`` (the last complete copy stays untouched)."""
    if not running.exists():
        return None
    try:
        import nbformat

        notebook = nbformat.read(running, as_version=4)
        settle_progress_bars(notebook)
        nbformat.write(notebook, running)
    except Exception:  # a half-written notebook (killed mid-write) is kept as it is
        pass
    os.replace(running, failed)
    return failed


# --------------------------------------------------------------------------------------------
# the runner
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """Ignore Ctrl-C while the body runs (in the main thread; elsewhere signals cannot be set and nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


@contextlib.contextmanager
def _environ(name: str, value: str | None) -> Iterator[None]:
    """``os.environ[name] = value`` while the body runs (nothing when ``value`` is None), then as it was."""
    if value is None:
        yield
        return
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _run_chapter(
    notebook: Path,
    parameters: dict,
    run_dir: Path,
    *,
    force: bool,
    debug: bool,
    echo: typing.Callable[[str], None] = print,
    kernel: type | None = None,
    not_mine: typing.Callable[[str], bool] | None = None,
) -> dict:
    """Execute one chapter into ``run_dir/notebooks`` unless it is complete; returns its status row
    (``{"notebook", "status", "seconds"}``). Raises ``ChapterFailed`` naming the cell and the error.

    ``kernel``: the kernel manager class (``_kernel_manager``: the kernel's environment); ``not_mine(path)``: files
    written meanwhile by someone else (jobs, chapters running beside it), left out of the chapter's recorded outputs.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    executed_dir = run_dir / "notebooks"
    executed = executed_dir / notebook.name
    running = executed_dir / f"{notebook.stem}.running.ipynb"
    failed = executed_dir / f"{notebook.stem}.failed.ipynb"
    _keep_failed(running, failed)  # left by a run killed mid-chapter (we hold the lock: it is not live)
    reason = None if force else incomplete_reason(executed, parameters, run_dir, notebook)
    version = notebook_version(notebook)  # as it is now, before it runs (an edit meanwhile makes it incomplete)
    if not force and reason is None:
        return {"notebook": notebook.name, "status": "skipped (complete)", "seconds": 0.0}
    if executed.exists() and reason:
        echo(f"{notebook.name}: running again, {reason}")
    before = _snapshot(run_dir)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook),
            str(running),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(notebook.parent),
            progress_bar=False,
            extra_arguments=_KERNEL_ARGS,
            **({"kernel_manager_class": kernel} if kernel is not None else {}),
        )
    except PapermillExecutionError as err:
        kept = _keep_failed(running, failed)
        raise ChapterFailed(_cell_failure(notebook, err, kept, debug)) from None
    except KeyboardInterrupt:
        with _no_interrupts():  # a second Ctrl-C must not cut the clean-up short
            kept = _keep_failed(running, failed)
        raise ChapterFailed(
            f"\nINTERRUPTED: {notebook.name}" + (f" (its partial run: {kept})" if kept else "") + ".\n"
            f"Finished chapters are kept. Rerun the same command to continue from {notebook.name}."
        ) from None
    except Exception as err:  # the kernel died (killed, out of memory) or could not start
        kept = _keep_failed(running, failed)
        if debug:
            raise
        raise ChapterFailed(
            f"\nFAILED: {notebook.name}: {type(err).__name__}: {err}\n"
            + (f"  its partial run: {kept}\n" if kept else "")
            + "Finished chapters are kept. If the kernel was killed for memory, lower -p batch_size or "
            f"-p eval_batch_size; otherwise rerun the same command to continue from {notebook.name}."
        ) from None
    after = _snapshot(run_dir)
    changed = [name for name, stamp in after.items() if before.get(name) != stamp]
    mine = sorted(name for name in changed if not_mine is None or not not_mine(name))
    record = {
        "outputs": {name: list(after[name]) for name in mine},
        "notebook": version,
        "code": code_version(),
        "reads": _read_chapters(notebook, run_dir),
    }
    _finish(running, executed, record)
    failed.unlink(missing_ok=True)
    return {"notebook": notebook.name, "status": "ran", "seconds": round(time.perf_counter() - start, 1)}


def _writable(run_dir: Path) -> None:
    """Create the run folder and check that files can be written there; else one clear error."""
    import tempfile

    try:
        (run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir / "notebooks"):
            pass
    except OSError as err:
        raise ReproduceError(
            f"cannot write to the run folder {run_dir} ({err.strerror or err}): pick a writable folder with --out DIR"
        ) from err


def run(
    profile: str = "auto",
    dataset: str | None = None,
    device: str = "auto",
    out: str | Path | None = None,
    only: list[str] | None = None,
    force: bool = False,
    extra: dict | None = None,
    notebook_dir: Path = NOTEBOOK_DIR,
    wait: bool = False,
    debug: bool = False,
    launcher: str = "none",
    launch: dict | None = None,
    jobs_only: bool = False,
    publish_to: str | Path | None = None,
    note: str | None = None,
) -> Path:
    """Execute the chapters and write the summary; returns the run folder.

    ``extra``: the ``-p`` values (see ``parse_params`` and ``route_params``). ``launcher``: ``"none"`` (each chapter
    trains what it needs), ``"local"`` or ``"slurm"`` (the chapters' models first, as jobs: ``rcl.jobs``), with
    ``launch`` the launcher's options (see ``make_launcher``); ``jobs_only``: stop after the jobs. Raises
    ``ReproduceError`` (or ``ValueError`` from the profile) before any chapter runs for bad settings, an unwritable
    or busy run folder, and ``ChapterFailed`` (a ``SystemExit``) when a chapter fails or is interrupted, or when a
    job failed (after the chapters that did not need it).

    ``publish_to``: after a complete run, copy it there as a reference run (``rcl.publish``; the checkout must have
    no local changes, checked before anything runs); ``note``: a line for its README (e.g. where the data came from).
    """
    extra = dict(extra or {})
    started, commit = time.time(), None
    root = project_root(notebook_dir)  # the checkout whose chapters run, wherever the command was started
    if publish_to is not None:
        commit = publish.check_clean(root)
        at_start = provenance.machine()
    forced = extra.get("precision") if extra.get("precision") != "auto" else None
    # the chapters' kernels and the jobs inherit these: the "reference run" cells then say they are it, and every
    # "auto" precision of theirs (training, attacks, evaluation) follows -p precision
    here_rcl = str(Path(__file__).resolve().parents[2])  # the kernels and jobs import this rcl, not another
    python_path = os.pathsep.join(p for p in (here_rcl, os.environ.get("PYTHONPATH")) if p)
    with (
        _environ(PUBLISHING_ENV, None if publish_to is None else str(Path(publish_to).resolve())),
        _environ(PRECISION_ENV, forced if isinstance(forced, str) else None),
        _environ("PYTHONPATH", python_path),
    ):
        every = find_notebooks(notebook_dir)
        notebooks = find_notebooks(notebook_dir, only)
        routed = route_params(extra, notebooks, every)
        settings = {k: v for k, v in extra.items() if k in SETTINGS}
        if launcher not in LAUNCHERS:
            raise ReproduceError(f"unknown launcher {launcher!r}; choose one of {', '.join(LAUNCHERS)}")
        if jobs_only and launcher == "none":
            raise ReproduceError(
                "--jobs-only runs the training jobs without the notebooks: add --launcher local or slurm"
            )
        here = _planning_device(device, profile, launcher, jobs_only)
        if profile == "auto":
            profile = auto_profile(here, dataset, root)
        requested = resolve(profile, dataset=dataset, device=here, run_dir=out).dataset
        cfg = setup(profile, dataset, here, run_dir=out, overrides=settings)  # checks every setting first
        data_root = str(Path(cfg.data_root).absolute())
        routed = _with_data_root(routed, data_root)
        precision, precision_why = precision_choice(cfg.device, cfg.precision)
        fell_back = cfg.dataset != requested  # setup falls back to synthetic, loudly, when the data is missing
        run_dir = cfg.run_dir.resolve()
        _check_run_dir(run_dir, notebook_dir)
        if publish_to is not None:  # before anything runs: a refused destination must not cost the run
            publish_to = publish.check_destination(publish_to, run_dir, root)
        _writable(run_dir)
        base = {"profile": cfg.profile, "dataset": cfg.dataset, "device": device, "run_dir": str(run_dir)}
        unused = sorted(
            k for k in extra if k not in SETTINGS and not any(k in notebook_parameters(nb) for nb in notebooks)
        )
        scale_out = make_launcher(launcher, cfg, **(launch or {})) if launcher != "none" else None
        with run_lock(run_dir, wait=wait):
            print(f"rcl.reproduce: profile={cfg.profile} dataset={cfg.dataset} device={cfg.device} -> {run_dir}")
            print(f"rcl.reproduce: precision {precision} ({precision_why}; -p precision=fp32|bf16 chooses)")
            if unused:
                print(f"rcl.reproduce: note: -p {', '.join(unused)} is a parameter of none of the chapters run here")
            threads, threads_note = _cpu_threads(scale_out, (launch or {}).get("threads"))
            if threads_note:
                print(f"rcl.reproduce: note: {threads_note}")
            job_records, failures, t0 = [], [], time.perf_counter()
            if scale_out is None:
                status = _chapters_in_order(notebooks, base, routed, run_dir, force=force, debug=debug)
            else:
                needed = {nb: jobs.chapter_jobs(cfg, nb.name[:2], routed[nb]) for nb in notebooks}
                status, job_records, failures = _chapters_beside_jobs(
                    [] if jobs_only else notebooks,
                    needed,
                    {nb: {**base, **routed[nb]} for nb in notebooks},
                    run_dir,
                    scale_out,
                    jobs.JobSettings.of(cfg, device=device, threads=threads),
                    retries=(launch or {}).get("retries", 2),
                    threads=threads,
                    force=force,
                    debug=debug,
                )
            wall = time.perf_counter() - t0 if scale_out is not None else None
            _write_summary(run_dir, status, fell_back, cfg.dataset, jobs.summary_rows(job_records), wall, root)
        failed = jobs.failed_jobs(job_records)
        if failures:  # chapters that ran beside the jobs: the others ran on, the summary has them all
            raise ChapterFailed("\n".join(failures) + _jobs_failed(failed, job_records, status, run_dir))
        if publish_to is not None and not failed and not jobs_only:
            _check_publishable(every, _with_data_root(route_params(extra, every, every), data_root), base, run_dir)
            dest = publish.publish(
                run_dir,
                publish_to,
                commit=commit,
                settings=cfg.as_dict(),
                expected=[nb.name for nb in notebooks],
                started=started,
                machine_at_start=at_start,
                note=note,
                root=root,
            )
            print(f"published to {dest} (commit {commit[:12]}; see {dest / publish.PROVENANCE})")
        if failed:
            raise ChapterFailed(_jobs_failed(failed, job_records, status, run_dir))
    return run_dir


LAUNCHERS = ("none", "local", "slurm")


def _with_data_root(routed: dict[Path, dict], data_root: str) -> dict[Path, dict]:
    """Every location is resolved once, in the runner, and handed to the chapters (whose kernels start in
    ``notebooks/``, not where the command was typed): each chapter with an ``overrides`` parameter gets the data
    folder the runner found, unless ``-p data_root=...`` already gave it one."""
    out = {}
    for notebook, given in routed.items():
        given = dict(given)
        if "overrides" in notebook_parameters(notebook):
            given["overrides"] = {"data_root": data_root, **given.get("overrides", {})}
        out[notebook] = given
    return out


def _check_run_dir(run_dir: Path, notebook_dir: Path) -> None:
    """Refuse a run folder whose ``notebooks/`` would be the course's own (``--out .`` from the checkout would
    overwrite the chapters with executed copies) or that holds the checkout."""
    root = project_root(notebook_dir)
    if (run_dir / "notebooks").resolve() == notebook_dir.resolve() or run_dir == root or run_dir in root.parents:
        raise ReproduceError(
            f"--out {run_dir} would write executed chapters over the course's own notebooks in {notebook_dir}: "
            "give a folder of its own, e.g. runs/<name> (the default is runs/<profile>-<dataset>)"
        )


def _check_publishable(every: list[Path], routed: dict, base: dict, run_dir: Path) -> None:
    """A publication is one run: every chapter of the course complete in ``run_dir`` with this run's settings."""
    stale = []
    for notebook in every:
        reason = incomplete_reason(
            run_dir / "notebooks" / notebook.name, {**base, **routed[notebook]}, run_dir, notebook
        )
        if reason is not None:
            stale.append(f"{notebook.name} ({reason})")
    if stale:
        raise publish.NotPublishable(
            f"cannot publish {run_dir}: a publication is the whole course run with one set of settings, and "
            f"{', '.join(stale)}. Run the same command without --only to run them with these settings"
        )


def _jobs_failed(failed: list, records: list, status: list[dict], run_dir: Path) -> str:
    """The message naming the jobs that failed and the chapters they kept from running ("" when none failed)."""
    if not failed:
        return ""
    lines = [f"  {r.job.name}: {r.state}, {r.note}" + (f" (log: {run_dir / r.log})" if r.log else "") for r in failed]
    not_run = [row["notebook"] for row in status if row["status"].startswith("not run: job")]
    return (
        f"\nJOBS FAILED: {len(failed)} of {len(records)}:\n"
        + "\n".join(lines)
        + "\n"
        + (f"Chapters not run: {', '.join(not_run)}.\n" if not_run else "")
        + "Finished jobs and chapters are kept; once the cause is fixed, the same command runs what is left "
        "(a job that stopped mid-way resumes from its last epoch)."
    )


def _chapters_in_order(
    notebooks: list[Path], base: dict, routed: dict, run_dir: Path, *, force: bool, debug: bool
) -> list[dict]:
    """Today's course: every chapter in turn, each training what it needs; stops at the first that fails."""
    from tqdm.auto import tqdm

    status = []
    bar = tqdm(notebooks, desc="chapters", unit="nb")
    try:
        for notebook in bar:
            bar.set_postfix_str(notebook.stem)
            parameters = {**base, **routed[notebook]}
            status.append(_run_chapter(notebook, parameters, run_dir, force=force, debug=debug, echo=bar.write))
    finally:
        bar.close()
    return status


# chapters that read what another chapter wrote: 03 reads the robustness tables of 01 and 02 (and writes them when
# they are missing), 09 every chapter's results
CHAPTER_NEEDS = {"03": ("01", "02"), "09": ("00", "01", "02", "03", "04", "05", "06", "07", "08")}


def _kernel_manager(env: dict[str, str], started: list) -> type:
    """A kernel manager class (papermill's ``kernel_manager_class``) whose kernel runs with ``env`` on top of this
    process's environment (its GPU, its threads); each manager is appended to ``started`` once its kernel runs."""
    from jupyter_client.manager import AsyncKernelManager

    class ChapterKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw["env"] = {**os.environ, **env}
            await super().start_kernel(**kw)
            started.append(self)

    return ChapterKernelManager


class _Chapter(threading.Thread):
    """One chapter run by ``_run_chapter`` in a thread of the runner (papermill's kernel is its own process), in a
    slot of the launcher; ``row`` (its status) or ``failure`` (the message) once it ends."""

    def __init__(self, notebook: Path, parameters: dict, run_dir: Path, slot: int, where: str, env: dict, **kw):
        super().__init__(name=f"rcl-{notebook.stem}", daemon=True)
        self.notebook, self.parameters, self.run_dir, self.kw = notebook, parameters, run_dir, kw
        self.slot, self.where = slot, where
        self.kernels: list = []
        self.kernel = _kernel_manager(env, self.kernels)
        self.row: dict | None = None
        self.failure: str | None = None

    def run(self) -> None:
        try:
            self.row = _run_chapter(self.notebook, self.parameters, self.run_dir, kernel=self.kernel, **self.kw)
        except ChapterFailed as err:
            self.failure = str(err)
        except BaseException as err:  # with --debug, _run_chapter lets a dead kernel's error through
            self.failure = f"\nFAILED: {self.notebook.name}: {type(err).__name__}: {err}"

    def interrupt(self) -> None:
        """SIGINT to the chapter's kernel (it runs in its own session: a terminal's Ctrl-C does not reach it)."""
        for manager in self.kernels:
            with contextlib.suppress(OSError, TypeError, AttributeError):  # a kernel already gone
                os.kill(manager.provisioner.pid, signal.SIGINT)


class _OneAtATime:
    """Chapter slots when the jobs run elsewhere (SLURM): one chapter at a time on this machine."""

    def __init__(self) -> None:
        self.busy = False

    def reserve(self) -> tuple[int, str, dict] | None:
        if self.busy:
            return None
        self.busy = True
        return 0, "this machine", {}

    def free(self, slot: int) -> None:
        self.busy = False


def _chapters_beside_jobs(
    notebooks: list[Path],
    needed: dict[Path, list[jobs.Job]],
    parameters: dict[Path, dict],
    run_dir: Path,
    launcher: jobs.LocalLauncher | jobs.SlurmLauncher,
    settings: jobs.JobSettings,
    *,
    retries: int,
    threads: int | None,
    force: bool,
    debug: bool,
) -> tuple[list[dict], list[jobs.JobRecord], list[str]]:
    """The jobs of ``needed`` (every chapter's, once) through ``launcher`` in a thread, and each chapter as soon as
    the jobs it needs are done, the chapters it reads (``CHAPTER_NEEDS``) have run, and a slot is free: locally the
    chapters take the launcher's slots (a GPU or a CPU worker each; a job ready to start goes first, the jobs being
    the long chains the chapters wait for), on SLURM one at a time here. A chapter whose job failed is not run; a
    chapter that fails keeps only the chapters that read it from running. ``threads``: the kernels' torch threads.

    Returns the chapters' status rows (in chapter order), the jobs' records and the failed chapters' messages.
    """
    from tqdm.auto import tqdm

    graph = list({job.name: job for chapter in needed.values() for job in chapter}.values())
    states = {job.name: "queued" for job in graph}
    needs = {job.name: job.needs for job in graph}
    outcome: dict[str, typing.Any] = {}
    stop = threading.Event()
    bar = tqdm(total=len(notebooks), desc="chapters", unit="nb", disable=not notebooks)

    def train() -> None:
        try:
            outcome["records"] = jobs.run_jobs(
                graph,
                settings,
                launcher,
                retries=retries,
                echo=bar.write,
                on_change=lambda r: states.__setitem__(r.job.name, r.state),
                stop=stop,
            )
        except BaseException as err:
            outcome["error"] = err

    def say(text: str) -> None:
        bar.write(f"[{time.strftime('%H:%M:%S')}] {text}")

    def job_ready() -> bool:
        """A job waits for a slot (all it needs done): locally it goes before any chapter."""
        ready = ("done", "skipped")
        return any(s == "queued" and all(states[n] in ready for n in needs[name]) for name, s in states.items())

    local = isinstance(launcher, jobs.LocalLauncher)
    slots = launcher if local else _OneAtATime()
    kernel_env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}
    job_folders = tuple(f"{job.name}/" for job in graph)
    beside: dict[Path, set[str]] = {}  # each chapter: the chapters that ran while it did (their files are not its)

    def not_mine(notebook: Path) -> typing.Callable[[str], bool]:
        def check(name: str) -> bool:
            top = name.split("/")[0]
            return top == jobs.JOBS_DIR or name.startswith(job_folders) or top[:2] in beside[notebook]

        return check

    rows: dict[Path, dict] = {}
    failures: dict[Path, str] = {}
    waiting, running, shown = list(notebooks), {}, ""
    trainer = threading.Thread(target=train, name="rcl-jobs", daemon=True)
    trainer.start()
    try:
        while waiting or running or trainer.is_alive():
            for notebook, chapter in list(running.items()):  # what finished
                if chapter.is_alive():
                    continue
                del running[notebook]
                slots.free(chapter.slot)
                bar.update()
                if chapter.failure is not None:
                    failures[notebook] = chapter.failure
                    rows[notebook] = {"status": "failed", "seconds": 0.0}
                    say(f"chapter {notebook.stem} failed (the chapters that do not read it run on)")
                else:
                    rows[notebook] = chapter.row
                    say(f"chapter {notebook.stem}: {chapter.row['status']} in {chapter.row['seconds']:.0f} s")
            if "error" in outcome:  # the jobs' loop itself stopped (a submission refused): no more chapters
                waiting.clear()
            for notebook in list(waiting):  # what can start, in chapter order
                failed_jobs = sorted(j.name for j in needed[notebook] if states[j.name] in ("failed", "blocked"))
                reads = [nb for nb in notebooks if nb.name[:2] in CHAPTER_NEEDS.get(notebook.name[:2], ())]
                broken = [nb for nb in reads if nb in rows and rows[nb]["status"] not in ("ran", "skipped (complete)")]
                if failed_jobs or broken:
                    more = f" and {len(failed_jobs) - 1} more" if len(failed_jobs) > 1 else ""
                    why = f"job {failed_jobs[0]}{more} failed" if failed_jobs else f"{broken[0].name} did not run"
                    rows[notebook] = {"status": f"not run: {why}", "seconds": 0.0}
                    waiting.remove(notebook)
                    bar.update()
                    continue
                if any(nb in waiting or nb in running for nb in reads):
                    continue
                if any(states[j.name] not in ("done", "skipped") for j in needed[notebook]):
                    continue
                executed = run_dir / "notebooks" / notebook.name
                if not force and is_complete(executed, parameters[notebook], run_dir, notebook):
                    rows[notebook] = {"status": "skipped (complete)", "seconds": 0.0}
                    waiting.remove(notebook)
                    bar.update()
                    continue
                if local and job_ready():
                    break
                reserved = slots.reserve()
                if reserved is None:
                    break
                slot, where, env = reserved
                waiting.remove(notebook)
                beside[notebook] = {nb.name[:2] for nb in running}
                for other in running:
                    beside[other].add(notebook.name[:2])
                chapter = _Chapter(
                    notebook,
                    parameters[notebook],
                    run_dir,
                    slot,
                    where,
                    {**env, **kernel_env},
                    force=force,
                    debug=debug,
                    echo=bar.write,
                    not_mine=not_mine(notebook),
                )
                running[notebook] = chapter
                chapter.start()
                say(f"chapter {notebook.stem} started on {where}")
            names = ", ".join(nb.stem for nb in running)
            if names != shown:  # a refresh only when it changed: a log file gets one line per refresh
                bar.set_postfix_str(names)
                shown = names
            time.sleep(0.2)
    except KeyboardInterrupt:
        with _no_interrupts():  # a second Ctrl-C must not cut the clean-up short
            stop.set()
            for chapter in running.values():
                chapter.interrupt()
            for chapter in running.values():
                chapter.join(timeout=60)
            trainer.join(timeout=60)
            bar.close()
        names = ", ".join(nb.name for nb in running)
        raise ChapterFailed(
            "\nINTERRUPTED" + (f" while running {names}" if names else "") + ". Finished jobs and chapters are "
            "kept; rerun the same command to continue (a job stopped mid-way resumes from its last epoch)."
        ) from None
    bar.close()
    if "error" in outcome:
        raise outcome["error"]
    status = [{"notebook": nb.name, **rows[nb]} for nb in notebooks]
    return status, outcome["records"], [failures[nb] for nb in notebooks if nb in failures]


def _cpu_threads(launcher, threads: int | None) -> tuple[int | None, str | None]:
    """The torch threads of each job and of each chapter beside them, and a note for the user.

    ``--threads-per-job`` wins. Otherwise CPU workers that would together take more threads than there are cores
    (N x torch's default) get ``cores // N`` each, as torchrun does, unless ``OMP_NUM_THREADS`` is set (the user
    chose: a note then says the workers will fight over the cores). GPUs and a single worker keep the default.
    """
    import torch

    if threads is not None or not isinstance(launcher, jobs.LocalLauncher) or launcher.gpus is not None:
        return threads, None
    workers, cores, each = len(launcher.slots), os.cpu_count() or 1, torch.get_num_threads()
    if each * workers <= cores:
        return None, None
    fair = max(1, cores // workers)
    if "OMP_NUM_THREADS" in os.environ:
        return None, (
            f"{workers} workers x OMP_NUM_THREADS={each} on {cores} cores: the jobs and chapters will fight over the "
            f"cores; OMP_NUM_THREADS={fair} (or --threads-per-job {fair}) is faster"
        )
    return fair, (
        f"{workers} workers on {cores} cores: each job, and each chapter beside them, uses {fair} torch "
        f"thread{'s' * (fair > 1)} instead of torch's default {each}, so they do not fight over the cores. CPU sums "
        f"depend on the thread count: a sequential run gives the same weights bit for bit with OMP_NUM_THREADS={fair}; "
        f"--threads-per-job {each} keeps the default"
    )


def auto_profile(device: str, dataset: str | None, root: Path) -> str:
    """``--profile auto``: the course's reproduction wherever it can run. ``quick`` on a GPU; on a CPU ``laptop``
    when real data is at hand (``dataset``, default CIFAR-10: on disk or downloadable), saying up front how long the
    committed laptop reference run took; ``smoke`` otherwise, loudly (synthetic images test the code only)."""
    from rcl.course import _is_unavailable, _load, _warn
    from rcl.runtime import pick_device

    if pick_device(device).type == "cuda":
        print("rcl.reproduce: --profile auto -> quick (a GPU is here)")
        return "quick"
    if dataset is not None and dataset.strip().lower() == "synthetic":
        print("rcl.reproduce: --profile auto -> smoke (synthetic images: the test profile)")
        return "smoke"
    laptop = resolve("laptop", dataset=dataset, device="cpu")
    try:
        _load(laptop, n_train=10, n_test=10)
    except Exception as err:  # only a missing dataset picks smoke; a wrong name or path still raises
        if not _is_unavailable(err):
            raise
        _warn(
            [
                f"rcl.reproduce: --profile auto -> smoke: {laptop.dataset} is not here and cannot be downloaded",
                f"  ({err})",
                "  The smoke profile trains tiny networks on synthetic images: its numbers test the code, they cannot",
                "  confirm or refute the papers. Give real images with --dataset (cifar10 online, or",
                "  imagefolder:<path>) or choose --profile laptop once CIFAR-10 is in data/.",
            ]
        )
        return "smoke"
    took = ""
    reference = root / "results" / "laptop-cifar10" / "run.json"
    try:
        record = json.loads(reference.read_text())
        machine = record.get("machine_at_start", {})
        hours = float(record["wall_seconds"]) / 3600
        took = (
            f"; the committed laptop reference run took {hours:.1f} h on a {machine.get('cpu_count', '?')}-core "
            f"{machine.get('cpu', 'CPU')} (results/laptop-cifar10/run.json)"
        )
    except (OSError, ValueError, KeyError, TypeError):
        pass
    print(
        f"rcl.reproduce: --profile auto -> laptop (real {laptop.dataset} is at hand): the course's reproduction on a "
        f"CPU{took}. --profile smoke runs the quick test profile instead."
    )
    return "laptop"


def _planning_device(device: str, profile: str, launcher: str, jobs_only: bool) -> str:
    """The device this process resolves the profile on. A login node without a GPU may submit CUDA jobs to SLURM
    (``--jobs-only``: the notebooks, which need the GPU, run elsewhere); everything else needs the device here."""
    import torch

    if launcher != "slurm" or not str(device).startswith("cuda") or torch.cuda.is_available():
        return device
    if not jobs_only:
        raise ReproduceError(
            f"--device {device}: this machine has no GPU for the notebooks. Add --jobs-only to submit the training "
            "jobs from here, then run the same command without it on a GPU node (the chapters then only load)"
        )
    if profile == "auto":
        raise ReproduceError("--profile auto picks the profile by this machine's device: name it (--profile paper)")
    return "cpu"


def _visible_gpus() -> list[int]:
    """The GPUs a job may be given: ``CUDA_VISIBLE_DEVICES``' entries when set, else every device torch sees."""
    import torch

    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None and listed.strip():
        try:
            return [int(g) for g in listed.split(",") if g.strip()]
        except ValueError:
            pass  # UUIDs: fall back to indices
    return list(range(torch.cuda.device_count()))


def make_launcher(
    launcher: str,
    cfg: profiles.Config,
    *,
    gpus: list[int] | None = None,
    workers: int | None = None,
    time: str | int | None = None,
    partition: str | None = None,
    gpus_per_job: int | None = None,
    cpus_per_job: int | None = None,
    slurm_args: dict | None = None,
    threads: int | None = None,
    retries: int = 2,
):
    """The ``rcl.jobs`` launcher of ``--launcher local|slurm`` and its options (``threads`` and ``retries`` are read
    by ``run``). Local: ``gpus`` (default: every visible GPU when ``cfg.device`` is CUDA; a GPU listed twice takes
    two jobs), else ``workers`` (default 1) jobs on the CPU. SLURM: ``partition``, ``time`` (minutes or h:mm:ss per
    job, default 24 h), ``gpus_per_job`` (default 1), ``cpus_per_job``, ``slurm_args`` (any other sbatch option)."""
    local_only = {"--gpus": gpus, "--workers": workers}
    slurm_only = {
        "--partition": partition,
        "--gpus-per-job": gpus_per_job,
        "--cpus-per-job": cpus_per_job,
        "--slurm-arg": slurm_args or None,
    }
    wrong = [name for name, v in (slurm_only if launcher == "local" else local_only).items() if v is not None]
    if wrong:
        raise ReproduceError(
            f"{', '.join(wrong)} is an option of --launcher {'slurm' if launcher == 'local' else 'local'}"
        )
    if retries < 0:
        raise ReproduceError(f"--retries must be >= 0, got {retries}")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ReproduceError(f"--launcher {launcher} needs submitit: pip install submitit==1.5.4") from None
    if threads is not None and threads < 1:
        raise ReproduceError(f"--threads-per-job must be >= 1, got {threads}")
    try:
        if launcher == "local":
            if gpus is None and workers is None and cfg.device.type == "cuda":
                gpus = _visible_gpus()
            if gpus is not None and workers is not None:
                raise ReproduceError("--gpus and --workers: give one (one job per GPU listed, or N jobs on the CPU)")
            return jobs.LocalLauncher(gpus=gpus, workers=workers or 1, **({"time": time} if time else {}))
        return jobs.SlurmLauncher(
            partition=partition,
            gpus_per_job=1 if gpus_per_job is None else gpus_per_job,
            cpus_per_job=cpus_per_job,
            extra=slurm_args,
            **({"time": time} if time else {}),
        )
    except jobs.JobsError as err:
        raise ReproduceError(str(err)) from None


def _cell_failure(notebook: Path, err, kept: Path | None, debug: bool) -> str:
    source = err.source.strip().splitlines()
    first_line = source[0] if source else ""
    trace = ""
    if debug:
        from papermill.utils import strip_color

        trace = "\n" + strip_color("\n".join(err.traceback)) + "\n"
    return (
        f"{trace}\nFAILED: {notebook.name}, cell {_cell_number(notebook, err.source)}: "
        f"{err.ename}: {err.evalue}\n  cell starts with: {first_line}\n"
        + (f"  the failed run, with the traceback: {kept}\n" if kept else "")
        + f"Finished chapters are kept; once the cause is fixed, the same command continues from {notebook.name}."
    )


def _cell_number(notebook: Path, source: str) -> int | str:
    """1-based position of the cell holding ``source`` in the original notebook (papermill adds a cell)."""
    cells = json.loads(notebook.read_text()).get("cells", [])
    for number, cell in enumerate(cells, start=1):
        text = cell.get("source", "")
        if ("".join(text) if isinstance(text, list) else text).strip() == source.strip():
            return number
    return "?"


def _write_summary(
    run_dir: Path,
    status: list[dict],
    fell_back: bool,
    dataset: str,
    job_rows: list[dict] | None = None,
    wall: float | None = None,
    root: Path | None = None,
) -> None:
    commit = git_commit(root) if root is not None else None  # the checkout that ran, not the current folder's
    text = summary(run_dir, status, dataset=dataset, fell_back=fell_back, jobs=job_rows, wall=wall, commit=commit)
    print(text)
    print(f"summary written to {run_dir / 'summary.md'} and {run_dir / 'summary.csv'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rcl.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profile",
        default="auto",
        help="smoke | laptop | quick | paper | auto (quick on a GPU; laptop on a CPU with real data, else smoke)",
    )
    parser.add_argument("--dataset", default=None, help="cifar10 | cifar100 | synthetic | imagefolder:<path>")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--out", default=None, help="run folder (default runs/<profile>-<dataset>)")
    parser.add_argument("--only", default=None, help="comma-separated chapter numbers, e.g. 02,03")
    parser.add_argument("--force", action="store_true", help="re-run chapters whose outputs are complete")
    parser.add_argument("--wait", action="store_true", help="if another run holds the run folder, wait for it")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        help="name=value: any profile setting (-p n_train=60, -p train_eps=8/255) or a chapter's own parameter",
    )
    scale = parser.add_argument_group(
        "scale out: the chapters' models as parallel jobs, each chapter once its own are done (rcl.jobs)"
    )
    scale.add_argument(
        "--launcher",
        default="none",
        choices=LAUNCHERS,
        help="none (default): each chapter trains what it needs | local: jobs on this machine | slurm: on a cluster",
    )
    scale.add_argument(
        "--gpus",
        default=None,
        help="local: GPUs for the jobs, one job per GPU listed, e.g. 0,1,2,3 (default: every visible GPU)",
    )
    scale.add_argument("--workers", type=int, default=None, help="local, on the CPU: jobs at a time (default 1)")
    scale.add_argument(
        "--threads-per-job",
        type=int,
        default=None,
        help="torch CPU threads of each job and each chapter beside them (default: torch's, or cores / workers when "
        "CPU workers would crowd the cores; CPU weights equal a sequential run's with as many threads)",
    )
    scale.add_argument("--retries", type=int, default=2, help="times a job that died is started again (default 2)")
    scale.add_argument(
        "--time",
        default=None,
        help="per job: minutes or h:mm:ss; a job that runs out is requeued and resumes (default: 24:00:00 on SLURM, "
        "7 days locally)",
    )
    scale.add_argument("--partition", default=None, help="slurm: the partition to submit to")
    scale.add_argument("--gpus-per-job", type=int, default=None, help="slurm: GPUs per job (default 1)")
    scale.add_argument("--cpus-per-job", type=int, default=None, help="slurm: CPUs per job (--cpus-per-task)")
    scale.add_argument(
        "--slurm-arg",
        action="append",
        default=[],
        help="slurm: any other sbatch option as key=value, e.g. --slurm-arg account=lab --slurm-arg qos=high",
    )
    scale.add_argument("--jobs-only", action="store_true", help="run the jobs, not the notebooks")
    ref = parser.add_argument_group("reference run (rcl.publish)")
    ref.add_argument(
        "--publish",
        default=None,
        metavar="DIR",
        help="after the run, copy its summary, tables, figures and executed notebooks to DIR with a run.json "
        "(commit, machine, wall times); needs a checkout without local changes",
    )
    ref.add_argument("--note", default=None, help="with --publish: a line for DIR/README.md, e.g. about the data")
    args = parser.parse_args(argv)
    for option in ("out", "publish", "dataset"):
        value = getattr(args, option)
        try:
            (value or "").encode("utf-8")
        except UnicodeEncodeError:
            parser.error(
                f"--{option} {value.encode('utf-8', 'surrogateescape')!r} is not valid UTF-8: the run's files, "
                "notebooks and summary name it in text; rename the folder with UTF-8 characters only"
            )
    if args.note is not None and args.publish is None:
        parser.error("--note is a line for the published README: use it with --publish DIR")
    try:
        run(
            profile=args.profile,
            dataset=args.dataset,
            device=args.device,
            out=args.out,
            only=args.only.split(",") if args.only is not None else None,
            force=args.force,
            extra=parse_params(args.param),
            wait=args.wait,
            debug=args.debug,
            launcher=args.launcher,
            launch=_launch_options(args),
            jobs_only=args.jobs_only,
            publish_to=args.publish,
            note=args.note,
        )
    except (ReproduceError, ValueError, OSError, jobs.JobsError, publish.NotPublishable) as err:
        if args.debug:
            raise
        raise SystemExit(f"rcl.reproduce: error: {err}") from None
    except KeyboardInterrupt:  # between chapters (one interrupted mid-run is a ChapterFailed)
        if args.debug:
            raise
        raise SystemExit("\nINTERRUPTED. Finished chapters are kept. Rerun the same command to continue.") from None


def _launch_options(args: argparse.Namespace) -> dict:
    """The launcher options of the command line, as ``make_launcher`` takes them."""
    gpus = None
    if args.gpus is not None:
        try:
            gpus = [int(g) for g in args.gpus.split(",") if g.strip()]
        except ValueError:
            raise ReproduceError(
                f"--gpus takes GPU numbers separated by commas, e.g. 0,1,2,3, got {args.gpus!r}"
            ) from None
    slurm_args = {}
    for pair in args.slurm_arg:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ReproduceError(f"--slurm-arg takes key=value (an sbatch option without its dashes), got {pair!r}")
        slurm_args[key.strip().lstrip("-").replace("-", "_")] = value.strip()
    options = {
        "gpus": gpus,
        "workers": args.workers,
        "time": args.time,
        "partition": args.partition,
        "gpus_per_job": args.gpus_per_job,
        "cpus_per_job": args.cpus_per_job,
        "slurm_args": slurm_args or None,
        "threads": args.threads_per_job,
        "retries": args.retries,
    }
    return options


if __name__ == "__main__":
    main()
