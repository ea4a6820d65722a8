"""Phase 2 of the GPU check, ``cuda_tests``: ``pytest -k cuda`` (tests whose name or marker says cuda; they skip
without a GPU), its counts parsed from pytest's summary line.
"""

from __future__ import annotations

import re

from rcl.bench.gpu_check.context import CheckContext
from rcl.bench.gpu_check.processes import run_subprocess, tail


def phase_cuda_tests(ctx: CheckContext, record: dict) -> None:
    """Run the CUDA tests in a subprocess; ``failed`` when one fails or errs, ``stopped`` when the budget ends it."""
    paths = list(ctx.s.tests) or (["tests/test_cuda.py"] if ctx.dry else ["tests"])
    cmd = [ctx.s.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", "-rfEs"]
    cmd += ["--continue-on-collection-errors", "--ignore=tests/test_gpu_check.py", *paths]
    timeout = ctx.timeout("cuda_tests", after=("bench", "quick_slice", "precision"))
    rc, seconds, text, timed_out = run_subprocess(cmd, timeout_s=timeout, env=ctx.env(), cwd=ctx.root, log=ctx.log)
    counts = _counts(text)
    record.update(
        command=" ".join(cmd[1:]),
        returncode=rc,
        pytest_seconds=round(seconds, 2),
        **counts,
        output=tail(text),
    )
    if timed_out:
        record.update(status="stopped", reason=f"budget: pytest killed after {seconds:.0f} s")
    elif counts["failed"] or counts["errors"] or rc not in (0, 5):
        record.update(
            status="failed", reason=f"pytest exited {rc}: {counts['failed']} failed, {counts['errors']} errors"
        )
    elif rc == 5:
        record["note"] = "no test selected"


def _counts(text: str) -> dict[str, int]:
    """Passed, failed, skipped, errors and deselected, from the last summary line of pytest's output."""
    counts = {k: 0 for k in ("passed", "failed", "skipped", "errors", "deselected")}
    summary = [line for line in text.splitlines() if re.search(r"\b(passed|failed|skipped|error|deselected)", line)]
    if summary:
        for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary[-1]):
            counts["errors" if word.startswith("error") else word] = int(number)
    return counts
