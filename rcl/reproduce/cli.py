"""``python -m rcl.reproduce``'s command line: options -> :func:`rcl.reproduce.runner.run`, errors in one line."""

from __future__ import annotations

import argparse

from rcl.reproduce import jobs, publish
from rcl.reproduce.errors import ReproduceError
from rcl.reproduce.launchers import LAUNCHERS
from rcl.reproduce.params import parse_params
from rcl.reproduce.runner import run

DESCRIPTION = "Run the whole course headless: every notebook in order through papermill."


def _parser() -> argparse.ArgumentParser:
    """The command line's options: the run's, the launcher's (``_add_scale_out``) and the reference run's."""
    parser = argparse.ArgumentParser(prog="python -m rcl.reproduce", description=DESCRIPTION)
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
    _add_scale_out(parser)
    ref = parser.add_argument_group("reference run (rcl.reproduce.publish)")
    ref.add_argument(
        "--publish",
        default=None,
        metavar="DIR",
        help="after the run, copy its summary, tables, figures and executed notebooks to DIR with a run.json "
        "(commit, machine, wall times); needs a checkout without local changes",
    )
    ref.add_argument("--note", default=None, help="with --publish: a line for DIR/README.md, e.g. about the data")
    return parser


def _add_scale_out(parser: argparse.ArgumentParser) -> None:
    """``--launcher`` and its options: the chapters' models as parallel jobs."""
    scale = parser.add_argument_group(
        "scale out: the chapters' models as parallel jobs, each chapter once its own are done (rcl.reproduce.jobs)"
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


def main(argv: list[str] | None = None) -> None:
    """``python -m rcl.reproduce``: parse the options, run, and turn the runner's errors into one line each."""
    parser = _parser()
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
