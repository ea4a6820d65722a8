"""Phase 3 of the GPU check, ``bench``: ``python -m rcl.bench --device cuda --size full`` (eager and
``compile=True``) in a subprocess, its JSON copied to ``benchmarks/<device>-full.json`` and its headline figures
recorded. The dry run runs ``--size tiny``, eager only, without DataLoader workers.
"""

from __future__ import annotations

import json

from rcl.bench.gpu_check.context import CheckContext
from rcl.bench.gpu_check.processes import run_subprocess, tail
from rcl.bench.report import summary


def phase_bench(ctx: CheckContext, record: dict) -> None:
    """Run the bench (once more without workers if its DataLoader workers died) and keep its report."""
    size = "tiny" if ctx.dry else "full"
    repeats = ctx.s.bench_repeats or (1 if ctx.dry else 5)
    tmp_json = ctx.temp_dir("rcl-gpu-check-bench-") / "bench.json"
    cmd = [ctx.s.python, "-m", "rcl.bench", "--device", str(ctx.device), "--size", size]
    cmd += ["--repeats", str(repeats), "--out", str(tmp_json)]
    if ctx.dry:  # compiling costs a minute on a small CPU: the dry run checks the eager path only
        cmd += ["--no-compile", "--workers", "0", "--threads", "1"]
    timeout = ctx.timeout("bench", after=("quick_slice", "precision"))
    rc, seconds, text, timed_out = run_subprocess(cmd, timeout_s=timeout, env=ctx.env(), cwd=ctx.root, log=ctx.log)
    if rc != 0 and not timed_out and "--workers" not in cmd and "DataLoader" in text:
        # the baseline's worker processes died (a small /dev/shm, say): once more without workers
        record["first_attempt"] = {"returncode": rc, "seconds": round(seconds, 2), "output": tail(text, 1500)}
        cmd += ["--workers", "0"]
        timeout = min(ctx.timeout("bench", after=("quick_slice", "precision")), ctx.plan.cap_s["bench"] - seconds)
        if timeout >= ctx.plan.min_s["bench"]:
            rc, more, text, timed_out = run_subprocess(cmd, timeout_s=timeout, env=ctx.env(), cwd=ctx.root, log=ctx.log)
            seconds += more
    record.update(command=" ".join(cmd[1:]), returncode=rc, bench_seconds=round(seconds, 2))
    if rc != 0 or not tmp_json.is_file():
        status = "stopped" if timed_out else "failed"
        why = f"budget: killed after {seconds:.0f} s" if timed_out else f"rcl.bench exited {rc}"
        record.update(status=status, reason=why, output=tail(text))
        return
    _keep_report(ctx, record, json.loads(tmp_json.read_text()))


def _keep_report(ctx: CheckContext, record: dict, report: dict) -> None:
    """Write the bench's report to ``benchmarks/<device>-<size>.json`` and record its headline figures."""
    name = f"{ctx.slug}-{report['settings']['size']}.json"
    (ctx.bench_dir / name).write_text(json.dumps(report, indent=2) + "\n")
    if name not in ctx.written:
        ctx.written.append(name)
    record.update(
        json=f"benchmarks/{name}",
        summary=summary(report),
        compile_seconds=((report["figures"]["simclr_step"].get("ours_compiled") or {}).get("compile_seconds")),
        withheld={
            k: v.get("withheld") or v.get("withheld_compiled")
            for k, v in report["figures"].items()
            if isinstance(v, dict) and (v.get("withheld") or v.get("withheld_compiled"))
        },
    )
