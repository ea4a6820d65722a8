"""How many ACL pre-training and fine-tuning epochs does the laptop profile need before its encoders clear the floor?

Usage: ``python tools/pilot_acl_budget.py --data data/cifar10-jpeg --epochs 4 12 --finetune-epochs 4 8
[--out /tmp/pilot-acl]``.

Chapter 07's verdicts take a model only when its clean accuracy is 10 points above a random encoder fine-tuned the
same way (``rcl.acl.CONTROL``, ``rcl.acl.control_floor``). For each pre-training length in ``--epochs`` and each
fine-tuning length in ``--finetune-epochs`` this trains DS (dual BatchNorm, chapter 07's recipe at the laptop
profile's other settings) and fine-tunes it with TRADES in linear mode, and fine-tunes the random-encoder control the
same way; it prints and writes (JSON) the clean and robust accuracy of each at its kept epoch (best validation
robust accuracy) and its last, on the laptop profile's test images, with the wall time of each step. A budget is
chosen where the encoders clear the floor with room, never where a claim starts to hold.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rcl import acl, course


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/cifar10-jpeg", help="an ImageFolder tree of CIFAR-10")
    parser.add_argument("--epochs", type=int, nargs="+", default=[4, 12], help="pre-training lengths to try")
    parser.add_argument("--finetune-epochs", type=int, nargs="+", default=[4], help="fine-tuning lengths to try")
    parser.add_argument("--out", default="/tmp/pilot-acl", help="a scratch run folder (checkpoints land here)")
    args = parser.parse_args()
    rows = []
    for finetune_epochs in args.finetune_epochs:
        for epochs in [0, *args.epochs]:  # 0: the random-encoder control
            run_dir = Path(args.out) / f"e{epochs}-ft{finetune_epochs}"
            dataset = f"imagefolder:{Path(args.data).resolve()}"
            overrides = dict(acl_epochs=max(epochs, 1), acl_finetune_epochs=finetune_epochs)
            cfg = course.setup("laptop", dataset, "cpu", 0, run_dir, **overrides)
            data = course.load_data(cfg)
            plan = acl.plan(cfg, variants=("DS",), modes=("linear",))
            start = time.perf_counter()
            source = acl.CONTROL if epochs == 0 else "DS"
            net = acl.pretrained(cfg, data, source, plan)
            pretrain_s = time.perf_counter() - start
            if source == acl.CONTROL:  # where the recipe diverges on random features, a tenth of the rate
                classifier, history, run = acl.finetune_control(cfg, data, net, "linear", plan)
            else:
                (classifier, history), run = acl.finetune(cfg, data, net, source, "linear", plan), source
            kept = acl.evaluate(cfg, classifier, data.test, plan.n_eval)
            last = acl.evaluate(cfg, acl.last_epoch(cfg, classifier, run, "linear"), data.test, plan.n_eval)
            row = {"source": run, "pretrain_epochs": epochs, "finetune_epochs": finetune_epochs}
            row |= {"pretrain_s": round(pretrain_s), "kept": kept, "last": last}
            row["val_clean_robust"] = [(r["epoch"], r["val_acc"], r["val_robust_acc"]) for r in history]
            row["total_s"] = round(time.perf_counter() - start)
            print(json.dumps(row), flush=True)
            rows.append(row)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "pilot_acl_budget.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
