"""The GPU machine the check was prepared for, read from ``benchmarks/gpu-check-machine.json``.

Everything that describes that one machine lives in the data file, not in the code: the device tool's limits (the
default budget, the most seconds a call may run, what it carries), the machine's image (its Python, its platform,
what it lacks and what it already holds), where the CIFAR-10 archive lies on the preparing machine, and the real
run's phase plan (:class:`rcl.bench.gpu_check.budget.PhasePlan`). For another machine, edit a copy of the file and
pass ``--machine PATH``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from rcl.bench.gpu_check.budget import PhasePlan, SliceSize
from rcl.bench.gpu_check.source import tree_root

MACHINE_FILE = "gpu-check-machine.json"  # under benchmarks/


@dataclass(frozen=True)
class GpuMachine:
    """One GPU machine as the check sees it (see ``benchmarks/gpu-check-machine.json`` for what each field means)."""

    budget_s: float  # default wall-time budget of a run (seconds)
    command_limit_s: float  # most seconds one device call may run
    run_slack_s: float  # device call timeout beyond the budget (seconds)
    carry_limit_bytes: int  # most bytes the device tool carries
    python_version: str  # the image's Python, e.g. "3.12"
    platform_tags: tuple[str, ...]  # wheel platform tags the image accepts
    markers: dict[str, str]  # environment markers of the image's platform (sys_platform, platform_machine, ...)
    lacks: dict[str, str]  # import name -> distribution the check needs and the image lacks
    has: frozenset[str]  # normalised distribution names the image already holds
    archive_name: str  # the CIFAR-10 JPEG archive's file name
    archive_sha256: str
    archive_default: str  # where the archive lies, relative to the project root on the preparing machine
    plan: PhasePlan  # how the real run spends its budget

    def default_archive(self, root: Path) -> Path:
        """The archive ``--prepare`` carries: ``$RCL_CIFAR10_ARCHIVE``, else :attr:`archive_default` under ``root``."""
        env = os.environ.get("RCL_CIFAR10_ARCHIVE")
        return Path(env) if env else Path(os.path.normpath(root / self.archive_default))


def default_machine_file() -> Path:
    """``benchmarks/gpu-check-machine.json`` of the working tree this package is in."""
    return tree_root() / "benchmarks" / MACHINE_FILE


def load_machine(path: Path | str | None = None) -> GpuMachine:
    """Read the machine description at ``path`` (default: :func:`default_machine_file`).

    Raises FileNotFoundError when the file is missing and ValueError when it is not JSON or lacks a key, each saying
    what to do.
    """
    path = Path(path) if path is not None else default_machine_file()
    if not path.is_file():
        raise FileNotFoundError(
            f"no GPU machine description at {path}: the GPU check reads the machine it was prepared for (budget, "
            f"phase timings, what its image lacks) from benchmarks/{MACHINE_FILE}; restore it from git or pass "
            "--machine PATH"
        )
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): fix it or pass --machine PATH") from err
    try:
        return _machine(raw)
    except KeyError as err:
        raise ValueError(
            f"{path} lacks the key {err}: compare it with benchmarks/{MACHINE_FILE} in git, which has every key"
        ) from err
    except (TypeError, AttributeError) as err:  # a section that is not an object, an unknown slice field
        raise ValueError(
            f"{path} does not describe a machine ({err}): compare it with benchmarks/{MACHINE_FILE} in git"
        ) from err


def _machine(raw: dict) -> GpuMachine:
    """The :class:`GpuMachine` of the parsed file ``raw`` (KeyError names a missing key)."""
    tool, image, archive, plan = raw["device_tool"], raw["image"], raw["archive"], raw["plan"]
    return GpuMachine(
        budget_s=float(tool["budget_s"]),
        command_limit_s=float(tool["command_limit_s"]),
        run_slack_s=float(tool["run_slack_s"]),
        carry_limit_bytes=int(tool["carry_limit_bytes"]),
        python_version=str(image["python_version"]),
        platform_tags=tuple(image["platform_tags"]),
        markers=dict(image["markers"]),
        lacks=dict(image["lacks"]),
        has=frozenset(image["has"]),
        archive_name=archive["name"],
        archive_sha256=archive["sha256"],
        archive_default=archive["default_path"],
        plan=PhasePlan(
            slice=SliceSize(**plan["slice"]),
            min_s=dict(plan["min_s"]),
            cap_s=dict(plan["cap_s"]),
            reserve_s=float(plan["reserve_s"]),
            fp32_guess=float(plan["fp32_guess"]),
        ),
    )
