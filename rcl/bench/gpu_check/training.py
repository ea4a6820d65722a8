"""Training under the GPU check's budget: the ``quick`` profile at the slice's size, epochs one at a time with the
budget checked before each (a run stopped by the budget keeps what it measured), a supervised ResNet-18 in a given
precision, peak GPU memory, and the PGD evaluations (cross-entropy, threat model II; and the contrastive attack of
threat model I, Kim et al. 2020, given a representation).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from rcl.bench.gpu_check.context import CheckContext
from rcl.data import Dataset
from rcl.evaluate import accuracy, robust_accuracy, threat_model_1
from rcl.models import Classifier
from rcl.profiles import Config, resolve
from rcl.runtime import memory_format
from rcl.study import attack, eval_subset, new_encoder, train_config
from rcl.train import train_supervised


def quick_config(ctx: CheckContext, data: Dataset) -> Config:
    """The ``quick`` profile at the slice's size on ``data``, its checkpoints in a temporary folder (never under
    ``<out>``)."""
    tmp = ctx.temp_dir("rcl-gpu-check-runs-")
    return resolve("quick", dataset=data.name, device=ctx.device, run_dir=tmp, **ctx.slice.overrides)


def train_epochs(
    ctx: CheckContext,
    record: dict,
    key: str,
    epochs: int,
    run_epoch: Callable[[int], list[dict]],
    after_epoch: Callable[[], dict] | None = None,
    first_guess_s: float | None = None,
    keep_s: Callable[[], float] = lambda: 0.0,
) -> list[dict]:
    """Epochs 1..``epochs`` one call at a time (each resumes the last), checking the budget before each.

    ``run_epoch(e)`` trains up to epoch ``e`` and returns the history; ``after_epoch()`` measures (e.g. test
    accuracy) and returns figures merged into the epoch's row. ``keep_s()`` is time kept for later work.
    Rows go to ``record[key]["epochs"]``; a budget stop sets ``record[key]["stopped"]``.
    """
    part = record.setdefault(key, {"epochs": []})
    rows = part["epochs"]
    for e in range(1, epochs + 1):
        if rows:
            need = max(r["seconds"] + r.get("eval_seconds", 0.0) for r in rows)
        else:  # the phase's own minimum was checked before it started
            need = first_guess_s or 0.0
        if not ctx.budget.allows(need + keep_s()):
            part["stopped"] = ctx.budget.why_not(need + keep_s(), f"epoch {e} of {key} (and what follows)")
            ctx.log(f"{key}: {part['stopped']}")
            break
        history = run_epoch(e)
        row = {k: v for k, v in history[-1].items() if isinstance(v, (int, float))}
        row["seconds"] = round(float(row["seconds"]), 3)
        if after_epoch is not None:
            t0 = time.monotonic()
            row.update(after_epoch())
            row["eval_seconds"] = round(time.monotonic() - t0, 3)
        rows.append(row)
        ctx.log(f"{key} epoch {e}/{epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))
        ctx.save()
    part["epochs_done"] = len(rows)
    part["epoch_seconds"] = [r["seconds"] for r in rows]
    if rows:
        later = [r["seconds"] for r in rows[1:]] or [rows[0]["seconds"]]
        part["epoch_seconds_median_after_first"] = statistics.median(later)
    return rows


def supervised(
    ctx: CheckContext, record: dict, key: str, precision: str, epochs: int, keep_s: Callable[[], float] = lambda: 0.0
) -> Classifier:
    """A supervised ResNet-18 of the profile (``ctx.cfg`` on ``ctx.data``) trained in ``precision`` (``"bf16"``
    or ``"fp32"``) for up to ``epochs`` epochs, clean test accuracy after each; figures in ``record[key]``."""
    data, cfg = ctx.data, ctx.cfg
    torch.manual_seed(cfg.seed)
    model = Classifier(new_encoder(cfg), data.num_classes)
    ckpt = cfg.run_dir / f"supervised-{precision}"
    tc = lambda e: dataclasses.replace(train_config(cfg, e, progress=False), precision=precision)
    part = record.setdefault(key, {"epochs": []})
    part.update(
        precision=precision,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        arch=f"{cfg.arch} width {cfg.width}",
        n_train=len(data.train),
    )
    guess = ctx.bf16_epoch_s
    guess = guess * ctx.plan.fp32_guess if guess is not None and precision == "fp32" else None
    reset_peak(ctx.device)
    train_epochs(
        ctx,
        record,
        key,
        epochs,
        lambda e: train_supervised(model, data.train, tc(e), ckpt_dir=ckpt),
        after_epoch=lambda: {"test_acc": accuracy(model, data.test, batch_size=cfg.eval_batch_size)},
        first_guess_s=guess,
        keep_s=keep_s,
    )
    conv = model.encoder.conv1.weight if hasattr(model.encoder, "conv1") else next(model.parameters())
    part["channels_last"] = bool(conv.is_contiguous(memory_format=torch.channels_last))
    part["expected_memory_format"] = str(memory_format(ctx.device, precision)).replace("torch.", "")
    part["peak_memory_gib"] = peak_gib(ctx.device)
    return model


def reset_peak(device: torch.device) -> None:
    """Start counting peak GPU memory afresh (nothing on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """Peak GPU memory allocated since :func:`reset_peak`, in GiB (None on a CPU)."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)


def robust(
    ctx: CheckContext, model: nn.Module, part: dict, cfg: Config, data: Dataset, representation: nn.Module | None = None
) -> None:
    """PGD at the profile's evaluation setting (CE, threat model II), and threat model I with a representation."""
    subset = eval_subset(data, ctx.slice.robust_n)
    pgd = attack(cfg, "eval")
    # planning: a PGD step costs about 3 clean forward passes (forward + input gradient) of its images
    clean_s = part["epochs"][-1].get("eval_seconds", 0.0) if part.get("epochs") else 0.0
    need = clean_s * len(subset) / max(len(data.test), 1) * 3 * pgd.steps * (2 if representation else 1) + 1
    if not ctx.budget.allows(need):
        part["robust_skipped"] = ctx.budget.why_not(need, "the PGD evaluation")
        return
    t0 = time.monotonic()
    part["robust"] = {
        "attack": f"PGD-{pgd.steps} L-inf eps {pgd.eps:.5f} alpha {pgd.alpha:.4f} (cross-entropy)",
        "n": len(subset),
        "robust_acc": robust_accuracy(model, subset, pgd, batch_size=cfg.eval_batch_size),
    }
    part["robust"]["seconds"] = round(time.monotonic() - t0, 3)
    if representation is not None and ctx.budget.allows(part["robust"]["seconds"] + 1):
        t0 = time.monotonic()
        part["threat_model_1"] = {
            "attack": f"PGD-{pgd.steps} on NT-Xent(z(x_adv), z(x)) at temperature {cfg.temperature}",
            "n": len(subset),
            "robust_acc": threat_model_1(
                model, representation, subset, pgd, cfg.temperature, batch_size=cfg.eval_batch_size
            ),
            "seconds": round(time.monotonic() - t0, 3),
        }
