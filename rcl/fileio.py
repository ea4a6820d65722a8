"""Atomic file writes: a crash, a full disk or a shared run folder never leaves a damaged result behind.

:func:`write_atomic` writes to a temporary file beside the target (``.<name>.<pid>.<token>.tmp``), flushes and
fsyncs it, then moves it over the target with ``os.replace``, so a reader sees the old file or the new one, never
half of one. On top of that:

- the new file gets the permissions any new file gets under the process's umask (``-rw-r--r--`` under umask 022,
  like the figures beside it), not the ``-rw-------`` of ``tempfile.mkstemp``, so a teacher can share a run folder;
- temporaries of the same target left by a writer that died (killed mid-write) are removed on the next write:
  those whose writer process (the pid in the name) is no longer running on this machine, and any older than
  ``STALE_TMP_SECONDS`` (names without a pid, written by older versions of rcl, or by another machine);
- a write that fails because the disk is full raises :class:`DiskFullError`, which says so, where, and how much was
  being written (torch's own message is ``[enforce fail at inline_container.cc:672] unexpected pos ...``).

Checkpoints (:mod:`rcl.checkpoint`) and results (:mod:`rcl.results`) are written through it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

STALE_TMP_SECONDS = 3600.0  # a temporary this old is a dead writer's, whatever its name says

__all__ = [
    "DiskFullError",
    "STALE_TMP_SECONDS",
    "clean_stale_temporaries",
    "format_bytes",
    "file_sha256",
    "printable",
    "symbolic_links",
    "write_atomic",
]

# C0 and C1 control characters, DEL, and the bidirectional overrides that reorder what a terminal shows
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, hex, read a MiB at a time (a pinned download, a wheel)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def printable(text: object) -> str:
    """``text`` (read from a file, or a file's name) safe to print: control characters escaped (``\\x1b``), so a
    file from someone else cannot move the cursor, clear the screen, set the title or write the clipboard."""
    return _CONTROL.sub(_escape, str(text))


def symbolic_links(folder: str | os.PathLike) -> list[Path]:
    """The symbolic links inside ``folder`` (not followed), in a fixed order; empty when it does not exist."""
    links = []
    for top, dirs, names in os.walk(folder):
        dirs.sort()
        links += sorted(Path(top) / name for name in (*dirs, *names) if (Path(top) / name).is_symlink())
    return links


class DiskFullError(OSError):
    """A write failed because the disk (or the user's quota) is full; the message says where and how much."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def _temp_pattern(path: Path) -> re.Pattern:
    """Temporaries of ``path``: ``.<name>.<pid>.<hex>.tmp`` (ours) or ``.<name>.<8 chars>.tmp`` (tempfile's)."""
    return re.compile(rf"^\.{re.escape(path.name)}\.(?:(\d+)\.[0-9a-f]+|[a-z0-9_]{{8}})\.tmp$")


def _process_running(pid: int) -> bool:
    """Whether ``pid`` is a running process on this machine (True when it cannot be told, e.g. on Windows)."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists and belongs to another user
        return True
    return True


def clean_stale_temporaries(path: str | os.PathLike, *, max_age: float = STALE_TMP_SECONDS) -> list[Path]:
    """Remove the temporaries of ``path`` that dead writers left behind; return what was removed.

    A temporary is stale when the process named in it (``.<name>.<pid>.<token>.tmp``) is no longer running, or
    when it is older than ``max_age`` seconds. Another live writer's temporary of the same target is kept.
    Files that vanish meanwhile or cannot be removed are skipped silently.
    """
    path = Path(path)
    pattern = _temp_pattern(path)
    removed = []
    try:
        candidates = [entry for entry in os.scandir(path.parent) if pattern.match(entry.name)]
    except OSError:
        return removed
    now = time.time()
    for entry in candidates:
        match = pattern.match(entry.name)
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        pid = int(match.group(1)) if match.group(1) else None
        dead = pid is not None and pid != os.getpid() and not _process_running(pid)
        if dead or age > max_age:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _open_temp(path: Path) -> tuple[int, Path]:
    """Create a new, empty temporary beside ``path``; mode 0o666 less the umask, like any new file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None], *, size_hint: int | None = None) -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a temporary binary file, which then replaces ``path``.

    Args:
        path: the file to write; its folder is created. An existing file is replaced only once the new one is
            complete on disk (flushed, fsynced, renamed, folder fsynced).
        write: ``write(f)`` writes the whole content to the binary file object ``f``.
        size_hint: about how many bytes ``write`` writes, for the message of a full disk.

    Raises:
        DiskFullError: the disk holding ``path`` is full (``path`` is left as it was).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    fd, tmp = _open_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno == errno.EFBIG:
            raise OSError(errno.EFBIG, _too_large(path)) from err
        if isinstance(err, OSError | RuntimeError) and not isinstance(err, DiskFullError):
            full = _disk_full_error(path, err, size_hint)
            if full is not None:
                raise full from err
        raise
    _fsync_dir(path.parent)
    return path


def _too_large(path: Path) -> str:
    """What to say when writing ``path`` went past the process's file-size limit (``ulimit -f``)."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    shown = "unlimited" if limit == resource.RLIM_INFINITY else format_bytes(limit)
    return (
        f"writing {path} went past this process's file-size limit ({shown}, ulimit -f): raise it (ulimit -f "
        f"unlimited) and run again; {path.name} was left as it was"
    )


def _disk_full_error(path: Path, err: BaseException, size_hint: int | None) -> DiskFullError | None:
    """A :class:`DiskFullError` if ``err`` (raised while writing ``path``) came from a full disk, else None."""
    try:
        free = shutil.disk_usage(path.parent).free  # measured after the partial temporary was removed
    except OSError:
        free = None
    said_full = (isinstance(err, OSError) and err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))) or (
        "No space left" in str(err)
    )
    # torch's zip writer reports a short write as "unexpected pos": a full disk when the file would not fit
    too_big = free is not None and size_hint is not None and free < size_hint
    if not (said_full or too_big):
        return None
    needs = f"about {format_bytes(size_hint)}" if size_hint is not None else "it"
    has = f"only {format_bytes(free)} is free there" if free is not None else "the free space could not be measured"
    return DiskFullError(
        f"the disk holding {path.parent} is full: writing {path.name} needs {needs}, and {has}. "
        f"Free some space (or write the run to another disk) and run again; {path.name} was left as it was. "
        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    )


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); silently skipped where directories cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
