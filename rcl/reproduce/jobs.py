"""The study's models as a graph of jobs: each one load-or-train call, with the jobs whose models it starts from.

Every model of the study is a load-or-train call that already exists (:func:`rcl.study.pretrain`,
:func:`rcl.study.scenario_model`, :func:`rcl.acl.pretrain` / :func:`rcl.acl.finetune`, the runs of
:mod:`rcl.false_negatives`), writing into its checkpoint folder in the shared run folder. A :class:`Job` is one such
call, named by that folder (``"04_scenarios/CL-Full-AT"``), with the jobs whose models it starts from (``needs``: a
scenario fine-tune needs its pre-trained encoder). :func:`chapter_jobs` lists what a chapter needs, those jobs need
first; :class:`JobCall` is what a job process runs. The scheduler (:mod:`rcl.reproduce.schedule`) runs them through a
launcher (:mod:`rcl.reproduce.launchers`).

A model is the same whichever process trains it: initial weights come from (run seed, checkpoint folder)
(:func:`rcl.runtime.seeded_init`) and every random draw of training from per-epoch generators seeded by the run seed.
On a CPU, floating-point sums also depend on the number of threads: a job uses the torch default of its machine,
as the chapters do, unless ``threads`` is set (faster when several jobs share few cores; equal weights only up to
rounding). Each epoch is checkpointed, so a job that dies resumes where it stopped.

Files: ``run_dir/jobs/<job>/`` holds each job's logs (``<id>_0_log.out`` / ``.err``; on SLURM submitit's pickles), its
``status.json`` and, once done, ``done.json`` (the settings it ran with and the checkpoint files it left), so a
later run skips it while those files are unchanged. A lock file per job keeps two copies of the same job (a run
killed without its jobs, then started again) from training into the same folder at once: the second waits for the
first, then only loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rcl.profiles import Config

CHAPTERS = ("00", "01", "02", "03", "04", "05", "06", "07", "08", "09")


JOBS_DIR = "jobs"


class JobsError(RuntimeError):
    """A problem with the job graph or its launcher (bad options, a submission the cluster refused)."""


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

        adversarial_pretraining = study.RECIPES[scenario][0]
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

        needs = () if source == acl.CONTROL else (self.acl_pretrain(source),)  # the control is not pre-trained
        folder = acl.chapter_dir(self.cfg) / f"finetune-{source}-{mode}"
        return self._add(folder, "acl-finetune", (source, mode), needs)

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
        graph.scenario("CL", "AT->Full-ST")  # the budget-matched control of the Full-AT claim
        graph.random_encoder_linear()  # the floor of its verdicts (study.floor)
    elif number in ("05", "06"):
        graph.random_encoder_linear()
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
        for source in (*plan.variants, acl.BASELINE, acl.CONTROL):
            for mode in plan.modes:
                graph.acl_finetune(source, mode)
        if "DS" in plan.variants:
            for mode in acl.ablation_modes(plan):
                graph.acl_finetune(acl.ABLATION, mode)
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
    if source == acl.CONTROL:  # a lower rate where the recipe diverges on random features
        acl.finetune_control(cfg, data, acl.pretrained(cfg, data, source, plan), mode, plan)
    else:
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
    from filelock import FileLock, Timeout

    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"{name}: another copy of this job holds {folder / '.lock'}; waiting for it", flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


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
