"""Timing: seconds of a callable, synchronised on CUDA, and the two sides of a pair timed in turns.

Every figure of the speed benchmark is the median of ``repeats`` timed calls after a warm-up; the sides of a pair
take turns (ours, baseline, ours, ...) so that a drift of the machine's speed favours neither.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_repeats(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls (synchronised on CUDA)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def time_interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds of ``repeats`` calls of each function, the functions taking turns (a, b, a, b, ...).

    Taking turns keeps a drift of the machine's speed during the run (frequency, caches, a neighbour) from
    favouring whichever side happened to run first. Each function first gets ``warmup`` untimed calls.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name] += time_repeats(fn, device, 1, warmup=0)
    return times


def side_record(seconds: list[float], units: float, unit: str, work: dict, **extra: Any) -> dict:
    """A measurement record: median seconds for ``units`` units of work, the rate, every repeat."""
    median = statistics.median(seconds)
    return {f"{unit}_per_s": units / median, "seconds": median, "repeats_s": seconds, "work": work, **extra}
