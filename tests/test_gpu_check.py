"""rcl.bench.gpu_check: the CPU dry run of the GPU check (so the script cannot rot between GPU runs), its budget stop,
its preparation (wheel filter, carried size, the device call), the machine file it reads and the README section it
renders."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
import torch

from rcl.bench.gpu_check.budget import DRY_RUN_PLAN, Budget
from rcl.bench.gpu_check.check import GpuCheck
from rcl.bench.gpu_check.cli import main
from rcl.bench.gpu_check.context import CheckSettings
from rcl.bench.gpu_check.data import load_data
from rcl.bench.gpu_check.machine import load_machine
from rcl.bench.gpu_check.prepare import (
    prepare,
    run_call,
    travelling_bytes,
    unmet_requirements,
    wheel_name,
    wheels_to_carry,
)
from rcl.bench.gpu_check.training import train_epochs
from rcl.bench.gpu_records import PHASES
from rcl.bench.readme import render_readme

ROOT = Path(__file__).resolve().parent.parent


def _assert_number(value, name: str) -> None:
    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{name} is {value!r}"
    assert math.isfinite(value), f"{name} is {value!r}"


def _project_benchmarks() -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (ROOT / "benchmarks").iterdir()}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One dry run through the shell wrapper, as a user would type it; returns (returncode, out folder, report)."""
    out = tmp_path_factory.mktemp("gpu-check-out")
    before = _project_benchmarks()
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    proc = subprocess.run(
        ["sh", "tools/gpu_check.sh", "--dry-run", "--budget-s", "240", "--out", str(out), "--data", "synthetic"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert _project_benchmarks() == before, "a dry run must not write into the project's benchmarks/"
    report = json.loads((out / "gpu-check.json").read_text())
    return proc, out, report


@pytest.mark.slow
def test_dry_run_records_every_phase_with_figures_or_a_reason(dry_run):
    proc, out, report = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report["kind"] == "gpu-check" and report["dry_run"] is True
    assert report["device"]["type"] == "cpu"
    assert list(report["phases"]) == list(PHASES)
    for name, record in report["phases"].items():
        assert record["status"] in ("done", "stopped", "skipped"), f"{name}: {record}"
        if record["status"] != "done":  # a busy machine may run out of budget: then the reason is recorded
            assert isinstance(record.get("reason"), str) and record["reason"], f"{name}: {record}"
    p = report["phases"]
    if p["install"]["status"] == "done":
        assert set(p["install"]["versions"]) == set(load_machine().lacks)
    if p["cuda_tests"]["status"] == "done":
        assert p["cuda_tests"]["returncode"] in (0, 5) and p["cuda_tests"]["failed"] == 0
        assert p["cuda_tests"]["passed"] + p["cuda_tests"]["skipped"] >= 1  # on a CPU every CUDA test skips
    if p["bench"]["status"] == "done":
        for key in ("simclr_epoch_s", "finetune_epoch_s", "cka_10k_s"):
            _assert_number(p["bench"]["summary"][key], key)
        assert (out / p["bench"]["json"]).is_file()
    q = p["quick_slice"]
    if q["status"] in ("done", "stopped"):
        assert q["data"]["n_train"] == DRY_RUN_PLAN.slice.n_train
        rows = q["supervised"]["epochs"]
        assert rows and all(r["seconds"] > 0 and 0.0 <= r["test_acc"] <= 1.0 for r in rows)
        assert q["supervised"]["precision"] == "bf16" and q["supervised"]["channels_last"] is True
    if q["status"] == "done":
        _assert_number(q["supervised"]["robust"]["robust_acc"], "robust_acc")
        _assert_number(q["simclr"]["epoch_seconds_median_after_first"], "simclr epoch")
        _assert_number(q["linear"]["threat_model_1"]["robust_acc"], "threat model I")
    prec = p["precision"]
    if prec["status"] == "done":
        assert prec["fp32"]["channels_last"] is False
        _assert_number(prec["abs_difference"], "abs_difference")
        assert prec["same_band"] is True and prec["compared_at_epoch"] >= 1


@pytest.mark.slow
def test_dry_run_writes_the_files_the_device_call_brings_back(dry_run):
    proc, out, report = dry_run
    for rel in report["files"]:
        assert (out / rel).is_file(), rel
        assert len(Path(rel).parts) <= 2 and all(c.isalnum() or c in "._-/" for c in rel)  # the $OUT rules
    assert len(report["files"]) <= 8
    readme = (out / "benchmarks" / "README.md").read_text()
    assert "## GPU check" in readme and "No GPU run of the check has happened yet" in readme
    assert "cpu-gpu-check-dry-run.json" in readme and "dry run" in readme
    assert "cpu-small.json" in readme  # the project's own bench reports are still rendered beside it
    assert "phase quick_slice" in (out / "gpu-check.log").read_text()


def test_a_tiny_budget_skips_the_later_phases_and_still_writes_the_json(tmp_path):
    threads = torch.get_num_threads()
    rc = main(["--dry-run", "--budget-s", "3", "--out", str(tmp_path), "--data", "synthetic"])
    assert torch.get_num_threads() == threads
    assert rc == 0
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    phases = report["phases"]
    assert phases["install"]["status"] == "done"
    for name in ("cuda_tests", "bench", "quick_slice"):
        assert phases[name]["status"] == "skipped", phases[name]
        assert phases[name]["reason"].startswith("budget:"), phases[name]
    assert phases["precision"]["status"] == "skipped"
    assert "budget" in phases["precision"]["reason"] or "did not run" in phases["precision"]["reason"]
    assert report["elapsed_s"] < 3 + 10  # the install probe (one interpreter start) may overrun on a busy machine
    assert (tmp_path / "benchmarks" / "cpu-gpu-check-dry-run.json").is_file()


def test_the_budget_stops_a_training_loop_between_epochs(tmp_path):
    check = GpuCheck(CheckSettings(out=tmp_path, budget_s=60, dry_run=True))
    calls = []

    def fake_epoch(e: int) -> list[dict]:  # an epoch that claims to have taken 100 s
        calls.append(e)
        return [{"epoch": i, "loss": 1.0, "seconds": 100.0} for i in range(1, e + 1)]

    record: dict = {}
    rows = train_epochs(check.ctx, record, "supervised", 3, fake_epoch)
    assert calls == [1] and len(rows) == 1  # epoch 2 would need about 100 s of the 60
    assert record["supervised"]["stopped"].startswith("budget:")
    assert record["supervised"]["epochs_done"] == 1
    assert json.loads((tmp_path / "gpu-check.json").read_text())["kind"] == "gpu-check"  # saved after the epoch


def test_budget_arithmetic():
    budget = Budget(100, reserve_s=10)
    assert 89 < budget.left() <= 90
    assert budget.allows(80) and not budget.allows(95)
    assert "needs about 95.0 s" in budget.why_not(95, "this")
    assert Budget(2, reserve_s=10).reserve_s == 0.5  # the reserve never eats the whole budget
    with pytest.raises(ValueError, match="budget"):
        Budget(0, reserve_s=1)


def test_a_real_run_refuses_a_machine_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match="--dry-run"):
        GpuCheck(CheckSettings(out=tmp_path, device="cpu"))


# --------------------------------------------------------------------------------------------------- data
def _tiny_archive(path: Path) -> None:
    """A CIFAR-like JPEG tree: cifar10-jpeg/{train,test}/{cat,dog}/N.jpg."""
    from torchvision.io import encode_jpeg

    gen = torch.Generator().manual_seed(0)
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", 4), ("test", 2)):
            for label in ("cat", "dog"):
                for i in range(n):
                    data = encode_jpeg(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=gen)).numpy()
                    info = tarfile.TarInfo(f"cifar10-jpeg/{split}/{label}/{i:04d}.jpg")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data.tobytes()))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision 0.29 deprecates its JPEG codec
def test_the_archive_is_unpacked_and_read_as_an_image_folder(tmp_path):
    archive = tmp_path / "tiny.tar.gz"
    _tiny_archive(archive)
    check = GpuCheck(CheckSettings(out=tmp_path / "out", budget_s=60, dry_run=True, data=str(archive)))
    record: dict = {}
    data = load_data(check.ctx, record)
    assert (len(data.train), len(data.test), data.num_classes) == (8, 4, 2)
    assert data.classes == ["cat", "dog"] and data.name.startswith("imagefolder:")
    assert record["data"]["n_train"] == 8 and "unpack_seconds" in record["data"]
    assert "delete_unpacked_seconds" in record["data"] and check.ctx.tmp_dirs == []  # decoded, then deleted


def test_a_real_run_without_the_archive_says_how_to_prepare(tmp_path, monkeypatch):
    check = GpuCheck(CheckSettings(out=tmp_path, budget_s=60, dry_run=True))
    check.ctx.dry = False  # the real run's data rule, on this CPU
    monkeypatch.setattr(check.ctx, "root", tmp_path)
    with pytest.raises(FileNotFoundError, match="--prepare"):
        load_data(check.ctx, {})


# --------------------------------------------------------------------------------------------------- prepare
def test_wheels_already_on_the_gpu_image_are_not_carried():
    names = [
        "papermill-2.7.0-py3-none-any.whl",
        "jupyter_client-8.10.0-py3-none-any.whl",
        "pyyaml-6.0.4-cp312-cp312-manylinux2014_x86_64.whl",
        "requests-2.34.2-py3-none-any.whl",
        "typing_extensions-4.16.0-py3-none-any.whl",
        "python_dateutil-4.0.0-py3-none-any.whl",
        "rpds_py-2026.9.1-cp312-cp312-manylinux_2_17_x86_64.whl",
    ]
    assert wheels_to_carry(names) == [
        "jupyter_client-8.10.0-py3-none-any.whl",
        "papermill-2.7.0-py3-none-any.whl",
        "rpds_py-2026.9.1-cp312-cp312-manylinux_2_17_x86_64.whl",
    ]
    assert wheel_name("jupyter_client-8.10.0-py3-none-any.whl") == "jupyter-client"


def _wheel(folder: Path, name: str, requires: list[str]) -> Path:
    import zipfile

    path = folder / f"{name}-1.0-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}-1.0.dist-info/METADATA", meta)
    return path


def test_unmet_requirements_of_the_carried_wheels_are_found(tmp_path):
    wheels = [
        _wheel(
            tmp_path,
            "alpha",
            ["beta>=1", "requests", "gamma; python_version < '3.8'", "delta; extra == 'docs'", "aiohttp>=3.9"],
        ),
        _wheel(tmp_path, "beta", ["epsilon", "zeta; python_version >= '3.12'"]),
        _wheel(tmp_path, "torchattacks", ["requests~=2.25.1", "missing-but-no-deps"]),
    ]
    assert unmet_requirements(wheels, "3.12") == [
        "beta-1.0-py3-none-any.whl: epsilon",
        'beta-1.0-py3-none-any.whl: zeta; python_version >= "3.12"',
    ]
    assert unmet_requirements(wheels, "3.11") == ["beta-1.0-py3-none-any.whl: epsilon"]


def test_the_run_call_fits_the_device_tool():
    call = run_call(480)
    assert len(call["command"]) < 2000 and "tools/gpu_check.sh" in call["command"]
    assert call["carry"] == [".whl", ".carry"] and len(call["carry"]) <= 8
    assert 480 < call["timeout_s"] <= 600


def test_the_machine_file_is_read_and_a_missing_one_says_what_to_do(tmp_path, capsys):
    machine = load_machine()  # benchmarks/gpu-check-machine.json
    assert set(machine.plan.min_s) == set(machine.plan.cap_s) == set(PHASES)
    assert machine.budget_s > 0 and machine.lacks and "torch" in machine.has
    assert run_call(machine=machine) == run_call(machine.budget_s, machine)
    with pytest.raises(FileNotFoundError, match="--machine PATH"):
        load_machine(tmp_path / "missing.json")
    (tmp_path / "partial.json").write_text('{"device_tool": {"budget_s": 480}}')
    with pytest.raises(ValueError, match="lacks the key"):
        load_machine(tmp_path / "partial.json")
    with pytest.raises(SystemExit):
        main(["--dry-run", "--machine", str(tmp_path / "missing.json"), "--out", str(tmp_path / "out")])
    assert "no GPU machine description" in capsys.readouterr().err


def _git_repo(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / ".gitignore").write_text("/.whl/\n/.carry/\n")
    (path / "kept.txt").write_text("x" * 1000)
    (path / ".whl").mkdir()
    _wheel(path / ".whl", "alpha", ["requests"])
    return path


def test_travelling_bytes_counts_the_tree_and_only_the_named_ignored_folders(tmp_path):
    root = _git_repo(tmp_path / "repo")
    sizes = travelling_bytes(root, [".whl", ".carry"])
    assert sizes["tree"] == 1000 + len("/.whl/\n/.carry/\n")  # untracked, not ignored: travels
    assert sizes[".whl"] == (root / ".whl" / "alpha-1.0-py3-none-any.whl").stat().st_size > 0
    assert sizes[".carry"] == 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_prepare_copies_the_archive_records_the_source_and_prints_the_call(tmp_path):
    root = _git_repo(tmp_path / "repo")
    archive = tmp_path / "cifar10-jpeg.tar.gz"
    _tiny_archive(archive)
    lines: list[str] = []
    result = prepare(root, archive, download=False, log=lines.append)
    assert (root / ".carry" / "cifar10-jpeg.tar.gz").read_bytes() == archive.read_bytes()
    assert result["archive_sha256_ok"] is False and any("sha256" in line for line in lines)
    assert result["wheels"] == ["alpha-1.0-py3-none-any.whl"] and result["unmet_requirements"] == []
    assert json.loads((root / ".carry" / "source.json").read_text())["prepared"]
    assert result["fits"] and result["total_bytes"] == sum(result["bytes"].values())
    assert result["bytes"][".carry"] > archive.stat().st_size  # the archive and source.json
    assert result["run_call"] == run_call(load_machine().budget_s)
    assert any('"carry"' in line for line in lines)


# --------------------------------------------------------------------------------------------------- README
def _gpu_report(dry: bool) -> dict:
    report = {
        "kind": "gpu-check",
        "dry_run": dry,
        "timestamp": "2026-01-01T00:00:00+00:00",
        "budget_s": 480,
        "elapsed_s": 470,
        "device": {"type": "cpu" if dry else "cuda", "name": "CPU" if dry else "NVIDIA H200", "torch": "2.x"},
        "source": {"commit": "0123456789abcdef", "dirty": False},
        "phases": {name: {"status": "skipped", "reason": "budget: test"} for name in PHASES},
    }
    return report


def test_readme_section_says_whether_a_gpu_run_happened(tmp_path):
    (tmp_path / "cpu-gpu-check-dry-run.json").write_text(json.dumps(_gpu_report(dry=True)))
    text = render_readme(tmp_path)
    assert "## GPU check" in text and "No GPU run of the check has happened yet" in text
    assert "| phase `bench` | skipped |" in text
    (tmp_path / "nvidia-h200-gpu-check.json").write_text(json.dumps(_gpu_report(dry=False)))
    text = render_readme(tmp_path)
    assert "No GPU run of the check has happened yet" not in text
    assert "nvidia-h200-gpu-check.json<br>NVIDIA H200 |" in text
    assert (tmp_path / "README.md").read_text() == text


def test_project_readme_is_current():
    """benchmarks/README.md is generated: it must match what render_readme makes of the JSON files beside it."""
    folder = ROOT / "benchmarks"
    expected = (folder / "README.md").read_text()
    with tempfile.TemporaryDirectory() as tmp:
        for path in folder.glob("*.json"):
            shutil.copy2(path, Path(tmp) / path.name)
        assert render_readme(tmp) == expected, "regenerate it: python -m rcl.bench --render-readme"
