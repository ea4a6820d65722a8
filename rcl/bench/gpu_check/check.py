"""One run of the GPU check: the five phases in order, each only when the budget still holds the least time it needs
(else recorded as skipped, with the reason), the report saved after each.

A phase is a function ``phase_*(ctx, record)`` of its own module: it reads the shared
:class:`~rcl.bench.gpu_check.context.CheckContext` and writes its figures into ``record``; it sets ``status`` only
when it did not simply succeed (``failed``, ``stopped``, ``skipped``), and an exception it raises is recorded as
``error`` without costing the other phases their figures.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

import torch

from rcl.bench.gpu_check.bench_phase import phase_bench
from rcl.bench.gpu_check.context import CheckContext, CheckSettings
from rcl.bench.gpu_check.cuda_tests import phase_cuda_tests
from rcl.bench.gpu_check.install import phase_install
from rcl.bench.gpu_check.precision import phase_precision
from rcl.bench.gpu_check.processes import tail
from rcl.bench.gpu_check.quick_slice import phase_quick_slice
from rcl.bench.gpu_records import summary_text

PHASE_FUNCTIONS: dict[str, Callable[[CheckContext, dict], None]] = {
    "install": phase_install,
    "cuda_tests": phase_cuda_tests,
    "bench": phase_bench,
    "quick_slice": phase_quick_slice,
    "precision": phase_precision,
}


class GpuCheck:
    """One run of the check; :meth:`run` returns the report (also written to ``<out>/gpu-check.json``), and
    :meth:`cleanup` removes its temporary folders. ``ctx`` is the state the phases share."""

    def __init__(self, settings: CheckSettings) -> None:
        self.ctx = CheckContext(settings)

    def run(self) -> dict:
        """Run every phase; torch's thread count is restored afterwards (a dry run on a CPU uses one thread)."""
        threads = torch.get_num_threads()
        if self.ctx.dry and self.ctx.device.type == "cpu":
            torch.set_num_threads(1)  # see CheckContext.env
        try:
            return run_phases(self.ctx)
        finally:
            torch.set_num_threads(threads)

    def cleanup(self) -> None:
        """Remove the unpacked data and the checkpoints (temporary folders this run made)."""
        self.ctx.cleanup()


def run_phases(ctx: CheckContext) -> dict:
    """Each phase in turn (or its reason to skip), the report saved before and after each; returns the report."""
    ctx.log(
        f"device {ctx.name} ({ctx.device}), budget {ctx.budget.total_s:g} s, "
        f"{'dry run (tiny sizes)' if ctx.dry else 'full run'}, out {ctx.out}"
    )
    ctx.save()
    for name, fn in PHASE_FUNCTIONS.items():
        record = ctx.report["phases"][name]
        need = ctx.plan.min_s[name]
        if name in ctx.s.skip:
            record.update(status="skipped", reason=f"skipped on request (--skip {name})")
        elif not ctx.budget.allows(need):
            record.update(status="skipped", reason=ctx.budget.why_not(need, f"the {name} phase"))
        else:
            _run_phase(ctx, name, fn, record)
        ctx.log(f"phase {name}: {record['status']}" + (f" ({record['reason']})" if record.get("reason") else ""))
        ctx.save()
    ctx.release()
    ctx.log(summary_text(ctx.report))
    return ctx.report


def _run_phase(ctx: CheckContext, name: str, fn: Callable[[CheckContext, dict], None], record: dict) -> None:
    """Run one phase, timed; ``done`` unless it set another status, ``error`` (with the traceback) if it raised."""
    ctx.log(f"phase {name}: starting, {ctx.budget.left():.0f} s left")
    record["status"] = "running"
    ctx.save()
    start = time.monotonic()
    try:
        fn(ctx, record)
    except Exception as err:  # a broken phase must not cost the others their figures
        record.update(status="error", error=tail(traceback.format_exc(), 4000))
        ctx.log(f"phase {name}: error {type(err).__name__}: {err}")
    record["seconds"] = round(time.monotonic() - start, 2)
    if record["status"] == "running":
        record["status"] = "done"
