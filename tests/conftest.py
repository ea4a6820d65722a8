"""Shared fixtures: fp32 unless a test asks otherwise; the offline CIFAR-10 JPEG tree, unpacked once.

Unit tests run in float32 whatever the processor (``RCL_PRECISION=fp32``): they compare rcl against references
written from the papers' and the released code's equations at float32 tolerances, and their verdict must not depend
on whether the machine computes bf16 natively. The bf16 path has its own tests (``test_precision.py``,
``test_bench.py``, ``test_cuda.py``), and the chapters under nbval run in the machine's default precision.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest

from rcl.runtime import PRECISION_ENV

REPO_ROOT = Path(__file__).resolve().parent.parent
CIFAR10_JPEG_TARBALL = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.fixture(autouse=True, scope="module")
def fp32_unless_asked():
    """Every "auto" precision of a test module (and of the kernels and job processes it starts) resolves to fp32,
    from its first fixture on (module-scoped ones too); see the module docstring. A test changes it with
    monkeypatch. The chapters under nbval (not under tests/) keep the machine's default."""
    before = os.environ.get(PRECISION_ENV)
    os.environ[PRECISION_ENV] = "fp32"
    yield
    if before is None:
        os.environ.pop(PRECISION_ENV, None)
    else:
        os.environ[PRECISION_ENV] = before


@pytest.fixture(scope="session")
def cifar10_jpeg() -> Path:
    """Path of ``data/cifar10-jpeg`` (train/<class>/*.jpg, test/<class>/*.jpg), unpacked atomically once."""
    target = REPO_ROOT / "data" / "cifar10-jpeg"
    if (target / "train").is_dir() and (target / "test").is_dir():
        return target
    if not CIFAR10_JPEG_TARBALL.is_file():
        pytest.skip(f"offline CIFAR-10 JPEG archive not found at {CIFAR10_JPEG_TARBALL}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".cifar10-jpeg-"))
    try:
        with tarfile.open(CIFAR10_JPEG_TARBALL) as tar:
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, **kwargs)
        try:
            os.rename(tmp / "cifar10-jpeg", target)
        except OSError:  # another process finished first
            if not (target / "train").is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
