"""The GPU check: one prepared command that checks and measures rcl's CUDA path within a wall-time budget.

The command line of :mod:`rcl.bench.gpu_check` (``python -m rcl.bench.gpu_check``, or ``tools/gpu_check.sh``):
``--prepare`` fills ``.whl/`` and ``.carry/`` and prints the device call; otherwise the check runs (``--dry-run``:
tiny sizes on the CPU). The exit status is 1 when a phase failed or raised.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from rcl.bench.gpu_check.check import GpuCheck
from rcl.bench.gpu_check.context import CheckSettings
from rcl.bench.gpu_check.machine import MACHINE_FILE, load_machine
from rcl.bench.gpu_check.prepare import prepare
from rcl.bench.gpu_check.source import tree_root
from rcl.bench.gpu_records import PHASES


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rcl.bench.gpu_check [--prepare | --dry-run] [--budget-s S] [--out DIR] ...``; returns the exit
    status (1 when a phase failed or raised, or the prepared carry does not fit)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        machine = load_machine(args.machine)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    root = tree_root()
    if args.prepare:
        result = prepare(
            root,
            args.archive or machine.default_archive(root),
            python_version=args.python_version,
            budget_s=args.budget_s,
            download=not args.no_download,
            machine=machine,
        )
        return 0 if result["fits"] else 1
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else root / "runs" / "gpu-check")
    settings = CheckSettings(
        out=out,
        budget_s=args.budget_s,
        dry_run=args.dry_run,
        device=args.device,
        data=args.data,
        benchmarks=args.benchmarks,
        skip=tuple(args.skip),
        band=args.band,
        bench_repeats=args.bench_repeats,
        tests=tuple(args.tests or ()),
        machine=machine,
    )
    check = GpuCheck(settings)
    try:
        report = check.run()
    finally:
        check.cleanup()
    bad = [n for n, r in report["phases"].items() if r["status"] in ("failed", "error")]
    return 1 if bad else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rcl.bench.gpu_check",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--prepare", action="store_true", help="download the wheels, copy the data, print the run call")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU, nothing installed")
    parser.add_argument(
        "--budget-s", type=float, default=None, help="wall-time budget in seconds (default: budget_s of --machine)"
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default $OUT, else runs/gpu-check)")
    parser.add_argument("--device", default="auto", help="cuda | cpu | auto (dry run: cpu)")
    parser.add_argument(
        "--data", default="auto", help="auto (the carried archive; dry run: synthetic without it) | synthetic | PATH"
    )
    parser.add_argument("--skip", action="append", default=[], choices=PHASES, help="skip a phase (repeatable)")
    parser.add_argument("--band", type=float, default=None, help="bf16 vs fp32 accuracy band (default 0.05)")
    parser.add_argument("--bench-repeats", type=int, default=None, help="rcl.bench --repeats (default 5; dry run 1)")
    parser.add_argument("--benchmarks", type=Path, default=None, help="benchmarks folder (dry run: <out>/benchmarks)")
    parser.add_argument(
        "--tests", nargs="*", default=None, help="pytest paths (default tests/; dry run tests/test_cuda.py)"
    )
    parser.add_argument(
        "--machine",
        type=Path,
        default=None,
        help=f"the GPU machine's description: budget, phase timings, its image (default: benchmarks/{MACHINE_FILE})",
    )
    parser.add_argument("--archive", type=Path, default=None, help="--prepare: the CIFAR-10 JPEG archive to carry")
    parser.add_argument(
        "--python-version",
        default=None,
        help="--prepare: the GPU machine's Python (default: python_version of --machine)",
    )
    parser.add_argument("--no-download", action="store_true", help="--prepare: keep the wheels already in .whl/")
    return parser
