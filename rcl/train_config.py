"""How a training run optimises: its settings (``TrainConfig``), the optimiser and the learning-rate schedule.

Shared by every training method of :mod:`rcl.train`. The main study trains with Adam at lr 3e-4 without weight
decay or schedule (Ghofrani et al., arXiv 2302.02502); ACL pre-trains with SGD and a cosine schedule and fine-tunes
with SGD decayed by 10 at two milestones (Jiang et al. 2020). The schedule advances every optimiser step.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from rcl import checks
from rcl.runtime import PRECISIONS, pick_device, resolve_precision


@dataclass
class TrainConfig:
    """How long and how to optimise; shared by every method.

    epochs: passes over the training split. batch_size: examples per step. lr: peak learning rate.
    optimizer: "adam" (main study: lr 3e-4, no weight decay, no schedule) or "sgd" (momentum; ACL and fine-tuning).
    schedule: None (constant), "cosine" (to 0 at the last step) or "multistep" (times ``gamma`` at each epoch in
    ``milestones``); both with ``warmup_epochs`` of linear warm-up; the schedule advances every step.
    seed: run seed (shuffling, augmentation, attacks). device: "cpu", "cuda", "auto".
    precision: "auto" (bf16 autocast + channels_last on CUDA and on a CPU with native bf16, else fp32; see
    rcl.runtime.precision_choice), "bf16" or "fp32" (forced on any device). It applies to the training steps and
    the attacks inside them (unless an AttackConfig names its own precision) and to validation.
    compile: run the training steps' forward/backward passes (attacks inside them included) and the SimCLR pixel
    work through ``torch.compile``: a one-off cost (about a minute for ResNet-18 on a 2-core CPU) for faster steps
    (``python -m rcl.bench`` measures both); worth it for long runs, not for the smoke chapters. On CPU it needs a
    C++ compiler. Not part of a run's identity: a run may be resumed with or without it.
    progress: tqdm bar with live loss/accuracy; ``log_every`` steps between bar updates (each costs a host sync).
    on_step: optional ``callback(epoch, step)`` called after every optimiser step (1-based); raising from it
    interrupts the run as Ctrl-C would (used by the resume tests). Not part of a run's identity.
    """

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str | None = None
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: int = 0
    seed: int = 0
    device: str | torch.device = "cpu"
    precision: str = "auto"
    compile: bool = False
    progress: bool = True
    log_every: int = 20
    on_step: Callable[[int, int], None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Check every field (``ValueError`` naming it, see :mod:`rcl.checks`) and store it in its canonical type."""
        self.epochs = checks.integer("epochs", self.epochs, 0)
        self.batch_size = checks.integer("batch_size", self.batch_size, 1)
        self.lr = checks.positive("lr", self.lr)
        self.momentum = checks.number("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        self.weight_decay = checks.number("weight_decay", self.weight_decay, low=0.0)
        self.gamma = checks.positive("gamma", self.gamma)
        self.warmup_epochs = checks.integer("warmup_epochs", self.warmup_epochs, 0)
        self.seed = checks.seed("seed", self.seed)
        self.log_every = checks.integer("log_every", self.log_every, 1)
        self.compile = checks.boolean("compile", self.compile)
        self.progress = checks.boolean("progress", self.progress)
        epoch = functools.partial(checks.integer, minimum=0)
        self.milestones = checks.sequence("milestones", self.milestones, epoch, of="epochs", example="(15, 20)")
        checks.choice("optimizer", self.optimizer, ("adam", "sgd"))
        checks.choice("schedule", self.schedule, (None, "cosine", "multistep"))
        if self.schedule == "multistep" and not self.milestones:
            raise ValueError("schedule='multistep' needs milestones=(epoch, ...), e.g. (15, 20)")
        checks.choice("precision", self.precision, PRECISIONS)

    def identity(self) -> dict:
        """The settings that define the run (what a checkpoint folder must agree with to resume it).

        Device, compilation, progress display and the step callback do not change the result (compiled kernels
        round differently, within float tolerance). ``epochs`` only does through
        a schedule: with a constant learning rate, asking for more epochs continues a finished run.
        """
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("device", "compile", "progress", "log_every", "on_step"):
            out.pop(name)
        if self.schedule is None:
            out.pop("epochs")
        out["precision"] = resolve_precision(pick_device(self.device), self.precision)  # "auto" as it resolves here
        return out


def build_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam(lr, weight_decay) or SGD(lr, momentum, weight_decay) over ``params``.

    With torch's fused kernels (one kernel per update instead of several per tensor) when every parameter is a
    float tensor on the CPU or a CUDA device: same update rule, about 4x faster on a CPU ResNet-18 (``rcl.bench``).
    """
    params = list(params)
    if not params:
        raise ValueError("no trainable parameters: check the fine-tuning mode or requires_grad flags")
    fused = True if all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params) else None
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused)


def lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Multiplier of ``cfg.lr`` at optimiser step ``step`` (0-based): warm-up, then the schedule."""
    total = max(cfg.epochs * steps_per_epoch, 1)
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "cosine":
        progress = (step - warm) / max(total - warm, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if cfg.schedule == "multistep":
        epoch = step // max(steps_per_epoch, 1)
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """A per-step LambdaLR following ``lr_factor`` (a constant 1 without schedule or warm-up)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg, steps_per_epoch))


__all__ = ["TrainConfig", "build_optimizer", "build_scheduler", "lr_factor"]
