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

``--launcher local`` or ``slurm`` trains the chapters' models as a graph of jobs (``rcl.reproduce.jobs``) in parallel:
``local`` on this machine, one job per GPU of ``--gpus`` (default: every visible GPU) or ``--workers`` jobs at a
time on the CPU; ``slurm`` submits one batch job per model to a cluster (``--partition``, ``--time``,
``--gpus-per-job``, ``--cpus-per-job``, ``--slurm-arg account=lab``), what a job needs as ``afterok`` dependencies.
Each chapter starts as soon as the jobs it needs are done (and the chapters it reads: 03 after 01 and 02, 09 last),
beside the jobs still training and the other chapters, and only loads: locally a chapter takes one of the launcher's
slots (its GPU, or a CPU worker), so jobs and chapters together never use more; on SLURM the chapters run here, one
at a time. A job that dies is started again (``--retries``) and resumes from its last epoch; a job or chapter that
fails keeps only what needs it from running, the others run on, and the summary names them. ``--jobs-only`` stops
after the jobs. The runner keeps the run folder's lock while the jobs run.

The subpackage, one concern per module: :mod:`~rcl.reproduce.cli` (the command line), :mod:`~rcl.reproduce.runner`
(a run from settings to summary), :mod:`~rcl.reproduce.params` (chapters and ``-p``), :mod:`~rcl.reproduce.chapters`
(one chapter executed, and when it is complete), :mod:`~rcl.reproduce.jobs` (the models as jobs),
:mod:`~rcl.reproduce.schedule` (the one scheduler of jobs and chapters), :mod:`~rcl.reproduce.launchers` (local
workers, SLURM), :mod:`~rcl.reproduce.lock`, :mod:`~rcl.reproduce.summary`, :mod:`~rcl.reproduce.provenance` and
:mod:`~rcl.reproduce.publish` (reference runs).
"""

import importlib

# the public names and the module that holds each: loaded on first use (PEP 562), so that importing one small module
# of the runner (``rcl.reproduce.provenance`` for the benchmarks) does not load all of it
_EXPORTS = {
    "LOCK_NAME": "lock",
    "NOTEBOOK_DIR": "params",
    "ChapterFailed": "errors",
    "ReproduceError": "errors",
    "RunFolderBusy": "errors",
    "auto_profile": "runner",
    "code_version": "chapters",
    "find_notebooks": "params",
    "incomplete_reason": "chapters",
    "is_complete": "chapters",
    "main": "cli",
    "make_launcher": "launchers",
    "notebook_parameters": "params",
    "notebook_version": "chapters",
    "parse_params": "params",
    "route_params": "params",
    "run": "runner",
    "run_lock": "lock",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"rcl.reproduce.{_EXPORTS[name]}"), name)
    else:
        try:
            value = importlib.import_module(f"rcl.reproduce.{name}")  # a submodule: rcl.reproduce.jobs
        except ModuleNotFoundError as err:
            if err.name != f"rcl.reproduce.{name}":  # the submodule exists but needs a missing package
                raise
            raise AttributeError(f"module 'rcl.reproduce' has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
