"""Phase 1 of the GPU check, ``install``: the packages the GPU machine's image lacks (the machine file's ``lacks``)
from the wheels carried in ``.whl/`` (``pip install --no-index --no-deps --target``); rcl itself is used from the
working tree (``PYTHONPATH``). Then each is imported in a fresh interpreter and its version recorded. The dry run
installs nothing and only records which of them are found.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
import tempfile
from pathlib import Path

from rcl.bench.gpu_check.context import CheckContext
from rcl.bench.gpu_check.processes import run_subprocess, tail
from rcl.bench.gpu_check.source import WHEELS_DIR


def phase_install(ctx: CheckContext, record: dict) -> None:
    """Install what is missing (not in a dry run), then probe the imports; ``failed`` when one still fails."""
    needed = ctx.machine.lacks
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    record["missing_before"] = missing
    wheels = sorted(ctx.wheels.glob("*.whl")) if ctx.wheels.is_dir() else []
    record["wheels"] = len(wheels)
    record["project"] = f"on PYTHONPATH ({ctx.root})"
    if ctx.dry:
        record["installed"] = []
        record["note"] = "dry run: nothing installed, only the imports checked"
    elif not missing:
        record["installed"] = []
        record["note"] = "every needed package already imports"
    elif not wheels:
        record.update(
            status="failed",
            reason=f"{missing} missing and no wheels in {ctx.wheels}: run `tools/gpu_check.sh --prepare` "
            f"first and name {WHEELS_DIR} in the run call's carry",
        )
    elif not _install_wheels(ctx, record, wheels):
        return
    _probe_imports(ctx, record)


def _install_wheels(ctx: CheckContext, record: dict, wheels: list[Path]) -> bool:
    """pip-install ``wheels`` into a folder put first on ``sys.path`` and the subprocesses' PYTHONPATH (``ctx.site``);
    False (and the record ``failed`` or ``stopped``) when pip did not succeed."""
    ctx.site = Path(tempfile.gettempdir()) / "rcl-gpu-check-site"
    cmd = [ctx.s.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
    cmd += ["--no-cache-dir", "--upgrade", "--target", str(ctx.site), *map(str, wheels)]
    timeout = min(ctx.plan.cap_s["install"], ctx.budget.left())
    rc, seconds, text, timed_out = run_subprocess(
        cmd, timeout_s=timeout, env=ctx.env(site=False), cwd=ctx.root, log=ctx.log
    )
    record.update(pip_seconds=round(seconds, 2), pip_returncode=rc, installed=[w.name for w in wheels])
    if rc != 0:
        record.update(status="stopped" if timed_out else "failed", reason=f"pip exited {rc}", output=tail(text))
        ctx.site = None
        return False
    sys.path.insert(0, str(ctx.site))
    importlib.invalidate_caches()
    return True


def _probe_imports(ctx: CheckContext, record: dict) -> None:
    """Import every needed module in a fresh interpreter, as the later phases' subprocesses will, and record the
    versions (the dry run only finds them: importing the Jupyter stack costs seconds a CPU test run does not have)."""
    needed = ctx.machine.lacks
    load = "assert importlib.util.find_spec(mod), 'not found'" if ctx.dry else "importlib.import_module(mod)"
    probe = (
        "import importlib, importlib.util, importlib.metadata as md, json\nout = {}\n"
        f"for mod, dist in {needed!r}.items():\n"
        f"    try:\n        {load}; out[mod] = md.version(dist)\n"
        "    except Exception as err:\n"
        "        out[mod] = None; out[mod + ':error'] = f'{type(err).__name__}: {err}'\n"
        "print('IMPORTS=' + json.dumps(out))\n"
    )
    rc, _, text, _ = run_subprocess(
        [ctx.s.python, "-c", probe],
        timeout_s=min(60.0, max(ctx.budget.left(), 1.0)),
        env=ctx.env(),
        cwd=ctx.root,
        log=ctx.log,
    )
    found = re.search(r"^IMPORTS=(.*)$", text, re.M)
    versions = json.loads(found.group(1)) if found else {}
    record["versions"] = {m: versions.get(m) for m in needed}
    record["probe"] = "found (not imported): dry run" if ctx.dry else "imported in a fresh interpreter"
    errors = {k: v for k, v in versions.items() if k.endswith(":error")}
    if errors:
        record["import_errors"] = errors
    failed = [m for m in needed if not versions.get(m)]
    record["imports_ok"] = not failed
    if failed and not ctx.dry and record.get("status") != "failed":
        record.update(status="failed", reason=f"still not importable after the install: {failed}")
