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

from rcl.reproduce.chapters import code_version, incomplete_reason, is_complete, notebook_version
from rcl.reproduce.cli import main
from rcl.reproduce.errors import ChapterFailed, ReproduceError, RunFolderBusy
from rcl.reproduce.launchers import make_launcher
from rcl.reproduce.lock import LOCK_NAME, run_lock
from rcl.reproduce.params import NOTEBOOK_DIR, find_notebooks, notebook_parameters, parse_params, route_params
from rcl.reproduce.runner import auto_profile, run

__all__ = [
    "LOCK_NAME",
    "NOTEBOOK_DIR",
    "ChapterFailed",
    "ReproduceError",
    "RunFolderBusy",
    "auto_profile",
    "code_version",
    "find_notebooks",
    "incomplete_reason",
    "is_complete",
    "main",
    "make_launcher",
    "notebook_parameters",
    "notebook_version",
    "parse_params",
    "route_params",
    "run",
    "run_lock",
]
