"""Estimates from measured costs: forward FLOPs of a network (``torch.utils.flop_counter``), and the time of the
whole study under a profile, built from measured per-image costs and :mod:`rcl.profiles` (every input of the formula
is returned with the estimate).
"""

from __future__ import annotations

import torch

from rcl.bench.settings import EPOCH_IMAGES
from rcl.models import resnet18, resnet50
from rcl.profiles import PROFILES


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
