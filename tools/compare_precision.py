"""Does bf16 change anything but speed? Train one small model per precision on real CIFAR-10, attack each in both.

Usage: ``python tools/compare_precision.py [--data data/cifar10-jpeg] [--width 16] [--out FILE.json]``.
Trains a ResNet-18 (``--width``) on ``--n-train`` balanced images twice from the same initial weights and seed,
once with ``precision="fp32"`` and once with ``precision="bf16"`` (standard, then PGD adversarial training), and
attacks every model with PGD-20 on ``--n-test`` test images, the attack run in fp32 and in bf16. Prints and writes
the clean / robust accuracies, the paired differences with their McNemar-style noise band, and the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from rcl.attacks import AttackConfig
from rcl.data import load_dataset
from rcl.evaluate import correct
from rcl.models import Classifier, resnet18
from rcl.runtime import precision_choice, seeded_init
from rcl.train import TrainConfig, train_supervised


def band(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Difference of two paired accuracies and its 95 % half-width (normal approximation on discordant pairs)."""
    n = len(a)
    diff = (a.float().mean() - b.float().mean()).item()
    discordant = (a != b).float().mean().item()
    return diff, 1.96 * (discordant / n) ** 0.5


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="data/cifar10-jpeg")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--adv-epochs", type=int, default=4)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    data = load_dataset(f"imagefolder:{args.data}", n_train=args.n_train, n_test=args.n_test, seed=0)
    pgd20 = {
        "standard 2/255": AttackConfig(2 / 255, 0.5 / 255, 20, random_start=False),
        "adversarial 8/255": AttackConfig(8 / 255, 2 / 255, 20, random_start=False),
    }
    train_attack = AttackConfig(8 / 255, 0.02, 2, random_start=False)
    report = {
        "machine": {
            "load_start": os.getloadavg()[0],
            "auto": precision_choice("cpu"),
            "threads": torch.get_num_threads(),
        },
        "settings": vars(args),
        "models": {},
    }
    for kind, attack_eval in pgd20.items():
        adversarial = kind.startswith("adversarial")
        masks = {}
        for train_precision in ("fp32", "bf16"):
            with seeded_init(0, f"precision/{kind}"):
                model = Classifier(resnet18(width=args.width), 10)
            cfg = TrainConfig(
                epochs=args.adv_epochs if adversarial else args.epochs,
                batch_size=128,
                lr=1e-3,
                precision=train_precision,
                progress=False,
            )
            t0 = time.perf_counter()
            train_supervised(model, data.train, cfg, attack=train_attack if adversarial else None)
            seconds = time.perf_counter() - t0
            model.eval()
            row = {"train_seconds": seconds, "images_per_s": cfg.epochs * len(data.train) / seconds}
            for attack_precision in ("fp32", "bf16"):
                attack = AttackConfig(**{**attack_eval.__dict__, "precision": attack_precision})
                t0 = time.perf_counter()
                clean = correct(model, data.test, batch_size=500, precision=attack_precision)
                robust = correct(model, data.test, attack, batch_size=500)
                row[f"attack_{attack_precision}"] = {
                    "clean_acc": clean.float().mean().item(),
                    "robust_acc": robust.float().mean().item(),
                    "seconds": time.perf_counter() - t0,
                }
                masks[(train_precision, attack_precision)] = (clean, robust)
            report["models"][f"{kind} / trained {train_precision}"] = row
            print(kind, train_precision, json.dumps(row, indent=1), flush=True)
        for trained in ("fp32", "bf16"):
            d, h = band(masks[(trained, "bf16")][1], masks[(trained, "fp32")][1])
            report["models"][f"{kind} / trained {trained}"]["robust_bf16_minus_fp32_attack"] = [d, h]
        d, h = band(masks[("bf16", "fp32")][0], masks[("fp32", "fp32")][0])
        report["models"][f"{kind} / trained bf16"]["clean_bf16_minus_fp32_training"] = [d, h]
        d, h = band(masks[("bf16", "fp32")][1], masks[("fp32", "fp32")][1])
        report["models"][f"{kind} / trained bf16"]["robust_bf16_minus_fp32_training"] = [d, h]
    report["machine"]["load_end"] = os.getloadavg()[0]
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
