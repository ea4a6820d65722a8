"""The study's training runs as a graph of jobs, spread over the GPUs (or CPU cores) of one machine or a SLURM cluster.

Every model of the study is a load-or-train call that already exists (:func:`rcl.study.pretrain`,
:func:`rcl.study.scenario_model`, :func:`rcl.acl.pretrain` / :func:`rcl.acl.finetune`, the runs of
:mod:`rcl.false_negatives`), writing into its checkpoint folder in the shared run folder. A :class:`Job` is one such
call, named by that folder (``"04_scenarios/CL-Full-AT"``), with the jobs whose models it starts from
(``needs``: a scenario fine-tune needs its pre-trained encoder). :func:`study_jobs` lists the jobs of the chapters
asked for, those they need first; :func:`run_jobs` runs them through a launcher:

- :class:`LocalLauncher`: long-lived worker processes on this machine, one per GPU listed (which it sees alone, as
  ``CUDA_VISIBLE_DEVICES``) or ``workers`` on the CPU, each running job after job (torch and the data load once per
  worker, not once per job); a job starts when what it needs is done. ``rcl.reproduce`` runs each chapter in a slot
  too (:meth:`LocalLauncher.reserve`) as soon as its jobs are done, beside the jobs still training.
- :class:`SlurmLauncher`: one ``sbatch`` per job (submitit's ``SlurmExecutor``), submitted at once with what it
  needs as SLURM dependencies (``--dependency=afterok:<ids>``, ``--kill-on-invalid-dep=yes``).

A model is the same whichever process trains it: initial weights come from (run seed, checkpoint folder)
(:func:`rcl.runtime.seeded_init`) and every random draw of training from per-epoch generators seeded by the run seed.
On a CPU, floating-point sums also depend on the number of threads: a job uses the torch default of its machine,
as the chapters do, unless ``threads`` is set (faster when several jobs share few cores; equal weights only up to
rounding). Each epoch is checkpointed, so a job that dies (killed, pre-empted, out of time) resumes where it
stopped: on SLURM, a job near its time limit or pre-empted is requeued by submitit (the job is
``Checkpointable``); any other death is resubmitted by :func:`run_jobs` up to ``retries`` times. A job that raised
an error is not retried; it fails, and the jobs that need it are not started (``blocked``); the others run on.

Files: ``run_dir/jobs/<job>/`` holds each job's logs (``<id>_0_log.out`` / ``.err``; on SLURM submitit's pickles), its
``status.json`` and, once done, ``done.json`` (the settings it ran with and the checkpoint files it left), so a
later run skips it while those files are unchanged; ``run_dir/jobs/summary.csv`` is the last run's table. A lock
file per job keeps two copies of the same job (a run killed without its jobs, then started again) from training
into the same folder at once: the second waits for the first, then only loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rcl.profiles import Config

CHAPTERS = ("00", "01", "02", "03", "04", "05", "06", "07", "08", "09")
JOBS_DIR = "jobs"
STATES = ("queued", "submitted", "running", "done", "skipped", "failed", "blocked")
FINAL = ("done", "skipped", "failed", "blocked")
# a job's stderr carries tqdm bars: one refresh every 30 s keeps a days-long log readable
_JOB_ENV = {"TQDM_MININTERVAL": "30"}


class JobsError(RuntimeError):
    """A problem with the job graph or its launcher (bad options, a submission the cluster refused)."""


class JobsStopped(Exception):
    """:func:`run_jobs` was told to stop (``stop`` set): the jobs in flight were cancelled; a rerun resumes them."""


# --------------------------------------------------------------------------------------------------- the graph
@dataclass(frozen=True)
class Job:
    """One load-or-train call. ``name``: its checkpoint folder within the run folder; ``kind``: a key of
    :data:`KINDS`, called with ``args``; ``needs``: names of the jobs whose models it starts from."""

    name: str
    kind: str
    args: tuple = ()
    needs: tuple[str, ...] = ()

    @property
    def slug(self) -> str:
        """The name as one folder name (``"04_scenarios--CL-Full-AT"``): ``run_dir/jobs/<slug>``."""
        return self.name.replace("/", "--")


class _Graph:
    """Jobs in an order where every job comes after what it needs; the same model asked twice is one job."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.jobs: dict[str, Job] = {}

    def _add(self, folder: Path, kind: str, args: tuple = (), needs: tuple[str, ...] = ()) -> str:
        name = Path(folder).relative_to(self.cfg.run_dir).as_posix()
        self.jobs.setdefault(name, Job(name, kind, args, needs))
        return name

    # the main study (rcl.study)
    def pretrain(self, scheme: str, adversarial: bool) -> str:
        from rcl import study

        return self._add(study.pretrain_dir(self.cfg, scheme, adversarial), "pretrain", (scheme, adversarial))

    def scenario(self, scheme: str, scenario: str) -> str:
        from rcl import study

        adversarial_pretraining = study.SCENARIO_RECIPE[scenario][0]
        encoder = self.pretrain(scheme, adversarial_pretraining)
        return self._add(study.scenario_dir(self.cfg, scheme, scenario), "scenario", (scheme, scenario), (encoder,))

    def eps_scenario(self, scheme: str, eps: float) -> str:
        """The AT classifier of ``scheme`` trained at radius ``eps`` (chapter 06's sweep); the profile's own radius
        is chapter 04's AT model."""
        from rcl import study

        cfg = study.with_training_eps(self.cfg, eps)
        if study.scenario_dir(cfg, scheme, "AT") == study.scenario_dir(self.cfg, scheme, "AT"):
            return self.scenario(scheme, "AT")
        return self._add(study.scenario_dir(cfg, scheme, "AT"), "eps-scenario", (scheme, eps))

    def random_encoder_linear(self) -> str:
        from rcl import study

        return self._add(self.cfg.run_dir / study.SCHEME_CHAPTER["CL"] / "random-encoder-linear", "random-linear")

    # ACL (rcl.acl)
    def acl_pretrain(self, source: str) -> str:
        from rcl import acl

        return self._add(acl.chapter_dir(self.cfg) / f"pretrain-{source}", "acl-pretrain", (source,))

    def acl_finetune(self, source: str, mode: str) -> str:
        from rcl import acl

        needs = self.acl_pretrain(source)
        folder = acl.chapter_dir(self.cfg) / f"finetune-{source}-{mode}"
        return self._add(folder, "acl-finetune", (source, mode), (needs,))

    # false negatives (rcl.false_negatives): a model at an earlier budget is trained first and continued
    def fn_network(self, name: str, epochs: int) -> str:
        from rcl import false_negatives as fn

        earlier = [e for n, e in fn.models(self.cfg) if n == name and e < epochs]
        needs = (self.fn_network(name, max(earlier)),) if earlier else ()
        return self._add(fn._budget_dir(self.cfg, name, epochs), "fn-network", (name, epochs), needs)

    def fn_classifier(self, name: str, epochs: int) -> str:
        from rcl import false_negatives as fn

        net = self.fn_network(name, epochs)
        if name == fn.SUPERVISED:
            return net
        folder = fn._budget_dir(self.cfg, f"linear-{fn._folder(name)}", epochs)
        return self._add(folder, "fn-classifier", (name, epochs), (net,))


def _chapter(graph: _Graph, number: str, params: Mapping[str, Any]) -> None:
    """Add the models chapter ``number`` loads or trains, with its parameters ``params`` (its ``-p`` values)."""
    from rcl import acl, study
    from rcl import false_negatives as fn

    cfg = graph.cfg
    smoke = cfg.profile == "smoke"
    if number == "01":
        for adversarial in (False, True):
            graph.pretrain("SL", adversarial)
    elif number in ("02", "03"):
        scheme = "CL" if number == "02" else "SCL"
        for scenario in ("ST", "AT"):
            graph.scenario(scheme, scenario)
        if number == "02":
            graph.random_encoder_linear()
        train_missing = params.get("train_missing")
        if number == "03" and (not smoke if train_missing is None else train_missing):
            # chapter 03 trains what chapters 01/02 left missing (its train_missing parameter)
            for adversarial in (False, True):
                graph.pretrain("SL", adversarial)
                graph.scenario("CL", "AT" if adversarial else "ST")
    elif number == "04":
        for scheme in study.SCHEMES:
            for scenario in study.SCENARIOS:
                graph.scenario(scheme, scenario)
    elif number in ("05", "06"):
        scenarios = params.get("scenarios") or study.chapter_scenarios(cfg, number)  # the chapters' own default
        for scheme in study.SCHEMES:
            for scenario in [scenarios] if isinstance(scenarios, str) else scenarios:
                graph.scenario(scheme, scenario)
        if number == "06":
            for scheme in study.sweep_schemes(cfg):
                for eps in study.EPS_SWEEP:
                    graph.eps_scenario(scheme, eps)
    elif number == "07":
        plan = acl.plan(cfg, variants=params.get("variants"), modes=params.get("modes"))
        for variant in plan.variants:
            graph.acl_pretrain(variant)
        for source in (*plan.variants, acl.BASELINE):
            for mode in plan.modes:
                graph.acl_finetune(source, mode)
    elif number == "08":
        for name, epochs in fn.models(cfg):
            graph.fn_classifier(name, epochs)


def chapter_jobs(cfg: Config, chapter: str, params: Mapping[str, Any] | None = None) -> list[Job]:
    """The jobs that chapter ``chapter`` (``"04"`` or ``"04_training_scenarios"``) needs, what they need first.

    ``params``: the chapter's own parameters that change what it trains (``scenarios`` of 05/06, ``variants`` and
    ``modes`` of 07, ``train_missing`` of 03), as ``rcl.reproduce`` hands them to the notebook. Chapters 00 and 09
    train nothing.
    """
    number = str(chapter)[:2].zfill(2)
    if number not in CHAPTERS:
        raise ValueError(f"unknown chapter {chapter!r}; chapters are {', '.join(CHAPTERS)}")
    graph = _Graph(cfg)
    _chapter(graph, number, dict(params or {}))
    return list(graph.jobs.values())


def study_jobs(
    cfg: Config, chapters: Sequence[str] | None = None, params: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Job]:
    """The jobs of the chapters asked for (default: every chapter), each once, every job after what it needs.

    ``chapters``: chapter numbers as ``python -m rcl.reproduce --only`` takes them (``["02", "04"]``); ``params``:
    each chapter's parameters by number (see :func:`chapter_jobs`).
    """
    jobs: dict[str, Job] = {}
    for chapter in chapters or CHAPTERS:
        for job in chapter_jobs(cfg, chapter, (params or {}).get(str(chapter)[:2].zfill(2))):
            jobs.setdefault(job.name, job)
    return list(jobs.values())


# --------------------------------------------------------------------------------------------------- one job
def _pretrain(cfg, data, scheme: str, adversarial: bool) -> None:
    from rcl import study

    study.pretrain(cfg, data, scheme, adversarial)


def _scenario(cfg, data, scheme: str, scenario: str) -> None:
    from rcl import study

    study.scenario_model(cfg, data, scheme, scenario)


def _eps_scenario(cfg, data, scheme: str, eps: float) -> None:
    from rcl import study

    study.scenario_model(study.with_training_eps(cfg, eps), data, scheme, "AT")


def _random_linear(cfg, data) -> None:
    from rcl import study

    study.random_encoder_linear(cfg, data)


def _acl_pretrain(cfg, data, source: str) -> None:
    from rcl import acl

    acl.pretrained(cfg, data, source, acl.plan(cfg))


def _acl_finetune(cfg, data, source: str, mode: str) -> None:
    from rcl import acl

    plan = acl.plan(cfg)  # the splits depend on the profile only, not on the variants or modes asked for
    acl.finetune(cfg, data, acl.pretrained(cfg, data, source, plan), source, mode, plan)


def _fn_network(cfg, data, name: str, epochs: int) -> None:
    from rcl import false_negatives as fn

    fn.network(cfg, data, name, epochs)


def _fn_classifier(cfg, data, name: str, epochs: int) -> None:
    from rcl import false_negatives as fn

    fn.classifier(cfg, data, name, epochs)


KINDS: dict[str, Callable[..., None]] = {
    "pretrain": _pretrain,
    "scenario": _scenario,
    "random-linear": _random_linear,
    "eps-scenario": _eps_scenario,
    "acl-pretrain": _acl_pretrain,
    "acl-finetune": _acl_finetune,
    "fn-network": _fn_network,
    "fn-classifier": _fn_classifier,
}


@dataclass(frozen=True)
class JobSettings:
    """What a job process needs to rebuild the chapters' Config: ``rcl.course.setup(profile, dataset, device,
    run_dir=run_dir, overrides=overrides)``. ``device`` is the one asked for (``"auto"``, ``"cuda"``, ``"cpu"``),
    resolved where the job runs; ``threads``: torch CPU threads per job (None: the machine's default)."""

    profile: str
    dataset: str
    device: str
    run_dir: str
    overrides: dict = field(default_factory=dict)
    threads: int | None = None

    @classmethod
    def of(cls, cfg: Config, device: str | None = None, threads: int | None = None) -> JobSettings:
        """Settings that rebuild ``cfg`` exactly (every field of it), on ``device`` (default: ``cfg.device``'s type)."""
        fixed = ("profile", "dataset", "device", "run_dir")
        overrides = {k: v for k, v in cfg.as_dict().items() if k not in fixed}
        return cls(cfg.profile, cfg.dataset, device or cfg.device.type, str(cfg.run_dir), overrides, threads)

    def config(self) -> Config:
        from rcl import course

        return course.setup(
            self.profile,
            self.dataset,
            self.device,
            run_dir=self.run_dir,
            overrides=dict(self.overrides),
            check_data=False,
        )

    def fingerprint(self, job: Job) -> dict:
        """What a finished job ran with; a later run skips it only when this is the same (run folder aside)."""
        return json.loads(
            json.dumps(
                {
                    "job": dataclasses.asdict(job),
                    "profile": self.profile,
                    "dataset": self.dataset,
                    "device": self.device,
                    "overrides": {k: v for k, v in self.overrides.items()},
                },
                default=str,
                sort_keys=True,
            )
        )


def job_dir(run_dir: str | Path, job: Job) -> Path:
    """``run_dir/jobs/<job slug>``: the job's logs, status and completion record."""
    return Path(run_dir) / JOBS_DIR / job.slug


def _stamps(folder: Path) -> dict[str, list[int]]:
    """``{file: [mtime_ns, size]}`` of the files a job left in its checkpoint folder (temporaries aside)."""
    if not folder.is_dir():
        return {}
    return {
        p.relative_to(folder).as_posix(): [p.stat().st_mtime_ns, p.stat().st_size]
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def is_done(job: Job, settings: JobSettings) -> bool:
    """True when ``job`` finished with these settings and the checkpoint files it left are unchanged."""
    record = job_dir(settings.run_dir, job) / "done.json"
    try:
        done = json.loads(record.read_text())
    except (OSError, ValueError):
        return False
    return done.get("settings") == settings.fingerprint(job) and done.get("files") == _stamps(
        Path(settings.run_dir) / job.name
    )


@contextlib.contextmanager
def _job_lock(folder: Path, name: str) -> Iterator[None]:
    """Hold ``folder/.lock`` while the job trains: a second copy of the job waits for the first, then loads."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{name}: another copy of this job holds {folder / '.lock'}; waiting for it", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


_LOADED: dict[tuple, Any] = {}  # a worker process's last dataset, by (dataset, root, n_train, n_test, seed)


class JobCall:
    """What a job process runs: load the data, then the job's load-or-train call; returns ``{"seconds": ...}``.

    Checkpointable (submitit's protocol: a ``checkpoint`` method): when SLURM pre-empts the job or its time runs
    out, submitit requeues this same call, which resumes from the last epoch's checkpoint.
    """

    def __init__(self, settings: JobSettings, job: Job) -> None:
        self.settings = settings
        self.job = job

    def checkpoint(self, *args, **kwargs):
        """The same call again: the per-epoch checkpoints on disk are the state to resume from."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def __call__(self) -> dict:
        from rcl.data import load_dataset
        from rcl.results import save_json

        settings, job = self.settings, self.job
        if job.kind not in KINDS:
            raise JobsError(f"unknown job kind {job.kind!r}; known: {', '.join(KINDS)}")
        folder = job_dir(settings.run_dir, job)
        with _job_lock(folder, job.name):
            if settings.threads:
                import torch

                torch.set_num_threads(settings.threads)
            cfg = settings.config()
            # no silent fallback to synthetic images here: a job never trains on stand-in data in a CIFAR folder
            key = (cfg.dataset, str(cfg.data_root), cfg.n_train, cfg.n_test, cfg.seed)
            if key not in _LOADED:  # a worker keeps its last dataset for the next job (the jobs only read it)
                _LOADED.clear()
                _LOADED[key] = load_dataset(
                    cfg.dataset, cfg.data_root, n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.seed
                )
            data = _LOADED[key]
            start = time.perf_counter()
            KINDS[job.kind](cfg, data, *job.args)
            seconds = time.perf_counter() - start
            record = {"settings": settings.fingerprint(job), "files": _stamps(cfg.run_dir / job.name)}
            save_json({**record, "seconds": seconds}, folder / "done.json")
        print(f"{job.name}: done in {seconds:.1f} s", flush=True)
        return {"seconds": seconds}


# --------------------------------------------------------------------------------------------------- launchers
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


# --------------------------------------------------------------------------------------------------- the loop
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


def _dependants(records: dict[str, JobRecord], name: str) -> list[JobRecord]:
    """Every job that needs ``name``, directly or through another job, in graph order."""
    below, found = {name}, []
    for r in records.values():
        if below.intersection(r.job.needs):
            below.add(r.job.name)
            found.append(r)
    return found


DIED = "stopped without a result: killed, out of memory, or its node lost"


def _short(error: BaseException) -> str:
    """The last line of a job's traceback (what was raised), without submitit's wrapping."""
    lines = [line for line in str(error).splitlines() if line.strip() and not line.startswith(("---", "You can"))]
    trace = [line for line in lines if not line.startswith(("  - ", "or at paths"))]
    return (trace[-1] if trace else type(error).__name__).strip()


def run_jobs(
    jobs: Sequence[Job],
    settings: JobSettings,
    launcher: LocalLauncher | SlurmLauncher,
    *,
    retries: int = 2,
    poll: float | None = None,
    echo: Callable[[str], None] = print,
    make_call: Callable[[JobSettings, Job], Callable[[], dict]] = JobCall,
    on_change: Callable[[JobRecord], None] | None = None,
    stop: threading.Event | None = None,
) -> list[JobRecord]:
    """Run ``jobs`` (every job after what it needs, as :func:`study_jobs` lists them) through ``launcher``.

    Prints one line per state change with the live count (queued / running / done / failed). A job already done
    with the same settings (``is_done``) is skipped. A job that died without finishing (killed, out of memory, node
    lost) is started again up to ``retries`` times and resumes from its last epoch; a job that raised an error fails,
    and every job that needs it is ``blocked`` and never started. Returns one :class:`JobRecord` per job; also
    writes them to ``run_dir/jobs/summary.csv``. Ctrl-C cancels the jobs in flight (a rerun resumes them).
    Among the jobs ready to start, those that more jobs wait for start first. ``make_call(settings, job)``: what
    a job process runs (default :class:`JobCall`; tests wrap it). ``on_change(record)``: called on every state
    change (from this function's thread; ``rcl.reproduce`` starts each chapter once its jobs are done). ``stop``: when
    set (from another thread), the jobs in flight are cancelled and :class:`JobsStopped` is raised.
    """
    from submitit.core.utils import FailedJobError

    if retries < 0:
        raise JobsError(f"retries must be >= 0, got {retries}")
    records = {job.name: JobRecord(job) for job in jobs}
    for job in jobs:
        missing = [n for n in job.needs if n not in records]
        if missing:
            raise JobsError(f"{job.name} needs {', '.join(missing)}, which is not among the jobs given")
    poll = poll if poll is not None else (0.5 if not launcher.eager else 10.0)
    run_dir = Path(settings.run_dir).absolute()  # submitit's paths are absolute

    def say(r: JobRecord, detail: str = "") -> None:
        stamp = time.strftime("%H:%M:%S")
        echo(
            f"[{stamp}] {r.state:<9} {r.job.name}{'  ' + detail if detail else ''}   ({_count_text(records.values())})"
        )
        _write_status(run_dir, r)
        if on_change is not None:
            on_change(r)

    def block_below(failed: JobRecord) -> None:
        for d in _dependants(records, failed.job.name):
            if d.state in FINAL:
                continue
            if d.handle is not None:
                launcher.cancel(d.handle)
                d.handle = None
            d.state, d.note = "blocked", f"needs {failed.job.name}, which failed"
            say(d, f"(needs {failed.job.name}, which failed)")

    done_before = [r for r in records.values() if is_done(r.job, settings)]
    for r in done_before:
        r.state, r.note = "skipped", "done by an earlier run"
        if on_change is not None:
            on_change(r)
    for r in records.values():  # jobs an earlier run left in the cluster's queue (it died): watch them
        status = _read_status(run_dir, r.job) if r.state == "queued" else {}
        if status.get("state") in ("submitted", "running") and status.get("job_id"):
            handle = launcher.adopt(job_dir(run_dir, r.job), str(status["job_id"]), str(status.get("where", "")))
            if handle is not None:
                r.handle, r.where, r.log = handle, status["where"], status.get("log", "")
                r.attempts, r.state = int(status.get("attempts") or 1), "submitted"
                say(r, f"on {r.where}, left by an earlier run: watching it")
    echo(
        f"rcl.jobs: {len(records)} jobs, {len(done_before)} already done; "
        f"{'SLURM' if launcher.eager else ', '.join(launcher.slots)}; logs in {run_dir / JOBS_DIR}"
    )
    waiting = {name: len(_dependants(records, name)) for name in records}
    order = sorted(records.values(), key=lambda r: -waiting[r.job.name])  # stable: graph order among equals
    try:
        while any(r.state not in FINAL for r in records.values()):
            if stop is not None and stop.is_set():
                raise JobsStopped("stopped by the runner")
            for r in order:  # start what can start
                if r.state != "queued":
                    continue
                needs = [records[n] for n in r.job.needs]
                ok = ("done", "skipped", "submitted", "running") if launcher.eager else ("done", "skipped")
                if not all(n.state in ok for n in needs) or not launcher.has_room():
                    continue
                after = [str(n.handle.job_id) for n in needs if n.state in ("submitted", "running")]
                folder = job_dir(run_dir, r.job)
                folder.mkdir(parents=True, exist_ok=True)
                submitted = launcher.submit(make_call(settings, r.job), folder, after)
                if submitted is None:  # a chapter took the last slot
                    continue
                r.handle, r.where = submitted
                r.attempts += 1
                r.log = str(Path(r.handle.paths.stderr).relative_to(run_dir))
                r.state = "submitted" if launcher.eager else "running"
                say(r, f"on {r.where}" + (f", after {', '.join(after)}" if after else ""))
            for r in records.values():  # what changed
                if r.state not in ("submitted", "running"):
                    continue
                if r.state == "submitted" and launcher.started(r.handle):
                    r.state = "running"
                    say(r, f"on {r.where}")
                if not launcher.finished(r.handle):
                    continue
                launcher.release(r.handle)
                error = r.handle.exception()
                if error is None:
                    r.seconds = float((r.handle.result() or {}).get("seconds", 0.0))
                    r.state, r.note = "done", ""
                    say(r, f"in {r.seconds:.1f} s")
                elif isinstance(error, FailedJobError):  # the job raised: running it again would raise again
                    r.state, r.note = "failed", _short(error)
                    say(r, f"{r.note}; log: {r.log}")
                    block_below(r)
                elif r.attempts <= retries:  # it died (killed, node lost): it resumes from its last epoch
                    r.state, r.note = "queued", "died; started again"
                    r.handle = None
                    say(r, f"died, starting it again (attempt {r.attempts + 1} of {retries + 1}); log: {r.log}")
                    for d in _dependants(records, r.job.name):  # SLURM: they waited on the dead attempt's id
                        if d.state == "submitted":
                            launcher.cancel(d.handle)
                            d.state, d.handle, d.attempts = "queued", None, d.attempts - 1
                else:
                    r.state, r.note = "failed", f"died {r.attempts} times ({DIED})"
                    say(r, f"{r.note}; log: {r.log}")
                    block_below(r)
            if any(r.state not in FINAL for r in records.values()):
                time.sleep(poll)
    except BaseException:
        for r in records.values():
            if r.handle is not None and r.state in ("submitted", "running"):
                launcher.cancel(r.handle)
                r.state, r.note = "queued", "cancelled (interrupted); a rerun resumes it"
                _write_status(run_dir, r)
        raise
    finally:
        launcher.close()
        _write_summary(run_dir, records.values())
    return list(records.values())


def _read_status(run_dir: Path, job: Job) -> dict:
    try:
        return json.loads((job_dir(run_dir, job) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _write_status(run_dir: Path, r: JobRecord) -> None:
    from rcl.results import save_json

    folder = job_dir(run_dir, r.job)
    folder.mkdir(parents=True, exist_ok=True)
    save_json({**r.row(), "where": r.where, "job_id": getattr(r.handle, "job_id", None)}, folder / "status.json")


def _write_summary(run_dir: Path, records: Iterable[JobRecord]) -> None:
    import pandas as pd

    from rcl.results import save_table

    (run_dir / JOBS_DIR).mkdir(parents=True, exist_ok=True)
    save_table(pd.DataFrame([r.row() for r in records]), run_dir / JOBS_DIR / "summary.csv")


def summary_rows(records: Iterable[JobRecord]) -> list[dict]:
    """One row per job (``job, state, attempts, seconds, note``) for the run's summary."""
    return [{k: v for k, v in r.row().items() if k != "log"} for r in records]


def failed_jobs(records: Iterable[JobRecord]) -> list[JobRecord]:
    """The jobs that failed or were blocked by a failed one."""
    return [r for r in records if r.state in ("failed", "blocked")]


__all__ = [
    "CHAPTERS",
    "KINDS",
    "Job",
    "JobCall",
    "JobRecord",
    "JobSettings",
    "JobsError",
    "JobsStopped",
    "LocalLauncher",
    "SlurmLauncher",
    "chapter_jobs",
    "counts",
    "failed_jobs",
    "is_done",
    "job_dir",
    "run_jobs",
    "study_jobs",
    "summary_rows",
]
