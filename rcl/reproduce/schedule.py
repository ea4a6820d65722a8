"""One scheduler for a run: the training jobs and the chapters as one graph, each started once what it needs is done.

A job needs the jobs whose models it starts from (``Job.needs``). A chapter needs its jobs
(:func:`rcl.reproduce.jobs.chapter_jobs`), the chapters whose results it reads (``CHAPTER_NEEDS``: 03 after 01 and 02,
09 last) and, when the chapters run one after the other (no launcher), the chapter before it. :func:`run_graph` starts
every task whose needs are done in a free slot: a job through the launcher (locally a worker process; on SLURM a
batch job, submitted at once with what it needs as ``afterok`` dependencies), a chapter in a thread of this process
that runs papermill (its kernel is its own process) in a slot of the launcher (its GPU or a CPU worker; one at a time
on SLURM and without a launcher). Locally a job ready to start goes before any chapter: the jobs are the long chains
the chapters wait for; among the jobs, those more jobs wait for go first.

Failures stay local. A job that raised fails and every task that needs it is not run (``blocked``); a job that died
(killed, out of memory, node lost) is started again up to ``retries`` times and resumes from its last epoch; a chapter
that fails keeps only the chapters that need it from running. A job done by an earlier run with the same settings and
a complete chapter are skipped; a SLURM job an earlier runner left in the queue is watched, not submitted again.
Ctrl-C cancels the jobs in flight and interrupts the chapters' kernels; a rerun resumes them.

Files: ``run_dir/jobs/<job>/status.json`` (where each job stands) and ``run_dir/jobs/summary.csv`` (the last run's
table), beside the jobs' logs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rcl.reproduce.chapters import CHAPTER_NEEDS, ChapterThread, is_complete, keep_killed_run, no_interrupts
from rcl.reproduce.errors import ChapterFailed
from rcl.reproduce.jobs import JOBS_DIR, Job, JobCall, JobsError, JobSettings, is_done, job_dir
from rcl.reproduce.launchers import DIED, LocalLauncher, SlurmLauncher
from rcl.results import save_json, save_table

STATES = ("queued", "submitted", "running", "done", "skipped", "failed", "blocked")
FINAL = ("done", "skipped", "failed", "blocked")
DONE = ("done", "skipped")


@dataclass
class JobRecord:
    """Where one job stands. ``state``: one of :data:`STATES`; ``attempts``: how many times it was started;
    ``seconds``: its training time once done; ``note``: why it failed, or which failed job blocks it."""

    job: Job
    state: str = "queued"
    attempts: int = 0
    seconds: float | None = None
    note: str = ""
    where: str = ""
    log: str = ""
    handle: Any = field(default=None, repr=False)

    def row(self) -> dict:
        return {
            "job": self.job.name,
            "state": self.state,
            "attempts": self.attempts,
            "seconds": None if self.seconds is None else round(self.seconds, 1),
            "note": self.note,
            "log": self.log,
        }


@dataclass
class ChapterTask:
    """A chapter in the graph: its notebook, papermill's parameters for it, the jobs it loads (names) and the chapters
    that must have run first. ``state``: queued, running, done, failed or blocked; ``row``: its status row once
    final (``{"status", "seconds"}``)."""

    notebook: Path
    parameters: dict
    jobs: tuple[str, ...] = ()
    after: tuple[Path, ...] = ()
    state: str = "queued"
    row: dict | None = None
    thread: ChapterThread | None = field(default=None, repr=False)


@dataclass
class Outcome:
    """What :func:`run_graph` ran: the jobs' records, the chapters' status rows (``{"notebook", "status",
    "seconds"}``, in chapter order) and the failed chapters' messages."""

    records: list[JobRecord]
    status: list[dict]
    failures: list[str]


class OneAtATime:
    """Chapter slots when no launcher runs them beside the jobs (no launcher, or SLURM): one at a time here."""

    def __init__(self) -> None:
        self.busy = False

    def reserve(self) -> tuple[int, str, dict] | None:
        if self.busy:
            return None
        self.busy = True
        return 0, "this machine", {}

    def free(self, slot: int) -> None:
        self.busy = False


def chapter_tasks(
    notebooks: Sequence[Path], parameters: dict[Path, dict], jobs: dict[Path, list[Job]], in_order: bool
) -> list[ChapterTask]:
    """The chapters as tasks: each needs its ``jobs`` and the chapters it reads among ``notebooks``; ``in_order``:
    each also needs the one before it (the course run one chapter after the other, stopping where one fails)."""
    tasks = []
    for i, notebook in enumerate(notebooks):
        reads = [nb for nb in notebooks if nb.name[:2] in CHAPTER_NEEDS.get(notebook.name[:2], ())]
        before = [notebooks[i - 1]] if in_order and i else []
        after = tuple(dict.fromkeys([*before, *reads]))
        names = tuple(job.name for job in jobs.get(notebook, []))
        tasks.append(ChapterTask(notebook, parameters[notebook], names, after))
    return tasks


class _Schedule:
    """The state of one :func:`run_graph` call; each method does one part of the loop."""

    def __init__(self, jobs, chapters, settings, launcher, run_dir, options: dict) -> None:
        from tqdm.auto import tqdm

        self.settings, self.launcher, self.run_dir = settings, launcher, Path(run_dir).absolute()
        self.records = {job.name: JobRecord(job) for job in jobs}
        for job in jobs:
            missing = [n for n in job.needs if n not in self.records]
            if missing:
                raise JobsError(f"{job.name} needs {', '.join(missing)}, which is not among the jobs given")
        for task in chapters:
            missing = [n for n in task.jobs if n not in self.records]
            if missing:
                raise JobsError(f"{task.notebook.name} needs {', '.join(missing)}, which is not among the jobs given")
        self.chapters = list(chapters)
        self.by_notebook = {task.notebook: task for task in self.chapters}
        self.options = options
        eager = launcher is not None and launcher.eager
        self.job_poll = options["poll"] if options["poll"] is not None else (10.0 if eager else 0.5)
        self.local = isinstance(launcher, LocalLauncher)
        self.slots = launcher if self.local else OneAtATime()
        self.echo = options["echo"]
        self.bar = tqdm(total=len(self.chapters), desc="chapters", unit="nb", disable=not self.chapters)
        waiting = {name: len(self._dependants(name)) for name in self.records}
        self.order = sorted(self.records.values(), key=lambda r: -waiting[r.job.name])  # stable among equals
        self.failures: dict[Path, str] = {}
        self.beside: dict[Path, set[str]] = {}  # each chapter: the chapters that ran while it did
        self.job_folders = tuple(f"{job.name}/" for job in jobs)
        self.shown, self.last_job_check = "", 0.0

    # ------------------------------------------------------------------------------------------------ the loop
    def run(self) -> Outcome:
        try:
            self._take_over_earlier_runs()
            while not self._finished():
                if time.monotonic() - self.last_job_check >= self.job_poll:
                    self._watch_jobs()
                    self.last_job_check = time.monotonic()
                self._start_jobs()
                self._watch_chapters()
                self._start_chapters()
                self._show_running()
                if not self._finished():
                    time.sleep(min(0.2, self.job_poll))
        except KeyboardInterrupt:
            names = self._stop("cancelled (interrupted); a rerun resumes it")
            where = f" while running {names}" if names else ""
            what = "jobs and chapters" if self.records else "chapters"
            resumes = " (a job stopped mid-way resumes from its last epoch)" if self.records else ""
            raise ChapterFailed(
                f"\nINTERRUPTED{where}. Finished {what} are kept; rerun the same command to continue{resumes}."
            ) from None
        except BaseException:
            self._stop("cancelled (the runner stopped); a rerun resumes it")
            raise
        finally:
            self.bar.close()
            if self.launcher is not None:
                self.launcher.close()
                _write_summary(self.run_dir, self.records.values())
        status = [{"notebook": task.notebook.name, **task.row} for task in self.chapters]
        failures = [self.failures[t.notebook] for t in self.chapters if t.notebook in self.failures]
        return Outcome(list(self.records.values()), status, failures)

    def _finished(self) -> bool:
        return all(r.state in FINAL for r in self.records.values()) and all(t.state in FINAL for t in self.chapters)

    def _stop(self, note: str) -> str:
        """Cancel the jobs in flight and interrupt the chapters' kernels (Ctrl-C ignored meanwhile); returns the
        names of the chapters that were running."""
        running = [t for t in self.chapters if t.state == "running"]
        with no_interrupts():  # a second Ctrl-C must not cut the clean-up short
            for r in self.records.values():
                if r.handle is not None and r.state in ("submitted", "running"):
                    self.launcher.cancel(r.handle)
                    r.state, r.note = "queued", note
                    _write_status(self.run_dir, r)
            for task in running:
                task.thread.interrupt()
            for task in running:
                task.thread.join(timeout=60)
        return ", ".join(t.notebook.name for t in running)

    def _say(self, text: str) -> None:
        self.bar.write(f"[{time.strftime('%H:%M:%S')}] {text}")

    def _show_running(self) -> None:
        names = ", ".join(t.notebook.stem for t in self.chapters if t.state == "running")
        if names != self.shown:  # a refresh only when it changed: a log file gets one line per refresh
            self.bar.set_postfix_str(names)
            self.shown = names

    # ------------------------------------------------------------------------------------------------ the jobs
    def _job_changed(self, r: JobRecord, detail: str = "") -> None:
        counts = _count_text(self.records.values())
        self.echo(
            f"[{time.strftime('%H:%M:%S')}] {r.state:<9} {r.job.name}{'  ' + detail if detail else ''}   ({counts})"
        )
        _write_status(self.run_dir, r)

    def _dependants(self, name: str) -> list[JobRecord]:
        """Every job that needs ``name``, directly or through another job, in graph order."""
        below, found = {name}, []
        for r in self.records.values():
            if below.intersection(r.job.needs):
                below.add(r.job.name)
                found.append(r)
        return found

    def _take_over_earlier_runs(self) -> None:
        """Skip the jobs an earlier run finished with these settings; watch those it left in the cluster's queue."""
        if not self.records:
            return
        done_before = [r for r in self.records.values() if is_done(r.job, self.settings)]
        for r in done_before:
            r.state, r.note = "skipped", "done by an earlier run"
        for r in self.records.values():
            status = _read_status(self.run_dir, r.job) if r.state == "queued" else {}
            if status.get("state") in ("submitted", "running") and status.get("job_id"):
                folder = job_dir(self.run_dir, r.job)
                handle = self.launcher.adopt(folder, str(status["job_id"]), str(status.get("where", "")))
                if handle is not None:
                    r.handle, r.where, r.log = handle, status["where"], status.get("log", "")
                    r.attempts, r.state = int(status.get("attempts") or 1), "submitted"
                    self._job_changed(r, f"on {r.where}, left by an earlier run: watching it")
        where = "SLURM" if self.launcher.eager else ", ".join(self.launcher.slots)
        self.echo(
            f"rcl.reproduce: {len(self.records)} jobs, {len(done_before)} already done; {where}; logs in "
            f"{self.run_dir / JOBS_DIR}"
        )

    def _start_jobs(self) -> None:
        """Start every queued job whose needs are done (on SLURM: submitted or running too) while slots are free."""
        ok = DONE + (("submitted", "running") if self.launcher is not None and self.launcher.eager else ())
        for r in self.order:
            if r.state != "queued" or not all(self.records[n].state in ok for n in r.job.needs):
                continue
            if not self.launcher.has_room():
                return
            after = [str(self.records[n].handle.job_id) for n in r.job.needs if self.records[n].state not in DONE]
            folder = job_dir(self.run_dir, r.job)
            folder.mkdir(parents=True, exist_ok=True)
            submitted = self.launcher.submit(self.options["make_call"](self.settings, r.job), folder, after)
            if submitted is None:  # a chapter took the last slot
                return
            r.handle, r.where = submitted
            r.attempts += 1
            r.log = str(Path(r.handle.paths.stderr).relative_to(self.run_dir))
            r.state = "submitted" if self.launcher.eager else "running"
            self._job_changed(r, f"on {r.where}" + (f", after {', '.join(after)}" if after else ""))

    def _watch_jobs(self) -> None:
        """What changed among the jobs in flight: started, done, failed (what needs it is blocked), or died."""
        for r in self.records.values():
            if r.state not in ("submitted", "running"):
                continue
            if r.state == "submitted" and self.launcher.started(r.handle):
                r.state = "running"
                self._job_changed(r, f"on {r.where}")
            if self.launcher.finished(r.handle):
                self.launcher.release(r.handle)
                self._job_ended(r, r.handle.exception())

    def _job_ended(self, r: JobRecord, error: BaseException | None) -> None:
        from submitit.core.utils import FailedJobError

        if error is None:
            r.seconds = float((r.handle.result() or {}).get("seconds", 0.0))
            r.state, r.note = "done", ""
            self._job_changed(r, f"in {r.seconds:.1f} s")
        elif isinstance(error, FailedJobError):  # the job raised: running it again would raise again
            r.state, r.note = "failed", _short(error)
            self._job_changed(r, f"{r.note}; log: {r.log}")
            self._block_below(r)
        elif r.attempts <= self.options["retries"]:  # it died (killed, node lost): it resumes from its last epoch
            r.state, r.note, r.handle = "queued", "died; started again", None
            retries = self.options["retries"]
            self._job_changed(r, f"died, starting it again (attempt {r.attempts + 1} of {retries + 1}); log: {r.log}")
            for d in self._dependants(r.job.name):  # SLURM: they waited on the dead attempt's id
                if d.state == "submitted":
                    self.launcher.cancel(d.handle)
                    d.state, d.handle, d.attempts = "queued", None, d.attempts - 1
        else:
            r.state, r.note = "failed", f"died {r.attempts} times ({DIED})"
            self._job_changed(r, f"{r.note}; log: {r.log}")
            self._block_below(r)

    def _block_below(self, failed: JobRecord) -> None:
        for d in self._dependants(failed.job.name):
            if d.state in FINAL:
                continue
            if d.handle is not None:
                self.launcher.cancel(d.handle)
                d.handle = None
            d.state, d.note = "blocked", f"needs {failed.job.name}, which failed"
            self._job_changed(d, f"(needs {failed.job.name}, which failed)")

    # -------------------------------------------------------------------------------------------- the chapters
    def _end_chapter(self, task: ChapterTask, state: str, status: str, seconds: float = 0.0) -> None:
        task.state, task.row = state, task.row or {"status": status, "seconds": seconds}
        self.bar.update()

    def _start_chapters(self) -> None:
        """Start, in chapter order, every chapter whose jobs and earlier chapters are done, while slots are free."""
        for task in self.chapters:
            if task.state != "queued":
                continue
            failed = sorted(j for j in task.jobs if self.records[j].state in ("failed", "blocked"))
            broken = [nb for nb in task.after if self.by_notebook[nb].state in ("failed", "blocked")]
            if failed or broken:
                more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
                why = f"job {failed[0]}{more} failed" if failed else f"{broken[0].name} did not run"
                self._end_chapter(task, "blocked", f"not run: {why}")
                continue
            if any(self.by_notebook[nb].state not in DONE for nb in task.after):
                continue
            if any(self.records[j].state not in DONE for j in task.jobs):
                continue
            keep_killed_run(task.notebook, self.run_dir)
            executed = self.run_dir / "notebooks" / task.notebook.name
            if not self.options["force"] and is_complete(executed, task.parameters, self.run_dir, task.notebook):
                self._end_chapter(task, "skipped", "skipped (complete)")
                continue
            if self.local and self._job_ready():
                return
            reserved = self.slots.reserve()
            if reserved is None:
                return
            self._launch_chapter(task, *reserved)

    def _job_ready(self) -> bool:
        """A job waits for a slot (all it needs done): locally it goes before any chapter."""
        return any(
            r.state == "queued" and all(self.records[n].state in DONE for n in r.job.needs)
            for r in self.records.values()
        )

    def _launch_chapter(self, task: ChapterTask, slot: int, where: str, env: dict) -> None:
        number = task.notebook.name[:2]
        running = [t for t in self.chapters if t.state == "running"]
        self.beside[task.notebook] = {t.notebook.name[:2] for t in running}
        for other in running:
            self.beside[other.notebook].add(number)
        threads = self.options["threads"]
        kernel_env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}
        task.thread = ChapterThread(
            task.notebook,
            task.parameters,
            self.run_dir,
            slot,
            where,
            {**env, **kernel_env},
            force=self.options["force"],
            debug=self.options["debug"],
            echo=self.bar.write,
            not_mine=self._not_mine(task.notebook),
        )
        task.state = "running"
        task.thread.start()
        if self.launcher is not None:
            self._say(f"chapter {task.notebook.stem} started on {where}")

    def _not_mine(self, notebook: Path) -> Callable[[str], bool]:
        """Files a chapter did not write although they changed while it ran: the jobs' and the chapters' beside it."""

        def check(name: str) -> bool:
            top = name.split("/")[0]
            return top == JOBS_DIR or name.startswith(self.job_folders) or top[:2] in self.beside[notebook]

        return check

    def _watch_chapters(self) -> None:
        for task in self.chapters:
            if task.state != "running" or task.thread.is_alive():
                continue
            self.slots.free(task.thread.slot)
            if task.thread.failure is not None:
                self.failures[task.notebook] = task.thread.failure
                self._end_chapter(task, "failed", "failed")
                if self.launcher is not None:
                    self._say(f"chapter {task.notebook.stem} failed (the chapters that do not read it run on)")
            else:
                task.row = task.thread.row
                self._end_chapter(task, "done", task.row["status"])
                if self.launcher is not None:
                    self._say(f"chapter {task.notebook.stem}: {task.row['status']} in {task.row['seconds']:.0f} s")


def run_graph(
    jobs: Sequence[Job],
    chapters: Sequence[ChapterTask] = (),
    *,
    settings: JobSettings | None,
    launcher: LocalLauncher | SlurmLauncher | None,
    run_dir: str | Path,
    retries: int = 2,
    poll: float | None = None,
    echo: Callable[[str], None] = print,
    make_call: Callable[[JobSettings, Job], Callable[[], dict]] = JobCall,
    threads: int | None = None,
    force: bool = False,
    debug: bool = False,
) -> Outcome:
    """Run ``jobs`` (each after what it needs) through ``launcher`` and ``chapters`` (:func:`chapter_tasks`), each
    as soon as its jobs and earlier chapters are done, as the module docstring says; returns the :class:`Outcome`.

    ``settings``: what a job process rebuilds its Config from; ``launcher``: None when there are no jobs (the
    chapters then run one at a time, each training what it needs); ``retries``: times a job that died is started
    again; ``poll``: seconds between looks at the jobs in flight (default 0.5 locally, 10 on SLURM); ``echo``: where
    the jobs' state changes are printed; ``make_call(settings, job)``: what a job process runs (default
    :class:`JobCall`; tests wrap it); ``threads``: torch threads of each chapter's kernel beside the jobs;
    ``force``: run complete chapters again; ``debug``: let a dead kernel's error through with its traceback. Ctrl-C
    raises ``ChapterFailed`` once the jobs in flight are cancelled and the kernels interrupted.
    """
    if retries < 0:
        raise JobsError(f"retries must be >= 0, got {retries}")
    if jobs and launcher is None:
        raise JobsError("jobs need a launcher (LocalLauncher or SlurmLauncher)")
    options = {"poll": poll, "echo": echo, "make_call": make_call, "retries": retries, "threads": threads}
    return _Schedule(jobs, chapters, settings, launcher, run_dir, {**options, "force": force, "debug": debug}).run()


def run_jobs(
    jobs: Sequence[Job],
    settings: JobSettings,
    launcher: LocalLauncher | SlurmLauncher,
    *,
    retries: int = 2,
    poll: float | None = None,
    echo: Callable[[str], None] = print,
    make_call: Callable[[JobSettings, Job], Callable[[], dict]] = JobCall,
) -> list[JobRecord]:
    """Only the jobs (:func:`run_graph` without chapters): one :class:`JobRecord` per job, also written to
    ``run_dir/jobs/summary.csv``. Prints one line per state change with the live count."""
    options = {"retries": retries, "poll": poll, "echo": echo, "make_call": make_call}
    return run_graph(jobs, settings=settings, launcher=launcher, run_dir=settings.run_dir, **options).records


# --------------------------------------------------------------------------------------------------- records
def counts(records: Iterable[JobRecord]) -> dict[str, int]:
    """``{"queued", "running", "done", "failed", "blocked"}``: how many jobs are in each (submitted counts as
    queued, skipped as done)."""
    out = dict.fromkeys(("queued", "running", "done", "failed", "blocked"), 0)
    for r in records:
        out[{"submitted": "queued", "skipped": "done"}.get(r.state, r.state)] += 1
    return out


def _count_text(records: Iterable[JobRecord]) -> str:
    c = counts(records)
    return " | ".join(f"{v} {k}" for k, v in c.items() if v or k in ("queued", "running", "done", "failed"))


def _short(error: BaseException) -> str:
    """The last line of a job's traceback (what was raised), without submitit's wrapping."""
    lines = [line for line in str(error).splitlines() if line.strip() and not line.startswith(("---", "You can"))]
    trace = [line for line in lines if not line.startswith(("  - ", "or at paths"))]
    return (trace[-1] if trace else type(error).__name__).strip()


def _read_status(run_dir: Path, job: Job) -> dict:
    try:
        return json.loads((job_dir(run_dir, job) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _write_status(run_dir: Path, r: JobRecord) -> None:
    folder = job_dir(run_dir, r.job)
    folder.mkdir(parents=True, exist_ok=True)
    save_json({**r.row(), "where": r.where, "job_id": getattr(r.handle, "job_id", None)}, folder / "status.json")


def _write_summary(run_dir: Path, records: Iterable[JobRecord]) -> None:
    import pandas as pd

    (run_dir / JOBS_DIR).mkdir(parents=True, exist_ok=True)
    save_table(pd.DataFrame([r.row() for r in records]), run_dir / JOBS_DIR / "summary.csv")


def summary_rows(records: Iterable[JobRecord]) -> list[dict]:
    """One row per job (``job, state, attempts, seconds, note``) for the run's summary."""
    return [{k: v for k, v in r.row().items() if k != "log"} for r in records]


def failed_jobs(records: Iterable[JobRecord]) -> list[JobRecord]:
    """The jobs that failed or were blocked by a failed one."""
    return [r for r in records if r.state in ("failed", "blocked")]


__all__ = [
    "ChapterTask",
    "JobRecord",
    "Outcome",
    "chapter_tasks",
    "counts",
    "failed_jobs",
    "run_graph",
    "run_jobs",
    "summary_rows",
]
