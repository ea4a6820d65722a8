"""Preparing the GPU check where there is a network (``tools/gpu_check.sh --prepare``): the wheels the GPU machine's
image lacks into ``.whl/``, the CIFAR-10 archive and the source commit into ``.carry/``, a check that what travels
fits the device tool's limit, and the device call to make.

What the machine lacks and holds, its Python and platform, the tool's limits and where the archive lies all come
from the machine description (:mod:`rcl.bench.gpu_check.machine`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from rcl.bench.gpu_check.machine import GpuMachine, load_machine
from rcl.bench.gpu_check.source import CARRY_DIR, WHEELS_DIR, now, source
from rcl.fileio import file_sha256

# torchattacks pins requests~=2.25.1 (it works with newer ones): it is fetched alone, without its dependencies.
NO_DEPS = {"torchattacks": "3.5.1"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(filename: str) -> str:
    """The normalised distribution name of a wheel file (``jupyter_client-8.10.0-py3-none-any.whl`` ->
    ``jupyter-client``)."""
    return _normalise(filename.split("-", 1)[0])


def wheels_to_carry(filenames: Sequence[str], machine: GpuMachine | None = None) -> list[str]:
    """The wheels the GPU image lacks: drop those the machine's image already holds (its own versions stay)."""
    machine = machine or load_machine()
    return sorted(f for f in filenames if wheel_name(f) not in machine.has)


def _pins(machine: GpuMachine) -> list[str]:
    """The needed distributions, pinned to the versions this environment tests with when it has them."""
    from importlib import metadata

    pins = []
    for dist in machine.lacks.values():
        if dist in NO_DEPS:
            continue
        try:
            pins.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pins.append(dist)
    return pins


def _pip_download(
    python: str, dest: Path, specs: Sequence[str], python_version: str, no_deps: bool, machine: GpuMachine
) -> None:
    cmd = [python, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", python_version]
    cmd += ["--implementation", "cp", "-d", str(dest)]
    for plat in machine.platform_tags:
        cmd += ["--platform", plat]
    if no_deps:
        cmd.append("--no-deps")
    subprocess.run([*cmd, *specs], check=True)


def unmet_requirements(
    wheels: Sequence[Path], python_version: str | None = None, machine: GpuMachine | None = None
) -> list[str]:
    """Requirements of the carried wheels that neither another carried wheel nor the GPU image satisfies.

    Read from each wheel's ``METADATA`` (``Requires-Dist``), markers evaluated for CPython ``python_version``
    (default: the machine's) on the machine's platform, extras ignored; only names are compared (the install uses
    ``--no-deps``). Returns ``"wheel: requirement"`` strings (empty when the set is complete).
    """
    import zipfile

    from packaging.requirements import Requirement

    machine = machine or load_machine()
    python_version = python_version or machine.python_version
    env = {
        "python_version": python_version,
        "python_full_version": f"{python_version}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        **machine.markers,
        "extra": "",
    }
    have = {wheel_name(w.name) for w in wheels} | set(machine.has)
    unmet = []
    for wheel in wheels:
        if wheel_name(wheel.name) in NO_DEPS:
            continue
        with zipfile.ZipFile(wheel) as archive:
            meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            lines = archive.read(meta).decode("utf-8", "replace").splitlines()
        for line in lines:
            if not line.startswith("Requires-Dist:"):
                continue
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            if _normalise(req.name) not in have:
                unmet.append(f"{wheel.name}: {req}")
    return unmet


def travelling_bytes(root: Path, carry: Sequence[str]) -> dict[str, int]:
    """Bytes the device tool would send: tracked and untracked-not-ignored files, plus each carried path."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    tree = 0
    for rel in filter(None, listed):
        path = root / os.fsdecode(rel)
        if path.is_file() and not path.is_symlink():
            tree += path.stat().st_size
    sizes = {"tree": tree}
    for item in carry:
        path = root / item
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
        sizes[item] = sum(p.stat().st_size for p in files)
    return sizes


def run_call(budget_s: float | None = None, machine: GpuMachine | None = None) -> dict:
    """The device tool call that runs the check (command under 2,000 characters, carry list, timeout); the budget
    defaults to the machine's."""
    machine = machine or load_machine()
    budget_s = budget_s if budget_s is not None else machine.budget_s
    return {
        "command": f"sh tools/gpu_check.sh --budget-s {budget_s:g}",
        "carry": [WHEELS_DIR, CARRY_DIR],
        "timeout_s": int(min(machine.command_limit_s, budget_s + machine.run_slack_s)),
    }


def _download_wheels(
    wheels: Path, python: str, python_version: str, machine: GpuMachine, log: Callable[[str], None]
) -> None:
    """Replace ``.whl/`` with the needed distributions and their dependencies, less what the image holds."""
    staging = Path(tempfile.mkdtemp(prefix="rcl-wheels-"))
    try:
        pins = _pins(machine)
        log(f"downloading wheels for CPython {python_version} manylinux x86-64: {' '.join(pins)} (+ dependencies)")
        _pip_download(python, staging, pins, python_version, False, machine)
        _pip_download(python, staging, [f"{d}=={v}" for d, v in NO_DEPS.items()], python_version, True, machine)
        names = [p.name for p in staging.glob("*.whl")]
        keep = wheels_to_carry(names, machine)
        dropped = sorted(set(names) - set(keep))
        if dropped:
            log(f"not carried (the GPU image has them): {', '.join(wheel_name(n) for n in dropped)}")
        if wheels.exists():
            for old in wheels.glob("*.whl"):
                old.unlink()
        wheels.mkdir(exist_ok=True)
        for name in keep:
            shutil.move(str(staging / name), wheels / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _carry_archive(root: Path, archive: Path, machine: GpuMachine, log: Callable[[str], None]) -> tuple[Path, str]:
    """Copy the archive into ``.carry/`` (unless the same size is there) and record the source commit beside it;
    returns the carried path and its sha256 (a warning when it is not the documented one)."""
    carry = root / CARRY_DIR
    carry.mkdir(exist_ok=True)
    target = carry / machine.archive_name
    if not archive.is_file():
        raise SystemExit(f"no CIFAR-10 archive at {archive}: pass --archive PATH (see ../shared/data/README.md)")
    if not target.is_file() or target.stat().st_size != archive.stat().st_size:
        shutil.copy2(archive, target)
    digest = file_sha256(target)
    if digest != machine.archive_sha256:
        log(f"warning: {target} has sha256 {digest}, not the documented {machine.archive_sha256}")
    (carry / "source.json").write_text(json.dumps({**source(root), "prepared": now()}, indent=2) + "\n")
    return target, digest


def prepare(
    root: Path,
    archive: Path,
    *,
    python: str = sys.executable,
    python_version: str | None = None,
    budget_s: float | None = None,
    download: bool = True,
    log: Callable[[str], None] = print,
    machine: GpuMachine | None = None,
) -> dict:
    """Fill ``.whl/`` and ``.carry/`` for the GPU run, check the carried size, and return the run call.

    Wheels: the needed distributions and their dependencies resolved by pip for CPython ``python_version`` (default:
    the machine's) on its platform (binary wheels only), less what the GPU image holds; torchattacks without its
    dependencies. ``budget_s`` (default: the machine's) goes into the run call.
    """
    machine = machine or load_machine()
    python_version = python_version or machine.python_version
    wheels = root / WHEELS_DIR
    if download:
        _download_wheels(wheels, python, python_version, machine, log)
    target, digest = _carry_archive(root, archive, machine, log)
    carried = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    try:
        unmet = unmet_requirements(carried, python_version, machine)
    except ImportError:  # packaging missing: the check is a convenience, the GPU run's import probe is the proof
        unmet = ["(not checked: the packaging module is not installed here)"]
    for item in unmet:
        log(f"warning: not carried and not on the GPU image: {item}")
    call = run_call(budget_s, machine)
    sizes = travelling_bytes(root, call["carry"])
    total, limit = sum(sizes.values()), machine.carry_limit_bytes
    result = {
        "wheels": [p.name for p in carried],
        "unmet_requirements": unmet,
        "archive": str(target),
        "archive_sha256_ok": digest == machine.archive_sha256,
        "bytes": sizes,
        "total_bytes": total,
        "limit_bytes": limit,
        "fits": total < limit,
        "run_call": call,
    }
    mib = lambda b: f"{b / 2**20:.1f} MiB"
    log(f"wheels in {WHEELS_DIR}/: {len(result['wheels'])} files")
    log(
        "carried: "
        + ", ".join(f"{k} {mib(v)}" for k, v in sizes.items())
        + f"; total {mib(total)} of {limit / 2**20:g} MiB"
    )
    if not result["fits"]:
        raise SystemExit(f"what would travel is {mib(total)}, over the {limit / 2**20:g} MiB limit: carry less")
    log("the device call to make (run tool):\n" + json.dumps(call, indent=2))
    return result
