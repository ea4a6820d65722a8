"""Evaluation: clean accuracy, PGD robust accuracy, the main study's two threat models, AutoAttack.

What is measured (Ghofrani et al., arXiv 2302.02502, Sec. 4; the field's standard from Croce & Hein 2020):

- ``accuracy``: fraction of test examples whose arg-max logit is the label.
- ``robust_accuracy``: fraction classified correctly on the adversarial input ``x_adv = attack(x)``
  (``x_adv`` within ``eps`` of ``x``). Every example counts: the split is walked in evaluation batches and the
  last partial batch is kept (the released code dropped it but divided by 10,000; we do not copy that).
- Threat model I (``threat_model_1``): the attacker knows the representation, not the head. It perturbs ``x``
  to *maximise* the contrastive loss between the embedding of ``x_adv`` and that of the clean ``x`` (the
  positive pair being (x_adv, x)): NT-Xent for SimCLR, SupCon with the labels for SupCon, as the released
  ``testEvalNet_adv`` does; the classifier then labels ``x_adv``.
- Threat model II (``threat_model_2``): end-to-end PGD on the classifier's cross-entropy (Madry et al. 2018).
- ``autoattack_accuracy`` / ``autoattack_record`` (from :mod:`rcl.autoattack`): AutoAttack at the reference
  settings (fra31/auto-attack), ``"standard"`` = APGD-CE, APGD-T, FAB-T, Square, each on what the earlier ones left
  standing; ``"ce+t"`` = APGD-CE then APGD-T, the two gradient attacks. The record names the suite and settings.
- ``layer_probe``: per-layer linear probes (Alain & Bengio 2016) on the encoder's taps, clean and adversarial.

Every function puts the model in eval mode while it works and gives back the exact train/eval flag of every
sub-module afterwards. Randomness (PGD random starts, probe shuffling) comes from seeded generators, never from
the global RNG; torchattacks re-seeds the global RNG itself, so it runs inside ``torch.random.fork_rng``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rcl import checks
from rcl.attacks import AttackConfig, LossFn, attack_mode, contrastive_loss_fn, input_dtype
from rcl.autoattack import (
    REFERENCE_SQUARE_QUERIES,
    REFERENCE_STEPS,
    AutoAttackConfig,
    AutoAttackResult,
    autoattack_record,
    run_autoattack,
)
from rcl.data import DeviceLoader, Split
from rcl.losses import supcon
from rcl.runtime import autocast, make_generator, memory_format, model_device

# Columns that lead every results table, in this order, when the records hold them.
STANDARD_COLUMNS = ("scheme", "scenario", "attack", "eps", "steps", "clean_acc", "robust_acc")


# --------------------------------------------------------------------------------------------------- helpers
def _batches(split: Split, batch_size: int, device: torch.device) -> DeviceLoader:
    if len(split) == 0:
        raise ValueError("the split is empty: nothing to evaluate")
    return DeviceLoader(split, batch_size, shuffle=False, drop_last=False, device=device)


@torch.no_grad()
def _logits(model: nn.Module, x: Tensor, device: torch.device, precision: str = "auto") -> Tensor:
    """``model(x)`` as float32, ``x`` fed in the dtype of the model's weights (a float64 model under bf16 autocast);
    non-finite outputs are an error naming the model, not a score (the arg-max of NaN logits is class 0)."""
    with autocast(device, precision):
        out = model(x.to(input_dtype(model, x.dtype)).contiguous(memory_format=memory_format(device, precision)))
    return _finite(out.float(), model)


def _finite(out: Tensor, model: nn.Module) -> Tensor:
    """``out`` ([B, ...]) when every value is finite; else a ``ValueError`` naming the model."""
    bad = int((~torch.isfinite(out)).flatten(1).any(dim=1).sum()) if out.numel() else 0
    if bad:
        raise ValueError(
            f"{type(model).__name__} gives NaN or infinite outputs for {bad} of {out.shape[0]} images: its weights "
            "(or its input) hold NaN or inf, e.g. after a training run that diverged. Retrain it (a lower lr) or load "
            "a good checkpoint; a score of such a model would count its arg-max, class 0, as an answer"
        )
    return out


# --------------------------------------------------------------------------------------------------- accuracy
def accuracy(
    model: nn.Module,
    split: Split,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    precision: str = "auto",
) -> float:
    """Clean top-1 accuracy in [0, 1] of ``model`` (x: [B, 3, H, W] in [0, 1] -> logits [B, C]) on ``split``.

    ``precision``: the forward passes in ``"bf16"`` autocast or ``"fp32"`` (``"auto"``: :mod:`rcl.runtime`'s rule).
    """
    device = torch.device(device) if device is not None else model_device(model)
    correct = torch.zeros((), dtype=torch.long, device=device)
    top_label = int(split.labels.max()) if len(split) else -1
    with attack_mode(model, "eval"):
        for x, y in _batches(split, batch_size, device):
            logits = _logits(model, x, device, precision)
            if top_label >= logits.shape[1]:
                raise ValueError(
                    f"the split's labels go up to {int(split.labels.max())} but the model gives "
                    f"{logits.shape[1]} classes: evaluate it on data with the classes it was trained on"
                )
            correct += (logits.argmax(1) == y).sum()
    return correct.item() / len(split)


def robust_correct(
    model: nn.Module,
    split: Split,
    attack: AttackConfig,
    *,
    batch_size: int = 512,
    loss_fn: LossFn | None = None,
    target_fn: Callable[[Tensor, Tensor], object] | None = None,
    attack_model: nn.Module | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> Tensor:
    """Which examples of ``split`` ``model`` classifies correctly on adversarial inputs: bool ``[N]`` on the CPU, in
    split order (:func:`robust_accuracy` is its mean; two models' outcomes on the same images are what a paired
    comparison resamples).

    For each batch ``(x, y)`` (x: [B, 3, H, W] in [0, 1]) the attack perturbs ``x`` to maximise
    ``loss_fn(attack_model(x_adv), target)`` (default: cross-entropy against ``y``), where
    ``target = target_fn(x, y)`` if given, else ``y``; then ``model`` classifies ``x_adv``.
    ``attack_model`` defaults to ``model`` (end-to-end, white box). PGD random starts come from a generator
    seeded with ``seed``, so a call is repeatable.
    """
    device = torch.device(device) if device is not None else model_device(model)
    attack_model = model if attack_model is None else attack_model
    gen = make_generator(device, seed)
    out = []
    with attack_mode(model, "eval"), attack_mode(attack_model, "eval"):
        for x, y in _batches(split, batch_size, device):
            target = target_fn(x, y) if target_fn is not None else y
            x_adv = attack.run(attack_model, x, target, loss_fn=loss_fn, generator=gen)
            out.append(_logits(model, x_adv, device, attack.precision).argmax(1) == y)
    return torch.cat(out).cpu()


def robust_accuracy(model: nn.Module, split: Split, attack: AttackConfig, **kwargs) -> float:
    """Accuracy in [0, 1] of ``model`` on adversarial inputs, over every example of ``split``: the mean of
    :func:`robust_correct` (same arguments)."""
    return robust_correct(model, split, attack, **kwargs).double().mean().item()


def correct(
    model: nn.Module,
    split: Split,
    attack: AttackConfig | None = None,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    seed: int = 0,
    precision: str = "auto",
) -> Tensor:
    """Which examples ``model`` classifies correctly: bool ``[N]`` on the CPU, in split order; clean, or on
    end-to-end adversarial inputs when ``attack`` is given (PGD on cross-entropy, random starts seeded by ``seed``).

    Per-example outcomes are what paired comparisons need (two models on the same images: McNemar's discordant
    pairs) and what a flip rate counts (correct when clean, wrong under attack).
    """
    device = torch.device(device) if device is not None else model_device(model)
    gen = make_generator(device, seed)
    out = []
    with attack_mode(model, "eval"):
        for x, y in _batches(split, batch_size, device):
            if attack is not None:
                x = attack.run(model, x, y, generator=gen)
            out.append(_logits(model, x, device, attack.precision if attack else precision).argmax(1) == y)
    return torch.cat(out).cpu()  # one transfer at the end, not one per batch


def threat_model_1(
    classifier: nn.Module,
    contrastive: nn.Module,
    split: Split,
    attack: AttackConfig,
    temperature: float,
    *,
    method: str = "simclr",
    batch_size: int = 512,
    device: torch.device | str | None = None,
    seed: int = 0,
    per_image: bool = False,
) -> float | Tensor:
    """Threat model I (attack the representation): robust accuracy in [0, 1] (``per_image``: the outcomes, bool
    ``[N]``, as :func:`robust_correct` gives them).

    ``contrastive`` maps x: [B, 3, H, W] in [0, 1] to embeddings [B, D] (a ContrastiveNet, or an encoder).
    The attack maximises the contrastive loss between the embeddings of the clean x and of x_adv at
    ``temperature``, as the released ``testEvalNet_adv`` -> ``pgd_linf`` does: ``method="simclr"`` NT-Xent
    (the attacker knows only the representation), ``"supcon"`` SupCon with the true labels (SCL: the attacker
    also knows the labels). The clean embeddings are computed once per batch in eval mode, without gradients;
    ``classifier`` then labels ``x_adv``. The attacker never sees the classifier's head.
    """
    checks.choice("method", method, ("simclr", "supcon"), hint="'simclr': NT-Xent, 'supcon': SupCon with the labels")
    device = torch.device(device) if device is not None else model_device(classifier)

    def clean_embedding(x: Tensor, y: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        with attack_mode(contrastive, "eval"):
            z = _logits(contrastive, x, device, attack.precision)  # the anchor in the attack's own precision
        return z if method == "simclr" else (z, y)

    if method == "simclr":
        loss_fn = contrastive_loss_fn(temperature)
    else:

        def loss_fn(z_adv: Tensor, target: tuple[Tensor, Tensor]) -> Tensor:
            z_clean, labels = target
            return supcon(torch.stack([z_clean, z_adv.float()], dim=1), labels, temperature)

    measure = robust_correct if per_image else robust_accuracy
    return measure(
        classifier,
        split,
        attack,
        batch_size=batch_size,
        loss_fn=loss_fn,
        target_fn=clean_embedding,
        attack_model=contrastive,
        device=device,
        seed=seed,
    )


def threat_model_2(
    classifier: nn.Module,
    split: Split,
    attack: AttackConfig,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> float:
    """Threat model II: end-to-end PGD on the classifier's cross-entropy; robust accuracy in [0, 1]."""
    return robust_accuracy(classifier, split, attack, batch_size=batch_size, device=device, seed=seed)


# --------------------------------------------------------------------------------------------------- AutoAttack
# The attack label of PGD run again on AutoAttack's own (fewer) test images: AutoAttack is only shown beside it
PGD_ON_AUTOATTACK_IMAGES = "pgd-ce, AutoAttack's images"


def autoattack_accuracy(
    model: nn.Module,
    split: Split,
    eps: float,
    *,
    version: str = "standard",
    n: int | None = None,
    seed: int = 0,
    steps: int = REFERENCE_STEPS,
    square_queries: int = REFERENCE_SQUARE_QUERIES,
    norm: str = "linf",
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> float:
    """AutoAttack robust accuracy in [0, 1] on the first ``n`` examples of ``split`` (all if ``None``).

    ``version="standard"``: the reference suite (fra31/auto-attack): APGD-CE, APGD-T (9 target classes), FAB-T
    (9 targets), Square (``square_queries``, 5,000), each on the examples still classified correctly;
    ``version="ce+t"``: APGD-CE then APGD-T only. ``steps``: iterations of the APGD and FAB attacks (reference
    100). ``eps`` in pixel units of [0, 1] (8/255 is the usual L-inf budget). Shorthand for
    ``run_autoattack(model, split, AutoAttackConfig(eps, version, ...), n=n).robust_acc``; use
    :func:`autoattack_record` for a record that says which suite and settings produced the number.
    Seeded, and the caller's global RNG and the model's train/eval flags are left as they were.
    """
    config = AutoAttackConfig(eps, version=version, norm=norm, steps=steps, square_queries=square_queries, seed=seed)
    return run_autoattack(model, split, config, n=n, batch_size=batch_size, device=device).robust_acc


# --------------------------------------------------------------------------------------------------- curves
def eps_curve(
    model: nn.Module,
    split: Split,
    eps_grid: Sequence[float],
    steps: int,
    alpha: float | None = None,
    *,
    norm: str = "linf",
    batch_size: int = 512,
    loss_fn: LossFn | None = None,
    target_fn: Callable[[Tensor, Tensor], object] | None = None,
    attack_model: nn.Module | None = None,
    attack_name: str = "pgd",
    device: torch.device | str | None = None,
    seed: int = 0,
) -> list[dict]:
    """Robust accuracy at each ``eps`` of ``eps_grid`` (pixel units of [0, 1]); one record per eps.

    ``alpha`` (step size) defaults to ``2.5 * eps / steps`` (Madry et al.), so each eps gets a comparable
    attack. Records: ``{"attack", "eps", "steps", "alpha", "clean_acc", "robust_acc"}``; at eps = 0 the
    attack cannot move the input, so robust_acc equals clean_acc.
    """
    clean = accuracy(model, split, batch_size=batch_size, device=device)
    records = []
    for eps in eps_grid:
        eps = float(eps)
        step = alpha if alpha is not None else 2.5 * eps / max(steps, 1)
        step = step if step > 0 else 1 / 255  # eps = 0: any positive step leaves x where it is
        attack = AttackConfig(eps=eps, alpha=step, steps=steps, norm=norm)
        robust = robust_accuracy(
            model,
            split,
            attack,
            batch_size=batch_size,
            loss_fn=loss_fn,
            target_fn=target_fn,
            attack_model=attack_model,
            device=device,
            seed=seed,
        )
        records.append(
            {"attack": attack_name, "eps": eps, "steps": steps, "alpha": step, "clean_acc": clean, "robust_acc": robust}
        )
    return records


# --------------------------------------------------------------------------------------------------- features
@torch.no_grad()
def features(
    model: nn.Module,
    split: Split,
    *,
    batch_size: int = 512,
    normalize: bool = False,
    device: torch.device | str | None = None,
) -> Tensor:
    """Embeddings ``model(x)`` of every example of ``split``: float32 [N, D] on the CPU, in split order.

    Pass an encoder for representations (t-SNE/PCA, uniformity), or a ContrastiveNet for projections.
    ``normalize=True`` L2-normalises each row (points on the hypersphere, as Wang & Isola's metrics want).
    """
    device = torch.device(device) if device is not None else model_device(model)
    out = []
    with attack_mode(model, "eval"):
        for x, _ in _batches(split, batch_size, device):
            out.append(_logits(model, x, device).cpu())
    z = torch.cat(out)
    return F.normalize(z, dim=1) if normalize else z


def _pooled_taps(encoder: nn.Module, x: Tensor, taps: Sequence[str], device: torch.device) -> list[Tensor]:
    """Each tap's activation, conv maps [B, C, H, W] averaged over H, W to [B, C]; float32."""
    with autocast(device):
        acts = encoder.forward_taps(x.to(input_dtype(encoder, x.dtype)), list(taps))
    pooled = [(a.mean(dim=(2, 3)) if a.dim() == 4 else a.flatten(1)).float() for a in (acts[t] for t in taps)]
    return [_finite(f, encoder) for f in pooled]


@torch.no_grad()
def _tap_features(encoder, split, taps, batch_size, device, perturb=None) -> list[Tensor]:
    per_tap: list[list[Tensor]] = [[] for _ in taps]
    for x, y in _batches(split, batch_size, device):
        if perturb is not None:
            with torch.enable_grad():
                x = perturb(x, y)
        for store, f in zip(per_tap, _pooled_taps(encoder, x, taps, device)):
            store.append(f)
    return [torch.cat(s) for s in per_tap]


def layer_probe(
    encoder: nn.Module,
    train: Split,
    test: Split,
    *,
    taps: Sequence[str] | None = None,
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 256,
    attack: AttackConfig | None = None,
    classifier: nn.Module | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> list[dict]:
    """Per-layer linear-probe accuracy: how linearly decodable the class is after each block.

    For every tap of ``encoder.forward_taps`` (default: all of ``encoder.tap_names``), the activation is
    global-average-pooled per channel (conv maps [B, C, H, W] -> [B, C]; the pooled feature stays [B, D]),
    standardised with the train split's mean and std, and a linear layer is trained on the train split with
    Adam (``epochs`` passes, batch ``batch_size``, seeded shuffling). The encoder is frozen in eval mode.

    Adversarial probes (``attack`` given): the inputs are attacked *once, end to end*, against
    ``classifier`` (threat model II; required with ``attack``), and the same ``x_adv`` go through every
    layer's probe. This measures how much class information each layer still carries under the attack that
    fools the whole network (the question the main study asks), not how robust each probe is on its own
    (attacking every probe separately would be a different, per-layer white-box attack).

    Returns one record per tap: ``{"layer", "depth", "dim", "clean_acc"}`` plus ``"robust_acc"`` with an attack.
    """
    if attack is not None and classifier is None:
        raise ValueError("layer_probe with an attack needs classifier=...: the attack runs end to end against it")
    epochs = checks.integer("epochs", epochs, 1)
    device = torch.device(device) if device is not None else model_device(encoder)
    taps = list(taps) if taps is not None else list(encoder.tap_names)
    gen = make_generator(device, seed)
    with attack_mode(encoder, "eval"):
        train_f = _tap_features(encoder, train, taps, batch_size, device)
        test_f = _tap_features(encoder, test, taps, batch_size, device)
        adv_f = None
        if attack is not None:
            attack_gen = make_generator(device, seed + 1)
            with attack_mode(classifier, "eval"):
                attacked = lambda x, y: attack.run(classifier, x, y, generator=attack_gen)
                adv_f = _tap_features(encoder, test, taps, batch_size, device, perturb=attacked)
    y_train = train.labels.to(device)
    y_test = test.labels.to(device)
    num_classes = int(torch.cat([train.labels, test.labels]).max()) + 1
    records = []
    for depth, name in enumerate(taps):
        mean = train_f[depth].mean(0)
        std = train_f[depth].std(0).clamp_min(1e-6)
        xs = (train_f[depth] - mean) / std
        probe = _train_probe(xs, y_train, num_classes, epochs=epochs, lr=lr, batch_size=batch_size, generator=gen)
        record = {"layer": name, "depth": depth, "dim": int(xs.shape[1])}
        with torch.no_grad():
            record["clean_acc"] = _probe_accuracy(probe, (test_f[depth] - mean) / std, y_test)
            if adv_f is not None:
                record["robust_acc"] = _probe_accuracy(probe, (adv_f[depth] - mean) / std, y_test)
        records.append(record)
    return records


def _train_probe(
    xs: Tensor, y: Tensor, num_classes: int, *, epochs: int, lr: float, batch_size: int, generator: torch.Generator
) -> nn.Linear:
    """A linear probe [D] -> [num_classes] trained with Adam on standardised features ``xs [N, D]``, labels ``y [N]``.

    Its initial weights (uniform in +-1/sqrt(D), zero bias) and every epoch's shuffling come from ``generator``.
    """
    probe = nn.Linear(xs.shape[1], num_classes).to(xs.device)
    with torch.no_grad():  # seeded init: no global RNG
        bound = 1 / math.sqrt(xs.shape[1])
        probe.weight.copy_(torch.rand(probe.weight.shape, generator=generator, device=xs.device) * 2 * bound - bound)
        probe.bias.zero_()
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    for _ in range(epochs):
        order = torch.randperm(len(xs), generator=generator, device=xs.device)
        for start in range(0, len(xs), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(probe(xs[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return probe


def _probe_accuracy(probe: nn.Linear, xs: Tensor, y: Tensor) -> float:
    """Share in [0, 1] of the standardised features ``xs [N, D]`` that the probe labels ``y [N]``."""
    return (probe(xs).argmax(1) == y).float().mean().item()


# --------------------------------------------------------------------------------------------------- tables
def to_frame(records: Sequence[dict]) -> pd.DataFrame:
    """A pandas DataFrame of result records (dicts), with a stable column order.

    The standard columns ``scheme, scenario, attack, eps, steps, clean_acc, robust_acc`` come first (those
    that any record holds, in that order), then every other key in the order it first appears. Missing
    values are NaN.
    """
    keys: list[str] = []
    for record in records:
        for key in record:
            if key not in keys:
                keys.append(key)
    columns = [c for c in STANDARD_COLUMNS if c in keys] + [k for k in keys if k not in STANDARD_COLUMNS]
    return pd.DataFrame(list(records), columns=columns)


__all__ = [
    "STANDARD_COLUMNS",
    "AutoAttackConfig",
    "AutoAttackResult",
    "accuracy",
    "autoattack_accuracy",
    "autoattack_record",
    "PGD_ON_AUTOATTACK_IMAGES",
    "eps_curve",
    "features",
    "layer_probe",
    "robust_accuracy",
    "run_autoattack",
    "threat_model_1",
    "threat_model_2",
    "to_frame",
]
