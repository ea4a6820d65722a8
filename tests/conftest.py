"""Shared fixtures: the offline CIFAR-10 JPEG tree (../shared/data/cifar10-jpeg.tar.gz), unpacked once."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CIFAR10_JPEG_TARBALL = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


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
