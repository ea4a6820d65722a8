"""Where the jobs run: worker processes on this machine (:class:`LocalLauncher`) or batch jobs on a SLURM cluster
(:class:`SlurmLauncher`), and the options of ``--launcher local|slurm`` that make them (:func:`make_launcher`).

A launcher gives the scheduler (``rcl.reproduce.schedule``) slots: locally one per GPU listed (which the job sees
alone, as ``CUDA_VISIBLE_DEVICES``) or ``workers`` on the CPU, each a long-lived process that imports torch once and
runs job after job; a chapter beside the jobs takes a slot too (:meth:`LocalLauncher.reserve`). On SLURM every job
is one ``sbatch`` (submitit's ``SlurmExecutor``), submitted at once with what it needs as ``afterok`` dependencies.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcl import profiles
from rcl.reproduce.errors import ReproduceError
from rcl.reproduce.jobs import JobsError

# a job's stderr carries tqdm bars: one refresh every 30 s keeps a days-long log readable
_JOB_ENV = {"TQDM_MININTERVAL": "30"}


def _time_minutes(value: int | str) -> int:
    """Whole minutes (rounded up) of a time limit written as SLURM's ``--time`` takes it: ``240`` or ``"240"``
    (minutes), ``"mm:ss"``, ``"h:mm:ss"``, ``"d-h"``, ``"d-h:mm"`` or ``"d-h:mm:ss"``."""
    text = str(value).strip()
    try:
        if "-" in text:
            days, rest = text.split("-", 1)
            fields = [int(f) for f in rest.split(":")]  # hours[:minutes[:seconds]]
            if not 1 <= len(fields) <= 3:
                raise ValueError
            h, m, sec = (fields + [0, 0])[:3]
            seconds = ((int(days) * 24 + h) * 60 + m) * 60 + sec
        else:
            fields = [int(f) for f in text.split(":")]
            if len(fields) == 1:
                seconds = fields[0] * 60
            elif len(fields) == 2:  # minutes:seconds
                seconds = fields[0] * 60 + fields[1]
            elif len(fields) == 3:
                seconds = (fields[0] * 60 + fields[1]) * 60 + fields[2]
            else:
                raise ValueError
    except ValueError:
        raise JobsError(
            f"time must be minutes (240), h:mm:ss (4:00:00) or d-h:mm:ss (2-00:00:00), got {value!r}"
        ) from None
    if seconds <= 0:
        raise JobsError(f"time must be more than zero, got {value!r}")
    return -(-seconds // 60)


class _Worker:
    """One long-lived job process (``multiprocessing`` spawn): it imports torch once and runs job after job sent to
    it, each with its stdout and stderr in the job's log files. ``env``: variables it starts with
    (``CUDA_VISIBLE_DEVICES``, ``TQDM_MININTERVAL``)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, dict(env)), daemon=True)
        self.process.start()
        child.close()
        self.jobs_run = 0

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()

    def close(self) -> None:
        """Let it finish: an idle worker exits when its pipe closes."""
        self.conn.close()
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.kill()


def _serve(conn, env: dict) -> None:
    """A worker's loop: receive ``(call, stdout path, stderr path)``, run it, send ``("ok", result)`` or
    ``("raised", traceback)``; exit when the launcher closes the pipe."""
    import cloudpickle

    os.environ.update(env)
    while True:
        try:
            call, out_path, err_path = cloudpickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        conn.send(_run_logged(call, out_path, err_path))
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            torch.cuda.empty_cache()  # the GPU's memory back for a chapter that may run there before the next job


def _run_logged(call: Callable[[], dict], out_path: str, err_path: str) -> tuple[str, Any]:
    """``call()`` with file descriptors 1 and 2 (so C extensions' output too) written to the two log files."""
    import traceback

    def flush() -> None:
        sys.stdout.flush()
        sys.stderr.flush()

    flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with open(out_path, "a") as out, open(err_path, "a") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            return "ok", call()
        except Exception:
            traceback.print_exc()
            return "raised", traceback.format_exc()
        finally:
            flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)


@dataclass
class _Paths:
    stdout: Path
    stderr: Path


DIED = "stopped without a result: killed, out of memory, or its node lost"


class _WorkerJob:
    """A job sent to a :class:`_Worker`, as :func:`run_jobs` watches it: ``done()``, then ``exception()`` (a
    ``FailedJobError`` when the job raised, a :class:`JobsError` when its worker died or ran out of time) or
    ``result()``."""

    def __init__(self, worker: _Worker, job_id: str, paths: _Paths, minutes: int) -> None:
        self.worker, self.job_id, self.paths = worker, job_id, paths
        self.deadline = time.monotonic() + minutes * 60
        self._outcome: tuple[str, Any] | None = None

    def done(self) -> bool:
        if self._outcome is not None:
            return True
        try:
            if self.worker.conn.poll():
                self._outcome = self.worker.conn.recv()
        except (EOFError, OSError):
            pass
        if self._outcome is None and not self.worker.alive():
            self._outcome = ("died", DIED)
        elif self._outcome is None and time.monotonic() > self.deadline:
            self.worker.kill()
            self._outcome = ("died", "ran past its time limit; stopped")
        return self._outcome is not None

    def exception(self) -> BaseException | None:
        from submitit.core.utils import FailedJobError

        kind, value = self._outcome
        if kind == "raised":
            return FailedJobError(value)
        return JobsError(value) if kind == "died" else None

    def result(self) -> Any:
        return self._outcome[1]

    def cancel(self, check: bool = False) -> None:
        if not self.done():
            self.worker.kill()
            self._outcome = ("died", "cancelled")


class LocalLauncher:
    """Jobs on this machine, each slot a long-lived worker process: one per GPU of ``gpus`` (which it sees alone,
    as ``CUDA_VISIBLE_DEVICES``), or ``workers`` with the GPUs hidden. A worker imports torch once and keeps the
    last dataset it loaded, so a job costs its training, not a new Python; a worker that dies is replaced. A job
    starts once everything it needs is done. ``time``: a job is stopped (and, by :func:`run_jobs`, started again:
    it resumes) after this long. A chapter that runs beside the jobs takes a slot too (:meth:`reserve`), so jobs
    and chapters together never use more than the slots (each GPU runs one thing at a time)."""

    eager = False

    def __init__(self, gpus: Sequence[int] | None = None, workers: int = 1, time: int | str = 7 * 1440) -> None:
        if gpus is not None and not gpus:
            raise JobsError("gpus must list at least one GPU, e.g. [0, 1]")
        if gpus is None and workers < 1:
            raise JobsError(f"workers must be >= 1, got {workers}")
        self.gpus = [int(g) for g in gpus] if gpus is not None else None
        self.slots = (
            [f"gpu {g}" for g in self.gpus] if self.gpus is not None else [f"worker {i + 1}" for i in range(workers)]
        )
        self.time = _time_minutes(time)
        self._free = list(range(len(self.slots)))
        self._held: dict[str, int] = {}
        self._workers: list[_Worker | None] = [None] * len(self.slots)
        self._lock = threading.Lock()  # the jobs' loop and the chapters take slots from two threads

    def has_room(self) -> bool:
        with self._lock:
            return bool(self._free)

    def _take(self) -> int | None:
        with self._lock:
            return self._free.pop(0) if self._free else None

    def free(self, slot: int) -> None:
        """Give back a slot taken by :meth:`reserve` (or held by a job)."""
        with self._lock:
            self._free.append(slot)
            self._free.sort()

    def reserve(self) -> tuple[int, str, dict[str, str]] | None:
        """A free slot for a chapter's kernel: ``(slot, its name, the environment the kernel runs with)`` (its GPU
        as ``CUDA_VISIBLE_DEVICES``; on the CPU nothing changes), or None when every slot is busy. :meth:`free`
        gives it back."""
        slot = self._take()
        if slot is None:
            return None
        env = {} if self.gpus is None else {"CUDA_VISIBLE_DEVICES": str(self.gpus[slot])}
        return slot, self.slots[slot], env

    def _worker(self, slot: int) -> _Worker:
        worker = self._workers[slot]
        if worker is None or not worker.alive():
            visible = "" if self.gpus is None else str(self.gpus[slot])
            env = {"CUDA_VISIBLE_DEVICES": visible, **_JOB_ENV}
            worker = self._workers[slot] = _Worker(env)
        return worker

    def submit(self, call: Callable[[], dict], folder: Path, after: Sequence[str]) -> tuple[Any, str] | None:
        """Send the job to a free slot's worker: ``(handle, where)``, or None when a chapter took the last slot."""
        import cloudpickle

        slot = self._take()
        if slot is None:
            return None
        try:
            worker = self._worker(slot)
            worker.jobs_run += 1
            job_id = f"{worker.process.pid}.{worker.jobs_run}"
            paths = _Paths(folder / f"{job_id}_0_log.out", folder / f"{job_id}_0_log.err")
            worker.conn.send_bytes(cloudpickle.dumps((call, str(paths.stdout), str(paths.stderr))))
        except Exception:
            self.free(slot)
            raise
        self._held[job_id] = slot
        return _WorkerJob(worker, job_id, paths, self.time), self.slots[slot]

    def started(self, handle) -> bool:
        return True

    def finished(self, handle) -> bool:
        return handle.done()

    def release(self, handle) -> None:
        slot = self._held.pop(handle.job_id, None)
        if slot is not None:
            self.free(slot)

    def cancel(self, handle) -> None:
        handle.cancel(check=False)
        self.release(handle)

    def adopt(self, folder: Path, job_id: str, where: str):
        """Nothing to adopt: an earlier run's local jobs died with it (a new copy of an orphan's job waits for its
        job lock, then loads what it trained)."""
        return None

    def close(self) -> None:
        """Stop the workers (after the jobs: the chapters then have the memory and the cores)."""
        for slot, worker in enumerate(self._workers):
            if worker is not None:
                worker.close()
            self._workers[slot] = None


class SlurmLauncher:
    """Jobs as SLURM batch jobs (submitit ``SlurmExecutor``), all submitted at once: what a job needs becomes
    ``--dependency=afterok:<ids>`` (with ``--kill-on-invalid-dep=yes``, so SLURM drops the job if one of them fails).
    ``partition``, ``time`` (per job; a job that runs out is requeued and resumes), ``gpus_per_job``
    (``--gpus-per-node``), ``cpus_per_job`` (``--cpus-per-task``), ``extra``: any other sbatch option
    (``{"account": "lab", "qos": "high"}``), ``setup``: shell lines run before the job (``module load cuda``)."""

    eager = True

    def __init__(
        self,
        partition: str | None = None,
        time: int | str = 1440,
        gpus_per_job: int = 1,
        cpus_per_job: int | None = None,
        extra: Mapping[str, Any] | None = None,
        setup: Sequence[str] = (),
        max_requeues: int = 20,
    ) -> None:
        if gpus_per_job < 0:
            raise JobsError(f"gpus_per_job must be >= 0, got {gpus_per_job}")
        self.time = _time_minutes(time)
        missing = [tool for tool in ("sbatch", "srun", "sacct") if shutil.which(tool) is None]
        if missing:
            raise JobsError(
                f"--launcher slurm needs SLURM's {', '.join(missing)} on PATH: run it on a node that can submit jobs"
            )
        self.partition = partition
        self.gpus_per_job = gpus_per_job
        self.cpus_per_job = cpus_per_job
        self.extra = dict(extra or {})
        self.setup = [*(f"export {k}={v}" for k, v in _JOB_ENV.items()), *setup]
        self.max_requeues = max_requeues

    def has_room(self) -> bool:
        return True

    def close(self) -> None:
        """Nothing to stop: the jobs belong to the cluster."""

    def parameters(self, name: str, after: Sequence[str]) -> dict[str, Any]:
        """The executor parameters of one job (``after``: the SLURM ids it waits for)."""
        params: dict[str, Any] = {
            "job_name": f"rcl-{name}",
            "time": self.time,
            "nodes": 1,
            "ntasks_per_node": 1,
            "setup": list(self.setup),
            "additional_parameters": dict(self.extra),
        }
        if self.gpus_per_job:
            params["gpus_per_node"] = self.gpus_per_job
        if self.partition:
            params["partition"] = self.partition
        if self.cpus_per_job:
            params["cpus_per_task"] = self.cpus_per_job
        if after:
            params["dependency"] = "afterok:" + ":".join(after)
            params["additional_parameters"]["kill_on_invalid_dep"] = "yes"
        return params

    def submit(self, call: Callable[[], dict], folder: Path, after: Sequence[str]) -> tuple[Any, str]:
        import submitit

        try:
            executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=self.max_requeues)
        except RuntimeError as err:  # no srun on this machine
            raise JobsError(f"--launcher slurm: {err} Run it on a machine that can submit (sbatch, srun).") from None
        executor.update_parameters(**self.parameters(folder.name, after))
        try:
            handle = executor.submit(call)
        except Exception as err:  # sbatch refused it: a bad partition, time or account
            raise JobsError(f"sbatch refused the job {folder.name}: {err}") from None
        return handle, f"slurm {handle.job_id}"

    def started(self, handle) -> bool:
        return handle.state not in ("PENDING", "REQUEUED", "UNKNOWN", "CONFIGURING")

    def finished(self, handle) -> bool:
        return handle.done()

    def release(self, handle) -> None:
        pass

    def cancel(self, handle) -> None:
        handle.cancel(check=False)

    def adopt(self, folder: Path, job_id: str, where: str):
        """The SLURM job ``job_id`` an earlier run submitted, when it is still queued or running (the earlier run
        died and left it): watched instead of submitted again. None otherwise."""
        import submitit

        if not where.startswith("slurm"):
            return None
        handle = submitit.SlurmJob(folder=folder, job_id=job_id)
        state = (handle.get_info(mode="force").get("State") or "UNKNOWN").split()[0]
        return handle if state in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED") else None


LAUNCHERS = ("none", "local", "slurm")


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
    """The launcher of ``--launcher local|slurm`` and its options (``threads`` and ``retries`` are read
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
            return LocalLauncher(gpus=gpus, workers=workers or 1, **({"time": time} if time else {}))
        return SlurmLauncher(
            partition=partition,
            gpus_per_job=1 if gpus_per_job is None else gpus_per_job,
            cpus_per_job=cpus_per_job,
            extra=slurm_args,
            **({"time": time} if time else {}),
        )
    except JobsError as err:
        raise ReproduceError(str(err)) from None


def cpu_threads(launcher, threads: int | None) -> tuple[int | None, str | None]:
    """The torch threads of each job and of each chapter beside them, and a note for the user.

    ``--threads-per-job`` wins. Otherwise CPU workers that would together take more threads than there are cores
    (N x torch's default) get ``cores // N`` each, as torchrun does, unless ``OMP_NUM_THREADS`` is set (the user
    chose: a note then says the workers will fight over the cores). GPUs and a single worker keep the default.
    """
    import torch

    if threads is not None or not isinstance(launcher, LocalLauncher) or launcher.gpus is not None:
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
