"""Device, precision and seeding helpers shared by every module.

The fast path and the CPU path are the same code: on CUDA the network runs in bf16 autocast
with channels_last memory format; on CPU both switches are no-ops. ``precision`` forces either path
on any device: ``"auto"`` (bf16 on CUDA, fp32 elsewhere; the default), ``"bf16"`` (bf16 autocast and
channels_last, also on CPU) or ``"fp32"`` (float32, contiguous, also on CUDA).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import torch


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve ``"auto"`` to CUDA when available, else CPU; validate anything else."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda[:N]'") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available: use 'cpu' or 'auto'")
    return resolved


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a module holding neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


PRECISIONS = ("auto", "bf16", "fp32")


def resolve_precision(device: torch.device | str, precision: str = "auto") -> str:
    """``"bf16"`` or ``"fp32"``: what ``precision`` means on ``device`` (``"auto"``: bf16 on CUDA, else fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(map(repr, PRECISIONS))}")
    if precision == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device | str, precision: str = "auto") -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, a no-op elsewhere; ``precision="bf16"``/``"fp32"`` forces it on/off anywhere."""
    device = torch.device(device)
    if resolve_precision(device, precision) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device | str, precision: str = "auto") -> torch.memory_format:
    """channels_last on CUDA (tensor cores like NHWC), contiguous elsewhere; follows ``precision`` like autocast."""
    return torch.channels_last if resolve_precision(device, precision) == "bf16" else torch.contiguous_format


def compiled(fn: Callable, device: torch.device | str) -> Callable:
    """``torch.compile(fn)`` for work on ``device``: the optional fused path of the training steps.

    The first call traces and compiles (tens of seconds for a ResNet on a small CPU), later calls with the same
    shapes reuse the kernels. On CPU, inductor generates C++: without a compiler this raises at once with what to
    do, instead of failing inside the first training step.
    """
    if pick_device(device).type == "cpu":
        candidates = [os.environ.get("CXX"), "g++", "clang++", "c++"]
        if not any(shutil.which(c) for c in candidates if c):
            raise RuntimeError(
                "compile=True on the CPU needs a C++ compiler (g++ or clang++, or $CXX) for torch.compile; "
                "install one (e.g. `apt install g++`) or train with compile=False"
            )
    return torch.compile(fn)


def seed_everything(seed: int) -> None:
    """Seed Python, and torch on every device (NumPy is not used for randomness in rcl)."""
    random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded_init(seed: int, name: str):
    """Draw a model's initial weights from the run seed and the model's name, not from the RNG's history.

    ``with seeded_init(cfg.seed, "01_supervised/SL-AT"): model = Classifier(...)``: inside, the global CPU RNG
    (what ``nn.Module`` initialisers draw from) is seeded from a hash of ``(seed, name)``; afterwards it is
    restored, so the caller's random stream is untouched. A model is then the same whichever chapter, process or
    order builds it. ``name`` should say what the model is (rcl uses its checkpoint folder within the run folder).
    """
    digest = hashlib.sha256(f"{int(seed)}/{name}".encode()).digest()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
        yield


def make_generator(device: torch.device | str, seed: int) -> torch.Generator:
    """A torch.Generator on ``device`` seeded with ``seed`` (per-epoch streams make runs resumable)."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(seed))
    return gen


def project_root(start: Path | None = None) -> Path:
    """The folder holding ``pyproject.toml`` above ``start`` (default: cwd), else cwd.

    Notebooks run with ``notebooks/`` as their working directory; this lets them share
    ``data/`` and ``runs/`` with the command line.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists() and (folder / "rcl").is_dir():
            return folder
    return here
