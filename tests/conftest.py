"""Shared fixtures and helpers: fp32 unless a test asks otherwise; the offline CIFAR-10 JPEG tree, unpacked once;
small data and small networks that several test files use (``from conftest import half_size, TinyCNN, ...``).

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
import torch
import torch.nn.functional as F
from torch import nn

from rcl.data import Split
from rcl.models import Classifier, resnet18
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


# ------------------------------------------------------------------------------------------- the browser tests
# Debian's Chromium (tools/install_browser.sh) and the flags that keep it off the closed network
CHROMIUM = Path(os.environ.get("RCL_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


# ------------------------------------------------------------------------------------------- small data and networks
def half_size(split: Split) -> Split:
    """The split at half the resolution (2x2 average pooling, so 16x16 for CIFAR's 32x32): 4x cheaper, same classes."""
    return Split(F.avg_pool2d(split.images.float(), 2).round().to(torch.uint8), split.labels)


def seeded_classifier(width: int, num_classes: int = 10, seed: int = 0) -> Classifier:
    """``Classifier(resnet18(width), num_classes)`` initialised after ``torch.manual_seed(seed)``, in train mode."""
    torch.manual_seed(seed)
    return Classifier(resnet18(width), num_classes)


class TinyCNN(nn.Module):
    """A small CNN independent of rcl.models: x [B, 3, H, W] -> logits [B, num_classes].

    One block per entry of ``widths`` (3x3 conv, BatchNorm when ``batch_norm``, ReLU), 2x2 max pooling between
    blocks, then global average pooling (``body`` gives this ``widths[-1]``-d representation) and a linear ``fc``.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32), num_classes: int = 10, batch_norm: bool = False) -> None:
        super().__init__()
        layers, channels = [], 3
        for i, width in enumerate(widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            layers.append(nn.Conv2d(channels, width, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU())
            channels = width
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))
