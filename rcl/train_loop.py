"""The epoch loop every training method of :mod:`rcl.train` shares, and its bookkeeping.

A method hands :func:`fit` a :class:`Recipe`: its training step (one batch -> the loss to minimise and some metrics),
its loader, the parameters to optimise and the run's identity. :func:`fit` does the rest:

- resume: a checkpoint folder's ``last.pt`` is loaded when the folder holds the same run (its identity, the method's
  settings and a fingerprint of the data, must match) and training continues from the next epoch; a finished run is
  only loaded;
- the steps: one optimiser step per batch (:func:`_update`), the schedule advancing every step;
- the divergence watch: a non-finite loss (found without a host sync per step, at the progress bar's updates and at
  the end of the epoch) or non-finite weights stop the run with :class:`TrainingDiverged` before anything of that
  epoch is validated or saved, so the last good checkpoint stays;
- after every epoch: the history record (loss, the step metrics and validation, averaged over the epoch), the best
  epoch so far by the recipe's validation metric (``best.pt``), ``last.pt`` and ``history.json``, written atomically;
- the tqdm progress bar with live loss and metrics.

Randomness comes from per-epoch generators ``make_generator(device, seed * 1_000_003 + epoch)`` (augmentation,
attack random starts, k-means) and the loader's ``set_epoch`` (shuffling), never from the global RNG: an interrupted
run resumed from its last checkpoint ends with the same weights as an uninterrupted one (CPU, fixed seed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from rcl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from rcl.data import DeviceLoader, Split
from rcl.fileio import clean_stale_temporaries
from rcl.results import save_json
from rcl.runtime import autocast, make_generator, pick_device, resolve_precision
from rcl.train_config import TrainConfig, build_optimizer, build_scheduler

History = list[dict]
StepFn = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, dict[str, Tensor]]]
"""``step(x [B, 3, H, W] in [0, 1], y [B], generator) -> (loss with grad, {metric: sum over the batch})``."""

_SEED_STRIDE = 1_000_003  # epoch e of seed s draws from make_generator(device, s * _SEED_STRIDE + e)


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss or non-finite weights; nothing of the diverged epoch was saved."""


@dataclass
class Recipe:
    """What one method hands to the shared epoch loop."""

    name: str  # progress-bar label
    identity: dict  # the run's settings; a checkpoint folder must match them (run_identity)
    params: list[nn.Parameter]  # what the optimiser updates
    loader: DeviceLoader
    step: StepFn  # (x, y, generator) -> (loss with grad, {metric: sum over the batch})
    set_mode: Callable[[], None]  # train/eval flags for a training step
    before_epoch: Callable[[int, torch.Generator], None] | None = None
    validate: Callable[[int], dict[str, float]] | None = None  # epoch -> val metrics
    select: str | None = None  # validation metric to maximise (best.pt)


# --------------------------------------------------------------------------------------------------- the loop
@dataclass
class _Run:
    """What every epoch of one run uses."""

    model: nn.Module
    cfg: TrainConfig
    recipe: Recipe
    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    folder: _RunFolder
    bar: tqdm


def fit(model: nn.Module, cfg: TrainConfig, recipe: Recipe, ckpt_dir: Path | str | None) -> History:
    """Train ``model`` for ``cfg.epochs`` epochs of ``recipe``, resuming from ``ckpt_dir``; returns the history.

    One record per epoch: epoch, loss, the step metrics (means over the epoch's examples), lr, the validation
    metrics, best_epoch (with selection), seconds. The model ends in eval mode, holding the weights of the best
    epoch by ``recipe.select`` (the last epoch's without selection).
    """
    device = pick_device(cfg.device)
    steps_per_epoch = len(recipe.loader)
    if steps_per_epoch == 0:
        raise ValueError(
            f"the training split gives no batch of {cfg.batch_size} examples; use a smaller batch_size or more data"
        )
    optimizer = build_optimizer(recipe.params, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    folder = _RunFolder(ckpt_dir)
    start, history = folder.resume(model, optimizer, scheduler, cfg, recipe, device)
    bar = tqdm(
        total=cfg.epochs * steps_per_epoch,
        initial=start * steps_per_epoch,
        desc=recipe.name,
        disable=not cfg.progress or start >= cfg.epochs,  # a finished run is only loaded: no bar
        dynamic_ncols=True,
    )
    run = _Run(model, cfg, recipe, device, optimizer, scheduler, folder, bar)
    try:
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            totals = _train_epoch(run, epoch)
            record = _epoch_record(run, epoch, totals, history)
            record["seconds"] = time.perf_counter() - t0
            history.append(record)
            bar.set_postfix(totals.postfix(), refresh=True)
            folder.save_epoch(model, optimizer, scheduler, epoch + 1, recipe.identity, history)
    finally:
        bar.close()
    folder.restore_best(model, device)
    model.eval()
    return history


def _train_epoch(run: _Run, epoch: int) -> _Totals:
    """One pass of the recipe's steps over its loader; raises TrainingDiverged rather than return a diverged epoch."""
    cfg, recipe, bar = run.cfg, run.recipe, run.bar
    gen = make_generator(run.device, cfg.seed * _SEED_STRIDE + epoch)
    recipe.loader.set_epoch(epoch)
    if recipe.before_epoch is not None:
        recipe.before_epoch(epoch, gen)
    bar.set_description(f"{recipe.name} {epoch + 1}/{cfg.epochs}")
    totals = _Totals(run.device)
    watch = _DivergenceWatch(run, epoch)
    for step, (x, y) in enumerate(recipe.loader):
        loss, metrics = _update(run, x, y, gen)
        watch.update(loss, step)  # on the device: no host sync per step
        totals.add(loss, metrics, len(x))
        bar.update(1)
        if cfg.progress and (step + 1) % cfg.log_every == 0:  # one host sync every log_every steps
            watch.check()
            bar.set_postfix(totals.postfix(), refresh=False)
        if cfg.on_step is not None:
            cfg.on_step(epoch + 1, step + 1)
    watch.check(weights=True)  # nothing of a diverged epoch is validated, selected or saved
    return totals


def _update(run: _Run, x: Tensor, y: Tensor, gen: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
    """One optimiser step on the batch ``x [B, 3, H, W]``, ``y [B]``: the recipe's loss, its gradient, the step."""
    run.recipe.set_mode()
    with autocast(run.device, run.cfg.precision):
        loss, metrics = run.recipe.step(x, y, gen)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.scheduler.step()
    return loss, metrics


def _epoch_record(run: _Run, epoch: int, totals: _Totals, history: History) -> dict:
    """The history record of a finished epoch (without its seconds); offers the epoch for selection."""
    recipe = run.recipe
    record = {"epoch": epoch + 1, "loss": totals.loss.item() / totals.seen}
    record.update({key: value.item() / totals.seen for key, value in totals.metrics.items()})
    record["lr"] = run.optimizer.param_groups[0]["lr"]
    if recipe.validate is not None:
        record.update(recipe.validate(epoch))
    if recipe.select is not None:
        run.folder.offer_best(run.model, epoch, float(record[recipe.select]), recipe.identity)
        record["best_epoch"] = _best_epoch(history, record, recipe.select)
    return record


class _Totals:
    """Sums over an epoch's examples, kept on the device: the loss and every step metric."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device)
        self.metrics: dict[str, Tensor] = {}
        self.seen = 0

    def add(self, loss: Tensor, metrics: dict[str, Tensor], batch: int) -> None:
        self.seen += batch
        self.loss += loss.detach().float() * batch
        for key, value in metrics.items():
            self.metrics[key] = self.metrics.get(key, 0) + value.detach().float()

    def postfix(self) -> dict[str, str]:
        """The progress bar's means so far (one host sync)."""
        out = {"loss": f"{self.loss.item() / max(self.seen, 1):.4f}"}
        for key, value in self.metrics.items():
            out[key] = f"{value.item() / max(self.seen, 1):.3f}"
        return out


def _best_epoch(history: History, record: dict, key: str) -> int:
    """The first epoch (1-based) reaching the highest ``key`` so far, ``record`` included."""
    records = [*history, record]
    best = max(r[key] for r in records)
    return next(r["epoch"] for r in records if r[key] == best)


# --------------------------------------------------------------------------------------------------- the folder
class _RunFolder:
    """Where a run keeps its state, and its best epoch so far.

    ``last.pt`` (weights, optimiser, schedule, identity and history) after every epoch, ``best.pt`` at the best
    epoch by the recipe's validation metric, ``history.json`` (a readable copy for plots and users). Without a folder
    (``ckpt_dir=None``) nothing is written and the best weights are kept in memory.
    """

    def __init__(self, ckpt_dir: Path | str | None) -> None:
        self.path = Path(ckpt_dir) if ckpt_dir is not None else None
        self.last = self.path / "last.pt" if self.path is not None else None
        self.best = self.path / "best.pt" if self.path is not None else None
        self.best_score = -math.inf
        self.best_state: dict[str, Tensor] | None = None
        if self.path is not None:  # what a run killed mid-write left behind
            for target in (self.last, self.best, self.path / "history.json"):
                clean_stale_temporaries(target)

    def resume(self, model, optimizer, scheduler, cfg: TrainConfig, recipe: Recipe, device) -> tuple[int, History]:
        """Load ``last.pt`` into the model, optimiser and schedule if it holds this run: (epochs done, history)."""
        if self.last is None or not self.last.exists():
            return 0, []
        stored = load_checkpoint(self.last, map_location="cpu")
        extra = stored.get("extra") or {}
        held = extra.get("identity", {})
        wanted = recipe.identity
        if isinstance(held.get("train"), dict) and "precision" not in held["train"]:  # older rcl kept none for "auto"
            wanted = {**wanted, "train": {k: v for k, v in wanted.get("train", {}).items() if k != "precision"}}
        problems = _identity_diff(held, wanted)
        if problems:
            raise CheckpointError(
                f"{self.path} holds a different run ({'; '.join(problems[:6])}). Use another ckpt_dir for these "
                "settings (python -m rcl.reproduce: another run folder, --out DIR), or delete the folder to retrain."
            )
        done = int(stored.get("epoch") or 0)
        if done > cfg.epochs:
            raise CheckpointError(
                f"{self.path} holds a run trained for {done} epochs, more than the {cfg.epochs} asked for; "
                f"ask for epochs >= {done}, use another ckpt_dir, or delete the folder"
            )
        load_checkpoint(self.last, model, optimizer=optimizer, scheduler=scheduler, map_location=device)
        if recipe.select is not None and self.best.exists():
            best = load_checkpoint(self.best, map_location="cpu")
            if int(best.get("epoch") or 0) <= done:  # a best.pt written after last.pt belongs to no resumed epoch
                self.best_score = float((best.get("extra") or {}).get("score", -math.inf))
        return done, list(extra.get("history", []))

    def offer_best(self, model: nn.Module, epoch: int, score: float, identity: dict) -> None:
        """Keep epoch ``epoch`` (0-based) if its score beats every earlier one (ties keep the earlier epoch)."""
        if score > self.best_score:
            self.best_score = score
            if self.best is None:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                save_checkpoint(self.best, model, epoch=epoch + 1, extra={"score": score, "identity": identity})

    def save_epoch(self, model, optimizer, scheduler, epochs_done: int, identity: dict, history: History) -> None:
        """``last.pt`` and ``history.json`` after a finished epoch."""
        if self.last is None:
            return
        extra = {"identity": identity, "history": history}
        save_checkpoint(self.last, model, optimizer=optimizer, scheduler=scheduler, epoch=epochs_done, extra=extra)
        save_json(history, self.path / "history.json")

    def restore_best(self, model: nn.Module, device: torch.device) -> None:
        """Load the best epoch's weights into the model, if any epoch was selected."""
        if self.best is not None and self.best.exists():
            load_checkpoint(self.best, model, map_location=device)
        elif self.best_state is not None:
            model.load_state_dict(self.best_state)


# --------------------------------------------------------------------------------------------------- divergence
class _DivergenceWatch:
    """Finds the first non-finite loss of an epoch without a host sync per step.

    ``update`` keeps, on the device, the index of the first step whose loss was not finite and that loss;
    ``check`` reads them at the loop's existing sync points (progress postfix, end of epoch) and raises
    :class:`TrainingDiverged`; with ``weights=True`` it also checks every weight and buffer of the model.
    """

    def __init__(self, run: _Run, epoch: int) -> None:
        self.run, self.epoch = run, epoch
        self.first_bad = torch.full((), -1, dtype=torch.long, device=run.device)
        self.bad_loss = torch.zeros((), device=run.device)

    def update(self, loss: Tensor, step: int) -> None:
        value = loss.detach().float()
        new = ~torch.isfinite(value) & (self.first_bad < 0)
        self.first_bad = torch.where(new, step, self.first_bad)
        self.bad_loss = torch.where(new, value, self.bad_loss)

    def check(self, *, weights: bool = False) -> None:
        bad_step = int(self.first_bad.item())
        if bad_step >= 0:
            steps_per_epoch = len(self.run.recipe.loader)
            what = f"at step {bad_step + 1}/{steps_per_epoch} the loss became {self.bad_loss.item()}"
        elif weights and (names := _nonfinite_tensors(self.run.model)):
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            what = f"the loss stayed finite but weights became non-finite ({shown})"
        else:
            return
        raise TrainingDiverged(_diverged_message(what, self.run, self.epoch))


def _nonfinite_tensors(model: nn.Module) -> list[str]:
    """Names of the model's float weights and buffers holding NaN or inf (one host sync when all are finite)."""
    named = [(k, v) for k, v in model.state_dict().items() if v.is_floating_point() and v.numel()]
    if not named or bool(torch.stack([torch.isfinite(v).all() for _, v in named]).all()):
        return []
    return [k for k, v in named if not bool(torch.isfinite(v).all())]


def _diverged_message(what: str, run: _Run, epoch: int) -> str:
    """What diverged, what was kept, and what to try."""
    cfg, recipe, ckpt_dir, last = run.cfg, run.recipe, run.folder.path, run.folder.last
    where = f"{recipe.name} run in {ckpt_dir}" if ckpt_dir is not None else f"{recipe.name} run (no ckpt_dir)"
    if last is None:
        kept = "Nothing was saved"
    elif last.exists():
        kept = f"Nothing of this epoch was saved: {last} still holds the last good state (epoch {epoch})"
    else:
        kept = f"No checkpoint was written: {ckpt_dir} holds no finished epoch"
    tries = [f"a lower lr (now {cfg.lr:g})"]
    temperature = recipe.identity.get("temperature")
    if isinstance(temperature, int | float):
        tries.append(f"a higher temperature (now {temperature:g}; 0.07-0.5 are usual)")
    precision = resolve_precision(pick_device(cfg.device), cfg.precision)
    if precision != "fp32":
        tries.append(f"precision='fp32' (now {precision})")
    return (
        f"{where} diverged in epoch {epoch + 1}/{cfg.epochs}: {what}. {kept}. "
        f"Try {', '.join(tries[:-1]) + ' or ' + tries[-1] if len(tries) > 1 else tries[0]}, then run again."
    )


# --------------------------------------------------------------------------------------------------- identity
def run_identity(method: str, model: nn.Module, train: Split, cfg: TrainConfig, **settings) -> dict:
    """What a checkpoint folder must agree with to resume a run: the method, the model's configuration, a
    fingerprint of the training split, the run's :meth:`TrainConfig.identity` and the method's ``settings``, as
    they read back from JSON."""
    return _plain(
        {
            "method": method,
            "model": getattr(model, "config", type(model).__name__),
            "data": split_fingerprint(train),
            "train": cfg.identity(),
            **settings,
        }
    )


def split_fingerprint(split: Split) -> dict:
    """Cheap identity of a training split: size and a hash of the labels and of the first images."""
    digest = hashlib.sha1(split.labels.cpu().numpy().tobytes())
    digest.update(split.images[:64].cpu().contiguous().numpy().tobytes())
    return {"n": len(split), "sha1": digest.hexdigest()[:16]}


def weights_sha1(module: nn.Module) -> str:
    """Hash of a module's weights and buffers (the starting point of a fine-tuning run)."""
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _plain(obj):
    """A JSON round-trip of ``obj`` (tuples -> lists, dataclasses -> dicts) so identities compare after loading."""

    def default(o):
        if dataclasses.is_dataclass(o):
            return dataclasses.asdict(o)
        if isinstance(o, torch.device):
            return str(o)
        if hasattr(o, "__dict__"):
            return {k: v for k, v in vars(o).items() if not k.startswith("_")}
        return repr(o)

    return json.loads(json.dumps(obj, default=default, sort_keys=True))


def _identity_diff(stored: dict, wanted: dict, prefix: str = "") -> list[str]:
    """``"key: stored a, now b"`` for every (nested) setting on which two identities differ."""
    out = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key, "<missing>"), wanted.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _identity_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: stored {a!r}, now {b!r}")
    return out


__all__ = [
    "History",
    "Recipe",
    "StepFn",
    "TrainingDiverged",
    "fit",
    "run_identity",
    "split_fingerprint",
    "weights_sha1",
]
