"""Device, precision and seeding helpers shared by every module.

The fast path and the CPU path are the same code: on CUDA the network runs in bf16 autocast
with channels_last memory format; on CPU both switches are no-ops.
"""

from __future__ import annotations

import contextlib
import random
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


def autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, a no-op elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device | str) -> torch.memory_format:
    """channels_last on CUDA (tensor cores like NHWC), contiguous elsewhere."""
    return torch.channels_last if torch.device(device).type == "cuda" else torch.contiguous_format


def seed_everything(seed: int) -> None:
    """Seed Python, and torch on every device (NumPy is not used for randomness in rcl)."""
    random.seed(seed)
    torch.manual_seed(seed)


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
