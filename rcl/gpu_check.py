"""The GPU check: one prepared command that checks and measures rcl's CUDA path within a wall-time budget.

A GPU machine is lent to this project rarely and briefly, has no network and no package registry, so everything
it needs is prepared beforehand on a machine that has them::

    tools/gpu_check.sh --prepare          # here: wheels into .whl/, the CIFAR-10 archive into .carry/, prints the call
    tools/gpu_check.sh                    # there: the check itself, default budget 8 minutes (--budget-s)
    tools/gpu_check.sh --dry-run          # anywhere: the same script on the CPU at tiny sizes (the test suite runs it)

The check runs five phases in order, each only when the budget still holds the least time the phase needs (else
it is recorded as skipped, with the reason):

1. ``install``: the packages the GPU image lacks (papermill, nbformat, nbclient, ipykernel, jupyter_client,
   ipywidgets, torchattacks and the pure-Python packages they need) from the wheels in ``.whl/``
   (``pip install --no-index --no-deps --target``); rcl itself is used from the working tree (``PYTHONPATH``).
   Then it imports each in a fresh interpreter and records the versions. The dry run installs nothing and only
   records which of them import.
2. ``cuda_tests``: ``pytest -k cuda`` (tests whose name or marker says cuda; they skip without a GPU).
3. ``bench``: ``python -m rcl.bench --device cuda --size full`` (eager and ``compile=True``), its JSON copied to
   ``benchmarks/<device>-full.json``.
4. ``quick_slice``: a short slice of the ``quick`` profile on real CIFAR-10 (the JPEG copy carried in
   ``.carry/``, read through ``imagefolder:``): supervised ResNet-18 (bf16 + channels_last, clean test accuracy
   after every epoch, PGD at the profile's evaluation setting), SimCLR pre-training, then a linear head (clean,
   PGD-CE and the contrastive PGD of threat model I). Seconds per epoch and accuracies are recorded.
5. ``precision``: the supervised run again in fp32 (``TrainConfig.precision="fp32"``), same seed and epochs;
   bf16 + channels_last and fp32 must end within ``--band`` (absolute test accuracy) of each other.

Everything measured is written as JSON under ``--out`` (default ``$OUT`` when set, else ``runs/gpu-check``):
``gpu-check.json`` after every phase and every epoch (a run stopped from outside keeps what it measured), and
copies under ``<out>/benchmarks/`` of what it wrote to ``benchmarks/`` (``<device>-gpu-check.json``, the bench
JSON, the regenerated ``benchmarks/README.md``). Each training loop checks the budget before every epoch, and
the subprocesses get a timeout from it, so the script ends before ``--budget-s`` (plus a few seconds to write).

Phase records: ``status`` is ``done`` (ran; figures recorded), ``failed`` (ran, and what it checks did not
hold: a test failed, the accuracy band was missed, a subprocess exited non-zero), ``stopped`` (started, cut short
by the budget; partial figures kept), ``skipped`` (not started; ``reason``) or ``error`` (the script itself
raised; ``error`` holds the traceback's end).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rcl.bench.gpu_records import KIND, PHASES, summary_text

GPU_CHECK_SCHEMA = 1
DEFAULT_BUDGET_S = 480.0  # the 8 minutes
TREE_LIMIT_BYTES = 64 * 1024 * 1024  # what the device tool carries: the working tree plus carried folders
RUN_SLACK_S = 60  # timeout_s of the run call beyond the budget: the machine's own start-up is not counted
WHEELS_DIR = ".whl"
CARRY_DIR = ".carry"
ARCHIVE_NAME = "cifar10-jpeg.tar.gz"
ARCHIVE_SHA256 = "ff26949c34c4e67da3fa472a1f142e33365dea058f94f1fa369b14ef3d986968"  # ../shared/data/README.md

# What the GPU image lacks, by import name -> distribution name (the image holds torch, torchvision, pandas,
# matplotlib, scipy, tqdm, pytest and many more, but none of these).
NEEDED_MODULES = {
    "papermill": "papermill",
    "nbformat": "nbformat",
    "nbclient": "nbclient",
    "ipykernel": "ipykernel",
    "jupyter_client": "jupyter_client",
    "ipywidgets": "ipywidgets",
    "torchattacks": "torchattacks",
}
# torchattacks pins requests~=2.25.1 (it works with newer ones): it is fetched alone, without its dependencies.
NO_DEPS = {"torchattacks": "3.5.1"}
# Distributions the GPU image already holds (device notes, read 2026-11-17) that the resolver pulls in as
# dependencies (papermill needs aiohttp on Python 3.12): they are not carried, so the image's own versions (built
# against its numpy/torch) stay in charge. tzdata only serves python-dateutil, which the image has.
ON_GPU_IMAGE = frozenset(
    "aiohttp aiohappyeyeballs aiosignal attrs certifi charset-normalizer click frozenlist idna jinja2 markupsafe "
    "matplotlib multidict numpy packaging pandas pillow propcache psutil pygments python-dateutil pyyaml requests "
    "scipy setuptools six torch torchvision tqdm typing-extensions tzdata urllib3 yarl".split()
)
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


# --------------------------------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class SliceSize:
    """How much of the ``quick`` profile the training phases run (overrides go to :func:`rcl.profiles.resolve`)."""

    supervised_epochs: int
    simclr_epochs: int
    linear_epochs: int
    robust_n: int  # test examples attacked with PGD (the profile's eval attack)
    overrides: dict = field(default_factory=dict)
    n_train: int | None = None  # synthetic data only: images generated
    n_test: int | None = None


SLICES = {
    # one GPU: the quick profile itself (ResNet-18 width 64, batch 512, all 50k/10k images), a few epochs
    "full": SliceSize(
        supervised_epochs=3, simclr_epochs=3, linear_epochs=2, robust_n=1000, n_train=50_000, n_test=10_000
    ),
    # the CPU dry run: the same code at a size that runs in seconds
    "tiny": SliceSize(  # two epochs each: the second resumes the first's checkpoint, as on the GPU
        supervised_epochs=2,
        simclr_epochs=2,
        linear_epochs=2,
        robust_n=32,
        overrides=dict(width=4, head_dim=16, batch_size=64, eval_batch_size=128, eval_steps=2, n_train=256, n_test=96),
        n_train=256,
        n_test=96,
    ),
}

# Least seconds a phase needs to be worth starting, and most it may take (None: whatever is left), per mode.
MIN_S = {
    False: {"install": 10, "cuda_tests": 30, "bench": 90, "quick_slice": 60, "precision": 30},
    True: {"install": 0.5, "cuda_tests": 5, "bench": 5, "quick_slice": 3, "precision": 1},
}
CAP_S = {
    False: {"install": 120, "cuda_tests": 150, "bench": 270, "quick_slice": None, "precision": None},
    True: {"install": 60, "cuda_tests": 60, "bench": 90, "quick_slice": None, "precision": None},
}
RESERVE_S = {False: 10.0, True: 1.0}  # kept back for writing the JSON and README at the end
FP32_GUESS = 3.0  # planning only: an fp32 epoch is assumed to take this many bf16 epochs until one is measured


class Budget:
    """Wall-clock budget: ``left()`` is what remains of ``total_s`` once ``reserve_s`` is kept back for writing."""

    def __init__(self, total_s: float, reserve_s: float) -> None:
        if not total_s > 0:
            raise ValueError(f"budget must be > 0 seconds, got {total_s}")
        self.total_s = float(total_s)
        self.reserve_s = float(min(reserve_s, total_s / 4))
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.total_s - self.reserve_s - self.elapsed()

    def allows(self, seconds: float) -> bool:
        return self.left() >= seconds

    def why_not(self, seconds: float, what: str) -> str:
        return (
            f"budget: {max(self.left(), 0):.1f} s left of {self.total_s:g} s (after {self.reserve_s:g} s kept for "
            f"writing), {what} needs about {seconds:.1f} s"
        )


# --------------------------------------------------------------------------------------------------- helpers
def project_root() -> Path:
    """The folder holding this package's ``pyproject.toml`` (the working tree, here and on the GPU machine)."""
    return Path(__file__).resolve().parent.parent


def _tail(text: str, chars: int = 3000) -> str:
    return text if len(text) <= chars else "..." + text[-chars:]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source(root: Path) -> dict:
    """The commit the tree came from: git when the tree has it, else what ``--prepare`` recorded in .carry/."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        return {"commit": commit, "dirty": bool(dirty), "from": "git"}
    except (OSError, subprocess.SubprocessError):
        pass
    recorded = root / CARRY_DIR / "source.json"
    if recorded.is_file():
        try:
            return {**json.loads(recorded.read_text()), "from": f"{CARRY_DIR}/source.json"}
        except (OSError, json.JSONDecodeError):
            pass
    return {"commit": None, "dirty": None, "from": "unknown"}


def _write_json(obj: Any, path: Path) -> None:
    """Write ``obj`` atomically, keys in their insertion order (the phases in the order they run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


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
    print(_tail(text, 2500), flush=True)
    return rc, seconds, text, timed_out


# --------------------------------------------------------------------------------------------------- the check
@dataclass
class CheckSettings:
    """Everything that decides what the check does (see :func:`main` for the command-line names)."""

    out: Path
    budget_s: float = DEFAULT_BUDGET_S
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


class GpuCheck:
    """One run of the check; :meth:`run` returns the report (also written to ``<out>/gpu-check.json``)."""

    def __init__(self, settings: CheckSettings) -> None:
        import torch

        from rcl.bench.run import device_name, slug
        from rcl.runtime import pick_device

        self.s = settings
        self.root = project_root()
        self.dry = settings.dry_run
        self.device = pick_device("cpu" if self.dry and settings.device == "auto" else settings.device)
        if not self.dry and self.device.type != "cuda":
            raise SystemExit(
                f"the GPU check needs a CUDA device, got {self.device}: on a machine without one run "
                "`tools/gpu_check.sh --dry-run` (tiny sizes on the CPU)"
            )
        self.out = settings.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = Log(self.out / "gpu-check.log")
        self.budget = Budget(settings.budget_s, RESERVE_S[self.dry])
        self.slice = SLICES["tiny" if self.dry else "full"]
        self.band = settings.band if settings.band is not None else (0.5 if self.dry else 0.05)
        self.wheels = settings.wheels or self.root / WHEELS_DIR
        self.site: Path | None = None
        self.name = device_name(self.device)
        self.slug = "cpu" if self.device.type == "cpu" else slug(self.name)
        self.stem = f"{self.slug}-gpu-check" + ("-dry-run" if self.dry else "")
        if settings.benchmarks is not None:
            self.bench_dir = settings.benchmarks
        elif self.dry:  # never touch the project's benchmarks/ from a dry run: a copy under <out>
            self.bench_dir = self.out / "benchmarks"
            self.bench_dir.mkdir(parents=True, exist_ok=True)
            for path in (self.root / "benchmarks").glob("*.json"):
                shutil.copy2(path, self.bench_dir / path.name)
        else:
            self.bench_dir = self.root / "benchmarks"
        self.written: list[str] = []  # files under bench_dir this run wrote (copied to <out>/benchmarks)
        self.ctx: dict[str, Any] = {}  # what phases share: the dataset, the profile, the bf16 run
        self.tmp_dirs: list[Path] = []
        self.report: dict[str, Any] = {
            "kind": KIND,
            "gpu_check_schema": GPU_CHECK_SCHEMA,
            "timestamp": _now(),
            "dry_run": self.dry,
            "budget_s": self.budget.total_s,
            "elapsed_s": 0.0,
            "device": self._device_info(torch),
            "source": _source(self.root),
            "settings": {
                "slice": dataclasses.asdict(self.slice),
                "band": self.band,
                "data": settings.data,
                "skip": list(settings.skip),
                "min_s": MIN_S[self.dry],
                "cap_s": CAP_S[self.dry],
            },
            "phases": {name: {"status": "pending"} for name in PHASES},
            "files": [],
        }

    # ------------------------------------------------------------------------------------------- bookkeeping
    def _env(self, site: bool = True) -> dict:
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

    def _device_info(self, torch) -> dict:
        info = {
            "type": self.device.type,
            "name": self.name,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
        }
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            info.update(
                cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version(),
                capability=".".join(map(str, torch.cuda.get_device_capability(self.device))),
                memory_gib=round(props.total_memory / 2**30, 1),
                multiprocessors=props.multi_processor_count,
            )
        return info

    def save(self) -> None:
        """Write ``<out>/gpu-check.json``, the benchmarks copy and the README (after every phase and epoch)."""
        from rcl.bench.readme import render_readme

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

    def run(self) -> dict:
        import torch

        threads = torch.get_num_threads()
        if self.dry and self.device.type == "cpu":
            torch.set_num_threads(1)  # see _env
        try:
            return self._run()
        finally:
            torch.set_num_threads(threads)

    def _run(self) -> dict:
        phases: dict[str, Callable[[dict], None]] = {
            "install": self.phase_install,
            "cuda_tests": self.phase_cuda_tests,
            "bench": self.phase_bench,
            "quick_slice": self.phase_quick_slice,
            "precision": self.phase_precision,
        }
        self.log(
            f"device {self.name} ({self.device}), budget {self.budget.total_s:g} s, "
            f"{'dry run (tiny sizes)' if self.dry else 'full run'}, out {self.out}"
        )
        self.save()
        for name, fn in phases.items():
            record = self.report["phases"][name]
            need = MIN_S[self.dry][name]
            if name in self.s.skip:
                record.update(status="skipped", reason=f"skipped on request (--skip {name})")
            elif not self.budget.allows(need):
                record.update(status="skipped", reason=self.budget.why_not(need, f"the {name} phase"))
            else:
                self.log(f"phase {name}: starting, {self.budget.left():.0f} s left")
                record["status"] = "running"
                self.save()
                start = time.monotonic()
                try:
                    fn(record)
                except Exception as err:  # a broken phase must not cost the others their figures
                    record.update(status="error", error=_tail(traceback.format_exc(), 4000))
                    self.log(f"phase {name}: error {type(err).__name__}: {err}")
                record["seconds"] = round(time.monotonic() - start, 2)
                if record["status"] == "running":
                    record["status"] = "done"
            self.log(f"phase {name}: {record['status']}" + (f" ({record['reason']})" if record.get("reason") else ""))
            self.save()
        self.ctx.clear()
        self.log(summary_text(self.report))
        return self.report

    # ------------------------------------------------------------------------------------------- 1 install
    def phase_install(self, record: dict) -> None:
        missing = [m for m in NEEDED_MODULES if importlib.util.find_spec(m) is None]
        record["missing_before"] = missing
        wheels = sorted(self.wheels.glob("*.whl")) if self.wheels.is_dir() else []
        record["wheels"] = len(wheels)
        record["project"] = f"on PYTHONPATH ({self.root})"
        if self.dry:
            record["installed"] = []
            record["note"] = "dry run: nothing installed, only the imports checked"
        elif not missing:
            record["installed"] = []
            record["note"] = "every needed package already imports"
        elif not wheels:
            record.update(
                status="failed",
                reason=f"{missing} missing and no wheels in {self.wheels}: run `tools/gpu_check.sh --prepare` "
                f"first and name {WHEELS_DIR} in the run call's carry",
            )
        else:
            self.site = Path(tempfile.gettempdir()) / "rcl-gpu-check-site"
            cmd = [self.s.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
            cmd += ["--no-cache-dir", "--upgrade", "--target", str(self.site), *map(str, wheels)]
            timeout = min(CAP_S[self.dry]["install"], self.budget.left())
            rc, seconds, text, timed_out = run_subprocess(
                cmd, timeout_s=timeout, env=self._env(site=False), cwd=self.root, log=self.log
            )
            record.update(pip_seconds=round(seconds, 2), pip_returncode=rc, installed=[w.name for w in wheels])
            if rc != 0:
                record.update(
                    status="stopped" if timed_out else "failed", reason=f"pip exited {rc}", output=_tail(text)
                )
                self.site = None
                return
            sys.path.insert(0, str(self.site))
            importlib.invalidate_caches()
        # import every needed module in a fresh interpreter, as the later phases' subprocesses will
        # (the dry run only finds them: importing the Jupyter stack costs seconds a CPU test run does not have)
        load = "assert importlib.util.find_spec(mod), 'not found'" if self.dry else "importlib.import_module(mod)"
        probe = (
            "import importlib, importlib.util, importlib.metadata as md, json\nout = {}\n"
            f"for mod, dist in {NEEDED_MODULES!r}.items():\n"
            f"    try:\n        {load}; out[mod] = md.version(dist)\n"
            "    except Exception as err:\n"
            "        out[mod] = None; out[mod + ':error'] = f'{type(err).__name__}: {err}'\n"
            "print('IMPORTS=' + json.dumps(out))\n"
        )
        rc, _, text, _ = run_subprocess(
            [self.s.python, "-c", probe],
            timeout_s=min(60.0, max(self.budget.left(), 1.0)),
            env=self._env(),
            cwd=self.root,
            log=self.log,
        )
        found = re.search(r"^IMPORTS=(.*)$", text, re.M)
        versions = json.loads(found.group(1)) if found else {}
        record["versions"] = {m: versions.get(m) for m in NEEDED_MODULES}
        record["probe"] = "found (not imported): dry run" if self.dry else "imported in a fresh interpreter"
        errors = {k: v for k, v in versions.items() if k.endswith(":error")}
        if errors:
            record["import_errors"] = errors
        failed = [m for m in NEEDED_MODULES if not versions.get(m)]
        record["imports_ok"] = not failed
        if failed and not self.dry and record.get("status") != "failed":
            record.update(status="failed", reason=f"still not importable after the install: {failed}")

    # ------------------------------------------------------------------------------------------- 2 CUDA tests
    def phase_cuda_tests(self, record: dict) -> None:
        paths = list(self.s.tests) or (["tests/test_cuda.py"] if self.dry else ["tests"])
        cmd = [self.s.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", "-rfEs"]
        cmd += ["--continue-on-collection-errors", "--ignore=tests/test_gpu_check.py", *paths]
        timeout = self._timeout("cuda_tests", after=("bench", "quick_slice", "precision"))
        rc, seconds, text, timed_out = run_subprocess(
            cmd, timeout_s=timeout, env=self._env(), cwd=self.root, log=self.log
        )
        counts = {k: 0 for k in ("passed", "failed", "skipped", "errors", "deselected")}
        summary = [line for line in text.splitlines() if re.search(r"\b(passed|failed|skipped|error|deselected)", line)]
        if summary:
            for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary[-1]):
                counts["errors" if word.startswith("error") else word] = int(number)
        record.update(
            command=" ".join(cmd[1:]),
            returncode=rc,
            pytest_seconds=round(seconds, 2),
            **counts,
            output=_tail(text),
        )
        if timed_out:
            record.update(status="stopped", reason=f"budget: pytest killed after {seconds:.0f} s")
        elif counts["failed"] or counts["errors"] or rc not in (0, 5):
            record.update(
                status="failed", reason=f"pytest exited {rc}: {counts['failed']} failed, {counts['errors']} errors"
            )
        elif rc == 5:
            record["note"] = "no test selected"

    # ------------------------------------------------------------------------------------------- 3 bench
    def phase_bench(self, record: dict) -> None:
        from rcl.bench.report import summary

        size = "tiny" if self.dry else "full"
        repeats = self.s.bench_repeats or (1 if self.dry else 5)
        tmp = Path(tempfile.mkdtemp(prefix="rcl-gpu-check-bench-"))
        self.tmp_dirs.append(tmp)
        tmp_json = tmp / "bench.json"
        cmd = [self.s.python, "-m", "rcl.bench", "--device", str(self.device), "--size", size]
        cmd += ["--repeats", str(repeats), "--out", str(tmp_json)]
        if self.dry:  # compiling costs a minute on a small CPU: the dry run checks the eager path only
            cmd += ["--no-compile", "--workers", "0", "--threads", "1"]
        timeout = self._timeout("bench", after=("quick_slice", "precision"))
        rc, seconds, text, timed_out = run_subprocess(
            cmd, timeout_s=timeout, env=self._env(), cwd=self.root, log=self.log
        )
        if rc != 0 and not timed_out and "--workers" not in cmd and "DataLoader" in text:
            # the baseline's worker processes died (a small /dev/shm, say): once more without workers
            record["first_attempt"] = {"returncode": rc, "seconds": round(seconds, 2), "output": _tail(text, 1500)}
            cmd += ["--workers", "0"]
            timeout = min(
                self._timeout("bench", after=("quick_slice", "precision")), CAP_S[self.dry]["bench"] - seconds
            )
            if timeout >= MIN_S[self.dry]["bench"]:
                rc, more, text, timed_out = run_subprocess(
                    cmd, timeout_s=timeout, env=self._env(), cwd=self.root, log=self.log
                )
                seconds += more
        record.update(command=" ".join(cmd[1:]), returncode=rc, bench_seconds=round(seconds, 2))
        if rc != 0 or not tmp_json.is_file():
            status = "stopped" if timed_out else "failed"
            why = f"budget: killed after {seconds:.0f} s" if timed_out else f"rcl.bench exited {rc}"
            record.update(status=status, reason=why, output=_tail(text))
            return
        report = json.loads(tmp_json.read_text())
        name = f"{self.slug}-{report['settings']['size']}.json"
        (self.bench_dir / name).write_text(json.dumps(report, indent=2) + "\n")
        if name not in self.written:
            self.written.append(name)
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

    # ------------------------------------------------------------------------------------------- 4 quick slice
    def _timeout(self, phase: str, after: Sequence[str]) -> float:
        """Seconds a subprocess phase may take: its cap, and enough left for the later phases' minimum."""
        later = sum(MIN_S[self.dry][p] for p in after if p not in self.s.skip)
        cap = CAP_S[self.dry][phase]
        left = min(max(self.budget.left() - later, MIN_S[self.dry][phase]), self.budget.left())
        return min(cap, left) if cap is not None else left

    def _data(self, record: dict):
        """Load the slice's dataset once (the precision phase reuses it)."""
        if "data" in self.ctx:
            return self.ctx["data"]
        from rcl.data import balanced_subset, load_dataset, synthetic_dataset

        spec = self.s.data
        archive = self.root / CARRY_DIR / ARCHIVE_NAME
        if spec == "auto":
            if archive.is_file():
                spec = str(archive)
            elif self.dry:
                spec = "synthetic"
            else:
                raise FileNotFoundError(
                    f"no CIFAR-10 archive at {archive}: run `tools/gpu_check.sh --prepare` and name {CARRY_DIR} "
                    "in the run call's carry (or pass --data synthetic / --data PATH)"
                )
        start = time.monotonic()
        info: dict[str, Any] = {"spec": spec}
        if spec == "synthetic":
            data = synthetic_dataset(n_train=self.slice.n_train, n_test=self.slice.n_test, seed=0)
            info["source"] = "synthetic (rcl.data.synthetic_dataset): timings only, accuracies mean nothing"
        else:
            path = Path(spec)
            if path.is_file():
                tmp = Path(tempfile.mkdtemp(prefix="rcl-gpu-check-data-"))
                self.tmp_dirs.append(tmp)
                with tarfile.open(path) as tar:
                    kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                    tar.extractall(tmp, **kwargs)
                info["unpack_seconds"] = round(time.monotonic() - start, 2)
                path = _imagefolder_root(tmp)
                info["source"] = f"{spec} unpacked (CIFAR-10 JPEG copy, see ../shared/data/README.md)"
            else:
                info["source"] = f"{spec} (image folder)"
            data = load_dataset(f"imagefolder:{path}")
            if path != Path(spec):  # decoded into memory: the unpacked files go now, inside the budget (tens of
                t0 = time.monotonic()  # thousands of files can take a while to delete; the machine may be slow)
                unpacked = self.tmp_dirs.pop()
                shutil.rmtree(unpacked, ignore_errors=True)
                info["delete_unpacked_seconds"] = round(time.monotonic() - t0, 2)
            n_train, n_test = self.slice.overrides.get("n_train"), self.slice.overrides.get("n_test")
            if n_train is not None or n_test is not None:  # the dry run on a real archive: a tiny balanced subset
                data.train = balanced_subset(data.train, min(n_train or len(data.train), len(data.train)), 0)
                data.test = balanced_subset(data.test, min(n_test or len(data.test), len(data.test)), 1)
        data.train, data.test = data.train.to(self.device), data.test.to(self.device)  # once, not every epoch
        info.update(
            name=data.name,
            n_train=len(data.train),
            n_test=len(data.test),
            classes=data.num_classes,
            load_seconds=round(time.monotonic() - start, 2),
        )
        record["data"] = info
        self.ctx["data"] = data
        self.save()
        return data

    def _config(self, data):
        from rcl.profiles import resolve

        tmp = Path(tempfile.mkdtemp(prefix="rcl-gpu-check-runs-"))  # checkpoints: never under <out>
        self.tmp_dirs.append(tmp)
        return resolve("quick", dataset=data.name, device=self.device, run_dir=tmp, **self.slice.overrides)

    def _train_epochs(
        self,
        record: dict,
        key: str,
        epochs: int,
        run_epoch: Callable[[int], list[dict]],
        after_epoch: Callable[[], dict] | None = None,
        first_guess_s: float | None = None,
        keep_s: Callable[[], float] = lambda: 0.0,
    ) -> list[dict]:
        """Epochs 1..``epochs`` one call at a time (each resumes the last), checking the budget before each.

        ``run_epoch(e)`` trains up to epoch ``e`` and returns the history; ``after_epoch()`` measures (e.g. test
        accuracy) and returns figures merged into the epoch's row. ``keep_s()`` is time kept for later work.
        Rows go to ``record[key]["epochs"]``; a budget stop sets ``record[key]["stopped"]``.
        """
        part = record.setdefault(key, {"epochs": []})
        rows = part["epochs"]
        for e in range(1, epochs + 1):
            if rows:
                need = max(r["seconds"] + r.get("eval_seconds", 0.0) for r in rows)
            else:  # the phase's own minimum was checked before it started
                need = first_guess_s or 0.0
            if not self.budget.allows(need + keep_s()):
                part["stopped"] = self.budget.why_not(need + keep_s(), f"epoch {e} of {key} (and what follows)")
                self.log(f"{key}: {part['stopped']}")
                break
            history = run_epoch(e)
            row = {k: v for k, v in history[-1].items() if isinstance(v, (int, float))}
            row["seconds"] = round(float(row["seconds"]), 3)
            if after_epoch is not None:
                t0 = time.monotonic()
                row.update(after_epoch())
                row["eval_seconds"] = round(time.monotonic() - t0, 3)
            rows.append(row)
            self.log(f"{key} epoch {e}/{epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))
            self.save()
        part["epochs_done"] = len(rows)
        part["epoch_seconds"] = [r["seconds"] for r in rows]
        if rows:
            later = [r["seconds"] for r in rows[1:]] or [rows[0]["seconds"]]
            part["epoch_seconds_median_after_first"] = statistics.median(later)
        return rows

    def _supervised(self, record: dict, key: str, precision: str, epochs: int, keep_s=lambda: 0.0):
        import torch

        from rcl.evaluate import accuracy
        from rcl.models import Classifier
        from rcl.runtime import memory_format
        from rcl.study import new_encoder, train_config

        data, cfg = self.ctx["data"], self.ctx["cfg"]
        torch.manual_seed(cfg.seed)
        model = Classifier(new_encoder(cfg), data.num_classes)
        ckpt = cfg.run_dir / f"supervised-{precision}"
        tc = lambda e: dataclasses.replace(train_config(cfg, e, progress=False), precision=precision)
        from rcl.train import train_supervised

        part = record.setdefault(key, {"epochs": []})
        part.update(
            precision=precision,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            arch=f"{cfg.arch} width {cfg.width}",
            n_train=len(data.train),
        )
        guess = self.ctx.get("bf16_epoch_s")
        guess = guess * FP32_GUESS if guess is not None and precision == "fp32" else None
        self._reset_peak()
        self._train_epochs(
            record,
            key,
            epochs,
            lambda e: train_supervised(model, data.train, tc(e), ckpt_dir=ckpt),
            after_epoch=lambda: {"test_acc": accuracy(model, data.test, batch_size=cfg.eval_batch_size)},
            first_guess_s=guess,
            keep_s=keep_s,
        )
        conv = model.encoder.conv1.weight if hasattr(model.encoder, "conv1") else next(model.parameters())
        part["channels_last"] = bool(conv.is_contiguous(memory_format=torch.channels_last))
        part["expected_memory_format"] = str(memory_format(self.device, precision)).replace("torch.", "")
        part["peak_memory_gib"] = self._peak()
        return model

    def _reset_peak(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def _peak(self) -> float | None:
        import torch

        if self.device.type != "cuda":
            return None
        return round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2)

    def _robust(self, model, part: dict, cfg, data, representation=None) -> None:
        """PGD at the profile's evaluation setting (CE, threat model II), and threat model I with a representation."""
        from rcl.evaluate import robust_accuracy, threat_model_1
        from rcl.study import attack, eval_subset

        subset = eval_subset(data, self.slice.robust_n)
        pgd = attack(cfg, "eval")
        # planning: a PGD step costs about 3 clean forward passes (forward + input gradient) of its images
        clean_s = part["epochs"][-1].get("eval_seconds", 0.0) if part.get("epochs") else 0.0
        need = clean_s * len(subset) / max(len(data.test), 1) * 3 * pgd.steps * (2 if representation else 1) + 1
        if not self.budget.allows(need):
            part["robust_skipped"] = self.budget.why_not(need, "the PGD evaluation")
            return
        t0 = time.monotonic()
        part["robust"] = {
            "attack": f"PGD-{pgd.steps} L-inf eps {pgd.eps:.5f} alpha {pgd.alpha:.4f} (cross-entropy)",
            "n": len(subset),
            "robust_acc": robust_accuracy(model, subset, pgd, batch_size=cfg.eval_batch_size),
        }
        part["robust"]["seconds"] = round(time.monotonic() - t0, 3)
        if representation is not None and self.budget.allows(part["robust"]["seconds"] + 1):
            t0 = time.monotonic()
            part["threat_model_1"] = {
                "attack": f"PGD-{pgd.steps} on NT-Xent(z(x_adv), z(x)) at temperature {cfg.temperature}",
                "n": len(subset),
                "robust_acc": threat_model_1(
                    model, representation, subset, pgd, cfg.temperature, batch_size=cfg.eval_batch_size
                ),
                "seconds": round(time.monotonic() - t0, 3),
            }

    def phase_quick_slice(self, record: dict) -> None:
        import torch

        from rcl.evaluate import accuracy
        from rcl.models import Classifier, ContrastiveNet
        from rcl.runtime import resolve_precision
        from rcl.study import new_contrastive, new_encoder, train_config
        from rcl.train import finetune, pretrain_contrastive

        data = self._data(record)
        cfg = self.ctx["cfg"] = self._config(data)
        record["profile"] = {k: v for k, v in cfg.as_dict().items() if k not in ("run_dir", "data_root", "dataset")}
        record["profile"]["dataset"] = data.name
        sz = self.slice
        precision_on = "precision" not in self.s.skip

        def keep_for_precision() -> float:  # one fp32 epoch (guessed from bf16) stays for the precision phase
            bf16 = self.ctx.get("bf16_epoch_s")
            return bf16 * FP32_GUESS if precision_on and bf16 is not None else 0.0

        # supervised, bf16 + channels_last (the default on CUDA), test accuracy after every epoch
        sup = self._supervised(record, "supervised", "bf16", sz.supervised_epochs)
        rows = record["supervised"]["epochs"]
        self.ctx["bf16_rows"] = rows  # the precision phase compares against these, whatever happens next
        if rows:
            self.ctx["bf16_epoch_s"] = max(r["seconds"] + r["eval_seconds"] for r in rows)
            self._robust(sup, record["supervised"], cfg, data)
        del sup
        self.save()

        # SimCLR pre-training, then a linear head on the frozen encoder
        torch.manual_seed(cfg.seed)
        net = new_contrastive(cfg)
        tc = lambda e: train_config(cfg, e, progress=False)
        record["simclr"] = {
            "epochs": [],
            "temperature": cfg.temperature,
            "batch_size": cfg.batch_size,
            "precision": resolve_precision(self.device, "auto"),  # the default path: bf16 + channels_last on CUDA
        }
        self._reset_peak()
        self._train_epochs(
            record,
            "simclr",
            sz.simclr_epochs,
            lambda e: pretrain_contrastive(
                net, data.train, tc(e), method="simclr", temperature=cfg.temperature, ckpt_dir=cfg.run_dir / "simclr"
            ),
            first_guess_s=2 * self.ctx.get("bf16_epoch_s", 0.0) or None,
            keep_s=keep_for_precision,
        )
        record["simclr"]["peak_memory_gib"] = self._peak()
        if record["simclr"]["epochs"]:
            clf = Classifier(new_encoder(cfg), data.num_classes)
            clf.encoder.load_state_dict(net.encoder.state_dict())
            record["linear"] = {"epochs": [], "mode": "linear (frozen encoder)"}
            self._train_epochs(
                record,
                "linear",
                sz.linear_epochs,
                lambda e: finetune(clf, data.train, tc(e), mode="linear", ckpt_dir=cfg.run_dir / "linear"),
                after_epoch=lambda: {"test_acc": accuracy(clf, data.test, batch_size=cfg.eval_batch_size)},
                first_guess_s=self.ctx.get("bf16_epoch_s"),
                keep_s=keep_for_precision,
            )
            if record["linear"]["epochs"]:
                self._robust(clf, record["linear"], cfg, data, representation=ContrastiveNet(clf.encoder, net.head))
        stops = [
            f"{k}: {record[k]['stopped']}"
            for k in ("supervised", "simclr", "linear")
            if record.get(k, {}).get("stopped")
        ]
        if stops:
            record.update(status="stopped", reason="; ".join(stops))

    # ------------------------------------------------------------------------------------------- 5 precision
    def phase_precision(self, record: dict) -> None:
        import torch

        bf16_rows = self.ctx.get("bf16_rows") or []
        if not bf16_rows:
            record.update(status="skipped", reason="needs the quick slice's bf16 supervised run, which did not run")
            return
        record["fp32_settings"] = {
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        }
        self._supervised(record, "fp32", "fp32", len(bf16_rows))
        fp32_rows = record["fp32"]["epochs"]
        record["bf16"] = {
            "epochs": bf16_rows,
            "epoch_seconds_median_after_first": statistics.median(
                [r["seconds"] for r in bf16_rows[1:]] or [bf16_rows[0]["seconds"]]
            ),
        }
        if not fp32_rows:
            record.update(status="stopped", reason=record["fp32"].get("stopped", "no fp32 epoch ran"))
            return
        # the best test accuracy over the epochs both ran: early epochs of Adam without a schedule swing by
        # several points from one epoch to the next, the best of them much less
        k = len(fp32_rows)
        acc_bf16 = max(r["test_acc"] for r in bf16_rows[:k])
        acc_fp32 = max(r["test_acc"] for r in fp32_rows[:k])
        delta = abs(acc_bf16 - acc_fp32)
        record.update(
            compared_at_epoch=k,
            compared="best test accuracy over the epochs both runs trained",
            test_acc_bf16=acc_bf16,
            test_acc_fp32=acc_fp32,
            last_epoch_test_acc={"bf16": bf16_rows[k - 1]["test_acc"], "fp32": fp32_rows[k - 1]["test_acc"]},
            last_epoch_train_loss={"bf16": bf16_rows[k - 1].get("loss"), "fp32": fp32_rows[k - 1].get("loss")},
            abs_difference=delta,
            band=self.band,
            same_band=delta <= self.band,
            chance=1 / self.ctx["data"].num_classes,
            speedup_bf16_over_fp32=(
                record["fp32"]["epoch_seconds_median_after_first"] / record["bf16"]["epoch_seconds_median_after_first"]
            ),
        )
        if delta > self.band:
            record.update(
                status="failed",
                reason=f"bf16 and fp32 best test accuracies differ by {delta:.3f} > band {self.band} ({k} epochs)",
            )
        elif record["fp32"].get("stopped"):
            record.update(status="stopped", reason=f"compared after {k} epochs: {record['fp32']['stopped']}")

    def cleanup(self) -> None:
        """Remove the unpacked data and the checkpoints (temporary folders this run made)."""
        for tmp in self.tmp_dirs:
            shutil.rmtree(tmp, ignore_errors=True)
        self.tmp_dirs.clear()


def _imagefolder_root(folder: Path) -> Path:
    """The folder holding ``train/`` and ``test/`` in an unpacked archive (itself or its single subfolder)."""
    if (folder / "train").is_dir():
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir() and (p / "train").is_dir() and (p / "test").is_dir()]
    if len(subs) != 1:
        raise FileNotFoundError(f"the archive unpacked in {folder} holds no single <name>/train + <name>/test tree")
    return subs[0]


# --------------------------------------------------------------------------------------------------- prepare
def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(filename: str) -> str:
    """The normalised distribution name of a wheel file (``jupyter_client-8.10.0-py3-none-any.whl`` ->
    ``jupyter-client``)."""
    return _normalise(filename.split("-", 1)[0])


def wheels_to_carry(filenames: Sequence[str]) -> list[str]:
    """The wheels the GPU image lacks: drop those of :data:`ON_GPU_IMAGE` (the image's own versions stay)."""
    return sorted(f for f in filenames if wheel_name(f) not in ON_GPU_IMAGE)


def _pins() -> list[str]:
    """The needed distributions, pinned to the versions this environment tests with when it has them."""
    from importlib import metadata

    pins = []
    for dist in NEEDED_MODULES.values():
        if dist in NO_DEPS:
            continue
        try:
            pins.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pins.append(dist)
    return pins


def _pip_download(python: str, dest: Path, specs: Sequence[str], python_version: str, no_deps: bool) -> None:
    cmd = [python, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", python_version]
    cmd += ["--implementation", "cp", "-d", str(dest)]
    for plat in PLATFORMS:
        cmd += ["--platform", plat]
    if no_deps:
        cmd.append("--no-deps")
    subprocess.run([*cmd, *specs], check=True)


def unmet_requirements(wheels: Sequence[Path], python_version: str = "3.12") -> list[str]:
    """Requirements of the carried wheels that neither another carried wheel nor the GPU image satisfies.

    Read from each wheel's ``METADATA`` (``Requires-Dist``), markers evaluated for CPython ``python_version`` on
    Linux x86-64, extras ignored; only names are compared (the install uses ``--no-deps``). Returns
    ``"wheel: requirement"`` strings (empty when the set is complete).
    """
    import zipfile

    from packaging.requirements import Requirement

    env = {
        "python_version": python_version,
        "python_full_version": f"{python_version}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "extra": "",
    }
    have = {wheel_name(w.name) for w in wheels} | set(ON_GPU_IMAGE)
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


def run_call(budget_s: float) -> dict:
    """The device tool call that runs the check (command under 2,000 characters, carry list, timeout)."""
    return {
        "command": f"sh tools/gpu_check.sh --budget-s {budget_s:g}",
        "carry": [WHEELS_DIR, CARRY_DIR],
        "timeout_s": int(min(600, budget_s + RUN_SLACK_S)),
    }


def default_archive(root: Path) -> Path:
    """``../shared/data/cifar10-jpeg.tar.gz`` beside the checkout (``$RCL_CIFAR10_ARCHIVE`` overrides it)."""
    env = os.environ.get("RCL_CIFAR10_ARCHIVE")
    return Path(env) if env else root.parent / "shared" / "data" / ARCHIVE_NAME


def prepare(
    root: Path,
    archive: Path,
    *,
    python: str = sys.executable,
    python_version: str = "3.12",
    budget_s: float = DEFAULT_BUDGET_S,
    download: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Fill ``.whl/`` and ``.carry/`` for the GPU run, check the carried size, and return the run call.

    Wheels: the needed distributions and their dependencies resolved by pip for CPython ``python_version`` on
    manylinux x86-64 (binary wheels only), less what the GPU image holds; torchattacks without its dependencies.
    """
    wheels, carry = root / WHEELS_DIR, root / CARRY_DIR
    if download:
        staging = Path(tempfile.mkdtemp(prefix="rcl-wheels-"))
        try:
            pins = _pins()
            log(f"downloading wheels for CPython {python_version} manylinux x86-64: {' '.join(pins)} (+ dependencies)")
            _pip_download(python, staging, pins, python_version, no_deps=False)
            _pip_download(python, staging, [f"{d}=={v}" for d, v in NO_DEPS.items()], python_version, no_deps=True)
            names = [p.name for p in staging.glob("*.whl")]
            keep = wheels_to_carry(names)
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
    carry.mkdir(exist_ok=True)
    target = carry / ARCHIVE_NAME
    if not archive.is_file():
        raise SystemExit(f"no CIFAR-10 archive at {archive}: pass --archive PATH (see ../shared/data/README.md)")
    if not target.is_file() or target.stat().st_size != archive.stat().st_size:
        shutil.copy2(archive, target)
    digest = _sha256(target)
    if digest != ARCHIVE_SHA256:
        log(f"warning: {target} has sha256 {digest}, not the documented {ARCHIVE_SHA256}")
    (carry / "source.json").write_text(json.dumps({**_source(root), "prepared": _now()}, indent=2) + "\n")
    carried = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    try:
        unmet = unmet_requirements(carried, python_version)
    except ImportError:  # packaging missing: the check is a convenience, the GPU run's import probe is the proof
        unmet = ["(not checked: the packaging module is not installed here)"]
    for item in unmet:
        log(f"warning: not carried and not on the GPU image: {item}")
    call = run_call(budget_s)
    sizes = travelling_bytes(root, call["carry"])
    total = sum(sizes.values())
    result = {
        "wheels": [p.name for p in carried],
        "unmet_requirements": unmet,
        "archive": str(target),
        "archive_sha256_ok": digest == ARCHIVE_SHA256,
        "bytes": sizes,
        "total_bytes": total,
        "limit_bytes": TREE_LIMIT_BYTES,
        "fits": total < TREE_LIMIT_BYTES,
        "run_call": call,
    }
    mib = lambda b: f"{b / 2**20:.1f} MiB"
    log(f"wheels in {WHEELS_DIR}/: {len(result['wheels'])} files")
    log("carried: " + ", ".join(f"{k} {mib(v)}" for k, v in sizes.items()) + f"; total {mib(total)} of 64 MiB")
    if not result["fits"]:
        raise SystemExit(f"what would travel is {mib(total)}, over the 64 MiB limit: carry less")
    log("the device call to make (run tool):\n" + json.dumps(call, indent=2))
    return result


# --------------------------------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rcl.gpu_check",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--prepare", action="store_true", help="download the wheels, copy the data, print the run call")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU, nothing installed")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="wall-time budget (default 480)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default $OUT, else runs/gpu-check)")
    parser.add_argument("--device", default="auto", help="cuda | cpu | auto (dry run: cpu)")
    parser.add_argument(
        "--data", default="auto", help="auto (the carried archive; dry run: synthetic without it) | synthetic | PATH"
    )
    parser.add_argument("--skip", action="append", default=[], choices=PHASES, help="skip a phase (repeatable)")
    parser.add_argument("--band", type=float, default=None, help="bf16 vs fp32 accuracy band (default 0.05)")
    parser.add_argument("--bench-repeats", type=int, default=None, help="rcl.bench --repeats (default 5; dry run 1)")
    parser.add_argument("--benchmarks", type=Path, default=None, help="benchmarks folder (dry run: <out>/benchmarks)")
    parser.add_argument(
        "--tests", nargs="*", default=None, help="pytest paths (default tests/; dry run tests/test_cuda.py)"
    )
    parser.add_argument("--archive", type=Path, default=None, help="--prepare: the CIFAR-10 JPEG archive to carry")
    parser.add_argument("--python-version", default="3.12", help="--prepare: the GPU machine's Python (default 3.12)")
    parser.add_argument("--no-download", action="store_true", help="--prepare: keep the wheels already in .whl/")
    args = parser.parse_args(argv)
    root = project_root()
    if args.prepare:
        result = prepare(
            root,
            args.archive or default_archive(root),
            python_version=args.python_version,
            budget_s=args.budget_s,
            download=not args.no_download,
        )
        return 0 if result["fits"] else 1
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else root / "runs" / "gpu-check")
    settings = CheckSettings(
        out=out,
        budget_s=args.budget_s,
        dry_run=args.dry_run,
        device=args.device,
        data=args.data,
        benchmarks=args.benchmarks,
        skip=tuple(args.skip),
        band=args.band,
        bench_repeats=args.bench_repeats,
        tests=tuple(args.tests or ()),
    )
    check = GpuCheck(settings)
    try:
        report = check.run()
    finally:
        check.cleanup()
    bad = [n for n, r in report["phases"].items() if r["status"] in ("failed", "error")]
    return 1 if bad else 0


__all__ = [
    "Budget",
    "CheckSettings",
    "GpuCheck",
    "PHASES",
    "main",
    "prepare",
    "run_call",
    "travelling_bytes",
    "unmet_requirements",
    "wheels_to_carry",
]


if __name__ == "__main__":
    raise SystemExit(main())
