"""Training: supervised, contrastive pre-training (SimCLR / SupCon, standard or adversarial), ACL, fine-tuning.

Methods and the loss each one minimises (z = projection of a view, CE = cross-entropy, NT = NT-Xent):

- ``train_supervised``: CE(f(v), y) on pad-5 crop + flip views v; adversarial, as the main study's released
  ``sl_AT_baseline.py``: CE(f(x_adv), y) + CE(f(v), y), PGD on CE perturbing the un-augmented image x.
- ``pretrain_contrastive`` (Chen et al. 2020 SimCLR; Khosla et al. 2020 SupCon): NT(z(v1), z(v2)) or
  SupCon([z(v1), z(v2)], y), one forward pass per view. Adversarial, as in the main study's released code
  (Ghofrani et al., arXiv 2302.02502): the attack perturbs the un-augmented image x to maximise
  contrastive(z(x), z(x_adv)) and the loss is contrastive(x, x_adv) + contrastive(v1, v2). Optional removal of
  false negatives (Gupta et al. 2023) with true labels or k-means pseudo-labels.
- ``pretrain_acl`` (Jiang et al. 2020, ACL): A2A trains on (adv1, adv2), the two views perturbed jointly to
  maximise NT(adv1, adv2); A2S on (v1 through the clean BatchNorm, adv2 through the adversarial BatchNorm);
  DS (dual stream) on (NT(v1, v2) through the clean BatchNorm + NT(adv1, adv2) through the adversarial
  BatchNorm) / 2.
- ``finetune``: linear (frozen encoder, only fc trains), partial (layer4 + fc) or full; the frozen layers'
  BatchNorm statistics stay fixed (``frozen_bn="eval"``, the main study) or keep moving (``"train"``, ACL);
  standard CE, adversarial CE(clean) + CE(adv), or TRADES (Zhang et al. 2019): CE(clean) + beta * KL(p_clean ||
  p_adv) with the attack maximising the KL. An optional validation split selects the best epoch by robust
  accuracy (ACL's protocol).

Every method shares one epoch loop (``_fit``): optimiser and schedule, tqdm progress, one atomic checkpoint per
epoch, resume, load-or-train, best-epoch selection. A non-finite loss (found without a host sync per step, at the
progress bar's updates and at the end of the epoch) or non-finite weights stop the run with ``TrainingDiverged``
before anything of that epoch is validated or saved, so the last good checkpoint stays. Randomness comes from
per-epoch generators ``make_generator(device, seed * 1_000_003 + epoch)`` (augmentation, attack random starts,
k-means) and the loader's ``set_epoch`` (shuffling), never from the global RNG: an interrupted run resumed from its
last checkpoint ends with the same weights as an uninterrupted one (CPU, fixed seed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from rcl.attacks import AttackConfig, attack_mode
from rcl.augment import SimCLRAugment, pad_crop_flip
from rcl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from rcl.data import DeviceLoader, Split
from rcl.evaluate import accuracy, features, robust_accuracy
from rcl.fileio import clean_stale_temporaries
from rcl.losses import kmeans_pseudo_labels, nt_xent, supcon, trades_kl
from rcl.models import bn_route
from rcl.results import save_json
from rcl.runtime import autocast, compiled, make_generator, memory_format, pick_device, resolve_precision

History = list[dict]
StepFn = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, dict[str, Tensor]]]

_SEED_STRIDE = 1_000_003  # epoch e of seed s draws from make_generator(device, s * _SEED_STRIDE + e)


# --------------------------------------------------------------------------------------------------- config
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
        from rcl import checks

        self.epochs = checks.integer("epochs", self.epochs, 0)
        self.batch_size = checks.integer("batch_size", self.batch_size, 1)
        self.lr = checks.number("lr", self.lr, low=0.0, low_open=True)
        self.momentum = checks.number("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        self.weight_decay = checks.number("weight_decay", self.weight_decay, low=0.0)
        self.gamma = checks.number("gamma", self.gamma, low=0.0, low_open=True)
        self.warmup_epochs = checks.integer("warmup_epochs", self.warmup_epochs, 0)
        self.seed = checks.integer("seed", self.seed, 0)
        self.log_every = checks.integer("log_every", self.log_every, 1)
        self.compile = checks.boolean("compile", self.compile)
        self.progress = checks.boolean("progress", self.progress)
        if isinstance(self.milestones, str) or not hasattr(self.milestones, "__iter__"):
            raise ValueError(f"milestones must be a sequence of epochs, e.g. (15, 20), got {self.milestones!r}")
        self.milestones = tuple(checks.integer(f"milestones[{i}]", m, 0) for i, m in enumerate(self.milestones))
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in (None, "cosine", "multistep"):
            raise ValueError(f"schedule must be None, 'cosine' or 'multistep', got {self.schedule!r}")
        if self.schedule == "multistep" and not self.milestones:
            raise ValueError("schedule='multistep' needs milestones=(epoch, ...), e.g. (15, 20)")
        resolve_precision("cpu", self.precision)  # raises on an unknown precision

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
        if self.precision == "auto":  # the default is device-dependent, like the device itself
            out.pop("precision")
        return out


# --------------------------------------------------------------------------------------------------- optimisation
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


# --------------------------------------------------------------------------------------------------- identity
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


def _fingerprint(split: Split) -> dict:
    """Cheap identity of a training split: size and a hash of the labels and of the first images."""
    digest = hashlib.sha1(split.labels.cpu().numpy().tobytes())
    digest.update(split.images[:64].cpu().contiguous().numpy().tobytes())
    return {"n": len(split), "sha1": digest.hexdigest()[:16]}


def _weights_sha1(module: nn.Module) -> str:
    """Hash of a module's weights and buffers (the starting point of a fine-tuning run)."""
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _identity(method: str, model: nn.Module, train: Split, cfg: TrainConfig, **settings) -> dict:
    return _plain(
        {
            "method": method,
            "model": getattr(model, "config", type(model).__name__),
            "data": _fingerprint(train),
            "train": cfg.identity(),
            **settings,
        }
    )


def _diff(stored: dict, wanted: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key, "<missing>"), wanted.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: stored {a!r}, now {b!r}")
    return out


# --------------------------------------------------------------------------------------------------- the loop
@dataclass
class _Recipe:
    """What one method hands to the shared epoch loop."""

    name: str  # progress-bar label
    identity: dict  # the run's settings; a checkpoint folder must match them
    params: list[nn.Parameter]  # what the optimiser updates
    loader: DeviceLoader
    step: StepFn  # (x, y, generator) -> (loss with grad, {metric: sum over the batch})
    set_mode: Callable[[], None]  # train/eval flags for a training step
    before_epoch: Callable[[int, torch.Generator], None] | None = None
    validate: Callable[[int], dict[str, float]] | None = None  # epoch -> val metrics
    select: str | None = None  # validation metric to maximise (best.pt)


def _fit(model: nn.Module, cfg: TrainConfig, recipe: _Recipe, ckpt_dir: Path | str | None) -> History:
    """The epoch loop every method shares: resume or start, train, log, checkpoint, select, return the history."""
    device = pick_device(cfg.device)
    steps_per_epoch = len(recipe.loader)
    if steps_per_epoch == 0:
        raise ValueError(
            f"the training split gives no batch of {cfg.batch_size} examples; use a smaller batch_size or more data"
        )
    optimizer = build_optimizer(recipe.params, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    history: History = []
    best_state, best_score = None, -math.inf
    start = 0

    ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else None
    last_path = ckpt_dir / "last.pt" if ckpt_dir is not None else None
    best_path = ckpt_dir / "best.pt" if ckpt_dir is not None else None
    if ckpt_dir is not None:  # what a run killed mid-write left behind
        for target in (last_path, best_path, ckpt_dir / "history.json"):
            clean_stale_temporaries(target)
    if last_path is not None and last_path.exists():
        stored = load_checkpoint(last_path, map_location="cpu")
        extra = stored.get("extra") or {}
        problems = _diff(extra.get("identity", {}), recipe.identity)
        if problems:
            raise CheckpointError(
                f"{ckpt_dir} holds a different run ({'; '.join(problems[:6])}). "
                "Use another ckpt_dir for these settings, or delete the folder to retrain."
            )
        done = int(stored.get("epoch") or 0)
        if done > cfg.epochs:
            raise CheckpointError(
                f"{ckpt_dir} holds a run trained for {done} epochs, more than the {cfg.epochs} asked for; "
                f"ask for epochs >= {done}, use another ckpt_dir, or delete the folder"
            )
        load_checkpoint(last_path, model, optimizer=optimizer, scheduler=scheduler, map_location=device)
        history = list(extra.get("history", []))
        start = done
        if recipe.select is not None and best_path.exists():
            best = load_checkpoint(best_path, map_location="cpu")
            if int(best.get("epoch") or 0) <= done:  # a best.pt written after last.pt belongs to no resumed epoch
                best_score = float((best.get("extra") or {}).get("score", -math.inf))

    bar = tqdm(
        total=cfg.epochs * steps_per_epoch,
        initial=start * steps_per_epoch,
        desc=recipe.name,
        disable=not cfg.progress or start >= cfg.epochs,  # a finished run is only loaded: no bar
        dynamic_ncols=True,
    )
    try:
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            gen = make_generator(device, cfg.seed * _SEED_STRIDE + epoch)
            recipe.loader.set_epoch(epoch)
            if recipe.before_epoch is not None:
                recipe.before_epoch(epoch, gen)
            bar.set_description(f"{recipe.name} {epoch + 1}/{cfg.epochs}")
            loss_sum = torch.zeros((), device=device)
            sums: dict[str, Tensor] = {}
            seen = 0
            watch = _DivergenceWatch(device)
            for step, (x, y) in enumerate(recipe.loader):
                recipe.set_mode()
                with autocast(device, cfg.precision):
                    loss, metrics = recipe.step(x, y, gen)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                watch.update(loss, step)  # on the device: no host sync per step
                seen += len(x)
                loss_sum += loss.detach().float() * len(x)
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0) + value.detach().float()
                bar.update(1)
                if cfg.progress and (step + 1) % cfg.log_every == 0:  # one host sync every log_every steps
                    watch.check(model, cfg, recipe, ckpt_dir, epoch, steps_per_epoch)
                    bar.set_postfix(_postfix(loss_sum, sums, seen), refresh=False)
                if cfg.on_step is not None:
                    cfg.on_step(epoch + 1, step + 1)
            # nothing of a diverged epoch is validated, selected or saved: the last good checkpoint stays
            watch.check(model, cfg, recipe, ckpt_dir, epoch, steps_per_epoch, weights=True)
            record = {"epoch": epoch + 1, "loss": loss_sum.item() / seen}
            record.update({key: value.item() / seen for key, value in sums.items()})
            record["lr"] = optimizer.param_groups[0]["lr"]
            if recipe.validate is not None:
                record.update(recipe.validate(epoch))
            if recipe.select is not None:
                score = float(record[recipe.select])
                if score > best_score:  # strict: ties keep the earlier epoch
                    best_score = score
                    if best_path is None:  # no folder: keep the best weights in memory
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    else:
                        save_checkpoint(
                            best_path, model, epoch=epoch + 1, extra={"score": score, "identity": recipe.identity}
                        )
                record["best_epoch"] = _best_epoch(history, record, recipe.select)
            record["seconds"] = time.perf_counter() - t0
            history.append(record)
            bar.set_postfix(_postfix(loss_sum, sums, seen), refresh=True)
            if last_path is not None:
                save_checkpoint(
                    last_path,
                    model,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    epoch=epoch + 1,
                    extra={"identity": recipe.identity, "history": history},
                )
                save_json(history, ckpt_dir / "history.json")  # readable copy for plots and users
    finally:
        bar.close()
    if best_path is not None and best_path.exists():
        load_checkpoint(best_path, model, map_location=device)
    elif best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss or non-finite weights; nothing of the diverged epoch was saved."""


class _DivergenceWatch:
    """Finds the first non-finite loss of an epoch without a host sync per step.

    ``update`` keeps, on the device, the index of the first step whose loss was not finite and that loss;
    ``check`` reads them at the loop's existing sync points (progress postfix, end of epoch) and raises
    :class:`TrainingDiverged`; with ``weights=True`` it also checks every weight and buffer of the model.
    """

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_loss = torch.zeros((), device=device)

    def update(self, loss: Tensor, step: int) -> None:
        value = loss.detach().float()
        new = ~torch.isfinite(value) & (self.first_bad < 0)
        self.first_bad = torch.where(new, step, self.first_bad)
        self.bad_loss = torch.where(new, value, self.bad_loss)

    def check(self, model, cfg, recipe, ckpt_dir, epoch: int, steps_per_epoch: int, *, weights: bool = False):
        bad_step = int(self.first_bad.item())
        if bad_step >= 0:
            what = f"at step {bad_step + 1}/{steps_per_epoch} the loss became {self.bad_loss.item()}"
        elif weights and (names := _nonfinite_tensors(model)):
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            what = f"the loss stayed finite but weights became non-finite ({shown})"
        else:
            return
        raise TrainingDiverged(_diverged_message(what, cfg, recipe, ckpt_dir, epoch))


def _nonfinite_tensors(model: nn.Module) -> list[str]:
    """Names of the model's float weights and buffers holding NaN or inf (one host sync when all are finite)."""
    named = [(k, v) for k, v in model.state_dict().items() if v.is_floating_point() and v.numel()]
    if not named or bool(torch.stack([torch.isfinite(v).all() for _, v in named]).all()):
        return []
    return [k for k, v in named if not bool(torch.isfinite(v).all())]


def _diverged_message(what: str, cfg: TrainConfig, recipe: _Recipe, ckpt_dir: Path | None, epoch: int) -> str:
    run = f"{recipe.name} run in {ckpt_dir}" if ckpt_dir is not None else f"{recipe.name} run (no ckpt_dir)"
    last = ckpt_dir / "last.pt" if ckpt_dir is not None else None
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
        f"{run} diverged in epoch {epoch + 1}/{cfg.epochs}: {what}. {kept}. "
        f"Try {', '.join(tries[:-1]) + ' or ' + tries[-1] if len(tries) > 1 else tries[0]}, then run again."
    )


def _postfix(loss_sum: Tensor, sums: dict[str, Tensor], seen: int) -> dict[str, str]:
    out = {"loss": f"{loss_sum.item() / max(seen, 1):.4f}"}
    for key, value in sums.items():
        out[key] = f"{value.item() / max(seen, 1):.3f}"
    return out


def _best_epoch(history: History, record: dict, key: str) -> int:
    """The first epoch (1-based) reaching the highest ``key`` so far, ``record`` included."""
    records = [*history, record]
    best = max(r[key] for r in records)
    return next(r["epoch"] for r in records if r[key] == best)


# --------------------------------------------------------------------------------------------------- helpers
def _prepare(model: nn.Module, cfg: TrainConfig) -> tuple[torch.device, nn.Module]:
    """Move the model to the run's device and memory format; return the device and what the steps call.

    The steps call ``net``: the model itself, or with ``cfg.compile`` a ``torch.compile`` wrapper sharing its
    parameters (checkpoints, evaluation and the caller keep using ``model``).
    """
    device = pick_device(cfg.device)
    model.to(device, memory_format=memory_format(device, cfg.precision))
    return device, (compiled(model, device) if cfg.compile else model)


def _view_maker(augment: Callable[[Tensor, torch.Generator], Tensor], cfg: TrainConfig, device: torch.device):
    """``view(x, generator)``: one augmented view of each image.

    With ``cfg.compile`` a :class:`SimCLRAugment`'s pixel work (``apply``) runs compiled, its random draws
    (``sample``) eagerly; any other ``augment(x, generator)`` callable is used as it is.
    """
    if not (cfg.compile and isinstance(augment, SimCLRAugment)):
        return augment
    apply = compiled(augment.apply, device)
    return lambda x, gen: apply(x, augment.sample(x, gen))


def _reference(model: nn.Module, x: Tensor, mode: str) -> Tensor:
    """Outputs the attack compares against: no gradient, computed in the mode the attack runs the model in."""
    with torch.no_grad(), attack_mode(model, mode):
        return model(x).float()


def _loader(train: Split, cfg: TrainConfig, device: torch.device, *, drop_last: bool) -> DeviceLoader:
    drop_last = drop_last and len(train) >= cfg.batch_size
    return DeviceLoader(train, cfg.batch_size, shuffle=True, drop_last=drop_last, seed=cfg.seed, device=device)


def _correct(logits: Tensor, y: Tensor) -> Tensor:
    return (logits.argmax(1) == y).sum()


def _pair_top1(z1: Tensor, z2: Tensor) -> Tensor:
    """How many view-1 embeddings have their own view-2 embedding as nearest neighbour (contrastive top-1)."""
    sim = F.normalize(z1.detach().float(), dim=1) @ F.normalize(z2.detach().float(), dim=1).T
    return (sim.argmax(1) == torch.arange(len(z1), device=z1.device)).sum()


def _check_unit(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


# --------------------------------------------------------------------------------------------------- supervised
def _in_precision(attack: AttackConfig | None, cfg: TrainConfig) -> AttackConfig | None:
    """The attack as a training run uses it: in the run's precision unless the attack names its own."""
    if attack is None or attack.precision != "auto":
        return attack
    return dataclasses.replace(attack, precision=cfg.precision)


def _classification_validator(model, val: Split | None, attack: AttackConfig | None, cfg: TrainConfig):
    if val is None:
        return None, None
    attack = _in_precision(attack, cfg)

    def validate(epoch: int) -> dict[str, float]:
        out = {"val_acc": accuracy(model, val, batch_size=max(cfg.batch_size, 256), precision=cfg.precision)}
        if attack is not None:  # same random starts every epoch: epochs are compared on equal terms
            out["val_robust_acc"] = robust_accuracy(
                model, val, attack, batch_size=max(cfg.batch_size, 256), seed=cfg.seed
            )
        return out

    return validate, ("val_robust_acc" if attack is not None else "val_acc")


def train_supervised(
    model: nn.Module,
    train: Split,
    cfg: TrainConfig,
    *,
    attack: AttackConfig | None = None,
    augment: bool | Callable[[Tensor, torch.Generator], Tensor] = True,
    padding: int = 5,
    val: Split | None = None,
    ckpt_dir: Path | str | None = None,
) -> History:
    """Supervised training of a Classifier (x: [B, 3, H, W] in [0, 1] -> logits [B, C]).

    Loss: CE(f(v), y) on views v = zero-pad by ``padding`` (the released baselines' ``Pad(5)``), random crop back
    and horizontal flip (``augment=True``; a callable ``augment(x, generator)``, e.g. ``SimCLRAugment()``,
    replaces them: Gupta et al.'s matched-augmentation baseline; ``False``: v = x). With ``attack`` (PGD on CE,
    in the attack's own model mode), as the main study's released ``sl_AT_baseline.py``: the attack perturbs the
    *un-augmented* image x and the loss is CE(f(x_adv), y) + CE(f(v), y), in separate forward passes (x_adv
    first). ``val`` keeps the best epoch (robust accuracy with an attack, else clean). History records: epoch,
    loss, acc (clean train accuracy on v), adv_acc (on x_adv), lr, val_*, seconds.
    """
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an int >= 0 (pixels of zero padding before the crop), got {padding!r}")
    device, net = _prepare(model, cfg)
    step_attack = _in_precision(attack, cfg)

    def step(x: Tensor, y: Tensor, gen: torch.Generator):
        if callable(augment):
            view = augment(x, gen)
        elif augment:
            view = pad_crop_flip(x, gen, padding=padding)
        else:
            view = x
        loss, metrics = 0.0, {}
        if attack is not None:
            x_adv = step_attack.run(net, x, y, generator=gen, check_range=False)
            model.train()
            logits_adv = net(x_adv).float()
            loss = F.cross_entropy(logits_adv, y)
            metrics["adv_acc"] = _correct(logits_adv, y)
        logits = net(view).float()
        loss = loss + F.cross_entropy(logits, y)
        metrics["acc"] = _correct(logits, y)
        return loss, metrics

    validate, select = _classification_validator(model, val, attack, cfg)
    recipe = _Recipe(
        name="supervised" + ("-adv" if attack is not None else ""),
        identity=_identity(
            "supervised", model, train, cfg, attack=attack, augment=augment, padding=padding, val=_fp(val)
        ),
        params=[p for p in model.parameters() if p.requires_grad],
        loader=_loader(train, cfg, device, drop_last=False),
        step=step,
        set_mode=model.train,
        validate=validate,
        select=select,
    )
    return _fit(model, cfg, recipe, ckpt_dir)


def _fp(split: Split | None) -> dict | None:
    return _fingerprint(split) if split is not None else None


# --------------------------------------------------------------------------------------------------- contrastive
def pretrain_contrastive(
    model: nn.Module,
    train: Split,
    cfg: TrainConfig,
    *,
    method: str = "simclr",
    temperature: float = 0.5,
    attack: AttackConfig | None = None,
    false_negatives: str | None = None,
    kmeans_k: int | None = None,
    augment: SimCLRAugment | Callable[[Tensor, torch.Generator], Tensor] | None = None,
    ckpt_dir: Path | str | None = None,
) -> History:
    """SimCLR / SupCon pre-training of a ContrastiveNet (x -> z [B, D], not normalised), standard or adversarial.

    Follows the main study's released code (softsys4ai/CL-Robustness ``cl_scl_ST.py`` / ``cl_scl_AT.py``). Each
    step draws two augmented views x1, x2 of the batch x (``augment``, default ``SimCLRAugment()``) and minimises
    contrastive(z(x1), z(x2)): NT-Xent (``method="simclr"``) or SupCon with the labels (``"supcon"``), both at
    ``temperature``. Every input goes through the network in its own forward pass, so in train mode BatchNorm
    normalises each stream by its own batch statistics (as the released ``trainCLNet`` does).

    Adversarial (``attack``; released ``trainCLNet_Ro``): PGD perturbs the *un-augmented* image x to maximise
    contrastive(z(x), z(x_adv)), the clean embedding z(x) computed without gradient in the attack's model mode
    (SupCon's attack uses the labels too); the loss is contrastive(z(x), z(x_adv)) + contrastive(z(x1), z(x2)),
    four forward passes in the released order x, x_adv, x1, x2. The released attack starts at delta = 0: pass an
    ``AttackConfig(..., random_start=False)`` (``rcl.study.attack`` does).

    ``false_negatives`` (SimCLR only; Gupta et al.): "labels" removes same-class pairs from the NT-Xent
    denominator using the true labels (the oracle); "kmeans" uses pseudo-labels from cosine k-means
    (``kmeans_k`` clusters, default: the number of classes) on the encoder's features of the whole
    un-augmented training split, recomputed at the start of every epoch.
    History: epoch, loss, acc (contrastive top-1 of the clean pair within the batch), lr, seconds.
    """
    if method not in ("simclr", "supcon"):
        raise ValueError(f"method must be 'simclr' or 'supcon', got {method!r}")
    if false_negatives not in (None, "labels", "kmeans"):
        raise ValueError(f"false_negatives must be None, 'labels' or 'kmeans', got {false_negatives!r}")
    if false_negatives is not None and method == "supcon":
        raise ValueError("false_negatives applies to SimCLR: SupCon already treats same-class pairs as positives")
    _check_unit("temperature", temperature)
    device, net = _prepare(model, cfg)
    step_attack = _in_precision(attack, cfg)
    augment = augment if augment is not None else SimCLRAugment()
    view = _view_maker(augment, cfg, device)
    num_classes = int(train.labels.max()) + 1 if len(train) else 0
    k = kmeans_k if kmeans_k is not None else num_classes
    pseudo: dict[str, Tensor] = {}

    # With k-means the loader yields example indices as "labels" so each step can look up its pseudo-labels.
    if false_negatives == "kmeans":
        source = Split(train.images, torch.arange(len(train)))
        true_labels = train.labels.to(device)
    else:
        source, true_labels = train, None

    def contrastive(za: Tensor, zb: Tensor, labels: Tensor, fn_labels: Tensor | None) -> Tensor:
        if method == "simclr":
            return nt_xent(za, zb, temperature, false_negative_labels=fn_labels)
        return supcon(torch.stack([za, zb], dim=1), labels, temperature)

    def before_epoch(epoch: int, gen: torch.Generator) -> None:
        h = features(model.encoder, train, batch_size=max(cfg.batch_size, 256), device=device).to(device)
        pseudo["labels"] = kmeans_pseudo_labels(h, k, generator=gen)

    def step(x: Tensor, y: Tensor, gen: torch.Generator):
        if false_negatives == "kmeans":
            labels, fn_labels = true_labels[y], pseudo["labels"][y]
        else:
            labels, fn_labels = y, (y if false_negatives == "labels" else None)
        v1, v2 = view(x, gen), view(x, gen)

        def loss_of(za: Tensor, zb: Tensor) -> Tensor:
            return contrastive(za, zb, labels, fn_labels)

        if attack is not None:
            loss, (z1, z2) = adversarial_contrastive_loss(net, x, v1, v2, loss_of, step_attack, generator=gen)
        else:
            z1 = net(v1).float()  # one forward pass per stream: BatchNorm normalises each view by its own statistics
            z2 = net(v2).float()
            loss = loss_of(z1, z2)
        return loss, {"acc": _pair_top1(z1, z2)}

    recipe = _Recipe(
        name=method + ("-adv" if attack is not None else ""),
        identity=_identity(
            method,
            model,
            train,
            cfg,
            temperature=temperature,
            attack=attack,
            false_negatives=false_negatives,
            kmeans_k=k if false_negatives == "kmeans" else None,
            augment=augment,
        ),
        params=[p for p in model.parameters() if p.requires_grad],
        loader=_loader(source, cfg, device, drop_last=True),
        step=step,
        set_mode=model.train,
        before_epoch=before_epoch if false_negatives == "kmeans" else None,
    )
    return _fit(model, cfg, recipe, ckpt_dir)


def adversarial_contrastive_loss(
    net: nn.Module,
    x: Tensor,
    v1: Tensor,
    v2: Tensor,
    contrastive: Callable[[Tensor, Tensor], Tensor],
    attack: AttackConfig,
    *,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """The objective of one adversarial contrastive pre-training step (the released ``trainCLNet_Ro``).

    ``x``: the un-augmented images [B, 3, H, W] in [0, 1]; ``v1``, ``v2``: two augmented views of them;
    ``contrastive(za, zb)``: the loss of two embedding batches [B, D] (NT-Xent, or SupCon with the labels). PGD
    (``attack``, in its model mode) perturbs x to maximise ``contrastive(z(x), z(x_adv))`` against the clean
    embedding computed without gradient; then, in train mode, one forward pass per stream in the released order x,
    x_adv, v1, v2 (BatchNorm normalises each by its own statistics), and the loss is
    ``contrastive(z(x), z(x_adv)) + contrastive(z(v1), z(v2))``. Returns the loss and the views' embeddings.
    """
    ref = _reference(net, x, attack.model_mode)
    x_adv = attack.run(
        net, x, ref, loss_fn=lambda z_adv, z_ref: contrastive(z_ref, z_adv.float()), generator=generator,
        check_range=False,
    )  # fmt: skip
    net.train()
    z0 = net(x).float()
    z0_adv = net(x_adv).float()
    z1 = net(v1).float()
    z2 = net(v2).float()
    return contrastive(z0, z0_adv) + contrastive(z1, z2), (z1, z2)


def pretrain_acl(
    model: nn.Module,
    train: Split,
    cfg: TrainConfig,
    *,
    variant: str = "A2A",
    temperature: float = 0.5,
    attack: AttackConfig,
    augment: SimCLRAugment | Callable[[Tensor, torch.Generator], Tensor] | None = None,
    ckpt_dir: Path | str | None = None,
) -> History:
    """ACL adversarial contrastive pre-training (Jiang et al. 2020) of a ContrastiveNet; NT-Xent at ``temperature``.

    The paper's Fig. 1: branches share every weight, except that standard (clean) and adversarial branches use
    independent BatchNorm. Each branch is its own forward pass, so BatchNorm statistics never mix clean and
    adversarial images. The attack runs in ``attack.model_mode`` (ACL's released ``PGD_contrastive``: eval).

    - A2A: both views perturbed jointly (one PGD on the concatenated pair) to maximise NT(z(adv1), z(adv2));
      trains on NT(adv1, adv2), one BatchNorm (both branches are adversarial).
    - A2S (needs ``dual_bn=True``): v2 perturbed through the adversarial BatchNorm to maximise
      NT(z_clean(v1), z_adv(adv2)), the clean embedding taken through the clean BatchNorm (no gradient);
      trains on NT(z_clean(v1), z_adv(adv2)): v1 through the clean BN, adv2 through the adversarial BN.
    - DS (dual stream; needs ``dual_bn=True``), as the released ``train_simCLR.py --ACL_DS``: the A2A attack runs
      through the adversarial BatchNorm; loss = (NT(v1, v2) through the clean BN + NT(adv1, adv2) through the
      adversarial BN) / 2.

    ``augment`` defaults to ``SimCLRAugment(scale=(0.1, 1.0))`` (ACL's crop scale).
    History: epoch, loss, acc (contrastive top-1 of the pair trained on; for DS the clean pair), adv_acc (DS: the
    adversarial pair), lr, seconds.
    """
    if variant not in ("A2A", "A2S", "DS"):
        raise ValueError(f"variant must be 'A2A', 'A2S' or 'DS', got {variant!r}")
    if attack is None:
        raise ValueError(
            "pretrain_acl needs attack=AttackConfig(...); for standard pre-training use pretrain_contrastive"
        )
    _check_unit("temperature", temperature)
    if variant in ("A2S", "DS") and not _has_dual_bn(model):
        raise ValueError(
            f"variant={variant!r} needs a model with dual BatchNorm (separate BN for the clean and the adversarial "
            "branch, as in the paper): build the encoder and head with dual_bn=True"
        )
    device, net = _prepare(model, cfg)
    augment = augment if augment is not None else SimCLRAugment(scale=(0.1, 1.0))
    view = _view_maker(augment, cfg, device)
    mode = attack.model_mode
    step_attack = _in_precision(attack, cfg)

    def nt(z: Tensor) -> Tensor:
        half = len(z) // 2
        return nt_xent(z[:half].float(), z[half:].float(), temperature)

    def joint_attack(v1: Tensor, v2: Tensor, gen: torch.Generator) -> Tensor:
        both = torch.cat([v1, v2])
        return step_attack.run(net, both, both, loss_fn=lambda z, _: nt(z), generator=gen, check_range=False)

    def step(x: Tensor, y: Tensor, gen: torch.Generator):
        v1, v2 = view(x, gen), view(x, gen)
        b = len(x)
        if variant == "A2A":
            adv = joint_attack(v1, v2, gen)
            model.train()
            z = net(adv).float()
            return nt(z), {"acc": _pair_top1(z[:b], z[b:])}
        if variant == "A2S":
            with bn_route(model, "clean"):
                ref = _reference(net, v1, mode)
            with bn_route(model, "adv"):
                adv2 = step_attack.run(
                    net,
                    v2,
                    ref,
                    loss_fn=lambda z, r: nt_xent(r, z.float(), temperature),
                    generator=gen,
                    check_range=False,
                )
                model.train()
                z_adv = net(adv2).float()
            with bn_route(model, "clean"):
                z = net(v1).float()
            return nt_xent(z, z_adv, temperature), {"acc": _pair_top1(z, z_adv)}
        with bn_route(model, "adv"):
            adv = joint_attack(v1, v2, gen)
            model.train()
            z_adv = net(adv).float()
        with bn_route(model, "clean"):
            z = net(torch.cat([v1, v2])).float()
        loss = (nt(z) + nt(z_adv)) / 2
        return loss, {"acc": _pair_top1(z[:b], z[b:]), "adv_acc": _pair_top1(z_adv[:b], z_adv[b:])}

    recipe = _Recipe(
        name=f"acl-{variant}",
        identity=_identity(
            f"acl-{variant}", model, train, cfg, temperature=temperature, attack=attack, augment=augment
        ),
        params=[p for p in model.parameters() if p.requires_grad],
        loader=_loader(train, cfg, device, drop_last=True),
        step=step,
        set_mode=model.train,
    )
    return _fit(model, cfg, recipe, ckpt_dir)


def _has_dual_bn(model: nn.Module) -> bool:
    return any(type(m).__name__ == "DualBatchNorm" or hasattr(m, "bn_adv") for m in model.modules())


# --------------------------------------------------------------------------------------------------- fine-tuning
def finetune(
    model: nn.Module,
    train: Split,
    cfg: TrainConfig,
    *,
    mode: str = "linear",
    attack: AttackConfig | None = None,
    loss: str = "ce",
    beta: float = 6.0,
    augment: bool = True,
    frozen_bn: str = "eval",
    val: Split | None = None,
    val_attack: AttackConfig | None = None,
    ckpt_dir: Path | str | None = None,
) -> History:
    """Fine-tune a Classifier (``model.encoder`` + ``model.fc``) on labelled data.

    ``mode``: "linear" (encoder frozen: no gradient; only fc trains), "partial" (encoder.layer4 + fc train; the
    rest frozen as in linear) or "full".
    ``frozen_bn``: what the frozen layers' BatchNorm does during the training steps. "eval" (default; the main
    study's released code, ``EvalNet.encoder.eval()``): eval mode, the running statistics do not move and
    normalise the inputs. "train" (ACL's released ``train_trades.py`` without ``--fixbn``): train mode, so they
    normalise with the batch's statistics and their running statistics keep moving; their affine weights stay
    frozen either way. No effect in "full" mode.
    ``loss``: "ce" -> CE(clean), plus CE(adv) with an ``attack`` (PGD on CE; the main study's Partial-/Full-AT);
    "trades" -> CE(clean) + ``beta`` * KL(p_clean || p_adv), the attack maximising that KL from the clean
    prediction (computed in eval mode), as in TRADES (needs ``attack``; TRADES' own start, 0.001 * N(0, 1), is
    ``attack.random_start="normal"``). Clean and adversarial batches go through the network in separate passes.
    ``augment``: pad-4 random crop + horizontal flip of each batch (ACL's and TRADES' fine-tuning transform).
    ``val``: after every epoch measure clean and robust accuracy (``val_attack``, default ``attack``) and keep
    the best epoch by robust accuracy (clean without attack); ``best.pt`` sits beside ``last.pt`` and the
    model ends holding the best weights. History: epoch, loss, acc, adv_acc, lr, val_acc, val_robust_acc,
    best_epoch, seconds.
    """
    if mode not in ("linear", "partial", "full"):
        raise ValueError(f"mode must be 'linear', 'partial' or 'full', got {mode!r}")
    if loss not in ("ce", "trades"):
        raise ValueError(f"loss must be 'ce' or 'trades', got {loss!r}")
    if loss == "trades" and attack is None:
        raise ValueError("loss='trades' needs attack=AttackConfig(...) (the attack maximises the KL term)")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if frozen_bn not in ("eval", "train"):
        raise ValueError(
            f"frozen_bn must be 'eval' (frozen layers keep their BatchNorm statistics) or 'train' (they keep "
            f"updating them, ACL's released default), got {frozen_bn!r}"
        )
    device, net = _prepare(model, cfg)
    step_attack = _in_precision(attack, cfg)
    encoder = model.encoder
    if mode == "partial" and not hasattr(encoder, "layer4"):
        raise ValueError("mode='partial' trains encoder.layer4 + fc, but this encoder has no layer4")

    def trainable(name: str) -> bool:
        if mode == "full" or not name.startswith("encoder."):
            return True
        return mode == "partial" and name.startswith("encoder.layer4.")

    saved_flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.requires_grad_(saved_flags[name] and trainable(name))
    if frozen_bn == "train" or mode == "full":
        frozen = []  # every module in train mode; frozen weights simply get no gradient
    elif mode == "linear":
        frozen = [encoder]
    else:
        frozen = [m for name, m in encoder.named_children() if name != "layer4"]

    def set_mode() -> None:
        model.train()
        for m in frozen:
            m.eval()

    def restore() -> None:
        for name, p in model.named_parameters():
            p.requires_grad_(saved_flags[name])

    def step(x: Tensor, y: Tensor, gen: torch.Generator):
        if augment:
            x = pad_crop_flip(x, gen)
        if attack is None:
            logits = net(x).float()
            return F.cross_entropy(logits, y), {"acc": _correct(logits, y)}
        if loss == "trades":
            ref = _reference(net, x, "eval")
            x_adv = step_attack.run(
                net, x, ref, loss_fn=lambda out, r: trades_kl(out.float(), r), generator=gen, check_range=False
            )
        else:
            x_adv = step_attack.run(net, x, y, generator=gen, check_range=False)
        set_mode()  # the attack restores only its own view of the flags
        logits = net(x).float()
        logits_adv = net(x_adv).float()
        if loss == "trades":
            total = F.cross_entropy(logits, y) + beta * trades_kl(logits_adv, logits)
        else:
            total = F.cross_entropy(logits, y) + F.cross_entropy(logits_adv, y)
        return total, {"acc": _correct(logits, y), "adv_acc": _correct(logits_adv, y)}

    chosen_val_attack = val_attack if val_attack is not None else attack
    validate, select = _classification_validator(model, val, chosen_val_attack, cfg)
    recipe = _Recipe(
        name=f"finetune-{mode}" + (f"-{loss}" if attack is not None else ""),
        identity=_identity(
            f"finetune-{mode}",
            model,
            train,
            cfg,
            encoder_start=_weights_sha1(encoder),  # the pre-trained weights this run starts from
            attack=attack,
            loss=loss,
            beta=beta if loss == "trades" else None,
            augment=augment,
            val=_fp(val),
            val_attack=chosen_val_attack if val is not None else None,
            # only when it differs from the default, so the identities of earlier runs stay what they were
            **({"frozen_bn": frozen_bn} if frozen_bn != "eval" and mode != "full" else {}),
        ),
        params=[p for p in model.parameters() if p.requires_grad],
        loader=_loader(train, cfg, device, drop_last=False),
        step=step,
        set_mode=set_mode,
        validate=validate,
        select=select,
    )
    try:
        return _fit(model, cfg, recipe, ckpt_dir)
    finally:
        restore()


__all__ = [
    "History",
    "TrainConfig",
    "TrainingDiverged",
    "adversarial_contrastive_loss",
    "build_optimizer",
    "build_scheduler",
    "finetune",
    "lr_factor",
    "pretrain_acl",
    "pretrain_contrastive",
    "train_supervised",
]
