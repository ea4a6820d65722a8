"""Device, precision and seeding helpers shared by every module.

One code path serves every device. The fast path runs the network in bf16 autocast with channels_last memory
format: always on CUDA, and on a CPU that computes bf16 natively (AVX512-BF16 or AMX-BF16, where oneDNN's bf16
convolutions and matrix products run about twice as fast as float32); elsewhere the CPU stays in float32
(emulated bf16 is slower than float32). ``precision`` chooses:

- ``"auto"`` (the default): the environment variable ``RCL_PRECISION`` (``fp32`` | ``bf16``) when it is set
  (``python -m rcl.reproduce -p precision=...`` sets it for every chapter and job), else the rule above;
- ``"bf16"``: bf16 autocast and channels_last on any device;
- ``"fp32"``: float32 and contiguous tensors on any device.

:func:`precision_choice` says which one ``"auto"`` picks here and why.
"""

from __future__ import annotations

import contextlib
import functools
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
PRECISION_ENV = "RCL_PRECISION"  # the run's precision, set by the runner for chapters and jobs (fp32 | bf16 | auto)


@functools.cache
def cpu_bf16_features() -> tuple[str, ...]:
    """The native bf16 instruction sets this CPU has, as torch reports them: ``("avx512_bf16", "amx_bf16")``,
    one of them, or ``()`` (no native bf16: oneDNN would emulate it, slower than float32)."""
    probes = (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx_bf16", "_is_amx_tile_supported"))
    found = []
    for name, probe in probes:
        try:
            if getattr(torch.cpu, probe)():
                found.append(name)
        except (AttributeError, RuntimeError):  # an older or newer torch without the probe: treat as absent
            pass
    return tuple(found)


def precision_choice(device: torch.device | str, precision: str = "auto") -> tuple[str, str]:
    """``(resolved, why)``: ``"bf16"`` or ``"fp32"``, and one sentence saying why (for logs, summaries, run.json)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(map(repr, PRECISIONS))}")
    if precision != "auto":
        return precision, f"precision={precision} was asked for"
    env = os.environ.get(PRECISION_ENV, "").strip().lower()
    if env and env != "auto":
        if env not in PRECISIONS:
            raise ValueError(f"{PRECISION_ENV}={env!r} is not a precision: use fp32, bf16 or auto (or unset it)")
        return env, f"{PRECISION_ENV}={env} in the environment"
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16", "CUDA: bf16 autocast + channels_last (tensor cores)"
    if kind == "cpu":
        native = cpu_bf16_features()
        if native:
            return "bf16", f"the CPU computes bf16 natively ({', '.join(native)}): bf16 autocast + channels_last"
        return "fp32", "the CPU has no native bf16 (no avx512_bf16 or amx_bf16): float32"
    return "fp32", f"{kind}: float32"


def resolve_precision(device: torch.device | str, precision: str = "auto") -> str:
    """``"bf16"`` or ``"fp32"``: what ``precision`` means on ``device`` (see the module docstring for ``"auto"``)."""
    return precision_choice(device, precision)[0]


def autocast(device: torch.device | str, precision: str = "auto") -> contextlib.AbstractContextManager:
    """bf16 autocast where ``precision`` resolves to bf16 on ``device``; otherwise autocast switched off (so an
    fp32 block inside a bf16 one, e.g. an fp32 attack in a bf16 training step, really runs in float32)."""
    device = torch.device(device)
    bf16 = resolve_precision(device, precision) == "bf16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)


def memory_format(device: torch.device | str, precision: str = "auto") -> torch.memory_format:
    """channels_last where ``precision`` resolves to bf16 (NHWC is what bf16 kernels like, on GPU and CPU alike),
    contiguous otherwise."""
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
