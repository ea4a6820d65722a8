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

Each method checks its settings, builds its training step (one batch -> the loss and some metrics) and hands it to
the epoch loop they all share, :func:`rcl.train_loop.fit`: optimiser and schedule (:mod:`rcl.train_config`), tqdm
progress, one atomic checkpoint per epoch, resume, load-or-train, best-epoch selection and the divergence watch
(``TrainingDiverged``). Every random draw of a step comes from the epoch's generator, so an interrupted run resumed
from its last checkpoint ends with the same weights as an uninterrupted one (CPU, fixed seed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rcl import checks
from rcl.attacks import AttackConfig, attack_mode
from rcl.augment import SimCLRAugment, pad_crop_flip
from rcl.data import DeviceLoader, Split
from rcl.evaluate import accuracy, features, robust_accuracy
from rcl.losses import kmeans_pseudo_labels, nt_xent, supcon, trades_kl
from rcl.models import bn_route
from rcl.runtime import compiled, memory_format, pick_device
from rcl.train_config import TrainConfig, build_optimizer, build_scheduler, lr_factor
from rcl.train_loop import History, Recipe, StepFn, TrainingDiverged, fit, run_identity, split_fingerprint, weights_sha1

View = Callable[[Tensor, torch.Generator], Tensor]
"""``view(x, generator)``: one augmented view ``[B, 3, H, W]`` in [0, 1] of each image of ``x``."""

_TEMPERATURE_HINT = "e.g. 0.5 (SimCLR, ACL) or 0.07 (the main study)"


# --------------------------------------------------------------------------------------------------- supervised
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
    padding = checks.integer("padding", padding, 0, hint="pixels of zero padding before the crop")
    device, net = _place(model, cfg)
    step_attack = _in_precision(attack, cfg)
    validate, select = _classification_validator(model, val, attack, cfg)
    recipe = Recipe(
        name="supervised" + ("-adv" if attack is not None else ""),
        identity=run_identity(
            "supervised", model, train, cfg, attack=attack, augment=augment, padding=padding, val=_fingerprint(val)
        ),
        params=[p for p in model.parameters() if p.requires_grad],
        loader=_train_loader(train, cfg, device, drop_last=False),
        step=_supervised_step(model, net, _supervised_view(augment, padding), step_attack),
        set_mode=model.train,
        validate=validate,
        select=select,
    )
    return fit(model, cfg, recipe, ckpt_dir)


def _supervised_view(augment: bool | View, padding: int) -> View:
    """The view a supervised step trains on: ``augment`` itself, pad + crop + flip (True) or the image (False)."""
    if callable(augment):
        return augment
    if augment:
        return lambda x, gen: pad_crop_flip(x, gen, padding=padding)
    return lambda x, gen: x


def _supervised_step(model: nn.Module, net: nn.Module, view: View, attack: AttackConfig | None) -> StepFn:
    """CE(f(v), y), after CE(f(x_adv), y) with an attack (PGD on the un-augmented x); acc, adv_acc: correct ones."""

    def step(x: Tensor, y: Tensor, gen: torch.Generator):
        v = view(x, gen)
        loss, metrics = 0.0, {}
        if attack is not None:
            x_adv = attack.run(net, x, y, generator=gen, check_range=False)
            model.train()
            logits_adv = net(x_adv).float()
            loss = F.cross_entropy(logits_adv, y)
            metrics["adv_acc"] = _n_correct(logits_adv, y)
        logits = net(v).float()
        loss = loss + F.cross_entropy(logits, y)
        metrics["acc"] = _n_correct(logits, y)
        return loss, metrics

    return step


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
    checks.choice("method", method, ("simclr", "supcon"))
    checks.choice("false_negatives", false_negatives, (None, "labels", "kmeans"))
    if false_negatives is not None and method == "supcon":
        raise ValueError("false_negatives applies to SimCLR: SupCon already treats same-class pairs as positives")
    checks.positive("temperature", temperature, hint=_TEMPERATURE_HINT)
    checks.optional_integer("kmeans_k", kmeans_k, 1, hint="or None for the number of classes")
    device, net = _place(model, cfg)
    step_attack = _in_precision(attack, cfg)
    augment = augment if augment is not None else SimCLRAugment()
    view = _view_function(augment, cfg, device)
    num_classes = int(train.labels.max()) + 1 if len(train) else 0
    k = kmeans_k if kmeans_k is not None else num_classes
    source, labels_of, before_epoch = _false_negative_labels(model, train, cfg, device, false_negatives, k)
    recipe = Recipe(
        name=method + ("-adv" if attack is not None else ""),
        identity=run_identity(
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
        loader=_train_loader(source, cfg, device, drop_last=True),
        step=_contrastive_step(net, view, method, temperature, step_attack, labels_of),
        set_mode=model.train,
        before_epoch=before_epoch,
    )
    return fit(model, cfg, recipe, ckpt_dir)


def _contrastive_step(
    net: nn.Module,
    view: View,
    method: str,
    temperature: float,
    attack: AttackConfig | None,
    labels_of: Callable[[Tensor], tuple[Tensor, Tensor | None]],
) -> StepFn:
    """Two views of the batch, their embeddings [B, D] and the contrastive loss (the adversarial objective with an
    attack); acc: the contrastive top-1 of the clean pair."""

    def step(x: Tensor, y: Tensor, gen: torch.Generator):
        labels, fn_labels = labels_of(y)
        v1, v2 = view(x, gen), view(x, gen)

        def loss_of(za: Tensor, zb: Tensor) -> Tensor:
            if method == "simclr":
                return nt_xent(za, zb, temperature, false_negative_labels=fn_labels)
            return supcon(torch.stack([za, zb], dim=1), labels, temperature)

        if attack is not None:
            loss, (z1, z2) = adversarial_contrastive_loss(net, x, v1, v2, loss_of, attack, generator=gen)
        else:
            z1 = net(v1).float()  # one forward pass per stream: BatchNorm normalises each view by its own statistics
            z2 = net(v2).float()
            loss = loss_of(z1, z2)
        return loss, {"acc": _pair_top1(z1, z2)}

    return step


def _false_negative_labels(
    model: nn.Module, train: Split, cfg: TrainConfig, device: torch.device, false_negatives: str | None, k: int
) -> tuple[Split, Callable[[Tensor], tuple[Tensor, Tensor | None]], Callable[[int, torch.Generator], None] | None]:
    """What the loader reads and the labels of a batch: ``(split, labels_of, before_epoch)``.

    ``labels_of(y) -> (labels, false-negative labels or None)``. With ``"kmeans"`` the loader yields example indices
    in place of labels, so each step can look up the pseudo-labels that ``before_epoch`` computes at the start of
    every epoch (cosine k-means with ``k`` clusters on the encoder's features of the whole un-augmented split).
    """
    if false_negatives != "kmeans":
        return train, lambda y: (y, y if false_negatives == "labels" else None), None
    source = Split(train.images, torch.arange(len(train)))
    true_labels = train.labels.to(device)
    pseudo: dict[str, Tensor] = {}

    def before_epoch(epoch: int, gen: torch.Generator) -> None:
        h = features(model.encoder, train, batch_size=max(cfg.batch_size, 256), device=device).to(device)
        pseudo["labels"] = kmeans_pseudo_labels(h, k, generator=gen)

    return source, lambda y: (true_labels[y], pseudo["labels"][y]), before_epoch


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


# --------------------------------------------------------------------------------------------------- ACL
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
    single_bn: bool = False,
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

    ``augment`` defaults to ``SimCLRAugment(scale=(0.1, 1.0))`` (ACL's crop scale). ``single_bn=True`` runs A2S or
    DS on a network with one BatchNorm, both streams normalised by the same statistics: the ablation of the paper's
    design choice (each stream is still its own forward pass).
    History: epoch, loss, acc (contrastive top-1 of the pair trained on; for DS the clean pair), adv_acc (DS: the
    adversarial pair), lr, seconds.
    """
    checks.choice("variant", variant, ("A2A", "A2S", "DS"))
    if attack is None:
        raise ValueError(
            "pretrain_acl needs attack=AttackConfig(...); for standard pre-training use pretrain_contrastive"
        )
    checks.positive("temperature", temperature, hint=_TEMPERATURE_HINT)
    if single_bn and _has_dual_bn(model):
        raise ValueError("single_bn=True is the one-BatchNorm ablation: build the network with dual_bn=False")
    if variant in ("A2S", "DS") and not _has_dual_bn(model) and not single_bn:
        raise ValueError(
            f"variant={variant!r} needs a model with dual BatchNorm (separate BN for the clean and the adversarial "
            "branch, as in the paper): build the encoder and head with dual_bn=True (or pass single_bn=True for the "
            "one-BatchNorm ablation)"
        )
    device, net = _place(model, cfg)
    augment = augment if augment is not None else SimCLRAugment(scale=(0.1, 1.0))
    view = _view_function(augment, cfg, device)
    name = f"acl-{variant}" + ("-single-bn" if single_bn else "")
    recipe = Recipe(
        name=name,
        identity=run_identity(name, model, train, cfg, temperature=temperature, attack=attack, augment=augment),
        params=[p for p in model.parameters() if p.requires_grad],
        loader=_train_loader(train, cfg, device, drop_last=True),
        step=_acl_step(model, net, variant, view, _in_precision(attack, cfg), temperature),
        set_mode=model.train,
    )
    return fit(model, cfg, recipe, ckpt_dir)


def _acl_step(
    model: nn.Module, net: nn.Module, variant: str, view: View, attack: AttackConfig, temperature: float
) -> StepFn:
    """ACL's step for ``variant`` (see :func:`pretrain_acl`): two views, the attack, the branches, the loss."""

    def nt(z: Tensor) -> Tensor:  # z: the two halves [2B, D] of a pair
        half = len(z) // 2
        return nt_xent(z[:half].float(), z[half:].float(), temperature)

    def joint_attack(v1: Tensor, v2: Tensor, gen: torch.Generator) -> Tensor:
        both = torch.cat([v1, v2])
        return attack.run(net, both, both, loss_fn=lambda z, _: nt(z), generator=gen, check_range=False)

    def a2a(x: Tensor, y: Tensor, gen: torch.Generator):
        v1, v2 = view(x, gen), view(x, gen)
        adv = joint_attack(v1, v2, gen)
        model.train()
        z = net(adv).float()
        return nt(z), {"acc": _pair_top1(z[: len(x)], z[len(x) :])}

    def a2s(x: Tensor, y: Tensor, gen: torch.Generator):
        v1, v2 = view(x, gen), view(x, gen)
        with bn_route(model, "clean"):
            ref = _reference(net, v1, attack.model_mode)
        with bn_route(model, "adv"):
            adv2 = attack.run(
                net, v2, ref, loss_fn=lambda z, r: nt_xent(r, z.float(), temperature), generator=gen, check_range=False
            )
            model.train()
            z_adv = net(adv2).float()
        with bn_route(model, "clean"):
            z = net(v1).float()
        return nt_xent(z, z_adv, temperature), {"acc": _pair_top1(z, z_adv)}

    def dual_stream(x: Tensor, y: Tensor, gen: torch.Generator):
        v1, v2 = view(x, gen), view(x, gen)
        with bn_route(model, "adv"):
            adv = joint_attack(v1, v2, gen)
            model.train()
            z_adv = net(adv).float()
        with bn_route(model, "clean"):
            z = net(torch.cat([v1, v2])).float()
        b = len(x)
        loss = (nt(z) + nt(z_adv)) / 2
        return loss, {"acc": _pair_top1(z[:b], z[b:]), "adv_acc": _pair_top1(z_adv[:b], z_adv[b:])}

    return {"A2A": a2a, "A2S": a2s, "DS": dual_stream}[variant]


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
    checks.choice("mode", mode, ("linear", "partial", "full"))
    checks.choice("loss", loss, ("ce", "trades"))
    if loss == "trades" and attack is None:
        raise ValueError("loss='trades' needs attack=AttackConfig(...) (the attack maximises the KL term)")
    checks.number("beta", beta, low=0.0, hint="the weight of TRADES' KL term (6 in TRADES and ACL)")
    checks.choice("frozen_bn", frozen_bn, ("eval", "train"), hint=_FROZEN_BN_HINT)
    device, net = _place(model, cfg)
    step_attack = _in_precision(attack, cfg)
    if mode == "partial" and not hasattr(model.encoder, "layer4"):
        raise ValueError("mode='partial' trains encoder.layer4 + fc, but this encoder has no layer4")
    saved_flags = _freeze(model, mode)
    set_mode = _finetune_mode(model, mode, frozen_bn)
    chosen_val_attack = val_attack if val_attack is not None else attack
    validate, select = _classification_validator(model, val, chosen_val_attack, cfg)
    recipe = Recipe(
        name=f"finetune-{mode}" + (f"-{loss}" if attack is not None else ""),
        identity=run_identity(
            f"finetune-{mode}",
            model,
            train,
            cfg,
            encoder_start=weights_sha1(model.encoder),  # the pre-trained weights this run starts from
            attack=attack,
            loss=loss,
            beta=beta if loss == "trades" else None,
            augment=augment,
            val=_fingerprint(val),
            val_attack=chosen_val_attack if val is not None else None,
            # only when it differs from the default, so the identities of earlier runs stay what they were
            **({"frozen_bn": frozen_bn} if frozen_bn != "eval" and mode != "full" else {}),
        ),
        params=[p for p in model.parameters() if p.requires_grad],
        loader=_train_loader(train, cfg, device, drop_last=False),
        step=_finetune_step(net, set_mode, step_attack, loss=loss, beta=beta, augment=augment),
        set_mode=set_mode,
        validate=validate,
        select=select,
    )
    try:
        return fit(model, cfg, recipe, ckpt_dir)
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(saved_flags[name])


_FROZEN_BN_HINT = (
    "'eval': the frozen layers keep their BatchNorm statistics; 'train': they keep updating them (ACL's released "
    "default)"
)


def _freeze(model: nn.Module, mode: str) -> dict[str, bool]:
    """Switch off the gradient of what ``mode`` keeps frozen; returns every parameter's ``requires_grad`` before."""

    def trainable(name: str) -> bool:
        if mode == "full" or not name.startswith("encoder."):
            return True
        return mode == "partial" and name.startswith("encoder.layer4.")

    saved_flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.requires_grad_(saved_flags[name] and trainable(name))
    return saved_flags


def _finetune_mode(model: nn.Module, mode: str, frozen_bn: str) -> Callable[[], None]:
    """``set_mode()``: train mode, except the frozen layers in eval mode with ``frozen_bn="eval"``."""
    if frozen_bn == "train" or mode == "full":
        frozen = []  # every module in train mode; frozen weights simply get no gradient
    elif mode == "linear":
        frozen = [model.encoder]
    else:
        frozen = [m for name, m in model.encoder.named_children() if name != "layer4"]

    def set_mode() -> None:
        model.train()
        for m in frozen:
            m.eval()

    return set_mode


def _finetune_step(
    net: nn.Module, set_mode: Callable[[], None], attack: AttackConfig | None, *, loss: str, beta: float, augment: bool
) -> StepFn:
    """CE(clean); with an attack CE(clean) + CE(adv), or TRADES: CE(clean) + beta * KL(p_clean || p_adv)."""

    def step(x: Tensor, y: Tensor, gen: torch.Generator):
        if augment:
            x = pad_crop_flip(x, gen)
        if attack is None:
            logits = net(x).float()
            return F.cross_entropy(logits, y), {"acc": _n_correct(logits, y)}
        if loss == "trades":
            ref = _reference(net, x, "eval")
            x_adv = attack.run(
                net, x, ref, loss_fn=lambda out, r: trades_kl(out.float(), r), generator=gen, check_range=False
            )
        else:
            x_adv = attack.run(net, x, y, generator=gen, check_range=False)
        set_mode()  # the attack restores only its own view of the flags
        logits = net(x).float()
        logits_adv = net(x_adv).float()
        if loss == "trades":
            total = F.cross_entropy(logits, y) + beta * trades_kl(logits_adv, logits)
        else:
            total = F.cross_entropy(logits, y) + F.cross_entropy(logits_adv, y)
        return total, {"acc": _n_correct(logits, y), "adv_acc": _n_correct(logits_adv, y)}

    return step


# --------------------------------------------------------------------------------------------------- shared parts
def _place(model: nn.Module, cfg: TrainConfig) -> tuple[torch.device, nn.Module]:
    """Move the model to the run's device and memory format; return the device and what the steps call.

    The steps call ``net``: the model itself, or with ``cfg.compile`` a ``torch.compile`` wrapper sharing its
    parameters (checkpoints, evaluation and the caller keep using ``model``).
    """
    device = pick_device(cfg.device)
    model.to(device, memory_format=memory_format(device, cfg.precision))
    return device, (compiled(model, device) if cfg.compile else model)


def _view_function(augment: View, cfg: TrainConfig, device: torch.device) -> View:
    """``view(x, generator)``: one augmented view of each image.

    With ``cfg.compile`` a :class:`SimCLRAugment`'s pixel work (``apply``) runs compiled, its random draws
    (``sample``) eagerly; any other ``augment(x, generator)`` callable is used as it is.
    """
    if not (cfg.compile and isinstance(augment, SimCLRAugment)):
        return augment
    apply = compiled(augment.apply, device)
    return lambda x, gen: apply(x, augment.sample(x, gen))


def _in_precision(attack: AttackConfig | None, cfg: TrainConfig) -> AttackConfig | None:
    """The attack as a training run uses it: in the run's precision unless the attack names its own."""
    if attack is None or attack.precision != "auto":
        return attack
    return dataclasses.replace(attack, precision=cfg.precision)


def _reference(model: nn.Module, x: Tensor, mode: str) -> Tensor:
    """Outputs the attack compares against: no gradient, computed in the mode the attack runs the model in."""
    with torch.no_grad(), attack_mode(model, mode):
        return model(x).float()


def _train_loader(train: Split, cfg: TrainConfig, device: torch.device, *, drop_last: bool) -> DeviceLoader:
    """Shuffled batches of ``cfg.batch_size``; ``drop_last`` keeps at least one batch of a small split."""
    drop_last = drop_last and len(train) >= cfg.batch_size
    return DeviceLoader(train, cfg.batch_size, shuffle=True, drop_last=drop_last, seed=cfg.seed, device=device)


def _classification_validator(model, val: Split | None, attack: AttackConfig | None, cfg: TrainConfig):
    """``(validate(epoch) -> {val_acc, val_robust_acc}, the metric to select by)``, or ``(None, None)`` without val."""
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


def _fingerprint(split: Split | None) -> dict | None:
    return split_fingerprint(split) if split is not None else None


def _n_correct(logits: Tensor, y: Tensor) -> Tensor:
    """How many of the logits [B, C] give the label y [B] (a 0-d tensor, no host sync)."""
    return (logits.argmax(1) == y).sum()


def _pair_top1(z1: Tensor, z2: Tensor) -> Tensor:
    """How many view-1 embeddings have their own view-2 embedding as nearest neighbour (contrastive top-1)."""
    sim = F.normalize(z1.detach().float(), dim=1) @ F.normalize(z2.detach().float(), dim=1).T
    return (sim.argmax(1) == torch.arange(len(z1), device=z1.device)).sum()


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
