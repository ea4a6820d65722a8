"""One run of the speed benchmark: every measurement in turn, on synthetic CIFAR-sized data, gathered into the
JSON-ready report (``python -m rcl.bench`` writes it to ``benchmarks/<device>-<size>.json``).

The report holds the device (its name, torch, threads, the load average at the start and the end: a timing is
honest only on a quiet machine), the settings, and the figures of :mod:`rcl.bench.pairs`,
:mod:`rcl.bench.absolute`, :mod:`rcl.bench.cpu_precision` (on a CPU) and the profile estimates of
:mod:`rcl.bench.estimate`.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import time
from collections.abc import Callable
from typing import Any

import torch

from rcl.bench.absolute import bench_cka_10k, bench_finetune
from rcl.bench.cpu_precision import bench_cpu_precision
from rcl.bench.estimate import count_flops, profile_estimate
from rcl.bench.pairs import bench_augment, bench_cka, bench_pgd, bench_training
from rcl.bench.settings import ALPHA, EPS, LR, PGD_STEPS, SCHEMA, SIZES, TEMPERATURE, BenchSize
from rcl.data import Split, synthetic_dataset
from rcl.reproduce import provenance
from rcl.reproduce.provenance import cpu_model
from rcl.runtime import memory_format, pick_device, precision_choice, resolve_precision


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model (:func:`rcl.reproduce.provenance.cpu_model`)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def slug(text: str) -> str:
    """``text`` as a file-name part: lower case, runs of other characters as one ``-`` (``"device"`` if empty)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def _load_average() -> float | None:
    """The 1-minute load average, unrounded (None where the OS has none)."""
    load = provenance.load_average()
    return None if load is None else load[0]


def run_bench(
    device: str | torch.device = "auto",
    size: str | BenchSize | None = None,
    repeats: int = 5,
    workers: int | None = None,
    compile: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Run every measurement and return the JSON-ready report (see :mod:`rcl.bench`).

    size: "small", "full", a :class:`BenchSize` (reported as "custom"), or None (full on CUDA, small on CPU).
    workers: the baseline DataLoader's worker processes (default 2 on CPU, up to 8 on CUDA).
    compile: also time the training step with ``TrainConfig(compile=True)`` (compilation time reported apart).
    """
    device = pick_device(device)
    size_name, sz = _resolve_size(device, size)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    workers = workers if workers is not None else (2 if device.type == "cpu" else min(8, os.cpu_count() or 1))
    n_data = max(sz.train_batches, sz.pgd_batches, sz.finetune_batches) * sz.batch
    n_data = max(n_data, sz.augment_images, sz.cka_batches * sz.cka_batch, 4 * sz.cpu_batch)
    data = synthetic_dataset(n_train=n_data, n_test=0, seed=0).train
    load_start = _load_average()
    started = time.perf_counter()
    figures: dict[str, Any] = {}
    for name, fn in _measurements(sz, device, repeats, data, workers, compile):
        log(f"measuring {name} ...")
        t0 = time.perf_counter()
        figures[name] = fn()
        log(f"  done in {time.perf_counter() - t0:.1f} s")
    per_image = {
        "t_fb": 1.0 / (2 * figures["simclr_step"]["ours"]["images_per_s"]),
        "t_step": 1.0 / (PGD_STEPS * figures["pgd"]["ours"]["images_per_s"]),
    }
    bench_flops = count_flops("resnet18", sz.width)
    figures["profiles"] = {name: profile_estimate(name, per_image, bench_flops) for name in ("quick", "paper")}
    return {
        "schema": SCHEMA,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": _device_record(device, load_start),
        "settings": _settings_record(size_name, sz, repeats, workers, device, compile),
        "bench_seconds": time.perf_counter() - started,
        "figures": figures,
    }


def _resolve_size(device: torch.device, size: str | BenchSize | None) -> tuple[str, BenchSize]:
    """``(name, size)``: a :class:`BenchSize` is "custom"; None is full on CUDA, small on CPU."""
    if isinstance(size, BenchSize):
        return "custom", size
    size_name = size or ("full" if device.type == "cuda" else "small")
    if size_name not in SIZES:
        raise ValueError(f"unknown size {size_name!r}: use one of {', '.join(SIZES)}")
    return size_name, SIZES[size_name]


def _measurements(
    sz: BenchSize, device: torch.device, repeats: int, data: Split, workers: int, compile: bool
) -> list[tuple[str, Callable[[], dict]]]:
    """The measurements in the order they run, each as ``(figure name, call)``; the CPU precision on a CPU only."""
    measurements = [
        ("simclr_step", lambda: bench_training(sz, device, repeats, data, workers, compile)),
        ("pgd", lambda: bench_pgd(sz, device, repeats, data)),
        ("augment", lambda: bench_augment(sz, device, repeats, data)),
        ("cka", lambda: bench_cka(sz, device, repeats, data)),
        ("cka_10k", lambda: bench_cka_10k(sz, device, repeats, data)),
        ("finetune_pgd10", lambda: bench_finetune(sz, device, repeats, data)),
    ]
    if device.type == "cpu":
        measurements.append(
            ("cpu_precision", lambda: bench_cpu_precision(device, repeats, data, sz.cpu_widths, sz.cpu_batch))
        )
    return measurements


def _device_record(device: torch.device, load_start: float | None) -> dict:
    """The report's ``device``: what ran the measurements, and the load average before and after them."""
    return {
        "type": device.type,
        "name": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1min": {"start": load_start, "end": _load_average()},
    }


def _settings_record(
    size_name: str, sz: BenchSize, repeats: int, workers: int, device: torch.device, compile: bool
) -> dict:
    """The report's ``settings``: the size, the repeats, and the precision and attack both sides ran with."""
    return {
        "size": size_name,
        **{k: getattr(sz, k) for k in sz.__dataclass_fields__},
        "repeats": repeats,
        "dataloader_workers": workers,
        "precision_ours": resolve_precision(device, "auto"),
        "precision_why": precision_choice(device, "auto")[1],
        "channels_last_ours": memory_format(device) == torch.channels_last,
        "compile_measured": compile,
        "eps": EPS,
        "alpha": ALPHA,
        "pgd_steps": PGD_STEPS,
        "temperature": TEMPERATURE,
        "lr": LR,
    }
