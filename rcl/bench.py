"""Speed benchmark: ``python -m rcl.bench`` measures rcl's fast path against the usual way of writing it.

Four pairs, each run in one process on the same model architecture, batch size and inputs:

1. SimCLR training step: :func:`rcl.train.pretrain_contrastive` (uint8 data resident on the device through
   :class:`rcl.data.DeviceLoader`, :func:`rcl.augment.simclr_augment` per sample on the device,
   :func:`rcl.losses.nt_xent`, fused Adam, bf16 autocast + channels_last on CUDA), timed eager and again with
   ``TrainConfig(compile=True)`` (compilation timed apart), against a baseline written the usual way:
   torchvision per-image PIL transforms (RandomResizedCrop, flip, ColorJitter p 0.8, grayscale p 0.2) in a torch
   ``DataLoader`` with worker processes, fp32 eager, a textbook NT-Xent; same optimiser (Adam 3e-4).
2. PGD-10 (L-inf 8/255, step 2/255): :func:`rcl.attacks.pgd` against ``torchattacks.PGD``.
3. Augmentation alone: batched :func:`rcl.augment.simclr_augment` against the torchvision per-image transforms.
4. Layer-by-layer minibatch CKA (Nguyen et al. 2021): :class:`rcl.cka.MinibatchCKA` (all layer pairs with matrix
   products) against a per-layer-pair loop of the same unbiased HSIC, on the same activations.

On a CPU, also the precision rcl picks there (:func:`rcl.runtime.precision_choice`: bf16 + channels_last where the
processor computes bf16 natively): the machine's matmul peak in fp32 and bf16, and rcl's supervised training step
against the plain fp32 PyTorch loop for ResNet-18 widths 8, 16 and 32 (images/s, GFLOP/s, share of the peak).

Plus the PGD-10 adversarial fine-tuning epoch (:func:`rcl.train.finetune`), the CKA time for 10,000 images over
every tap of ResNet-18 (extrapolated from measured batches) and an estimate of the ``quick`` and ``paper``
profiles built from the measured per-image costs and :mod:`rcl.profiles` (every input of the formula is printed).

Honest numbers: each side's work is observed, not assumed (a forward hook counts the rows and calls that reach the
model), and a ratio is reported only when both sides did the same work (architecture, batch size, images, attack
steps, output shapes; the CKA matrices must agree numerically). Otherwise the ratio is withheld with its reason and
stored as ``null``. Every timing is the median of ``--repeats`` runs after a warm-up, the two sides taking turns
(ours, baseline, ours, ...) so that a drift of the machine's speed favours neither, with
``torch.cuda.synchronize`` around timed regions on CUDA. Ratios are ``ours / baseline`` in throughput (x faster).

``--size small`` (ResNet-18 width 8, a few batches) runs in a minute or two on a CPU (``--size tiny``, width 2, in
seconds: the GPU check's dry run); ``--size full`` is the
issue's setting (ResNet-18 width 64, batch 512, CIFAR-10-sized images). ``--render-readme`` rebuilds
``benchmarks/README.md`` from the JSON files in ``benchmarks/``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rcl.attacks import AttackConfig, pgd
from rcl.augment import simclr_augment
from rcl.cka import MinibatchCKA, layer_cka
from rcl.data import Split, synthetic_dataset
from rcl.gpu_check import load_reports, readme_lines
from rcl.losses import nt_xent
from rcl.models import Classifier, ContrastiveNet, ProjectionHead, resnet18, resnet50
from rcl.profiles import PROFILES
from rcl.runtime import memory_format, pick_device, precision_choice, project_root, resolve_precision
from rcl.train import TrainConfig, finetune, pretrain_contrastive, train_supervised

SCHEMA = 3  # 2: the compiled training step (ours_compiled, ratio_compiled); 3: the CPU precision comparison
EPOCH_IMAGES = 50_000  # a CIFAR-10 training epoch
CKA_IMAGES = 10_000  # the CKA target: 10,000 test images
EPS, ALPHA, PGD_STEPS = 8 / 255, 2 / 255, 10
TEMPERATURE = 0.5
LR = 3e-4
CKA_TOLERANCE = 1e-6  # max |ours - baseline| over the CKA matrix (both float64)
CPU_WIDTHS = (8, 16, 32)  # ResNet-18 widths of the CPU precision comparison (laptop-sized networks)

# The targets (GPU figures are for one H100).
TARGETS = {
    "simclr_epoch_s": ("SimCLR epoch, 50k images (s)", "<= 2.5 s (H100)"),
    "simclr_epoch_compiled_s": ("SimCLR epoch, 50k images, compile=True (s)", "<= 2.5 s (H100)"),
    "finetune_epoch_s": ("PGD-10 adversarial fine-tuning epoch (s)", "<= 8 s (H100)"),
    "cka_10k_s": ("CKA, 10k images x every block (s, extrapolated)", "<= 10 s (H100)"),
    "quick_min": ("quick profile, estimated (min)", "< 45 min (H100)"),
    "train_ratio": ("training step, ours / baseline (x)", ">= 4x GPU, >= 1.5x CPU"),
    "train_ratio_compiled": ("training step, compile=True ours / baseline (x)", ">= 4x GPU, >= 1.5x CPU"),
    "pgd_ratio": ("PGD-10, ours / torchattacks (x)", ">= 1.5x GPU"),
    "augment_ratio": ("augmentation, ours / torchvision (x)", ">= 10x GPU"),
    "cka_ratio": ("CKA matrix, ours / per-pair loop (x)", "-"),
    **{
        f"cpu_step_ratio_w{w}": (
            f"CPU training step, default precision / plain fp32, ResNet-18 width {w} (x)",
            ">= 1.8x (the laptop profile's network, CPU with native bf16)" if w == PROFILES["laptop"]["width"] else "-",
        )
        for w in CPU_WIDTHS
    },
}


@dataclass(frozen=True)
class BenchSize:
    """How much work each measurement does (``small`` for a CPU minute, ``full`` for the issue's GPU targets)."""

    width: int  # ResNet-18 base width
    batch: int  # training and attack batch size
    train_batches: int  # batches per timed SimCLR pass (each side)
    pgd_batches: int  # batches per timed PGD pass
    augment_images: int  # images per timed augmentation pass
    cka_batch: int  # examples per CKA minibatch
    cka_batches: int  # minibatches per timed CKA pass
    finetune_batches: int  # batches per timed PGD-10 fine-tuning pass
    head_hidden: int
    head_out: int
    cpu_widths: tuple[int, ...] = CPU_WIDTHS  # the CPU precision comparison (run on CPU only)
    cpu_batch: int = 128


SIZES = {
    # the GPU check's CPU dry run (rcl.gpu_check --dry-run): every code path in seconds, figures meaningless
    "tiny": BenchSize(
        width=2,
        batch=8,
        train_batches=2,
        pgd_batches=1,
        augment_images=16,
        cka_batch=8,
        cka_batches=2,
        finetune_batches=1,
        head_hidden=8,
        head_out=4,
        cpu_widths=(2,),
        cpu_batch=8,
    ),
    "small": BenchSize(
        width=8,
        batch=64,
        train_batches=6,
        pgd_batches=1,
        augment_images=256,
        cka_batch=64,
        cka_batches=2,
        finetune_batches=1,
        head_hidden=64,
        head_out=32,
    ),
    "full": BenchSize(
        width=64,
        batch=512,
        train_batches=8,
        pgd_batches=2,
        augment_images=4096,
        cka_batch=256,
        cka_batches=4,
        finetune_batches=2,
        head_hidden=512,
        head_out=100,
    ),
}


# --------------------------------------------------------------------------------------------------- honesty
def withheld_reason(ours: dict, baseline: dict, keys: Sequence[str] | None = None) -> str | None:
    """Why a ratio between two measurements must not be reported, or None when they did the same work.

    ``ours`` and ``baseline`` are work records (dicts), e.g. ``{"model": {...}, "batch_size": 64, "images": 192,
    "steps": 10, "output_shape": [64, 3, 32, 32]}``. Every key in ``keys`` (default: the union of both records'
    keys) must be present on both sides with equal values; a missing key counts as a difference.
    """
    keys = sorted(set(ours) | set(baseline)) if keys is None else list(keys)
    for key in keys:
        if key not in ours or key not in baseline:
            side = "ours" if key not in ours else "baseline"
            return f"{key} not recorded for {side}"
        a, b = _plain(ours[key]), _plain(baseline[key])
        if a != b:
            return f"{key} differs: ours {a!r}, baseline {b!r}"
    return None


def ratio_or_withheld(
    ours_rate: float | None,
    baseline_rate: float | None,
    ours_work: dict,
    baseline_work: dict,
    *,
    extra_reason: str | None = None,
) -> tuple[float | None, str | None]:
    """``(ours_rate / baseline_rate, None)`` when the work matches, else ``(None, reason)``.

    Rates are throughputs (higher is better: images/s, views/s, or 1/seconds). ``extra_reason`` withholds the ratio
    for a reason found elsewhere (e.g. the two CKA matrices disagree).
    """
    reason = extra_reason or withheld_reason(ours_work, baseline_work)
    if reason is None:
        for name, rate in (("ours", ours_rate), ("baseline", baseline_rate)):
            if rate is None or not math.isfinite(rate) or rate <= 0:
                reason = f"{name} has no valid measurement ({rate!r})"
                break
    if reason is not None:
        return None, reason
    return ours_rate / baseline_rate, None


def _plain(value: Any) -> Any:
    """JSON-comparable form: tuples and torch.Size -> lists, nested dicts kept."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, torch.Size)):
        return [_plain(v) for v in value]
    return value


class WorkCounter:
    """A forward hook that records what reaches a model: calls, rows (examples) and the last output shape.

    ``with WorkCounter(model) as w: ...`` then ``w.calls``, ``w.rows``, ``w.output_shape``.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.calls = 0
        self.rows = 0
        self.output_shape: list[int] | None = None
        self._handle = None

    def _hook(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        self.calls += 1
        if torch.is_tensor(output):
            self.rows += int(output.shape[0])
            self.output_shape = list(output.shape)

    def reset(self) -> None:
        """Forget what was counted so far (the hook stays)."""
        self.calls, self.rows, self.output_shape = 0, 0, None

    def attach(self) -> WorkCounter:
        """Start counting (register the hook); ``with WorkCounter(model)`` does this and :meth:`detach`."""
        self._handle = self.model.register_forward_hook(self._hook)
        return self

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> WorkCounter:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()


def architecture(model: nn.Module) -> dict:
    """What makes two models the same network: its ``config`` and its parameter count."""
    return {
        "config": _plain(getattr(model, "config", type(model).__name__)),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


# --------------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_repeats(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls (synchronised on CUDA)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
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


def _side(seconds: list[float], units: float, unit: str, work: dict, **extra: Any) -> dict:
    """A measurement record: median seconds for ``units`` units of work, the rate, every repeat."""
    median = statistics.median(seconds)
    return {f"{unit}_per_s": units / median, "seconds": median, "repeats_s": seconds, "work": work, **extra}


# --------------------------------------------------------------------------------------------------- baselines
def _torchvision_simclr_transform():
    """torchvision's per-image SimCLR pipeline (the main study's augmentation), ending in ToTensor()."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.RandomResizedCrop(32, scale=(0.08, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.ToTensor(),
        ]
    )


class PilPairs(torch.utils.data.Dataset):
    """The usual SimCLR dataset: each item is two torchvision-augmented views of one uint8 HWC image."""

    def __init__(self, images_nhwc, transform) -> None:
        self.images = images_nhwc  # numpy uint8 [N, H, W, 3]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        from PIL import Image

        image = Image.fromarray(self.images[index])
        return self.transform(image), self.transform(image)


def textbook_nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """NT-Xent as the common SimCLR repositories write it: positives and negatives gathered, then cross-entropy."""
    batch = z1.shape[0]
    n = 2 * batch
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    positives = torch.cat([torch.diag(sim, batch), torch.diag(sim, -batch)]).reshape(n, 1)
    mask = ~torch.eye(n, dtype=torch.bool, device=z.device)
    idx = torch.arange(batch, device=z.device)
    mask[idx, idx + batch] = False
    mask[idx + batch, idx] = False
    negatives = sim[mask].reshape(n, -1)
    logits = torch.cat([positives, negatives], dim=1)
    return F.cross_entropy(logits, torch.zeros(n, dtype=torch.long, device=z.device))


def _gram(x: Tensor) -> Tensor:
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    return x @ x.T


def _hsic1(k: Tensor, l: Tensor) -> Tensor:  # noqa: E741
    """Unbiased HSIC of two Gram matrices (Song et al. 2012), written out term by term."""
    n = k.shape[0]
    k = k.clone().fill_diagonal_(0)
    l = l.clone().fill_diagonal_(0)  # noqa: E741
    ones = torch.ones(n, 1, dtype=k.dtype, device=k.device)
    term1 = torch.trace(k @ l)
    term2 = (ones.T @ k @ ones) * (ones.T @ l @ ones) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (ones.T @ k @ l @ ones)
    return ((term1 + term2 - term3) / (n * (n - 3))).reshape(())


def pairwise_minibatch_cka(batches: Sequence[Sequence[Tensor]]) -> Tensor:
    """Minibatch linear CKA the straightforward way: for every batch and every layer pair, two Grams and one HSIC.

    batches: a list of batches, each a list of ``L`` activations ``[B, ...]``. Returns ``[L, L]`` float64 (CPU).
    """
    n_layers = len(batches[0])
    device = batches[0][0].device
    hsic = torch.zeros(n_layers, n_layers, dtype=torch.float64, device=device)
    for feats in batches:
        for i in range(n_layers):
            for j in range(n_layers):
                hsic[i, j] += _hsic1(_gram(feats[i]), _gram(feats[j]))
    diag = hsic.diagonal()
    return (hsic / torch.outer(diag, diag).sqrt()).cpu()


# --------------------------------------------------------------------------------------------------- measurements
def _contrastive_model(size: BenchSize) -> ContrastiveNet:
    enc = resnet18(width=size.width)
    return ContrastiveNet(enc, ProjectionHead(enc.feature_dim, size.head_hidden, size.head_out))


def bench_training(
    size: BenchSize, device: torch.device, repeats: int, data: Split, workers: int, compile: bool = True
) -> dict:
    """SimCLR training step: rcl.train.pretrain_contrastive, eager and (``compile``) compiled, vs the baseline.

    The baseline is the DataLoader + PIL + fp32 eager loop. Every variant starts from the same initial weights and
    is warmed up with a full pass (for the compiled one this is where compilation happens, reported as
    ``compile_seconds``); then the timed passes over ``size.train_batches`` batches take turns (ours, baseline,
    compiled, ours, ...), so a machine that speeds up or slows down during the run biases no side.
    """
    batch = size.batch
    n = size.train_batches * batch
    split = Split(data.images[:n], data.labels[:n])
    torch.manual_seed(0)
    initial = _contrastive_model(size)
    runners = {
        "ours": _ours_training_runner(copy.deepcopy(initial), split, batch, device, compile=False),
        "baseline": _baseline_training_runner(copy.deepcopy(initial), split, batch, device, workers),
    }
    compile_error = None
    if compile:
        try:
            runners["ours_compiled"] = _ours_training_runner(copy.deepcopy(initial), split, batch, device, compile=True)
        except Exception as err:  # a broken toolchain must not cost the other figures
            compile_error = f"torch.compile failed: {type(err).__name__}: {str(err)[:300]}"
    seconds = time_interleaved({name: runner["run"] for name, runner in runners.items()}, device, repeats, warmup=0)
    sides = {}
    for name, runner in runners.items():
        counter = runner["counter"]
        counter.detach()
        work = {
            "model": architecture(runner["model"]),
            "batch_size": batch,
            "images": counter.rows // (2 * repeats),  # two views per image, one forward per step
            "forward_calls": counter.calls // repeats,
            "output_shape": counter.output_shape,
            "optimizer": "adam",
            "lr": LR,
        }
        sides[name] = _side(seconds[name], work["images"], "images", work, path=runner["path"], **runner["extra"])
        sides[name]["s_per_epoch"] = EPOCH_IMAGES / sides[name]["images_per_s"]

    # same loss: the textbook NT-Xent must equal rcl's on the same embeddings
    z = torch.randn(2 * batch, size.head_out, generator=torch.Generator().manual_seed(0))
    loss_gap = float(
        (textbook_nt_xent(z[:batch], z[batch:], TEMPERATURE) - nt_xent(z[:batch], z[batch:], TEMPERATURE)).abs()
    )
    extra = None if loss_gap < 1e-4 else f"baseline NT-Xent differs from rcl's by {loss_gap:.2e}"
    base = sides["baseline"]
    value, reason = ratio_or_withheld(
        sides["ours"]["images_per_s"], base["images_per_s"], sides["ours"]["work"], base["work"], extra_reason=extra
    )
    out = {"ours": sides["ours"], "baseline": base, "ratio": value, "withheld": reason, "loss_gap": loss_gap}
    fast = sides.get("ours_compiled")
    if fast is None:
        out.update(ours_compiled=None, ratio_compiled=None, withheld_compiled=compile_error or "not measured")
    else:
        value, reason = ratio_or_withheld(
            fast["images_per_s"], base["images_per_s"], fast["work"], base["work"], extra_reason=extra
        )
        out.update(ours_compiled=fast, ratio_compiled=value, withheld_compiled=reason)
    return out


def _ours_training_runner(model: ContrastiveNet, split: Split, batch: int, device: torch.device, *, compile: bool):
    """One rcl.train.pretrain_contrastive pass over ``split`` as a timed callable, warmed up, with a work counter."""
    cfg = TrainConfig(epochs=1, batch_size=batch, lr=LR, device=device, progress=False, compile=compile)
    counter = WorkCounter(model).attach()  # hooked before the warm-up: a hook added later forces a recompile

    def run() -> None:
        pretrain_contrastive(model, split, cfg, temperature=TEMPERATURE)

    _sync(device)
    start = time.perf_counter()
    run()  # warm-up: moves the model, builds the kernels (compiles with compile=True)
    _sync(device)
    warmup_seconds = time.perf_counter() - start
    counter.reset()
    return {
        "run": run,
        "model": model,
        "counter": counter,
        "path": "rcl.train.pretrain_contrastive" + (" (compile=True)" if compile else ""),
        "extra": {"compile_seconds": warmup_seconds} if compile else {},
    }


def _baseline_training_runner(model: nn.Module, split: Split, batch: int, device: torch.device, workers: int):
    """The usual SimCLR loop (PIL transforms in DataLoader workers, fp32 eager, one forward pass per view) as a
    timed callable, warmed up."""
    transform = _torchvision_simclr_transform()
    images = split.images.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    dataset = PilPairs(images, transform)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )
    model.to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)

    def run() -> None:
        for v1, v2 in loader:
            v1 = v1.to(device, non_blocking=True)
            v2 = v2.to(device, non_blocking=True)
            # one forward pass per view, as the main study's released trainCLNet (and rcl) does
            loss = textbook_nt_xent(model(v1), model(v2), TEMPERATURE)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        float(loss.detach())  # the epoch ends with a host sync, as rcl's does

    counter = WorkCounter(model).attach()
    run()  # warm-up: starts the workers
    counter.reset()
    return {
        "run": run,
        "model": model,
        "counter": counter,
        "path": f"torchvision PIL transforms + DataLoader({workers} workers), fp32",
        "extra": {},
    }


def bench_pgd(size: BenchSize, device: torch.device, repeats: int, data: Split) -> dict:
    """PGD-10 L-inf: rcl.attacks.pgd vs torchattacks.PGD, same weights and inputs, model in eval mode."""
    n = size.pgd_batches * size.batch
    torch.manual_seed(1)
    base_model = Classifier(resnet18(width=size.width), 10).to(device).eval()
    ours_model = copy.deepcopy(base_model).to(memory_format=memory_format(device))
    x = data.images[:n].to(device).float() / 255
    y = (data.labels[:n] % 10).to(device)
    batches = [(x[i : i + size.batch], y[i : i + size.batch]) for i in range(0, n, size.batch)]
    outs: dict[str, Tensor] = {}

    def ours_run() -> None:
        outs["ours"] = torch.cat([pgd(ours_model, xb, yb, EPS, ALPHA, PGD_STEPS) for xb, yb in batches])

    fns = {"ours": ours_run}
    try:
        import torchattacks
    except ImportError as err:
        torchattacks, missing = None, f"torchattacks is not installed ({err})"
    else:
        attack = torchattacks.PGD(base_model, eps=EPS, alpha=ALPHA, steps=PGD_STEPS, random_start=True)

        def base_run() -> None:
            outs["baseline"] = torch.cat([attack(xb, yb) for xb, yb in batches])

        fns["baseline"] = base_run
    counters = {"ours": WorkCounter(ours_model).attach(), "baseline": WorkCounter(base_model).attach()}
    seconds = time_interleaved(fns, device, repeats)
    for counter in counters.values():
        counter.detach()
    sides = {}
    for name in fns:
        model = ours_model if name == "ours" else base_model
        work = _attack_work(model, counters[name], repeats + 1, size.batch, outs[name])
        path = "rcl.attacks.pgd" if name == "ours" else f"torchattacks {torchattacks.__version__} PGD, fp32"
        sides[name] = _side(seconds[name], n, "images", work, path=path)
        sides[name]["max_perturbation"] = float((outs[name] - x).abs().max())
        with torch.no_grad():
            sides[name]["robust_acc_on_batch"] = float((base_model(outs[name]).argmax(1) == y).float().mean())
    ours = sides["ours"]
    if "baseline" not in sides:
        return {"ours": ours, "baseline": None, "ratio": None, "withheld": missing}
    base = sides["baseline"]
    extra = None
    for name, side in sides.items():
        if side["max_perturbation"] > EPS + 1e-5:
            extra = f"{name}'s adversarial images leave the eps-ball ({side['max_perturbation']:.5f} > {EPS:.5f})"
    value, reason = ratio_or_withheld(
        ours["images_per_s"], base["images_per_s"], ours["work"], base["work"], extra_reason=extra
    )
    return {"ours": ours, "baseline": base, "ratio": value, "withheld": reason}


def _attack_work(model: nn.Module, counter: WorkCounter, runs: int, batch: int, out: Tensor) -> dict:
    """Work of an attack, observed: images returned, and forward passes per image (= attack steps)."""
    images = int(out.shape[0])
    rows_per_run = counter.rows // runs
    return {
        "model": architecture(model),
        "batch_size": batch,
        "images": images,
        "steps": rows_per_run // images,  # every step runs each image through the model once
        "forward_calls": counter.calls // runs,
        "output_shape": list(out.shape),
        "eps": EPS,
        "alpha": ALPHA,
    }


def bench_augment(size: BenchSize, device: torch.device, repeats: int, data: Split) -> dict:
    """One SimCLR view per image: batched simclr_augment on the device vs torchvision per-image PIL transforms."""
    n = size.augment_images
    images_u8 = data.images[:n].to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    outs: dict[str, Tensor] = {}

    def ours_run() -> None:
        outs["ours"] = simclr_augment(images_u8.float().div_(255), gen)

    fns = {"ours": ours_run}
    try:
        from PIL import Image

        transform = _torchvision_simclr_transform()
    except ImportError as err:
        missing = f"torchvision/PIL missing ({err})"
    else:
        nhwc = data.images[:n].permute(0, 2, 3, 1).contiguous().numpy()

        def base_run() -> None:
            outs["baseline"] = torch.stack([transform(Image.fromarray(img)) for img in nhwc])

        fns["baseline"] = base_run
    seconds = time_interleaved(fns, device, repeats)
    sides = {}
    for name in fns:
        work = {"images": n, "views_per_image": 1, "output_shape": list(outs[name].shape)}
        path = (
            "rcl.augment.simclr_augment (uint8 -> float included)"
            if name == "ours"
            else "torchvision PIL transforms, one process"
        )
        sides[name] = _side(seconds[name], n, "views", work, path=path)
    if "baseline" not in sides:
        return {"ours": sides["ours"], "baseline": None, "ratio": None, "withheld": missing}
    ours, base = sides["ours"], sides["baseline"]
    value, reason = ratio_or_withheld(ours["views_per_s"], base["views_per_s"], ours["work"], base["work"])
    return {"ours": ours, "baseline": base, "ratio": value, "withheld": reason}


def bench_cka(size: BenchSize, device: torch.device, repeats: int, data: Split) -> dict:
    """Layer x layer minibatch CKA over the same activations: MinibatchCKA vs the per-pair loop."""
    torch.manual_seed(2)
    enc = resnet18(width=size.width).to(device).eval()
    batches = []
    with torch.no_grad():
        for b in range(size.cka_batches):
            x = data.images[b * size.cka_batch : (b + 1) * size.cka_batch].to(device).float() / 255
            batches.append(list(enc.forward_taps(x).values()))
    outs: dict[str, Tensor] = {}

    def ours_run() -> None:
        cka = MinibatchCKA(len(batches[0]))
        for feats in batches:
            cka.update(feats)
        outs["ours"] = cka.compute()

    def base_run() -> None:
        outs["baseline"] = pairwise_minibatch_cka(batches)

    seconds = time_interleaved({"ours": ours_run, "baseline": base_run}, device, repeats)
    ours_s, base_s = seconds["ours"], seconds["baseline"]
    n = size.cka_batches * size.cka_batch
    work_o = {
        "images": n,
        "batch_size": size.cka_batch,
        "layers": len(batches[0]),
        "output_shape": list(outs["ours"].shape),
    }
    work_b = {**work_o, "output_shape": list(outs["baseline"].shape)}
    gap = float((outs["ours"] - outs["baseline"]).abs().max()) if work_o == work_b else math.inf
    extra = None if gap <= CKA_TOLERANCE else f"CKA matrices disagree: max |diff| {gap:.2e} > {CKA_TOLERANCE:g}"
    ours = _side(ours_s, 1.0, "matrices", work_o, path="rcl.cka.MinibatchCKA")
    base = _side(base_s, 1.0, "matrices", work_b, path="per-layer-pair unbiased HSIC loop")
    value, reason = ratio_or_withheld(
        ours["matrices_per_s"], base["matrices_per_s"], work_o, work_b, extra_reason=extra
    )
    return {"ours": ours, "baseline": base, "ratio": value, "withheld": reason, "max_abs_diff": gap}


def bench_cka_10k(size: BenchSize, device: torch.device, repeats: int, data: Split) -> dict:
    """rcl.cka.layer_cka (forward taps + MinibatchCKA) over a few batches, extrapolated to 10,000 images."""
    torch.manual_seed(3)
    enc = resnet18(width=size.width).to(device, memory_format=memory_format(device))
    n = size.cka_batches * size.cka_batch
    split = Split(data.images[:n], data.labels[:n]).to(device)
    out: dict[str, Any] = {}

    def run() -> None:
        out["result"] = layer_cka(enc, split, batch_size=size.cka_batch)

    seconds = time_repeats(run, device, repeats)
    median = statistics.median(seconds)
    return {
        "seconds_measured": median,
        "images_measured": n,
        "batch_size": size.cka_batch,
        "taps": list(out["result"].taps_a),
        "seconds_10k": median * CKA_IMAGES / n,
        "extrapolated": True,
        "repeats_s": seconds,
    }


def bench_finetune(size: BenchSize, device: torch.device, repeats: int, data: Split) -> dict:
    """PGD-10 adversarial fine-tuning (rcl.train.finetune, mode full, CE(clean) + CE(adv)) images/s."""
    n = size.finetune_batches * size.batch
    split = Split(data.images[:n], data.labels[:n] % 10)
    torch.manual_seed(4)
    model = Classifier(resnet18(width=size.width), 10)
    attack = AttackConfig(EPS, ALPHA, PGD_STEPS)
    cfg = TrainConfig(epochs=1, batch_size=size.batch, lr=0.01, optimizer="sgd", device=device, progress=False)
    counter = WorkCounter(model)
    with counter:
        seconds = time_repeats(lambda: finetune(model, split, cfg, mode="full", attack=attack), device, repeats)
    median = statistics.median(seconds)
    return {
        "images_per_s": n / median,
        "s_per_epoch": EPOCH_IMAGES * median / n,
        "seconds": median,
        "images": n,
        "attack_steps": PGD_STEPS,
        "forward_calls_per_batch": counter.calls // ((repeats + 1) * size.finetune_batches),
        "repeats_s": seconds,
    }


# --------------------------------------------------------------------------------------------------- CPU precision
MATMUL_N = 2048


def matmul_peak(device: torch.device, repeats: int) -> dict[str, float]:
    """GFLOP/s of a ``MATMUL_N`` x ``MATMUL_N`` matrix product in float32 and in bfloat16 (best of ``repeats``):
    what the processor can do when the work is one large, well-shaped product."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(MATMUL_N, MATMUL_N, generator=gen, device=device)
    b = torch.randn(MATMUL_N, MATMUL_N, generator=gen, device=device)
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        x, y = a.to(dtype), b.to(dtype)
        seconds = time_repeats(lambda x=x, y=y: x @ y, device, max(repeats, 3), warmup=2)
        out[name] = 2 * MATMUL_N**3 / min(seconds) / 1e9
    return out


def _plain_fp32_runner(model: nn.Module, split: Split, batch: int, device: torch.device):
    """The plain PyTorch loop: float32, contiguous tensors, Adam, one cross-entropy step per batch."""
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    images = split.images.to(device).float().div_(255)
    labels = split.labels.to(device)

    def run() -> None:
        for i in range(0, len(images), batch):
            loss = F.cross_entropy(model(images[i : i + batch]), labels[i : i + batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        float(loss.detach())

    return run


def bench_cpu_precision(
    device: torch.device, repeats: int, data: Split, widths: Sequence[int] = CPU_WIDTHS, batch: int = 128
) -> dict:
    """rcl's supervised training step in the precision ``"auto"`` picks (:func:`rcl.runtime.precision_choice`)
    against the plain fp32 PyTorch loop on the same work, for ResNet-18 of each width in ``widths``.

    Both sides train a copy of the same classifier on the same ``4 * batch`` images (no augmentation, so the work is
    the network's alone); the timed passes take turns. GFLOP/s counts 3x the forward FLOPs per image (forward +
    backward), and is also given as a share of the measured matmul peak in the precision each side runs in.
    """
    precision, why = precision_choice(device, "auto")
    peak = matmul_peak(device, repeats)
    split = Split(data.images[: 4 * batch], data.labels[: 4 * batch])
    rows = []
    for width in widths:
        torch.manual_seed(0)
        initial = Classifier(resnet18(width=width), 10)
        ours_model, base_model = copy.deepcopy(initial), copy.deepcopy(initial)
        cfg = TrainConfig(epochs=1, batch_size=batch, lr=LR, device=device, progress=False)

        def ours_run(model=ours_model, cfg=cfg) -> None:
            train_supervised(model, split, cfg, augment=False)

        base_run = _plain_fp32_runner(base_model, split, batch, device)
        counters = {"ours": WorkCounter(ours_model).attach(), "baseline": WorkCounter(base_model).attach()}
        seconds = time_interleaved({"ours": ours_run, "baseline": base_run}, device, repeats, warmup=1)
        flops = 3 * count_flops("resnet18", width)
        sides = {}
        for name, counter in counters.items():
            counter.detach()
            work = {
                "model": architecture(ours_model if name == "ours" else base_model),
                "batch_size": batch,
                "images": counter.rows // (repeats + 1),
                "forward_calls": counter.calls // (repeats + 1),
                "output_shape": counter.output_shape,
                "optimizer": "adam",
            }
            side = _side(seconds[name], work["images"], "images", work)
            side["precision"] = precision if name == "ours" else "fp32"
            side["gflops"] = side["images_per_s"] * flops / 1e9
            side["peak_share"] = side["gflops"] / peak[side["precision"]]
            sides[name] = side
        value, reason = ratio_or_withheld(
            sides["ours"]["images_per_s"],
            sides["baseline"]["images_per_s"],
            sides["ours"]["work"],
            sides["baseline"]["work"],
        )
        rows.append({"width": width, "flops_per_image": flops, **sides, "ratio": value, "withheld": reason})
    return {"precision": precision, "why": why, "matmul_gflops": peak, "batch": batch, "widths": rows}


# --------------------------------------------------------------------------------------------------- profiles
def count_flops(arch: str, width: int) -> float:
    """Forward FLOPs of one 32x32 image through the encoder (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = (resnet18 if arch == "resnet18" else resnet50)(width=width).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    return float(counter.get_total_flops())


def profile_estimate(profile: str, per_image: dict, bench_flops: float) -> dict:
    """Estimated seconds of the whole study under ``profile``, from measured per-image costs.

    per_image: ``t_fb`` (one forward+backward of one image, from the SimCLR step / 2) and ``t_step`` (one PGD step
    on one image, from PGD-10 / 10), measured on the bench's ResNet-18; scaled by the FLOP ratio of the profile's
    network to the bench's. Stages are our reading of the notebooks' plan (3 schemes x 6 scenarios, ACL, false
    negatives, evaluation); linear heads count a third of a forward+backward (forward only through a frozen encoder).
    AutoAttack, CKA, probes, data loading and plotting are not counted.
    """
    p = PROFILES[profile]
    n = p["n_train"] or EPOCH_IMAGES
    n_test = p["n_test"] or 10_000
    scale = count_flops(p["arch"], p["width"]) / bench_flops
    fb, step = per_image["t_fb"] * scale, per_image["t_step"] * scale
    ts = p["train_steps"]
    stages = [
        ("SL pre-training, standard", 1, p["supervised_epochs"], n, fb),
        ("SL pre-training, adversarial", 1, p["supervised_epochs"], n, 2 * fb + ts * step),
        ("CL+SCL pre-training, standard", 2, p["pretrain_epochs"], n, 2 * fb),
        ("CL+SCL pre-training, adversarial", 2, p["pretrain_epochs"], n, 3 * fb + ts * step),
        ("linear heads (ST, AT) x 3 schemes", 6, p["linear_epochs"], n, fb / 3),
        ("adversarial fine-tuning (4 scenarios) x 3 schemes", 12, p["finetune_epochs"], n, 2 * fb + ts * step),
        ("ACL pre-training (A2A, A2S, DS)", 3, p["acl_epochs"], n, 3 * fb + 2 * ts * step),
        ("ACL fine-tuning (3 modes, TRADES PGD-10)", 3, p["acl_finetune_epochs"], n, 3 * fb + 10 * step),
        ("false negatives (labels, k-means)", 2, p["fn_epochs"], n, 2 * fb),
        ("evaluation PGD (eval + std steps) x 23 models", 23, 1, n_test, (p["eval_steps"] + p["std_steps"]) * step),
    ]
    rows = [
        {
            "stage": name,
            "runs": runs,
            "epochs": epochs,
            "images": images,
            "s_per_image": cost,
            "seconds": runs * epochs * images * cost,
        }
        for name, runs, epochs, images, cost in stages
    ]
    return {
        "seconds": sum(r["seconds"] for r in rows),
        "note": "estimate: stages are our reading of the notebooks' plan; AutoAttack, CKA, probes, data loading "
        "and plotting are not counted; per-image costs scaled by the FLOP ratio of the profile's network",
        "inputs": {
            "arch": p["arch"],
            "width": p["width"],
            "n_train": n,
            "n_test": n_test,
            "flop_scale": scale,
            "t_fb_bench": per_image["t_fb"],
            "t_step_bench": per_image["t_step"],
            "train_steps": ts,
        },
        "stages": rows,
    }


# --------------------------------------------------------------------------------------------------- machine
def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo (platform.processor() elsewhere)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


# --------------------------------------------------------------------------------------------------- run
def run_bench(
    device: str | torch.device = "auto",
    size: str | BenchSize | None = None,
    repeats: int = 5,
    workers: int | None = None,
    compile: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Run every measurement and return the JSON-ready report (see the module docstring).

    size: "small", "full", a :class:`BenchSize` (reported as "custom"), or None (full on CUDA, small on CPU).
    workers: the baseline DataLoader's worker processes (default 2 on CPU, up to 8 on CUDA).
    compile: also time the training step with ``TrainConfig(compile=True)`` (compilation time reported apart).
    """
    device = pick_device(device)
    if isinstance(size, BenchSize):
        size_name, sz = "custom", size
    else:
        size_name = size or ("full" if device.type == "cuda" else "small")
        if size_name not in SIZES:
            raise ValueError(f"unknown size {size_name!r}: use one of {', '.join(SIZES)}")
        sz = SIZES[size_name]
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    workers = workers if workers is not None else (2 if device.type == "cpu" else min(8, os.cpu_count() or 1))
    n_data = max(sz.train_batches, sz.pgd_batches, sz.finetune_batches) * sz.batch
    n_data = max(n_data, sz.augment_images, sz.cka_batches * sz.cka_batch, 4 * sz.cpu_batch)
    data = synthetic_dataset(n_train=n_data, n_test=0, seed=0).train
    load_start = _load_average()
    started = time.perf_counter()
    figures: dict[str, Any] = {}
    for name, fn in (
        ("simclr_step", lambda: bench_training(sz, device, repeats, data, workers, compile)),
        ("pgd", lambda: bench_pgd(sz, device, repeats, data)),
        ("augment", lambda: bench_augment(sz, device, repeats, data)),
        ("cka", lambda: bench_cka(sz, device, repeats, data)),
        ("cka_10k", lambda: bench_cka_10k(sz, device, repeats, data)),
        ("finetune_pgd10", lambda: bench_finetune(sz, device, repeats, data)),
        *(
            [("cpu_precision", lambda: bench_cpu_precision(device, repeats, data, sz.cpu_widths, sz.cpu_batch))]
            if device.type == "cpu"
            else []
        ),
    ):
        log(f"measuring {name} ...")
        t0 = time.perf_counter()
        figures[name] = fn()
        log(f"  done in {time.perf_counter() - t0:.1f} s")
    per_image = {
        "t_fb": 1.0 / (2 * figures["simclr_step"]["ours"]["images_per_s"]),
        "t_step": 1.0 / (PGD_STEPS * figures["pgd"]["ours"]["images_per_s"]),
    }
    bench_flops = count_flops("resnet18", sz.width)
    figures["profiles"] = {name: profile_estimate(name, per_image, bench_flops) for name in ("quick", "paper")}
    return {
        "schema": SCHEMA,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": {
            "type": device.type,
            "name": device_name(device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1min": {"start": load_start, "end": _load_average()},
        },
        "settings": {
            "size": size_name,
            **{k: getattr(sz, k) for k in sz.__dataclass_fields__},
            "repeats": repeats,
            "dataloader_workers": workers,
            "precision_ours": resolve_precision(device, "auto"),
            "precision_why": precision_choice(device, "auto")[1],
            "channels_last_ours": memory_format(device) == torch.channels_last,
            "compile_measured": compile,
            "eps": EPS,
            "alpha": ALPHA,
            "pgd_steps": PGD_STEPS,
            "temperature": TEMPERATURE,
            "lr": LR,
        },
        "bench_seconds": time.perf_counter() - started,
        "figures": figures,
    }


# --------------------------------------------------------------------------------------------------- output
def summary(report: dict) -> dict[str, float | None]:
    """The headline figures of a report, keyed like :data:`TARGETS`."""
    f = report["figures"]
    cpu_ratios = {row["width"]: row["ratio"] for row in (f.get("cpu_precision") or {}).get("widths", [])}
    return {
        "simclr_epoch_s": f["simclr_step"]["ours"]["s_per_epoch"],
        "simclr_epoch_compiled_s": (f["simclr_step"]["ours_compiled"] or {}).get("s_per_epoch"),
        "finetune_epoch_s": f["finetune_pgd10"]["s_per_epoch"],
        "cka_10k_s": f["cka_10k"]["seconds_10k"],
        "quick_min": f["profiles"]["quick"]["seconds"] / 60,
        "train_ratio": f["simclr_step"]["ratio"],
        "train_ratio_compiled": f["simclr_step"]["ratio_compiled"],
        "pgd_ratio": f["pgd"]["ratio"],
        "augment_ratio": f["augment"]["ratio"],
        "cka_ratio": f["cka"]["ratio"],
        **{f"cpu_step_ratio_w{w}": cpu_ratios.get(w) for w in CPU_WIDTHS},
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "withheld"
    if value == 0 or not math.isfinite(value):
        return str(value)
    magnitude = math.floor(math.log10(abs(value)))
    return f"{value:,.{max(digits - 1 - magnitude, 0)}f}"


def format_report(report: dict) -> str:
    """The readable table printed after a run."""
    f, d, s = report["figures"], report["device"], report["settings"]
    lines = [
        f"device: {d['name']} ({d['type']}), torch {d['torch']}, {d['threads']} threads, "
        f"load average {_fmt(d['load_average_1min']['start'])} -> {_fmt(d['load_average_1min']['end'])}",
        f"size {s['size']}: ResNet-18 width {s['width']}, batch {s['batch']}, repeats {s['repeats']} (median), "
        f"ours {s['precision_ours']}{' + channels_last' if s['channels_last_ours'] else ''}",
    ]
    load = d["load_average_1min"]["start"]
    if load is not None and d["cpu_count"] and load > 0.75 * d["cpu_count"]:
        lines.append(
            f"WARNING: the machine was busy (load average {load:.1f} on {d['cpu_count']} cores): timings are not "
            "representative; re-run on a quiet machine"
        )
    lines += [
        "",
        f"{'measurement':<34} {'ours':>14} {'baseline':>14} {'ratio':>10}",
        "-" * 75,
    ]

    def pair(label: str, key: str, unit: str) -> None:
        item = f[key]
        base = item.get("baseline")
        ratio = f"{item['ratio']:.2f}x" if item["ratio"] is not None else "withheld"
        lines.append(f"{label:<34} {_fmt(item['ours'][unit]):>14} {_fmt(base[unit]) if base else '-':>14} {ratio:>10}")
        if item["withheld"]:
            lines.append(f"  ratio withheld: {item['withheld']}")

    pair("SimCLR step (images/s)", "simclr_step", "images_per_s")
    pair("SimCLR epoch, 50k images (s)", "simclr_step", "s_per_epoch")
    step = f["simclr_step"]
    if step["ours_compiled"] is not None:
        fast, ratio = step["ours_compiled"], step["ratio_compiled"]
        lines.append(
            f"{'  compile=True (images/s)':<34} {_fmt(fast['images_per_s']):>14} "
            f"{_fmt(step['baseline']['images_per_s']):>14} {f'{ratio:.2f}x' if ratio is not None else 'withheld':>10}"
        )
        lines.append(
            f"{'  compile=True epoch (s)':<34} {_fmt(fast['s_per_epoch']):>14} "
            f"{_fmt(step['baseline']['s_per_epoch']):>14}   (compiling took {_fmt(fast['compile_seconds'])} s, once)"
        )
        saved_per_image = 1 / step["ours"]["images_per_s"] - 1 / fast["images_per_s"]
        if saved_per_image > 0:
            lines.append(
                f"  compiling pays back after {_fmt(fast['compile_seconds'] / saved_per_image)} training images "
                "(compile seconds / seconds saved per image against eager)"
            )
    if step["withheld_compiled"]:
        lines.append(f"  compile=True ratio withheld: {step['withheld_compiled']}")
    pair("PGD-10 (images/s)", "pgd", "images_per_s")
    pair("augmentation (views/s)", "augment", "views_per_s")
    pair("CKA layer x layer matrix (s)", "cka", "seconds")
    lines += [
        "-" * 75,
        f"PGD-10 adversarial fine-tuning: {_fmt(f['finetune_pgd10']['images_per_s'])} images/s, "
        f"{_fmt(f['finetune_pgd10']['s_per_epoch'])} s per 50k-image epoch",
        f"CKA, 10,000 images x {len(f['cka_10k']['taps'])} taps ({', '.join(f['cka_10k']['taps'])}): "
        f"{_fmt(f['cka_10k']['seconds_10k'])} s (extrapolated from {f['cka_10k']['images_measured']} images "
        f"measured in {_fmt(f['cka_10k']['seconds_measured'])} s)",
        f"CKA matrices agree: max |ours - baseline| = {f['cka']['max_abs_diff']:.1e}",
        "",
    ]
    if "cpu_precision" in f:
        lines += _cpu_precision_lines(f["cpu_precision"]) + [""]
    for name, est in f["profiles"].items():
        i = est["inputs"]
        lines.append(
            f"{name} profile, estimated: {_fmt(est['seconds'] / 60)} min = sum over stages of runs x epochs x images "
            f"x s/image, with t_fb = {i['t_fb_bench']:.3g} s (fwd+bwd per image), t_step = {i['t_step_bench']:.3g} s "
            f"(PGD step per image), x {i['flop_scale']:.3g} FLOP scale to {i['arch']} width {i['width']}"
        )
        for row in est["stages"]:
            lines.append(
                f"  {row['stage']:<50} {row['runs']:>3} x {row['epochs']:>4} ep x {row['images']:>6} img "
                f"x {row['s_per_image']:.3g} s = {_fmt(row['seconds'] / 60)} min"
            )
    if s["size"] in ("small", "tiny"):
        lines.append(
            f"  (size {s['size']}: the tiny network does not scale with FLOPs; run --size full for a real estimate)"
        )
    return "\n".join(lines)


def _cpu_precision_lines(cpu: dict) -> list[str]:
    peak = cpu["matmul_gflops"]
    lines = [
        f"CPU training step (supervised ResNet-18, batch {cpu['batch']}): rcl's default precision here is "
        f"{cpu['precision']} ({cpu['why']}), against the plain fp32 PyTorch loop on the same work",
        f"  matmul peak ({MATMUL_N}x{MATMUL_N}): fp32 {_fmt(peak['fp32'])} GFLOP/s, bf16 {_fmt(peak['bf16'])} GFLOP/s",
        f"  {'width':>5} {'ours img/s':>11} {'GFLOP/s':>8} {'% peak':>7} {'fp32 img/s':>11} {'GFLOP/s':>8} "
        f"{'% peak':>7} {'ratio':>8}",
    ]
    for row in cpu["widths"]:
        ours, base = row["ours"], row["baseline"]
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "withheld"
        lines.append(
            f"  {row['width']:>5} {_fmt(ours['images_per_s']):>11} {_fmt(ours['gflops']):>8} "
            f"{100 * ours['peak_share']:>6.0f}% {_fmt(base['images_per_s']):>11} {_fmt(base['gflops']):>8} "
            f"{100 * base['peak_share']:>6.0f}% {ratio:>8}"
        )
        if row["withheld"]:
            lines.append(f"  ratio withheld: {row['withheld']}")
    return lines


def render_readme(folder: Path | str | None = None) -> str:
    """Rebuild ``benchmarks/README.md`` from the ``*.json`` reports in ``folder``; returns the text written."""
    folder = Path(folder) if folder is not None else project_root() / "benchmarks"
    reports = []
    for path in sorted(folder.glob("*.json")):
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(report, dict) and report.get("schema") == SCHEMA and "kind" not in report:
            reports.append((path.name, report))
    header = ["figure", "target"] + [f"{name}<br>{r['device']['name']}, {r['settings']['size']}" for name, r in reports]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m rcl.bench --render-readme` from the JSON files in this folder; do not edit by hand.",
        "Run `python -m rcl.bench` (add `--size full` on a GPU) to measure a machine. Ratios are ours / baseline "
        "in throughput; `withheld` means the two sides did different work (the JSON says why). The CKA 10k figure "
        "is extrapolated from the batches measured; profile figures are estimates from measured per-image costs.",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    for key, (label, target) in TARGETS.items():
        cells = []
        for _, r in reports:
            value = summary(r)[key]
            if value is None and key.startswith("cpu_") and "cpu_precision" not in r["figures"]:
                cells.append("-")
            elif value is None:
                cells.append("withheld")
            elif key == "quick_min" and r["settings"]["size"] != "full":
                cells.append("n/a (tiny network; needs --size full)")
            else:
                cells.append(f"{value:.2f}x" if "_ratio" in key else _fmt(value))
        lines.append("| " + " | ".join([label, target, *cells]) + " |")
    lines.append("")
    for name, r in reports:
        load = r["device"].get("load_average_1min", {})
        cores = r["device"].get("cpu_count")
        busy = load.get("start") is not None and cores and load["start"] > 0.75 * cores
        lines.append(
            f"- `{name}`: {r['device']['name']}, torch {r['device']['torch']}, {r['device']['threads']} threads, "
            f"{r['timestamp']}, load average {_fmt(load.get('start'))} -> {_fmt(load.get('end'))} on {cores} cores"
            + (" (busy machine: timings not representative)" if busy else "")
        )
    if not any(r["device"]["type"] == "cuda" for _, r in reports):
        lines += [
            "",
            "No GPU figures have been measured yet: no GPU was lent to this project so far. The targets above are "
            "the issue's; the GPU columns appear when `python -m rcl.bench --size full` is run on one (the GPU check "
            "below runs it).",
        ]
    lines += readme_lines(load_reports(folder))
    text = "\n".join(lines) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rcl.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="cpu | cuda | auto (default: auto)")
    parser.add_argument("--size", choices=sorted(SIZES), default=None, help="default: full on CUDA, small on CPU")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/<device>-<size>.json)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median reported)")
    parser.add_argument("--workers", type=int, default=None, help="baseline DataLoader workers (default 2 on CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the compile=True training step (saves its compilation)"
    )
    parser.add_argument("--render-readme", action="store_true", help="only rebuild benchmarks/README.md")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    folder = project_root() / "benchmarks"
    if args.render_readme:
        print(render_readme(folder))
        return 0
    report = run_bench(
        args.device,
        args.size,
        args.repeats,
        args.workers,
        compile=not args.no_compile,
        log=lambda m: print(m, file=sys.stderr),
    )
    print(format_report(report))
    device = pick_device(args.device)
    default_slug = "cpu" if device.type == "cpu" else slug(device_name(device))
    out = args.out or folder / f"{default_slug}-{report['settings']['size']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    if out.resolve().parent == folder.resolve():
        render_readme(folder)
        print(f"updated {folder / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
