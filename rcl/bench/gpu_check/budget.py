"""The GPU check's wall-time budget and how a run spends it: the slice of the ``quick`` profile it trains, and per
phase the least seconds worth starting and the most it may take.

The real run's plan describes the GPU machine it was prepared for and is read from ``benchmarks/
gpu-check-machine.json`` (:mod:`rcl.bench.gpu_check.machine`); the dry run's plan (:data:`DRY_RUN_PLAN`: tiny sizes
on any CPU) is here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rcl.bench.gpu_records import PHASES


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


@dataclass(frozen=True)
class PhasePlan:
    """How a run spends its budget.

    ``min_s[phase]``: least seconds a phase needs to be worth starting; ``cap_s[phase]``: most it may take (None:
    whatever is left); ``reserve_s``: kept back for writing the JSON and README at the end; ``fp32_guess``: planning
    only, an fp32 epoch is assumed to take this many bf16 epochs until one is measured.
    """

    slice: SliceSize
    min_s: dict[str, float]
    cap_s: dict[str, float | None]
    reserve_s: float
    fp32_guess: float

    def __post_init__(self) -> None:
        for name in ("min_s", "cap_s"):
            missing = [p for p in PHASES if p not in getattr(self, name)]
            if missing:
                raise ValueError(f"the phase plan's {name} lacks {missing}: give every phase of {list(PHASES)}")


# The CPU dry run: the same code at a size that runs in seconds (two epochs each: the second resumes the first's
# checkpoint, as on the GPU).
DRY_RUN_PLAN = PhasePlan(
    slice=SliceSize(
        supervised_epochs=2,
        simclr_epochs=2,
        linear_epochs=2,
        robust_n=32,
        overrides=dict(width=4, head_dim=16, batch_size=64, eval_batch_size=128, eval_steps=2, n_train=256, n_test=96),
        n_train=256,
        n_test=96,
    ),
    min_s={"install": 0.5, "cuda_tests": 5, "bench": 5, "quick_slice": 3, "precision": 1},
    cap_s={"install": 60, "cuda_tests": 60, "bench": 90, "quick_slice": None, "precision": None},
    reserve_s=1.0,
    fp32_guess=3.0,
)


class Budget:
    """Wall-clock budget: ``left()`` is what remains of ``total_s`` once ``reserve_s`` is kept back for writing."""

    def __init__(self, total_s: float, reserve_s: float) -> None:
        if not total_s > 0:
            raise ValueError(f"budget must be > 0 seconds, got {total_s}")
        self.total_s = float(total_s)
        self.reserve_s = float(min(reserve_s, total_s / 4))
        self.start = time.monotonic()

    def elapsed(self) -> float:
        """Seconds since the budget started."""
        return time.monotonic() - self.start

    def left(self) -> float:
        """Seconds left before the reserve."""
        return self.total_s - self.reserve_s - self.elapsed()

    def allows(self, seconds: float) -> bool:
        """Whether ``seconds`` of work still fit."""
        return self.left() >= seconds

    def why_not(self, seconds: float, what: str) -> str:
        """The reason recorded when ``what`` (needing ``seconds``) does not fit: it starts with ``budget:``."""
        return (
            f"budget: {max(self.left(), 0):.1f} s left of {self.total_s:g} s (after {self.reserve_s:g} s kept for "
            f"writing), {what} needs about {seconds:.1f} s"
        )
