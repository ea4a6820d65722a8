"""One chapter, executed: papermill runs it into ``run_dir/notebooks/``, and its completeness decides whether it runs.

A chapter counts as complete when its executed copy ran to the end with the same settings, from the notebook and the
rcl code as they are now, and the files it wrote are still there as it left them (:func:`incomplete_reason`). A
chapter runs into ``NN_name.running.ipynb`` and replaces its executed copy only when it succeeds; a failed or
interrupted run is kept as ``NN_name.failed.ipynb`` beside the last complete one (:func:`run_chapter`).
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import os
import signal
import stat
import threading
import time
import typing
from collections.abc import Iterator
from pathlib import Path

from rcl.fileio import printable
from rcl.reproduce.errors import ChapterFailed
from rcl.reproduce.params import CHAPTER_NAME, NOTEBOOK_DIR, _jsonable

# the kernel's start-up warning about unencrypted TCP would break the runner's progress bar
# and after a Ctrl-C the kernel logs its replies to the closed client as ZMQ errors: errors of a cell still reach the
# notebook (they are messages, not log lines), only the kernel's own plumbing is silenced
_KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]


# chapters that read what another chapter wrote: 03 reads the robustness tables of 01 and 02 (and writes them when
# they are missing), 09 every chapter's results
CHAPTER_NEEDS = {"03": ("01", "02"), "09": ("00", "01", "02", "03", "04", "05", "06", "07", "08")}


_NOT_RESULTS = ("run_dir",)  # where the results live, not what they are: a moved run folder is still complete


def _defining(parameters: dict) -> dict:
    """The parameters that decide a chapter's results: not where the run folder is, nor where the data lie."""
    out = {k: v for k, v in _jsonable(parameters).items() if k not in _NOT_RESULTS}
    if isinstance(out.get("overrides"), dict):
        out["overrides"] = {k: v for k, v in out["overrides"].items() if k != "data_root"}
        if not out["overrides"]:
            del out["overrides"]
    return out


def code_version(package: Path | None = None) -> str:
    """A hash of the rcl package's files (``package``, default this one), the code every chapter imports and the data
    files it reads (``ghofrani_cka.json``; compiled ``__pycache__`` aside): 16 hex digits."""
    digest = hashlib.sha256()
    package = package or Path(__file__).resolve().parent.parent  # rcl/, the runner included
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and not path.name.startswith("."):
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
        return f"its executed copy is unreadable ({printable(err)})"
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
        return f"its outputs are missing ({printable(missing[0])}{more})"
    changed = [name for name, stamp in outputs.items() if _stamp(run_dir / name) != list(stamp)]
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        return f"its outputs changed since it ran ({printable(changed[0])}{more})"
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


@contextlib.contextmanager
def no_interrupts() -> Iterator[None]:
    """Ignore Ctrl-C while the body runs (in the main thread; elsewhere signals cannot be set and nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def keep_killed_run(notebook: Path, run_dir: Path) -> tuple[Path, Path]:
    """Keep what a run killed mid-chapter left (``NN_name.running.ipynb``) as ``NN_name.failed.ipynb``; the runner
    holds the run folder's lock, so it is not live. Returns the chapter's (running, failed) paths."""
    running = run_dir / "notebooks" / f"{notebook.stem}.running.ipynb"
    failed = run_dir / "notebooks" / f"{notebook.stem}.failed.ipynb"
    _keep_failed(running, failed)
    return running, failed


def run_chapter(
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
    running, failed = keep_killed_run(notebook, run_dir)
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
        with no_interrupts():  # a second Ctrl-C must not cut the clean-up short
            kept = _keep_failed(running, failed)
        raise ChapterFailed(
            f"\nINTERRUPTED: {notebook.name}" + (f" (its partial run: {kept})" if kept else "") + ".\n"
            f"Finished chapters are kept. Rerun the same command to continue from {notebook.name}."
        ) from None
    except Exception as err:  # the kernel died (killed, out of memory) or could not start
        kept = _keep_failed(running, failed)
        if debug:
            raise
        foreign = foreign_kernel()
        advice = (
            foreign
            if foreign
            else "If the kernel was killed for memory, lower -p batch_size or -p eval_batch_size; otherwise rerun "
            f"the same command to continue from {notebook.name}."
        )
        raise ChapterFailed(
            f"\nFAILED: {notebook.name}: {type(err).__name__}: {err}\n"
            + (f"  its partial run: {kept}\n" if kept else "")
            + f"Finished chapters are kept. {advice}"
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


def foreign_kernel() -> str:
    """Why the ``python3`` kernel the chapters run in is not this environment's, or ``""`` when it is: a user-level
    kernelspec (``~/.local/share/jupyter/kernels/python3``) from another environment wins over the project's, and its
    Python may lack rcl or hold other versions of its packages."""
    import shutil
    import sys

    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    install = f"{sys.executable} -m ipykernel install --sys-prefix --name python3"
    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        return f"No Jupyter kernel named 'python3' is installed: install this environment's with `{install}`."
    python = spec.argv[0] if spec.argv else ""
    found = shutil.which(python) or python
    if python and Path(found).resolve() == Path(sys.executable).resolve():
        return ""
    return (
        f"The Jupyter kernel 'python3' the chapters run in ({printable(spec.resource_dir)}) starts "
        f"{printable(python) or 'no Python'}, not this environment's Python ({sys.executable}): rcl or its packages "
        "may be missing or different there. Remove that kernelspec (`jupyter kernelspec list` shows where it is; "
        f"`jupyter kernelspec remove python3` removes the first one listed) and install this environment's with "
        f"`{install}`; then rerun the same command."
    )


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


class ChapterThread(threading.Thread):
    """One chapter run by ``run_chapter`` in a thread of the runner (papermill's kernel is its own process), in a
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
            self.row = run_chapter(self.notebook, self.parameters, self.run_dir, kernel=self.kernel, **self.kw)
        except ChapterFailed as err:
            self.failure = str(err)
        except BaseException as err:  # with --debug, run_chapter lets a dead kernel's error through: keep its trace
            import traceback

            trace = traceback.format_exc() if self.kw.get("debug") else ""
            self.failure = f"{trace}\nFAILED: {self.notebook.name}: {type(err).__name__}: {err}"

    def interrupt(self) -> None:
        """SIGINT to the chapter's kernel (it runs in its own session: a terminal's Ctrl-C does not reach it)."""
        for manager in self.kernels:
            with contextlib.suppress(OSError, TypeError, AttributeError):  # a kernel already gone
                os.kill(manager.provisioner.pid, signal.SIGINT)
