"""Adversarial attacks on images: FGSM and PGD under L-inf and L2 threat models.

- FGSM (Goodfellow, Shlens, Szegedy, ICLR 2015): ``x' = clip_[0,1](x + eps * sign(grad_x L(f(x), y)))``.
- PGD (Madry et al., ICLR 2018, eq. 2): ``x^{t+1} = Proj_{B(x, eps) ∩ [0,1]}(x^t + alpha * step(grad_x L))``,
  with ``step = sign(g)`` for L-inf and ``g / ||g||_2`` (per sample) for L2, from a random start in the ball.
- The contrastive (representation) attack of the main study (Ghofrani et al.) and of ACL (Jiang et al.) is PGD
  with ``loss_fn = contrastive_loss_fn(t)`` and ``target = z_clean``: it maximises NT-Xent between the embedding of
  the perturbed image and the embedding of the clean one (:func:`contrastive_loss_fn`).

The update and projection order follow torchattacks 3.5.1 (``PGD`` / ``PGDL2``): take the step, project the
perturbation onto the eps-ball, then clip the image to [0, 1]. Gradients are taken with respect to the input only
(``torch.autograd.grad``), so the model's parameter ``.grad`` fields are never touched. Where the run's precision is
bf16 (CUDA, or a CPU with native bf16: :mod:`rcl.runtime`) the forward pass runs in bf16 autocast with channels_last
inputs; the adversarial image, the gradient's sign and the projection stay float32.

Epsilons and step sizes are in pixel units of [0, 1] (8/255 is the usual L-inf budget on CIFAR).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rcl import checks
from rcl.runtime import PRECISIONS, autocast, memory_format

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss_fn(model(x_adv), target) -> scalar`` that the attack MAXIMISES."""

NORMS = ("linf", "l2")
MODEL_MODES = ("eval", "train", "keep")
STARTS = (True, False, "uniform", "normal")
"""``random_start`` values: True = "uniform" (a random point of the eps-ball), False (start at x), "normal"
(TRADES' start, ``x + 0.001 * N(0, 1)`` per pixel, whatever eps)."""
_START_HINT = "True or 'uniform': uniform in the eps-ball, 'normal': TRADES' 0.001 * N(0, 1), False: start at x"
TRADES_START_STD = 0.001  # Zhang et al. 2019, released trades.py: x_adv = x + 0.001 * randn
RANGE_TOLERANCE = 1e-6  # how far outside [0, 1] an input may stray (float rounding) before it is refused
_DIV_EPS = 1e-10  # added to per-sample gradient norms in the L2 step (as torchattacks.PGDL2)

__all__ = [
    "LossFn",
    "NORMS",
    "MODEL_MODES",
    "STARTS",
    "AttackConfig",
    "attack_mode",
    "check_images",
    "contrastive_loss_fn",
    "cross_entropy_loss",
    "fgsm",
    "input_dtype",
    "pgd",
    "sign_coherence",
]


def cross_entropy_loss(logits: Tensor, target: Tensor) -> Tensor:
    """The default attack loss: batch-MEAN cross-entropy of ``logits [B, C]`` against labels ``target [B]``.

    The mean (not the sum) matches torchattacks. It does not change the attack: the L-inf step uses the sign of the
    gradient and the L2 step its per-sample direction, and sample i's gradient depends only on sample i's loss
    (as long as BatchNorm is in eval mode), so the step of each image is independent of the batch size.
    """
    return F.cross_entropy(logits.float(), target)


def contrastive_loss_fn(temperature: float) -> LossFn:
    """Loss for the representation attack: ``(z_adv, z_ref) -> nt_xent(z_adv, z_ref, temperature)``.

    ``z_adv`` is the model's output on the perturbed images ``[B, D]`` and ``z_ref`` the (detached) embeddings of the
    clean images ``[B, D]``, passed to :func:`pgd` as ``target``. Maximising it pushes each adversarial embedding away
    from its own clean embedding and towards the other images of the batch (main study, threat model I; ACL).
    """
    temperature = checks.positive("temperature", temperature, hint="e.g. 0.5 or 0.07")

    def loss_fn(z_adv: Tensor, z_ref: Tensor) -> Tensor:
        from rcl.losses import nt_xent  # imported here: rcl.losses imports nothing from attacks, keep it that way

        return nt_xent(z_adv.float(), z_ref.float(), temperature)

    return loss_fn


@contextlib.contextmanager
def attack_mode(model: nn.Module, mode: str = "eval") -> Iterator[nn.Module]:
    """Put ``model`` in the mode an attack runs in, and restore every submodule's training flag afterwards.

    mode: ``"eval"`` (``model.eval()``: BatchNorm uses its running statistics, the field's standard),
    ``"train"`` (``model.train()``: BatchNorm normalises with batch statistics AND updates its running statistics,
    the quirk of the main study's released code), ``"keep"`` (leave the flags as the caller set them).
    The flags are restored exactly, module by module, so a model that was partly frozen (e.g. an encoder in eval
    mode under a training head) comes back the same.
    """
    checks.choice("model_mode", mode, MODEL_MODES)
    flags = [(module, module.training) for module in model.modules()]
    try:
        if mode == "eval":
            model.eval()
        elif mode == "train":
            model.train()
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def fgsm(
    model: nn.Module,
    x: Tensor,
    target: Any,
    eps: float,
    *,
    loss_fn: LossFn | None = None,
    model_mode: str = "eval",
) -> Tensor:
    """Fast Gradient Sign Method (L-inf): ``clip_[0,1](x + eps * sign(grad_x loss_fn(model(x), target)))``.

    Same as ``pgd(..., alpha=eps, steps=1, norm="linf", random_start=False)``; see :func:`pgd` for the arguments,
    the validation and the returned tensor.
    """
    return pgd(
        model,
        x,
        target,
        eps,
        alpha=eps,
        steps=1,
        norm="linf",
        random_start=False,
        loss_fn=loss_fn,
        model_mode=model_mode,
    )


def pgd(
    model: nn.Module,
    x: Tensor,
    target: Any,
    eps: float,
    alpha: float,
    steps: int,
    *,
    norm: str = "linf",
    random_start: bool = True,
    loss_fn: LossFn | None = None,
    model_mode: str = "eval",
    generator: torch.Generator | None = None,
    check_range: bool = True,
    precision: str = "auto",
) -> Tensor:
    """Projected gradient ascent on ``loss_fn(model(x_adv), target)`` inside the eps-ball around ``x``.

    Args:
        model: maps ``[B, 3, H, W]`` images to whatever ``loss_fn`` takes (logits ``[B, C]`` for cross-entropy).
        x: clean images ``[B, C, H, W]`` in [0, 1] (float16/bfloat16/float32/float64; no NaN). Not modified. The
            attack iterates in float32 (float64 if ``x`` is float64) and feeds the model its own weights' dtype.
        target: labels ``int64 [B]`` for the default cross-entropy, or anything ``loss_fn`` takes (e.g. clean
            embeddings ``[B, D]`` for :func:`contrastive_loss_fn`).
        eps: radius of the ball in pixel units of [0, 1] (L-inf: max per-pixel change, e.g. 8/255; L2: Euclidean norm
            of the whole ``[C, H, W]`` perturbation, e.g. 0.5).
        alpha: step size (L-inf: per-pixel step ``alpha * sign(grad)``; L2: step of Euclidean length ``alpha``).
        steps: number of gradient steps (int >= 0).
        norm: ``"linf"`` or ``"l2"``.
        random_start: True or ``"uniform"``: start from a random point of the ball: L-inf uniform in
            ``[-eps, eps]`` per pixel; L2 a Gaussian direction scaled to a radius uniform in ``[0, eps]`` (as
            torchattacks.PGDL2; this is not uniform in volume, which in 3072 dimensions would put almost every start
            on the sphere). ``"normal"``: TRADES' start, ``0.001 * N(0, 1)`` per pixel (Zhang et al. 2019). False:
            start at ``x``. The start is clipped to [0, 1].
        loss_fn: ``loss_fn(output, target) -> scalar`` to maximise; default :func:`cross_entropy_loss` (batch mean).
        model_mode: ``"eval"`` (default), ``"train"`` or ``"keep"``; see :func:`attack_mode`. The previous training
            flags are restored afterwards in every case (``"train"`` still leaves updated BatchNorm running stats).
        generator: ``torch.Generator`` on ``x``'s device for the random start; ``None`` uses the global RNG.
        check_range: verify ``x`` lies in [0, 1] and holds no NaN (one host sync). Training loops pass ``False``
            for batches that rcl's loader and augmentations produced (already clamped), so a step loop never waits
            on the device.
        precision: the model's forward/backward passes in ``"bf16"`` autocast (channels_last inputs) or ``"fp32"``;
            ``"auto"`` follows :func:`rcl.runtime.resolve_precision` for ``x``'s device.

    Returns:
        ``x_adv`` ``[B, C, H, W]``, detached, float32 (float64 if ``x`` is float64), in [0, 1] and with
        ``||x_adv - x|| <= eps`` (up to float rounding) in the chosen norm. ``eps == 0`` or ``steps == 0`` returns
        a clone of ``x`` (no random start either: a zero-step attack is the clean input).

    Raises:
        ValueError: ``x`` not a 4-D float tensor in [0, 1] (or holding NaN); ``eps < 0``; ``steps`` not an
            int >= 0; ``alpha <= 0`` with ``steps > 0``; unknown ``norm`` or ``model_mode``; labels whose batch
            size differs from ``x``'s; a generator on another device.
    """
    settings = AttackConfig(eps, alpha, steps, norm, random_start, model_mode, precision)  # checked here, once
    return settings.run(model, x, target, loss_fn=loss_fn, generator=generator, check_range=check_range)


def _projected_gradient_ascent(
    model: nn.Module,
    x: Tensor,
    target: Any,
    loss_fn: LossFn,
    *,
    eps: float,
    alpha: float,
    steps: int,
    norm: str,
    random_start: bool | str,
    model_mode: str,
    precision: str,
    generator: torch.Generator | None,
) -> Tensor:
    """PGD itself (Madry et al. 2018, eq. 2) on checked inputs: ``x`` float32/64 ``[B, C, H, W]`` in [0, 1], detached.

    From the start (:func:`_start`), ``steps`` times: the gradient of ``loss_fn(model(x_adv), target)`` with respect
    to the input, one ascent step of size ``alpha``, projection onto the ``eps``-ball around ``x`` and onto [0, 1].
    """
    x_adv = _start(x, eps, norm, random_start, generator)
    fmt = memory_format(x.device, precision)
    model_dtype = input_dtype(model, x.dtype)
    with attack_mode(model, model_mode), torch.enable_grad():
        for _ in range(steps):
            x_adv.requires_grad_(True)
            with autocast(x.device, precision):
                output = model(x_adv.to(model_dtype).contiguous(memory_format=fmt))
            if torch.is_tensor(output) and output.is_floating_point() and output.dtype != x.dtype:
                output = output.to(x.dtype)  # the loss in full precision, outside autocast
            loss = loss_fn(output, target)
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = _step_and_project(x_adv.detach(), grad.to(x.dtype), x, eps, alpha, norm)
    return x_adv.detach()


def _start(x: Tensor, eps: float, norm: str, random_start: bool | str, generator: torch.Generator | None) -> Tensor:
    """The first iterate, clipped to [0, 1]: ``x`` (False), a random point of the eps-ball (True, "uniform") or
    TRADES' ``x + 0.001 * N(0, 1)`` ("normal")."""
    if random_start == "normal":
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + TRADES_START_STD * noise).clamp_(0.0, 1.0)
    if random_start:
        return (x + _random_start(x, eps, norm, generator)).clamp_(0.0, 1.0)
    return x.clone()


def sign_coherence(delta: Tensor) -> Tensor:
    """How spatially coherent each perturbation is: the share of horizontally or vertically neighbouring pixels
    (per channel) whose perturbation has the same sign. About 0.5 for independent noise, 1 for a constant sign,
    0 for a checkerboard. delta: float [N, C, H, W] (``x_adv - x``); returns float [N]."""
    if delta.dim() != 4 or delta.shape[-1] < 2 or delta.shape[-2] < 2:
        raise ValueError(f"delta must be [N, C, H, W] with H, W >= 2, got shape {tuple(delta.shape)}")
    sign = torch.sign(delta)
    same_row = (sign[..., :, 1:] == sign[..., :, :-1]).flatten(1)
    same_column = (sign[..., 1:, :] == sign[..., :-1, :]).flatten(1)
    return torch.cat([same_row, same_column], dim=1).float().mean(dim=1)


def input_dtype(model: nn.Module, default: torch.dtype) -> torch.dtype:
    """The dtype the model's weights are in (float32 for a float64 ``x`` into a float32 model), else ``default``."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return default


def _step_and_project(x_adv: Tensor, grad: Tensor, x: Tensor, eps: float, alpha: float, norm: str) -> Tensor:
    """One ascent step, projection of the perturbation onto the eps-ball, then clipping to [0, 1]."""
    if norm == "linf":
        x_adv = x_adv + alpha * grad.sign()
        delta = (x_adv - x).clamp_(-eps, eps)
    else:
        grad_norm = grad.flatten(1).norm(p=2, dim=1) + _DIV_EPS
        x_adv = x_adv + alpha * grad / _per_sample(grad_norm, grad)
        delta = x_adv - x
        delta_norm = delta.flatten(1).norm(p=2, dim=1)
        factor = (eps / delta_norm.clamp_min(1e-12)).clamp_(max=1.0)
        delta = delta * _per_sample(factor, delta)
    return (x + delta).clamp_(0.0, 1.0)


def _random_start(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A random perturbation inside the eps-ball (before clipping the image to [0, 1])."""
    if norm == "linf":
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2.0 * noise - 1.0) * eps
    direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    length = direction.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
    radius = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype) * eps
    return direction * _per_sample(radius / length, direction)


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Reshape ``values [B]`` to broadcast over ``like [B, ...]``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def check_images(x: Tensor, check_range: bool = True, name: str = "x") -> None:
    """Images as rcl takes them, else a ``ValueError`` naming ``name``: a float tensor ``[B, C, H, W]`` (channels
    first; an ``[B, H, W, 3]`` array from numpy or PIL is named as channels-last) in [0, 1] without NaN."""
    if not torch.is_tensor(x):
        raise ValueError(f"{name} must be a tensor [B, 3, H, W] in [0, 1], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{name} must be 4-D [B, C, H, W], got shape {tuple(x.shape)}: add a batch dimension with {name}[None]"
        )
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}, channels last [B, H, W, C] (as numpy and PIL store images); rcl "
            f"takes channels first [B, C, H, W]: pass {name}.permute(0, 3, 1, 2)"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be a float tensor in [0, 1], got {x.dtype}: convert uint8 images with {name}.float() / 255"
        )
    if x.numel() == 0 or not check_range:
        return
    flat = x.detach().reshape(-1)
    lo, hi = torch.aminmax(flat)
    nans = torch.isnan(flat).sum()
    lo, hi, nans = torch.stack([lo.double(), hi.double(), nans.double()]).tolist()  # one host sync per call
    if nans:
        raise ValueError(
            f"{name} must lie in [0, 1], got {int(nans)} NaN value(s) among its {x.numel()}: find where they entered "
            "(preprocessing, a division by zero) and pass clean images; PGD from NaN returns NaN images"
        )
    if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        raise ValueError(
            f"{name} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]: pass raw pixels scaled to [0, 1] (uint8 "
            "images / 255) and put any input normalisation (mean/std) inside the model"
        )


def _check_call(
    x: Tensor, target: Any, loss_fn: LossFn | None, generator: torch.Generator | None, check_range: bool
) -> LossFn:
    """Check what comes with each call (the images, the target, the generator); return the loss to maximise."""
    check_images(x, check_range)
    if loss_fn is None:
        loss_fn = cross_entropy_loss
        _check_labels(target, x, required=True)
    else:
        _check_labels(target, x, required=False)
    if generator is not None and torch.device(generator.device).type != x.device.type:
        raise ValueError(
            f"generator is on {generator.device} but x is on {x.device}: make it with "
            "rcl.runtime.make_generator(x.device, seed)"
        )
    if torch.is_inference_mode_enabled():
        raise RuntimeError("pgd needs gradients with respect to the input: call it outside torch.inference_mode()")
    return loss_fn


def _check_labels(target: Any, x: Tensor, *, required: bool) -> None:
    is_labels = torch.is_tensor(target) and not target.is_floating_point() and not target.is_complex()
    if required and not is_labels:
        raise ValueError(
            "the default loss is cross-entropy, so target must be integer labels [B]; "
            f"got {type(target).__name__}{'' if not torch.is_tensor(target) else f' {target.dtype}'}. "
            "For another objective pass loss_fn (e.g. contrastive_loss_fn(0.5) with clean embeddings as target)"
        )
    if is_labels and (target.dim() != 1 or target.shape[0] != x.shape[0]):
        raise ValueError(
            f"labels must have shape [B] = [{x.shape[0]}] to match x {tuple(x.shape)}, got {tuple(target.shape)}"
        )


@dataclass(frozen=True)
class AttackConfig:
    """One attack setting, validated on construction, e.g. ``AttackConfig(8/255, 2/255, 10)`` for PGD-10 L-inf.

    Fields as in :func:`pgd`: ``eps`` and ``alpha`` in pixel units of [0, 1], ``steps``, ``norm`` (``"linf"`` |
    ``"l2"``), ``random_start`` (True | ``"uniform"`` | ``"normal"`` | False) and ``model_mode`` (``"eval"`` |
    ``"train"`` | ``"keep"``) and ``precision`` (``"auto"`` | ``"bf16"`` | ``"fp32"``: the passes through the model).
    """

    eps: float
    alpha: float
    steps: int
    norm: str = "linf"
    random_start: bool | str = True
    model_mode: str = "eval"
    precision: str = "auto"

    def __post_init__(self) -> None:
        """Check every field (``ValueError`` naming it, see :mod:`rcl.checks`); the stored values stay as given."""
        checks.choice("random_start", self.random_start, STARTS, hint=_START_HINT)
        checks.choice("precision", self.precision, PRECISIONS)
        checks.choice("norm", self.norm, NORMS)
        checks.radius("eps", self.eps, self.norm, hint="e.g. 8/255 for L-inf on CIFAR")
        if checks.integer("steps", self.steps, 0) > 0:  # alpha is unused without steps
            checks.radius("alpha", self.alpha, self.norm, strict=True, hint="e.g. 2/255, or 2.5 * eps / steps")
        checks.choice("model_mode", self.model_mode, MODEL_MODES)

    def record(self) -> dict:
        """The columns a robustness record keeps of this attack: ``norm``, ``eps``, ``steps``, ``alpha``,
        ``random_start``."""
        return {
            "norm": self.norm,
            "eps": self.eps,
            "steps": self.steps,
            "alpha": self.alpha,
            "random_start": self.random_start,
        }

    def run(
        self,
        model: nn.Module,
        x: Tensor,
        target: Any,
        loss_fn: LossFn | None = None,
        generator: torch.Generator | None = None,
        check_range: bool = True,
    ) -> Tensor:
        """PGD with these settings: ``x [B, C, H, W]`` in [0, 1] -> ``x_adv`` (see :func:`pgd` for the arguments)."""
        loss_fn = _check_call(x, target, loss_fn, generator, check_range)
        work_dtype = torch.promote_types(x.dtype, torch.float32)  # float32, or float64 if x is float64
        x = x.detach().to(work_dtype)
        eps, steps = float(self.eps), int(self.steps)
        if eps == 0 or steps == 0:
            return x.clone()
        return _projected_gradient_ascent(
            model,
            x,
            target,
            loss_fn,
            eps=eps,
            alpha=float(self.alpha),
            steps=steps,
            norm=self.norm,
            random_start=self.random_start,
            model_mode=self.model_mode,
            precision=self.precision,
            generator=generator,
        )
