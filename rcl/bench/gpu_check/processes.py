"""The GPU check's log, and its subprocesses: each one's output appended to the log, its whole process group killed
when it overruns the time the budget gives it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path


def tail(text: str, chars: int = 3000) -> str:
    """The last ``chars`` characters of ``text`` (``...`` in front when cut)."""
    return text if len(text) <= chars else "..." + text[-chars:]


class Log:
    """Lines to stdout and to ``<out>/gpu-check.log``; subprocesses write straight into the same file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, message: str) -> None:
        line = f"[gpu-check {time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        if self.path is not None:
            with open(self.path, "a") as handle:
                handle.write(line + "\n")


def run_subprocess(
    cmd: Sequence[str], *, timeout_s: float, env: dict, cwd: Path, log: Log
) -> tuple[int | None, float, str, bool]:
    """Run ``cmd`` with its output appended to the log; kill its whole process group at ``timeout_s``.

    Returns ``(returncode or None when killed, seconds, output, timed_out)``.
    """
    log(f"$ {' '.join(cmd)}   (timeout {timeout_s:.0f} s)")
    with tempfile.TemporaryFile(mode="w+") as out:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        try:
            rc: int | None = proc.wait(timeout=max(timeout_s, 1.0))
        except subprocess.TimeoutExpired:
            timed_out = True
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)  # the process group this call started (DataLoader workers included)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=5)
                    break
                except subprocess.TimeoutExpired:
                    continue
            rc = None
        seconds = time.monotonic() - start
        out.seek(0)
        text = out.read()
    if log.path is not None:
        with open(log.path, "a") as handle:
            handle.write(text if text.endswith("\n") or not text else text + "\n")
    print(tail(text, 2500), flush=True)
    return rc, seconds, text, timed_out
