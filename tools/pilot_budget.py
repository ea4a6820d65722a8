"""How long must the laptop profile train each scheme before it has learned? Learning curves on real CIFAR-10.

Usage: ``python tools/pilot_budget.py [--data data/cifar10-jpeg] [--width 16] [--epochs 30] [--every 5]``.

Trains, with the matched recipe of chapter 08 (one network, SimCLR's augmentation for all, Adam at the laptop
profile's rate, batch 128), a supervised ResNet-18, SimCLR and SupCon on ``--n-train`` images, and every ``--every``
epochs measures test accuracy on ``--n-test`` images: the supervised network as it is, the contrastive encoders by
a linear probe (logistic regression on frozen, un-augmented features, 100 full-batch L-BFGS steps). Writes the
curves as JSON. A budget is chosen where the curves flatten, never where a claim starts to hold.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

from rcl.augment import SimCLRAugment
from rcl.data import load_dataset
from rcl.evaluate import accuracy, features
from rcl.models import Classifier, ContrastiveNet, ProjectionHead, resnet18
from rcl.runtime import precision_choice, seeded_init
from rcl.train import TrainConfig, pretrain_contrastive, train_supervised


def probe(encoder, train, test) -> float:
    """Linear-probe test accuracy: multinomial logistic regression on frozen features (L-BFGS, full batch)."""
    f_train, f_test = features(encoder, train), features(encoder, test)
    mean, std = f_train.mean(0), f_train.std(0) + 1e-6
    f_train, f_test = (f_train - mean) / std, (f_test - mean) / std
    w = torch.zeros(f_train.shape[1], 10, requires_grad=True)
    b = torch.zeros(10, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=100, line_search_fn="strong_wolfe")
    y = train.labels

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(f_train @ w + b, y) + 1e-4 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return ((f_test @ w + b).argmax(1) == test.labels).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="data/cifar10-jpeg")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--schemes", default="supervised,simclr,supcon")
    p.add_argument("--out", default="/tmp/pilot_budget.json")
    args = p.parse_args()
    data = load_dataset(f"imagefolder:{args.data}", n_train=args.n_train, n_test=args.n_test, seed=0)
    report = {"settings": vars(args), "precision": precision_choice("cpu"), "load_start": os.getloadavg()[0]}
    curves = report.setdefault("curves", {})
    for scheme in args.schemes.split(","):
        with seeded_init(0, f"pilot/{scheme}"):
            enc = resnet18(width=args.width)
            model = (
                Classifier(enc, 10)
                if scheme == "supervised"
                else ContrastiveNet(enc, ProjectionHead(enc.feature_dim, enc.feature_dim, 100))
            )
        rows, t0 = [], time.perf_counter()
        for epochs in range(args.every, args.epochs + 1, args.every):
            cfg = TrainConfig(epochs=epochs, batch_size=128, lr=args.lr, progress=False)
            folder = f"/tmp/pilot-{scheme}-w{args.width}"
            if scheme == "supervised":
                history = train_supervised(model, data.train, cfg, augment=SimCLRAugment(), ckpt_dir=folder)
                acc = accuracy(model, data.test)
            else:
                history = pretrain_contrastive(
                    model, data.train, cfg, method=scheme, temperature=args.temperature, ckpt_dir=folder
                )
                acc = probe(model.encoder, data.train, data.test)
            rows.append(
                {
                    "epochs": epochs,
                    "test_acc": acc,
                    "train_loss": history[-1]["loss"],
                    "train_acc": history[-1].get("acc"),
                    "minutes": (time.perf_counter() - t0) / 60,
                }
            )
            print(scheme, rows[-1], flush=True)
            curves[scheme] = rows
            with open(args.out, "w") as f:
                json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
