"""What the GPU check's phases share: the settings, the machine, the device, the budget, the report being written
(saved after every phase and epoch), and what one phase hands to the next (the dataset, the profile, the bf16 run).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rcl.bench.gpu_check.budget import DRY_RUN_PLAN, Budget
from rcl.bench.gpu_check.machine import GpuMachine, load_machine
from rcl.bench.gpu_check.processes import Log
from rcl.bench.gpu_check.source import WHEELS_DIR, now, source, tree_root
from rcl.bench.gpu_records import KIND, PHASES
from rcl.bench.readme import render_readme
from rcl.bench.run import device_name, slug
from rcl.runtime import pick_device

GPU_CHECK_SCHEMA = 1


@dataclass
class CheckSettings:
    """Everything that decides what the check does (see :func:`rcl.bench.gpu_check.cli.main` for the command-line
    names)."""

    out: Path
    budget_s: float | None = None  # default: the machine's budget_s
    dry_run: bool = False
    device: str = "auto"
    data: str = "auto"  # auto | synthetic | <archive .tar.gz> | <imagefolder directory>
    wheels: Path | None = None  # default <root>/.whl
    benchmarks: Path | None = None  # default <root>/benchmarks (dry run: <out>/benchmarks)
    skip: tuple[str, ...] = ()
    band: float | None = None  # default 0.05 (dry run: 0.5, the tiny model is near chance)
    bench_repeats: int | None = None
    python: str = sys.executable
    tests: tuple[str, ...] = ()  # pytest paths (default: tests/, dry run: tests/test_cuda.py)
    machine: GpuMachine | None = None  # default: benchmarks/gpu-check-machine.json


class CheckContext:
    """One run's shared state; the phases (``phase_*(ctx, record)``) read it and write their figures into
    ``ctx.report["phases"][name]``."""

    def __init__(self, settings: CheckSettings) -> None:
        self.s = settings
        self.root = tree_root()
        self.dry = settings.dry_run
        self.device = pick_device("cpu" if self.dry and settings.device == "auto" else settings.device)
        if not self.dry and self.device.type != "cuda":
            raise SystemExit(
                f"the GPU check needs a CUDA device, got {self.device}: on a machine without one run "
                "`tools/gpu_check.sh --dry-run` (tiny sizes on the CPU)"
            )
        self.machine = settings.machine or load_machine()
        self.plan = DRY_RUN_PLAN if self.dry else self.machine.plan
        self.out = settings.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = Log(self.out / "gpu-check.log")
        budget_s = settings.budget_s if settings.budget_s is not None else self.machine.budget_s
        self.budget = Budget(budget_s, self.plan.reserve_s)
        self.slice = self.plan.slice
        self.band = settings.band if settings.band is not None else (0.5 if self.dry else 0.05)
        self.wheels = settings.wheels or self.root / WHEELS_DIR
        self.site: Path | None = None  # where the install phase put the wheels (first on PYTHONPATH)
        self.name = device_name(self.device)
        self.slug = "cpu" if self.device.type == "cpu" else slug(self.name)
        self.stem = f"{self.slug}-gpu-check" + ("-dry-run" if self.dry else "")
        self.bench_dir = self._bench_dir()
        self.written: list[str] = []  # files under bench_dir this run wrote (copied to <out>/benchmarks)
        self.tmp_dirs: list[Path] = []
        # handed from phase to phase: the dataset and profile (quick slice -> precision), the bf16 supervised run
        self.data: Any = None
        self.cfg: Any = None
        self.bf16_rows: list[dict] | None = None
        self.bf16_epoch_s: float | None = None
        self.report = self._new_report()

    def _bench_dir(self) -> Path:
        """Where the check writes its JSON and README: ``--benchmarks``, the project's, or a dry run's own copy."""
        if self.s.benchmarks is not None:
            return self.s.benchmarks
        if not self.dry:
            return self.root / "benchmarks"
        bench_dir = self.out / "benchmarks"  # never touch the project's benchmarks/ from a dry run: a copy
        bench_dir.mkdir(parents=True, exist_ok=True)
        for path in (self.root / "benchmarks").glob("*.json"):
            shutil.copy2(path, bench_dir / path.name)
        return bench_dir

    def _new_report(self) -> dict[str, Any]:
        """The report before any phase ran: every phase ``pending``."""
        return {
            "kind": KIND,
            "gpu_check_schema": GPU_CHECK_SCHEMA,
            "timestamp": now(),
            "dry_run": self.dry,
            "budget_s": self.budget.total_s,
            "elapsed_s": 0.0,
            "device": _device_info(self.device, self.name),
            "source": source(self.root),
            "settings": {
                "slice": dataclasses.asdict(self.slice),
                "band": self.band,
                "data": self.s.data,
                "skip": list(self.s.skip),
                "min_s": self.plan.min_s,
                "cap_s": self.plan.cap_s,
            },
            "phases": {name: {"status": "pending"} for name in PHASES},
            "files": [],
        }

    def env(self, site: bool = True) -> dict:
        """Subprocess environment: the installed wheels and the working tree first on PYTHONPATH."""
        env = dict(os.environ)
        parts = ([str(self.site)] if site and self.site is not None else []) + [str(self.root)]
        if env.get("PYTHONPATH"):
            parts.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(parts)
        env["PYTHONUNBUFFERED"] = "1"
        if self.dry:  # a small shared CPU: one thread each (two OpenMP threads on a busy 2-core box crawl)
            env["OMP_NUM_THREADS"] = "1"
        return env

    def timeout(self, phase: str, after: Sequence[str]) -> float:
        """Seconds a subprocess phase may take: its cap, and enough left for the later phases' minimum."""
        later = sum(self.plan.min_s[p] for p in after if p not in self.s.skip)
        cap = self.plan.cap_s[phase]
        left = min(max(self.budget.left() - later, self.plan.min_s[phase]), self.budget.left())
        return min(cap, left) if cap is not None else left

    def temp_dir(self, prefix: str) -> Path:
        """A new temporary folder, removed by :meth:`cleanup`."""
        tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.tmp_dirs.append(tmp)
        return tmp

    def save(self) -> None:
        """Write ``<out>/gpu-check.json``, the benchmarks copy and the README (after every phase and epoch)."""
        self.report["elapsed_s"] = round(self.budget.elapsed(), 2)
        name = f"{self.stem}.json"
        if name not in self.written:
            self.written.append(name)
        self.report["files"] = ["gpu-check.json", "gpu-check.log"] + [
            f"benchmarks/{n}" for n in [*self.written, "README.md"]
        ]
        _write_json(self.report, self.out / "gpu-check.json")
        _write_json(self.report, self.bench_dir / name)
        render_readme(self.bench_dir)
        copy_dir = self.out / "benchmarks"
        if copy_dir.resolve() != self.bench_dir.resolve():
            copy_dir.mkdir(parents=True, exist_ok=True)
            for n in [*self.written, "README.md"]:
                shutil.copy2(self.bench_dir / n, copy_dir / n)

    def release(self) -> None:
        """Drop what the phases handed on (the dataset on the device, the profile, the bf16 run)."""
        self.data = self.cfg = self.bf16_rows = self.bf16_epoch_s = None

    def cleanup(self) -> None:
        """Remove the unpacked data and the checkpoints (temporary folders this run made)."""
        for tmp in self.tmp_dirs:
            shutil.rmtree(tmp, ignore_errors=True)
        self.tmp_dirs.clear()


def _device_info(device: torch.device, name: str) -> dict:
    """The report's ``device``: type, name, torch, Python, cores, threads; on CUDA also the GPU's properties."""
    info = {
        "type": device.type,
        "name": name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            capability=".".join(map(str, torch.cuda.get_device_capability(device))),
            memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
        )
    return info


def _write_json(obj: Any, path: Path) -> None:
    """Write ``obj`` atomically, keys in their insertion order (the phases in the order they run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)
