"""Speed benchmark: ``python -m rcl.bench`` measures rcl's fast path against the usual way of writing it.

The command line of :mod:`rcl.bench`: run every measurement (:func:`rcl.bench.run.run_bench`), print the table,
write the JSON report (default ``benchmarks/<device>-<size>.json``) and, when it lands in ``benchmarks/``, rebuild
``benchmarks/README.md``; ``--render-readme`` only rebuilds the README.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from rcl.bench.readme import render_readme
from rcl.bench.report import format_report
from rcl.bench.run import device_name, run_bench, slug
from rcl.bench.settings import SIZES
from rcl.runtime import pick_device, project_root


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rcl.bench [--device D] [--size S] [--out PATH] ...``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m rcl.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="cpu | cuda | auto (default: auto)")
    parser.add_argument("--size", choices=sorted(SIZES), default=None, help="default: full on CUDA, small on CPU")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/<device>-<size>.json)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median reported)")
    parser.add_argument("--workers", type=int, default=None, help="baseline DataLoader workers (default 2 on CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the compile=True training step (saves its compilation)"
    )
    parser.add_argument("--render-readme", action="store_true", help="only rebuild benchmarks/README.md")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    folder = project_root() / "benchmarks"
    if args.render_readme:
        print(render_readme(folder))
        return 0
    report = run_bench(
        args.device,
        args.size,
        args.repeats,
        args.workers,
        compile=not args.no_compile,
        log=lambda m: print(m, file=sys.stderr),
    )
    print(format_report(report))
    device = pick_device(args.device)
    default_slug = "cpu" if device.type == "cpu" else slug(device_name(device))
    out = args.out or folder / f"{default_slug}-{report['settings']['size']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    if out.resolve().parent == folder.resolve():
        render_readme(folder)
        print(f"updated {folder / 'README.md'}")
    return 0
