"""The run: settings checked, the run folder locked, the chapters (and the jobs) scheduled, the summary written,
and the run published when asked (``python -m rcl.reproduce``'s :func:`run`)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rcl import profiles
from rcl.course import setup
from rcl.fileio import printable, symbolic_links
from rcl.profiles import resolve
from rcl.reproduce import jobs, provenance, publish, schedule
from rcl.reproduce.chapters import incomplete_reason
from rcl.reproduce.errors import ChapterFailed, ReproduceError
from rcl.reproduce.launchers import LAUNCHERS, LocalLauncher, SlurmLauncher, cpu_threads, make_launcher
from rcl.reproduce.lock import run_lock
from rcl.reproduce.params import (
    NOTEBOOK_DIR,
    SETTINGS,
    _with_data_root,
    find_notebooks,
    notebook_parameters,
    route_params,
)
from rcl.reproduce.schedule import Outcome, failed_jobs
from rcl.reproduce.summary import summary
from rcl.runtime import PRECISION_ENV, precision_choice, project_root
from rcl.verdicts import PUBLISHING_ENV


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
    trains what it needs), ``"local"`` or ``"slurm"`` (the chapters' models as jobs, ``rcl.reproduce.jobs``, each
    chapter once its own are done), with ``launch`` the launcher's options (see ``make_launcher``); ``jobs_only``:
    stop after the jobs. Raises ``ReproduceError`` (or ``ValueError`` from the profile) before any chapter runs for
    bad settings, an unwritable or busy run folder, and ``ChapterFailed`` (a ``SystemExit``) when a chapter fails or
    is interrupted, or when a job failed (after the chapters that did not need it).

    ``publish_to``: after a complete run, copy it there as a reference run (``rcl.reproduce.publish``; the checkout
    must have no local changes, checked before anything runs); ``note``: a line for its README (e.g. where the data
    came from).
    """
    extra, launch = dict(extra or {}), dict(launch or {})
    started, commit, at_start = time.time(), None, None
    root = project_root(notebook_dir)  # the checkout whose chapters run, wherever the command was started
    if publish_to is not None:
        commit, at_start = publish.check_clean(root), provenance.machine()
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
        plan = _plan(profile, dataset, device, out, only, extra, notebook_dir, launcher, launch, jobs_only, root)
        if publish_to is not None:  # before anything runs: a refused destination must not cost the run
            publish_to = publish.check_destination(publish_to, plan.run_dir, root)
        _writable(plan.run_dir)
        with run_lock(plan.run_dir, wait=wait):
            outcome = _execute(plan, launch, force=force, debug=debug, jobs_only=jobs_only)
        failed = failed_jobs(outcome.records)
        if outcome.failures:  # the other chapters ran on, the summary has them all
            raise ChapterFailed(
                "\n".join(outcome.failures) + _jobs_failed(failed, outcome.records, outcome.status, plan.run_dir)
            )
        if publish_to is not None and not failed and not jobs_only:
            _check_publishable(plan)
            dest = publish.publish(
                plan.run_dir,
                publish_to,
                commit=commit,
                settings=plan.cfg.as_dict(),
                expected=[nb.name for nb in plan.notebooks],
                started=started,
                machine_at_start=at_start,
                note=note,
                root=root,
            )
            print(f"published to {dest} (commit {commit[:12]}; see {dest / publish.PROVENANCE})")
        if failed:
            raise ChapterFailed(_jobs_failed(failed, outcome.records, outcome.status, plan.run_dir))
    return plan.run_dir


@dataclass
class _Plan:
    """What a run will do, every setting checked: the profile's Config, the chapters to run (``notebooks``) among
    all of them (``every``), each chapter's own parameters (``routed``), the run folder, the launcher (None: no
    jobs)."""

    cfg: profiles.Config
    root: Path
    run_dir: Path
    notebooks: list[Path]
    every: list[Path]
    routed: dict[Path, dict]
    extra: dict
    base: dict
    data_root: str
    fell_back: bool
    launcher: LocalLauncher | SlurmLauncher | None
    device: str

    @property
    def parameters(self) -> dict[Path, dict]:
        """What papermill gives each chapter: the runner's options, then its own parameters."""
        return {nb: {**self.base, **given} for nb, given in self.routed.items()}


def _plan(profile, dataset, device, out, only, extra, notebook_dir, launcher, launch, jobs_only, root) -> _Plan:
    """Every setting resolved and checked before anything runs (profile, dataset, -p values, launcher, folder)."""
    every = find_notebooks(notebook_dir)
    notebooks = find_notebooks(notebook_dir, only)
    routed = route_params(extra, notebooks, every)
    settings = {k: v for k, v in extra.items() if k in SETTINGS}
    if launcher not in LAUNCHERS:
        raise ReproduceError(f"unknown launcher {launcher!r}; choose one of {', '.join(LAUNCHERS)}")
    if jobs_only and launcher == "none":
        raise ReproduceError("--jobs-only runs the training jobs without the notebooks: add --launcher local or slurm")
    here = _planning_device(device, profile, launcher, jobs_only)
    if profile == "auto":
        profile = auto_profile(here, dataset, root)
    requested = resolve(profile, dataset=dataset, device=here, run_dir=out).dataset
    cfg = setup(profile, dataset, here, run_dir=out, overrides=settings)  # checks every setting first
    run_dir = cfg.run_dir.resolve()
    _check_run_dir(run_dir, notebook_dir)
    data_root = str(Path(cfg.data_root).absolute())
    base = {"profile": cfg.profile, "dataset": cfg.dataset, "device": device, "run_dir": str(run_dir)}
    scale_out = make_launcher(launcher, cfg, **launch) if launcher != "none" else None
    fell_back = cfg.dataset != requested  # setup falls back to synthetic, loudly, when the data is missing
    routed = _with_data_root(routed, data_root)
    return _Plan(cfg, root, run_dir, notebooks, every, routed, extra, base, data_root, fell_back, scale_out, device)


def _execute(plan: _Plan, launch: dict, *, force: bool, debug: bool, jobs_only: bool) -> Outcome:
    """Say what runs, run the graph of jobs and chapters, write the summary; the run folder is locked."""
    cfg = plan.cfg
    precision, precision_why = precision_choice(cfg.device, cfg.precision)
    print(f"rcl.reproduce: profile={cfg.profile} dataset={cfg.dataset} device={cfg.device} -> {plan.run_dir}")
    print(f"rcl.reproduce: precision {precision} ({precision_why}; -p precision=fp32|bf16 chooses)")
    unused = sorted(
        k for k in plan.extra if k not in SETTINGS and not any(k in notebook_parameters(nb) for nb in plan.notebooks)
    )
    if unused:
        print(f"rcl.reproduce: note: -p {', '.join(unused)} is a parameter of none of the chapters run here")
    threads, threads_note = cpu_threads(plan.launcher, launch.get("threads"))
    if threads_note:
        print(f"rcl.reproduce: note: {threads_note}")
    needed = {}
    if plan.launcher is not None:
        needed = {nb: jobs.chapter_jobs(cfg, nb.name[:2], plan.routed[nb]) for nb in plan.notebooks}
    graph = list({job.name: job for chapter in needed.values() for job in chapter}.values())
    chapters = [] if jobs_only else plan.notebooks
    started = time.perf_counter()
    outcome = schedule.run_graph(
        graph,
        schedule.chapter_tasks(chapters, plan.parameters, needed, in_order=plan.launcher is None),
        settings=jobs.JobSettings.of(cfg, device=plan.device, threads=threads) if plan.launcher else None,
        launcher=plan.launcher,
        run_dir=plan.run_dir,
        retries=launch.get("retries", 2),
        threads=threads,
        force=force,
        debug=debug,
    )
    wall = time.perf_counter() - started if plan.launcher is not None else None
    job_rows = schedule.summary_rows(outcome.records) if plan.launcher is not None else None
    text = summary(
        plan.run_dir,
        outcome.status,
        dataset=cfg.dataset,
        fell_back=plan.fell_back,
        jobs=job_rows,
        wall=wall,
        commit=provenance.describe_commit(plan.root),  # the checkout that ran, not the current folder's
    )
    print(text)
    print(f"summary written to {plan.run_dir / 'summary.md'} and {plan.run_dir / 'summary.csv'}")
    return outcome


def _check_run_dir(run_dir: Path, notebook_dir: Path) -> None:
    """Refuse a run folder whose ``notebooks/`` would be the course's own (``--out .`` from the checkout would
    overwrite the chapters with executed copies), that holds the checkout, or that holds a symbolic link (a chapter
    folder linked elsewhere would send the run's files over someone else's)."""
    root = project_root(notebook_dir)
    if (run_dir / "notebooks").resolve() == notebook_dir.resolve() or run_dir == root or run_dir in root.parents:
        raise ReproduceError(
            f"--out {run_dir} would write executed chapters over the course's own notebooks in {notebook_dir}: "
            "give a folder of its own, e.g. runs/<name> (the default is runs/<profile>-<dataset>)"
        )
    links = symbolic_links(run_dir)
    if links:
        shown = ", ".join(f"{printable(p.relative_to(run_dir))} -> {printable(os.readlink(p))}" for p in links[:3])
        more = f" and {len(links) - 3} more" if len(links) > 3 else ""
        raise ReproduceError(
            f"run folder {run_dir} holds symbolic links ({shown}{more}): the runner and the chapters write only "
            "into real folders inside the run folder, never through a link to another place. Replace each link with "
            "a copy of what it points to, or pick another folder with --out"
        )


def _check_publishable(plan: _Plan) -> None:
    """A publication is one run: every chapter of the course complete in the run folder with this run's settings."""
    routed = _with_data_root(route_params(plan.extra, plan.every, plan.every), plan.data_root)
    stale = []
    for notebook in plan.every:
        executed = plan.run_dir / "notebooks" / notebook.name
        reason = incomplete_reason(executed, {**plan.base, **routed[notebook]}, plan.run_dir, notebook)
        if reason is not None:
            stale.append(f"{notebook.name} ({reason})")
    if stale:
        raise publish.NotPublishable(
            f"cannot publish {plan.run_dir}: a publication is the whole course run with one set of settings, and "
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
        _load(laptop, n_train=None, n_test=None)  # is it there; the sizes are checked once the profile is set
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
