"""Figures measured on rcl alone, without a baseline: the PGD-10 adversarial fine-tuning epoch
(:func:`rcl.train.finetune`, CE(clean) + CE(adv), Madry et al. 2018) and the layer-by-layer CKA over 10,000 images
(:func:`rcl.cka.layer_cka`, Nguyen et al. 2021), extrapolated from the batches measured.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from rcl.attacks import AttackConfig
from rcl.bench.settings import ALPHA, CKA_IMAGES, EPOCH_IMAGES, EPS, PGD_STEPS, BenchSize
from rcl.bench.timing import time_repeats
from rcl.bench.work import WorkCounter
from rcl.cka import layer_cka
from rcl.data import Split
from rcl.models import Classifier, resnet18
from rcl.runtime import memory_format
from rcl.train import TrainConfig, finetune


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
