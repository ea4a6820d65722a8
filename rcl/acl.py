"""ACL recipes: adversarial contrastive pre-training, then adversarial fine-tuning (Jiang et al., NeurIPS 2020).

Jiang, Chen, Chen, Wang, *Robust Pre-Training by Adversarial Contrastive Learning* (arXiv 2010.13337), after
their released code (VITA-Group/Adversarial-Contrastive-Learning):

- Pre-training (``pretrain``): SimCLR's NT-Xent at t = 0.5 with a contrastive PGD inside, in three variants
  (:func:`rcl.train.pretrain_acl`): **A2A** trains on two adversarial views, **A2S** on a clean view through the
  clean BatchNorm and an adversarial view through the adversarial BatchNorm, **DS** (dual stream) on
  ``(NT(v1, v2) through the clean BatchNorm + NT(adv1, adv2) through the adversarial BatchNorm) / 2``. The
  network is the released one: a CIFAR ResNet-18 that normalises its [0, 1] inputs with ImageNet's mean and std
  inside the model, and a 3-layer projection MLP with BatchNorm after every layer (the last one included).
- Fine-tuning (``finetune``): TRADES (Zhang et al. 2019), ``CE(f(x), y) + beta * KL(f(x) || f(x_adv))``, with
  ``linear`` (fc only), ``partial`` (layer4 + fc) or ``full`` mode, on a train split with a class-balanced
  validation split held out (45k / 5k on CIFAR-10); the epoch with the best validation robust accuracy is kept.
  As the released ``train_trades.py``: the encoder keeps the *adversarial* BatchNorm branch of a dual-BN network,
  the linear layer starts at zero, the frozen layers' BatchNorm stays in train mode (no ``--fixbn``: its running
  statistics keep moving), pad-4 crop + flip, TRADES' attack starts at ``x + 0.001 * N(0, 1)``.
- Evaluation (``results``): clean and PGD-20 (L-inf 8/255, step 2/255; 5 steps on smoke) accuracy per variant x
  mode, of the epoch picked on validation (PGD with the profile's ``cfg.std_steps``) and of the last epoch,
  and the main study's setting (4/255, from delta = 0) beside it; against the matched baseline: SimCLR pre-trained
  *through the same code, network, augmentation and schedule* with no attack (the released ``train_simCLR.py``
  without ``--ACL``), fine-tuned the same way, so that the adversarial views are the only difference.

Every run is loaded from ``run_dir/07_acl/`` when it is there and trained otherwise; its initial weights come from
(run seed, checkpoint folder) (:func:`rcl.runtime.seeded_init`), so any process trains the same network (the jobs
of :mod:`rcl.reproduce.jobs`). ``PROTOCOL`` holds the
paper's settings in one place; the profile scales epochs and sizes (``cfg.acl_*``), and ``plan`` says what a
profile runs (the ``smoke`` profile runs a small slice of the grid on a few hundred images so the chapter stays
under a minute on a CPU; its numbers test the code path, not the paper's claim).

LARS (lr 5.0, batch 512) is replaced by SGD with momentum, a cosine schedule and a linear warm-up, as is usual in
re-implementations; the chapter says so. ``docs/protocol.md`` lists every
setting beside the paper's and the released code's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from rcl import study
from rcl.attacks import AttackConfig
from rcl.augment import SimCLRAugment
from rcl.data import Dataset, Split, balanced_subset, train_val_split
from rcl.evaluate import correct, robust_accuracy, robust_correct
from rcl.models import (
    IMAGENET_MEAN_STD,
    Classifier,
    ContrastiveNet,
    DualBatchNorm,
    ProjectionHead,
    build_model,
    collapse_dual_bn,
    encoder,
)
from rcl.profiles import Config
from rcl.runtime import seeded_init
from rcl.train import History, TrainConfig, pretrain_acl
from rcl.train import finetune as _finetune
from rcl.verdicts import Floor

CHAPTER = "07_acl"
VARIANTS = ("A2A", "A2S", "DS")
MODES = ("linear", "partial", "full")
BASELINE = (
    "SimCLR"  # ACL's pre-training without the attack (same network, recipe and schedule), fine-tuned the same way
)

CONTROL = "random-encoder"  # a randomly initialised network, fine-tuned like every encoder: the floor of a verdict
ABLATION = "DS-single-BN"  # DS pre-training with one BatchNorm for both streams: the control of jiang-dual-bn
DUAL_BN_VARIANTS = ("A2S", "DS")  # a clean and an adversarial branch: independent BatchNorm (the paper's Fig. 1)

VARIANT_NAMES = {
    "A2A": "A2A: adversarial + adversarial views",
    "A2S": "A2S: adversarial + standard views, separate BatchNorm for each",
    "DS": "DS: dual stream, separate BatchNorm for clean and adversarial",
    BASELINE: "SimCLR without adversarial pre-training",
}


@dataclass(frozen=True)
class Protocol:
    """ACL's settings (Jiang et al. 2020 and their released code). Epsilons and steps in [0, 1] pixel units."""

    arch: str = "resnet18"
    input_norm: tuple = IMAGENET_MEAN_STD  # (x - mean) / std inside the network (released NormalizeByChannelMeanStd)
    head_layers: int = 3  # released proj_head: fc1-bn1-relu-fc2-bn2-relu-fc3-bn3, 512 wide
    head_final_bn: bool = True  # ... ending in BatchNorm (bn3), no ReLU after it
    temperature: float = 0.5
    crop_scale: tuple[float, float] = (0.1, 1.0)
    pretrain_batch_size: int = 512
    pretrain_epochs: int = 1000
    pretrain_optimizer: str = "LARS lr 5.0 (here: SGD momentum 0.9 + cosine + warm-up)"
    warmup_epochs: int = 10
    attack_eps: float = 8 / 255  # contrastive PGD of pre-training
    attack_alpha: float = 2 / 255
    attack_steps: int = 5
    attack_start: str = "uniform"  # released PGD_contrastive: uniform in the eps-ball
    attack_model_mode: str = "eval"  # ... run with model.eval(), through the adversarial BatchNorm
    finetune_loss: str = "trades"
    beta: float = 6.0
    finetune_eps: float = 8 / 255
    finetune_alpha: float = 2 / 255
    finetune_steps: int = 10
    finetune_start: str = "normal"  # TRADES: x + 0.001 * N(0, 1)
    finetune_lr: float = 0.1
    finetune_weight_decay: float = 2e-4
    finetune_momentum: float = 0.9
    finetune_batch_size: int = 128
    finetune_epochs: int = 25
    # released --decreasing_lr 15,20 for MultiStepLR stepped at the start of each (1-based) epoch: epoch 15 already
    # runs at lr / 10, i.e. 14 epochs at 0.1, 5 at 0.01, 6 at 0.001 (see finetune_milestones)
    finetune_milestones: tuple[int, ...] = (15, 20)
    finetune_augment: bool = True  # RandomCrop(32, padding=4) + RandomHorizontalFlip
    fc_init: str = "zero"  # released cvt_state_dict: fc.weight and fc.bias start at 0
    frozen_bn: str = "train"  # no --fixbn: frozen layers' BatchNorm stays in train mode, statistics keep moving
    n_val: int = 5000  # of CIFAR-10's 50,000 training images: 45k / 5k
    select_by: str = "val_robust_acc"
    eval_eps: float = 8 / 255
    eval_alpha: float = 2 / 255
    eval_steps: int = 20
    eval_start: str = "uniform"  # released pgd_attack: randomInit=True, model.eval()
    ds_finetune_route: str = "adv"  # the branch of a dual-BN encoder kept for fine-tuning (--bnNameCnt 1: 'pgd')


PROTOCOL = Protocol()


# ----------------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Plan:
    """What the chapter runs under a profile.

    variants / modes: the grid; n_pretrain / n_finetune / n_eval: class-balanced examples used for pre-training,
    for fine-tuning (after the validation split is held out) and for the test evaluation (None = all).
    """

    variants: tuple[str, ...]
    modes: tuple[str, ...]
    n_pretrain: int | None
    n_finetune: int | None
    n_eval: int | None
    n_val: int
    notes: list[str] = field(default_factory=list)


# Profiles that run a slice of the grid; every other profile runs all of it on the whole splits.
SLICES = {
    "smoke": dict(
        modes=("linear", "full"),
        n_pretrain=32,
        n_finetune=32,
        n_eval=64,
        n_val=32,
        eval_steps_of_profile=True,
        note="smoke profile: a slice of the grid on a few dozen images; the numbers test the code, not the paper",
    ),
    "laptop": dict(
        n_val=1000,
        note="laptop profile: every variant and the matched SimCLR baseline pre-trained on the profile's whole "
        "training set and fine-tuned in every mode for a few epochs: a CPU-sized look at the paper's grid, far from "
        "its 1,000 pre-training epochs",
    ),
}


def plan(
    cfg: Config,
    *,
    variants: tuple[str, ...] | list[str] | None = None,
    modes: tuple[str, ...] | list[str] | None = None,
    n_pretrain: int | None = None,
    n_finetune: int | None = None,
    n_eval: int | None = None,
) -> Plan:
    """The grid and sizes for ``cfg``; arguments left at None take the profile's choice.

    ``quick``/``paper``: every variant and mode on the whole splits (validation: ``cfg.n_val``). ``smoke`` and
    ``laptop``: their ``SLICES`` entry (modes linear and full, fewer training examples).
    """
    part = SLICES.get(cfg.profile, {})
    variants = tuple(variants) if variants is not None else VARIANTS
    modes = tuple(modes) if modes is not None else part.get("modes", MODES)
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown ACL variant {v!r}; choose from {', '.join(VARIANTS)}")
    for m in modes:
        if m not in MODES:
            raise ValueError(f"unknown fine-tuning mode {m!r}; choose from {', '.join(MODES)}")

    def pick(value, key):
        return value if value is not None else part.get(key)

    n_val = min(cfg.n_val, part["n_val"]) if "n_val" in part else cfg.n_val
    notes = [part["note"]] if "note" in part else []
    return Plan(
        variants,
        modes,
        pick(n_pretrain, "n_pretrain"),
        pick(n_finetune, "n_finetune"),
        pick(n_eval, "n_eval"),
        n_val,
        notes,
    )


# ----------------------------------------------------------------------------------------------------- settings
def pretrain_attack(cfg: Config) -> AttackConfig:
    """Contrastive PGD of pre-training: L-inf ``cfg.train_eps`` (8/255), step 2/255, ``cfg.train_steps`` steps
    (ACL: 5), uniform random start in the ball, model in eval mode (released ``PGD_contrastive``)."""
    return AttackConfig(
        eps=cfg.train_eps,
        alpha=PROTOCOL.attack_alpha,
        steps=cfg.train_steps,
        random_start=PROTOCOL.attack_start,
        model_mode=PROTOCOL.attack_model_mode,
        precision=cfg.precision,
    )


def finetune_attack(cfg: Config) -> AttackConfig:
    """TRADES' inner attack: L-inf ``cfg.train_eps``, step 2/255, 10 steps on the paper profile
    (``cfg.train_steps`` on the smaller ones), from TRADES' start ``x + 0.001 * N(0, 1)``, model in eval mode."""
    steps = PROTOCOL.finetune_steps if cfg.profile == "paper" else cfg.train_steps
    return AttackConfig(
        eps=cfg.train_eps,
        alpha=PROTOCOL.finetune_alpha,
        steps=steps,
        random_start=PROTOCOL.finetune_start,
        model_mode="eval",
        precision=cfg.precision,
    )


def eval_attack(cfg: Config) -> AttackConfig:
    """The test attack: the field's standard PGD (``cfg.std_eps`` 8/255, step ``cfg.std_alpha`` 2/255), 20 steps
    (released ``pgd_attack``; ``cfg.std_steps`` on smoke, whose numbers test the code), uniform random start, model
    in eval mode. Spelled out here rather than taken from ``rcl.study``, whose main-study attacks follow another
    release."""
    steps = cfg.std_steps if SLICES.get(cfg.profile, {}).get("eval_steps_of_profile") else PROTOCOL.eval_steps
    return replace(val_attack(cfg), steps=steps)


def val_attack(cfg: Config) -> AttackConfig:
    """The validation attack that picks the fine-tuning epoch (every epoch, on the held-out split): the test attack
    with the profile's ``cfg.std_steps`` steps (20 on quick and paper; fewer on laptop and smoke, where it runs
    once per epoch on a CPU)."""
    return AttackConfig(
        eps=cfg.std_eps,
        alpha=cfg.std_alpha,
        steps=cfg.std_steps,
        random_start=PROTOCOL.eval_start,
        model_mode="eval",
        precision=cfg.precision,
    )


def pretrain_config(cfg: Config, progress: bool = True) -> TrainConfig:
    """SGD (momentum 0.9) at ``cfg.acl_lr`` with a cosine schedule and a linear warm-up of
    ``min(10, epochs // 10)`` epochs, batch ``cfg.acl_batch_size``, ``cfg.acl_epochs`` epochs (LARS substitute)."""
    return TrainConfig(
        epochs=cfg.acl_epochs,
        batch_size=cfg.acl_batch_size,
        lr=cfg.acl_lr,
        optimizer="sgd",
        momentum=0.9,
        weight_decay=1e-6,
        schedule="cosine",
        warmup_epochs=min(PROTOCOL.warmup_epochs, cfg.acl_epochs // 10),
        seed=cfg.seed,
        device=cfg.device,
        compile=cfg.torch_compile,
        precision=cfg.precision,
        progress=progress,
    )


def finetune_milestones(epochs: int) -> tuple[int, ...]:
    """Milestones for :class:`rcl.train.TrainConfig` (epochs run before each decay by 10) of a ``epochs``-epoch run.

    The released ``--decreasing_lr 15,20`` steps ``MultiStepLR`` at the *start* of each 1-based epoch, so epochs
    15 and 20 already run at the decayed rate: 14 epochs at 0.1, 5 at 0.01, 6 at 0.001, i.e. milestones
    ``(14, 19)`` of 25. Other lengths keep the same fractions (at least one epoch before the first decay).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    done = [m - 1 for m in PROTOCOL.finetune_milestones]  # epochs completed before each decay
    return tuple(sorted({max(1, round(epochs * m / PROTOCOL.finetune_epochs)) for m in done}))


def finetune_config(cfg: Config, progress: bool = True) -> TrainConfig:
    """SGD lr ``cfg.acl_finetune_lr`` (0.1), momentum 0.9, weight decay 2e-4, batch 128, ``cfg.acl_finetune_epochs``
    epochs, divided by 10 where the released schedule does (:func:`finetune_milestones`)."""
    epochs = cfg.acl_finetune_epochs
    return TrainConfig(
        epochs=epochs,
        batch_size=PROTOCOL.finetune_batch_size,
        lr=cfg.acl_finetune_lr,
        optimizer="sgd",
        momentum=PROTOCOL.finetune_momentum,
        weight_decay=PROTOCOL.finetune_weight_decay,
        schedule="multistep",
        milestones=finetune_milestones(epochs),
        seed=cfg.seed,
        device=cfg.device,
        compile=cfg.torch_compile,
        precision=cfg.precision,
        progress=progress,
    )


# ----------------------------------------------------------------------------------------------------- models
def new_acl_net(cfg: Config, dual_bn: bool = False, arch: str = PROTOCOL.arch) -> ContrastiveNet:
    """ACL's released network: a CIFAR ResNet (``arch``, ResNet-18 on every profile; ``cfg.width`` wide) that
    normalises its [0, 1] inputs with ImageNet's mean/std inside the model, and the 3-layer projection MLP
    ``Linear-BN-ReLU-Linear-BN-ReLU-Linear-BN`` (feature_dim wide). ``dual_bn``: every BatchNorm of the encoder
    and of the head is a clean/adversarial pair (the variants in :data:`DUAL_BN_VARIANTS`)."""
    enc = encoder(arch, width=cfg.width, dual_bn=dual_bn, input_norm=PROTOCOL.input_norm)
    d = enc.feature_dim
    head = ProjectionHead(
        d,
        d,
        d,
        layers=PROTOCOL.head_layers,
        batch_norm=True,
        final_bn=PROTOCOL.head_final_bn,
        dual_bn=dual_bn,
    )
    return ContrastiveNet(enc, head)


def chapter_dir(cfg: Config) -> Path:
    return cfg.run_dir / CHAPTER


def pretrain(
    cfg: Config,
    data: Dataset,
    variant: str,
    pl: Plan | None = None,
    progress: bool = True,
    *,
    single_bn: bool = False,
) -> ContrastiveNet:
    """Load or train the ACL pre-trained network of ``variant`` ("A2A" | "A2S" | "DS") in ``run_dir/07_acl/``.

    A2S and DS networks carry dual BatchNorm (``dual_bn=True``): the clean views always go through the ``clean``
    branch and the adversarial views through the ``adv`` branch, so each branch keeps its own statistics and affine
    parameters. A2A (two adversarial branches) has one BatchNorm. ``single_bn=True``: the same pre-training with one
    BatchNorm for both streams, the paper's design choice taken out (``ABLATION`` for DS, in
    ``run_dir/07_acl/pretrain-DS-single-BN``).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown ACL variant {variant!r}; choose from {', '.join(VARIANTS)}")
    pl = pl or plan(cfg)
    train = balanced_subset(data.train, _cap(pl.n_pretrain, len(data.train)), seed=cfg.seed)
    ckpt_dir = chapter_dir(cfg) / f"pretrain-{variant}{'-single-BN' if single_bn else ''}"
    with seeded_init(cfg.seed, study.model_name(cfg, ckpt_dir)):  # the same weights in any process, any order
        model = new_acl_net(cfg, dual_bn=variant in DUAL_BN_VARIANTS and not single_bn)
    pretrain_acl(
        model,
        train,
        pretrain_config(cfg, progress),
        variant=variant,
        temperature=cfg.acl_temperature,
        attack=pretrain_attack(cfg),
        augment=SimCLRAugment(scale=PROTOCOL.crop_scale),
        ckpt_dir=ckpt_dir,
        single_bn=single_bn,
    )
    return model


def baseline(cfg: Config, data: Dataset, pl: Plan | None = None, progress: bool = True) -> ContrastiveNet:
    """Load or train the matched baseline: SimCLR through ACL's code, network (single BatchNorm), augmentation,
    temperature, optimiser and schedule, on the same images, without the attack (``run_dir/07_acl/pretrain-SimCLR``)."""
    from rcl.train import pretrain_contrastive

    pl = pl or plan(cfg)
    train = balanced_subset(data.train, _cap(pl.n_pretrain, len(data.train)), seed=cfg.seed)
    ckpt_dir = chapter_dir(cfg) / f"pretrain-{BASELINE}"
    with seeded_init(cfg.seed, study.model_name(cfg, ckpt_dir)):
        model = new_acl_net(cfg, dual_bn=False)
    pretrain_contrastive(
        model,
        train,
        pretrain_config(cfg, progress),
        method="simclr",
        temperature=cfg.acl_temperature,
        augment=SimCLRAugment(scale=PROTOCOL.crop_scale),
        ckpt_dir=ckpt_dir,
    )
    return model


def pretrain_history(cfg: Config, source: str) -> list[dict]:
    """The per-epoch history (loss, contrastive top-1 ``acc``, seconds) of the pre-training run ``source``."""
    import json

    return json.loads((chapter_dir(cfg) / f"pretrain-{source}" / "history.json").read_text())


def pretrained(cfg: Config, data: Dataset, source: str, pl: Plan | None = None, progress: bool = True) -> nn.Module:
    """The pre-trained network ``source`` names: an ACL variant (:func:`pretrain`), ``BASELINE``, ``ABLATION``
    (DS with one BatchNorm, :func:`pretrain`) or ``CONTROL`` (:func:`random_encoder`)."""
    if source == BASELINE:
        return baseline(cfg, data, pl, progress)
    if source == ABLATION:
        return pretrain(cfg, data, "DS", pl, progress, single_bn=True)
    if source == CONTROL:
        return random_encoder(cfg, data, pl)
    return pretrain(cfg, data, source, pl, progress)


@torch.no_grad()
def random_encoder(cfg: Config, data: Dataset, pl: Plan | None = None) -> ContrastiveNet:
    """The control of chapter 07's verdicts: the ACL network, randomly initialised and not trained, with its
    BatchNorm statistics estimated on the pre-training images (one pass in train mode, a cumulative average), as a
    trained encoder's are: the eval-mode attacks of fine-tuning and evaluation then normalise its activations as they
    do the trained encoders'. (TRADES at the recipe's rate still diverges on it: :func:`finetune_control`.)"""
    from torch.optim.swa_utils import update_bn

    pl = pl or plan(cfg)
    train = balanced_subset(data.train, _cap(pl.n_pretrain, len(data.train)), seed=cfg.seed)
    with seeded_init(cfg.seed, study.model_name(cfg, chapter_dir(cfg) / f"pretrain-{CONTROL}")):
        model = new_acl_net(cfg, dual_bn=False)
    update_bn((train.images[i : i + 256].float() / 255 for i in range(0, len(train), 256)), model)
    return model.eval()


def single_bn_encoder(model: nn.Module, route: str = PROTOCOL.ds_finetune_route) -> nn.Module:
    """The encoder of a pre-trained network with ordinary BatchNorm: for a dual-BN (A2S, DS) network the ``route``
    branch of every BatchNorm is kept (``rcl.models.collapse_dual_bn``; the released ``cvt_state_dict
    --bnNameCnt 1`` keeps the adversarial one); other networks are returned as they are."""
    enc = model.encoder if hasattr(model, "encoder") else model
    if any(isinstance(m, DualBatchNorm) for m in enc.modules()):
        return collapse_dual_bn(enc, route)
    return enc


def new_classifier(source: nn.Module, num_classes: int, route: str = PROTOCOL.ds_finetune_route) -> Classifier:
    """A fresh copy of ``source``'s encoder (its ``route`` BatchNorm branch if it has two; the same architecture and
    input normalisation) under a linear layer that starts at zero, as the released ``cvt_state_dict`` does
    (``fc.weight`` and ``fc.bias`` set to 0: every class starts equally likely)."""
    enc = single_bn_encoder(source, route)
    model = Classifier(build_model(enc.config), num_classes)
    model.encoder.load_state_dict(enc.state_dict())
    if PROTOCOL.fc_init == "zero":
        nn.init.zeros_(model.fc.weight)
        nn.init.zeros_(model.fc.bias)
    param = next(enc.parameters(), None)
    return model.to(param.device) if param is not None else model


def finetune_splits(cfg: Config, data: Dataset, pl: Plan | None = None) -> tuple[Split, Split]:
    """``(train, val)``: ``pl.n_val`` class-balanced validation examples held out of ``data.train`` (ACL: 45k/5k),
    then the rest capped at ``pl.n_finetune``."""
    pl = pl or plan(cfg)
    rest, val = train_val_split(data.train, pl.n_val, seed=cfg.seed)
    return balanced_subset(rest, _cap(pl.n_finetune, len(rest)), seed=cfg.seed), val


def finetune(
    cfg: Config,
    data: Dataset,
    source: nn.Module,
    name: str,
    mode: str,
    pl: Plan | None = None,
    progress: bool = True,
    *,
    frozen_bn: str = PROTOCOL.frozen_bn,
) -> tuple[Classifier, History]:
    """Load or train a TRADES fine-tuned classifier from the encoder of ``source`` in ``run_dir/07_acl/``.

    ``source``: a pre-trained network (or encoder); a dual-BN (A2S, DS) network is fine-tuned through its
    adversarial BatchNorm branch. The classifier starts from :func:`new_classifier` (linear layer at zero).
    ``mode``: "linear" | "partial" (layer4 + fc) | "full". ``frozen_bn``: "train" (default, the released code
    without ``--fixbn``: the frozen layers' BatchNorm statistics keep moving) or "eval" (``--fixbn``: fixed); give
    another ``name`` (the run folder) when changing it. The validation split picks the epoch with the best robust
    accuracy (PGD of the evaluation attack); the classifier returned holds that epoch's weights and its history
    has ``best_epoch``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown fine-tuning mode {mode!r}; choose from {', '.join(MODES)}")
    train, val = finetune_splits(cfg, data, pl)
    ckpt_dir = chapter_dir(cfg) / f"finetune-{name}-{mode}"
    with seeded_init(cfg.seed, study.model_name(cfg, ckpt_dir)):  # every weight is then overwritten; kept seeded
        model = new_classifier(source, data.num_classes)
    history = _finetune(
        model,
        train,
        finetune_config(cfg, progress),
        mode=mode,
        attack=finetune_attack(cfg),
        loss=PROTOCOL.finetune_loss,
        beta=PROTOCOL.beta,
        augment=PROTOCOL.finetune_augment,
        frozen_bn=frozen_bn,
        val=val,
        val_attack=val_attack(cfg),
        ckpt_dir=ckpt_dir,
    )
    return model, history


def finetune_control(
    cfg: Config, data: Dataset, source: nn.Module, mode: str, pl: Plan | None = None, progress: bool = True
) -> tuple[Classifier, History, str]:
    """Fine-tune the random-encoder control (:func:`random_encoder`) in ``mode`` as every encoder is; where that
    recipe diverges on random features (measured on the laptop profile: TRADES at lr 0.1 in linear mode, its loss
    climbs until it is not a number), the same recipe at a tenth of the learning rate. A control that converges is a
    stricter floor than one that diverged. Returns ``(classifier, history, run name)``; the name says the rate."""
    from rcl.train_loop import TrainingDiverged

    try:
        model, history = finetune(cfg, data, source, CONTROL, mode, pl, progress)
        return model, history, CONTROL
    except TrainingDiverged as err:
        lower = cfg.replace(acl_finetune_lr=cfg.acl_finetune_lr / 10)
        name = f"{CONTROL}-lr{lower.acl_finetune_lr:g}"
        print(f"{CONTROL} ({mode}): {err}; fine-tuning it again at lr {lower.acl_finetune_lr:g} ({name})")
        model, history = finetune(lower, data, source, name, mode, pl, progress)
        return model, history, name


def _run_lr(cfg: Config, run: str) -> float:
    """The fine-tuning learning rate of the run named ``run`` (:func:`finetune_control` names a lowered one)."""
    return float(run.rpartition("-lr")[2]) if run.startswith(f"{CONTROL}-lr") else cfg.acl_finetune_lr


def with_bn_branch(classifier: Classifier, ds_model: nn.Module, route: str) -> Classifier:
    """A copy of ``classifier`` whose encoder BatchNorms (statistics and affine) come from ``ds_model``'s ``route``
    branch; everything else is kept.

    For a classifier fine-tuned in linear mode from a DS network's adversarial branch, ``route="clean"`` is the same
    convolutions and head evaluated through the pre-trained *clean* BatchNorm (its statistics and affine
    parameters) instead of the classifier's own, which started as the adversarial branch and, with ACL's
    fine-tuning (frozen BatchNorm in train mode), kept re-estimating its statistics on the fine-tuning batches.
    """
    donor = collapse_dual_bn(ds_model.encoder, route)
    out = copy.deepcopy(classifier)
    bn_names = {name for name, m in out.encoder.named_modules() if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d)}
    state = out.encoder.state_dict()
    for key, value in donor.state_dict().items():
        if key.rpartition(".")[0] in bn_names:
            state[key] = value.to(state[key].device)
    out.encoder.load_state_dict(state)
    return out


@torch.no_grad()
def bn_branch_gap(ds_model: nn.Module) -> list[dict]:
    """How far the two BatchNorm branches of a DS network drifted apart, layer by layer.

    One record per dual BatchNorm of the encoder: ``layer``, ``mean_shift`` = mean over channels of
    ``|mu_clean - mu_adv| / sqrt((var_clean + var_adv) / 2)`` (a standardised distance between the running means)
    and ``var_ratio`` = mean over channels of ``var_adv / var_clean``. Zero shift and ratio 1 would mean one set of
    statistics could serve both kinds of input.
    """
    records = []
    for name, m in ds_model.encoder.named_modules():
        if isinstance(m, DualBatchNorm):
            mu_c, mu_a = m.clean.running_mean.float(), m.adv.running_mean.float()
            var_c, var_a = m.clean.running_var.float(), m.adv.running_var.float()
            pooled = ((var_c + var_a) / 2).clamp_min(1e-12).sqrt()
            records.append(
                {
                    "layer": name,
                    "mean_shift": float(((mu_c - mu_a).abs() / pooled).mean()),
                    "var_ratio": float((var_a / var_c.clamp_min(1e-12)).mean()),
                }
            )
    return records


# ----------------------------------------------------------------------------------------------------- evaluation
def outcomes(cfg: Config, model: nn.Module, test: Split, n_eval: int | None = None) -> dict[str, Tensor]:
    """Per test image (the first ``n_eval`` class-balanced ones), whether ``model`` is right: ``{"clean": bool [N],
    "robust": bool [N]}`` (robust: under :func:`eval_attack`), for paired comparisons on the same images."""
    test = balanced_subset(test, _cap(n_eval, len(test)), seed=cfg.seed)
    batch = cfg.eval_batch_size
    return {
        "clean": correct(model, test, batch_size=batch),
        "robust": robust_correct(model, test, eval_attack(cfg), batch_size=batch, seed=cfg.seed),
    }


def evaluate(
    cfg: Config, model: nn.Module, test: Split, n_eval: int | None = None, per_image: dict | None = None
) -> dict:
    """``{"clean_acc", "robust_acc", "robust_acc_main"}`` of ``model`` on the first ``n_eval`` class-balanced test
    examples: under :func:`eval_attack` (8/255) and under the main study's evaluation attack
    (``rcl.study.attack(cfg, "eval")``: 4/255, from delta = 0). Accuracies in [0, 1]. ``per_image``: the model's
    :func:`outcomes` when already computed."""
    per_image = per_image if per_image is not None else outcomes(cfg, model, test, n_eval)
    test = balanced_subset(test, _cap(n_eval, len(test)), seed=cfg.seed)
    main = study.attack(cfg, "eval")
    return {
        "clean_acc": per_image["clean"].double().mean().item(),
        "robust_acc": per_image["robust"].double().mean().item(),
        "robust_acc_main": robust_accuracy(model, test, main, batch_size=cfg.eval_batch_size, seed=cfg.seed),
    }


def last_epoch(cfg: Config, classifier: Classifier, name: str, mode: str) -> Classifier:
    """A copy of a fine-tuned ``classifier`` holding its *last* epoch's weights (the run keeps its best validation
    epoch; ``finetune-<name>-<mode>/last.pt`` holds the last)."""
    from rcl.checkpoint import load_checkpoint

    out = copy.deepcopy(classifier)
    load_checkpoint(chapter_dir(cfg) / f"finetune-{name}-{mode}" / "last.pt", out)
    return out.eval()


def record(cfg: Config, scheme: str, mode: str, scores: dict, **extra) -> dict:
    """One tidy row: scheme (variant), scenario (fine-tuning mode), attack settings, clean and robust accuracy."""
    atk = eval_attack(cfg)
    return {
        "scheme": scheme,
        "scenario": mode,
        "threat_model": "II",
        "attack": "pgd-ce",
        **atk.record(),
        **scores,
        **extra,
    }


def results(cfg: Config, data: Dataset, pl: Plan | None = None, *, baseline: bool = True, progress: bool = True):
    """Load or train every variant x mode of ``pl`` (and the SimCLR baseline), evaluate each; returns
    ``(records, models)``.

    ``records``: one dict per (scheme, mode) with ``clean_acc``, ``robust_acc``, ``best_epoch`` (epoch picked on
    validation) and ``val_robust_acc``; DS in linear mode also gets a row ``DS (clean BN route)``: the same
    classifier evaluated through the DS network's clean BatchNorm statistics. With ``baseline``, the matched SimCLR,
    the random-encoder ``CONTROL`` (every mode) and the single-BatchNorm ``ABLATION`` (the modes of
    :func:`ablation_modes`) run too. ``models``: ``{"pretrained": {variant: net}, "classifiers": {(scheme, mode):
    classifier}, "outcomes": {(scheme, mode): outcomes}}`` (:func:`outcomes`).
    """
    pl = pl or plan(cfg)
    nets = {v: pretrain(cfg, data, v, pl, progress) for v in pl.variants}
    sources: dict[str, nn.Module] = dict(nets)
    if baseline:
        for source in (BASELINE, CONTROL) + ((ABLATION,) if "DS" in pl.variants else ()):
            sources[source] = pretrained(cfg, data, source, pl, progress)
    records, classifiers, per_image = [], {}, {}
    for scheme, source in sources.items():
        for mode in ablation_modes(pl) if scheme == ABLATION else pl.modes:
            if scheme == CONTROL:
                model, history, run = finetune_control(cfg, data, source, mode, pl, progress)
            else:
                (model, history), run = finetune(cfg, data, source, scheme, mode, pl, progress), scheme
            classifiers[(scheme, mode)] = model
            per_image[(scheme, mode)] = outcomes(cfg, model, data.test, pl.n_eval)
            best = max(history, key=lambda r: (r.get("val_robust_acc", -1.0), -r["epoch"]))
            last = evaluate(cfg, last_epoch(cfg, model, run, mode), data.test, pl.n_eval)
            extra = {
                "finetune_lr": _run_lr(cfg, run),
                "best_epoch": best["epoch"],
                "epochs": len(history),
                "val_robust_acc": best.get("val_robust_acc"),
                **{f"{key}_last": value for key, value in last.items()},
            }
            scores = evaluate(cfg, model, data.test, pl.n_eval, per_image[(scheme, mode)])
            records.append(record(cfg, scheme, mode, scores, **extra))
            if scheme == "DS" and mode == "linear":  # the same classifiers through the clean BatchNorm branch
                wrong = with_bn_branch(model, nets["DS"], "clean")
                wrong_last = with_bn_branch(last_epoch(cfg, model, scheme, mode), nets["DS"], "clean")
                last = evaluate(cfg, wrong_last, data.test, pl.n_eval)
                extra = {**extra, **{f"{key}_last": value for key, value in last.items()}}
                records.append(
                    record(cfg, "DS (clean BN route)", mode, evaluate(cfg, wrong, data.test, pl.n_eval), **extra)
                )
    return records, {"pretrained": nets, "classifiers": classifiers, "outcomes": per_image}


def control_floor(records: list[dict], mode: str, n: int) -> Floor:
    """The floor of chapter 07's verdicts in ``mode``: the random-encoder ``CONTROL``'s clean accuracy plus
    ``verdicts.FLOOR_MARGIN``, from the ``records`` of :func:`results` (``n`` test images).

    The control keeps, as every run does, the epoch of best validation *robust* accuracy; on a random encoder that
    robust accuracy is noise near 0, so that epoch can be one whose head has barely learned (measured on the laptop
    profile: 10 % clean at epoch 1, 23-26 % at the last). The floor takes the higher clean accuracy of the kept and
    the last epoch, the stricter of the two."""
    for r in records:
        if r["scheme"] == CONTROL and r["scenario"] == mode:
            accuracy = max(r["clean_acc"], r.get("clean_acc_last", r["clean_acc"]))
            return Floor(accuracy, n, f"a random encoder fine-tuned the same way ({mode}, lr {r['finetune_lr']:g})")
    raise KeyError(f"no {CONTROL} record in mode {mode!r}: run results(cfg, data, baseline=True) with that mode")


def by_mode(table: pd.DataFrame) -> pd.DataFrame:
    """Chapter 07's table: one row per scheme, for each measure (clean and robust accuracy of the kept epoch, robust
    at the main study's radius, clean and robust of the last epoch, in %, one decimal) a column per fine-tuning mode,
    then the kept epoch per mode. ``table``: :func:`rcl.results.save_robustness` of :func:`results`' records.

    Every column is joined by its name: the best epochs once came from a second pivot copied in by position, and
    that pivot's alphabetical modes put partial's epochs under full."""
    measures = ["clean_acc", "robust_acc", "robust_acc_main", "clean_acc_last", "robust_acc_last"]
    wide = (100 * table.pivot_table(index="scheme", columns="scenario", values=measures, sort=False)).round(1)
    best = table.pivot_table(index="scheme", columns="scenario", values="best_epoch", sort=False)
    for mode in best.columns:
        wide[("best_epoch", mode)] = best[mode]
    return wide


def ablation_modes(pl: Plan) -> tuple[str, ...]:
    """The fine-tuning modes the single-BatchNorm ablation runs in: linear (the mode ``jiang-dual-bn`` is decided
    in, where the head reads the encoder's BatchNorm statistics as they are) when the plan has it."""
    return tuple(m for m in pl.modes if m == "linear")


def _cap(n: int | None, total: int) -> int | None:
    return None if n is None or n >= total else n


__all__ = [
    "BASELINE",
    "CHAPTER",
    "DUAL_BN_VARIANTS",
    "MODES",
    "PROTOCOL",
    "Plan",
    "Protocol",
    "SLICES",
    "VARIANTS",
    "baseline",
    "last_epoch",
    "pretrain_history",
    "pretrained",
    "bn_branch_gap",
    "by_mode",
    "control_floor",
    "eval_attack",
    "val_attack",
    "evaluate",
    "finetune",
    "finetune_attack",
    "finetune_config",
    "finetune_milestones",
    "finetune_splits",
    "new_acl_net",
    "new_classifier",
    "plan",
    "pretrain",
    "pretrain_attack",
    "pretrain_config",
    "record",
    "results",
    "single_bn_encoder",
    "with_bn_branch",
]
