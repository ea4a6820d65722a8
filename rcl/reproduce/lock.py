"""One run at a time per run folder: a lock on the folder itself, which the kernel releases when its holder dies.

The lock is an ``flock`` on the run folder, not on a file in it: deleting the lock file (a user tidying up) must not
let a second run in, and a lock library locks a file (``filelock`` opens its path for writing, which a folder is
not). The jobs' own locks, one file per job folder, use ``filelock`` (``rcl.reproduce.jobs``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rcl.fileio import printable
from rcl.reproduce.errors import RunFolderBusy

LOCK_NAME = ".rcl-reproduce.lock"


def _describe_holder(text: str) -> str:
    """Who holds the lock, from the lock file's text (escaped: the file may come from someone else's folder)."""
    try:
        holder = json.loads(text)
        return printable(f"pid {holder['pid']} on {holder['host']} since {holder['started']} ({holder['command']})")
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def run_lock(run_dir: Path, wait: bool = False) -> Iterator[None]:
    """Hold the run folder (a flock on the folder itself) while the body runs; ``run_dir/.rcl-reproduce.lock``
    records the holder's pid, host and command.

    Held by a live process: ``RunFolderBusy`` naming it, or with ``wait`` block until it is free. The kernel
    releases a flock when its holder dies, so the lock of a killed run is taken over (with a note). The lock is on
    the folder, not on the file, so deleting the lock file does not let a second run in.
    """
    path = Path(run_dir) / LOCK_NAME
    folder_fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(folder_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(path.read_text() if path.exists() else "")
            if not wait:
                raise RunFolderBusy(
                    f"run folder {run_dir} is in use by {holder}. Wait for it to finish, add --wait to start "
                    "when it has, or pick another folder with --out"
                ) from None
            print(f"rcl.reproduce: waiting for {holder} to release {run_dir} ...", file=sys.stderr, flush=True)
            fcntl.flock(folder_fd, fcntl.LOCK_EX)
        left = path.read_text(errors="replace").strip() if path.exists() else ""
        if left:
            print(f"rcl.reproduce: taking over the lock left by {_describe_holder(left)}, no longer running")
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(["python -m rcl.reproduce", shlex.join(sys.argv[1:])]).strip(),
        }
        path.write_text(json.dumps(me) + "\n")
        try:
            yield
        finally:
            path.write_text("")  # a clean exit leaves an empty lock file: nothing to take over
    finally:
        os.close(folder_fd)  # releases the flock
