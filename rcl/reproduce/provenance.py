"""Where a run came from: the checkout's commit and the machine it ran on.

One place for both, read by the run's summary (``summary.md``), a published reference run (``run.json``) and the
benchmarks' records (``rcl.bench``), so the three say the same thing in the same words.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def _git(root: Path, *args: str) -> str | None:
    """``git -C root args`` -> its stdout; None when git is missing, fails or ``root`` is not a checkout."""
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(root: str | Path) -> dict | None:
    """``{"commit": full hash, "changed": [tracked files with local changes]}`` of the git checkout at ``root``;
    None when ``root`` is not a checkout or git cannot run."""
    commit = (_git(Path(root), "rev-parse", "HEAD") or "").strip()
    if not commit:
        return None
    status = _git(Path(root), "status", "--porcelain", "--untracked-files=no") or ""
    return {"commit": commit, "changed": [line[3:] for line in status.splitlines() if line.strip()]}


def describe_commit(root: str | Path) -> str:
    """The commit as a summary names it: ``"773bb69"``, ``"773bb69 + local changes"``, or ``"unknown (...)"``."""
    state = git_state(root)
    if state is None:
        return "unknown (not a git checkout, or git not available)"
    return state["commit"][:7] + (" + local changes" if state["changed"] else "")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none): a timing is honest only on an idle
    machine."""
    try:
        return list(os.getloadavg())
    except (OSError, AttributeError):
        return None


def machine() -> dict:
    """Where this process runs: OS, CPU model and cores, torch's threads, Python and torch versions, the GPU (if
    any), load average."""
    import torch

    info = {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    load = load_average()
    if load is not None:
        info["load_average_1_5_15_min"] = [round(x, 2) for x in load]
    return info
