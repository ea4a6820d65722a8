"""Phase 5 of the GPU check, ``precision``: the quick slice's supervised run again in fp32
(``TrainConfig.precision="fp32"``), same seed and epochs; bf16 + channels_last and fp32 must end within ``--band``
(absolute test accuracy) of each other.
"""

from __future__ import annotations

import statistics

import torch

from rcl.bench.gpu_check.context import CheckContext
from rcl.bench.gpu_check.training import supervised


def phase_precision(ctx: CheckContext, record: dict) -> None:
    """Train fp32 for as many epochs as bf16 ran and compare; ``failed`` outside the band, ``skipped`` without the
    bf16 run, ``stopped`` when the budget cut the fp32 run short."""
    bf16_rows = ctx.bf16_rows or []
    if not bf16_rows:
        record.update(status="skipped", reason="needs the quick slice's bf16 supervised run, which did not run")
        return
    record["fp32_settings"] = {
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    supervised(ctx, record, "fp32", "fp32", len(bf16_rows))
    fp32_rows = record["fp32"]["epochs"]
    record["bf16"] = {
        "epochs": bf16_rows,
        "epoch_seconds_median_after_first": statistics.median(
            [r["seconds"] for r in bf16_rows[1:]] or [bf16_rows[0]["seconds"]]
        ),
    }
    if not fp32_rows:
        record.update(status="stopped", reason=record["fp32"].get("stopped", "no fp32 epoch ran"))
        return
    _compare(ctx, record, bf16_rows, fp32_rows)


def _compare(ctx: CheckContext, record: dict, bf16_rows: list[dict], fp32_rows: list[dict]) -> None:
    """The best test accuracy over the epochs both ran (early epochs of Adam without a schedule swing by several
    points from one epoch to the next, the best of them much less), against ``ctx.band``."""
    k = len(fp32_rows)
    acc_bf16 = max(r["test_acc"] for r in bf16_rows[:k])
    acc_fp32 = max(r["test_acc"] for r in fp32_rows[:k])
    delta = abs(acc_bf16 - acc_fp32)
    record.update(
        compared_at_epoch=k,
        compared="best test accuracy over the epochs both runs trained",
        test_acc_bf16=acc_bf16,
        test_acc_fp32=acc_fp32,
        last_epoch_test_acc={"bf16": bf16_rows[k - 1]["test_acc"], "fp32": fp32_rows[k - 1]["test_acc"]},
        last_epoch_train_loss={"bf16": bf16_rows[k - 1].get("loss"), "fp32": fp32_rows[k - 1].get("loss")},
        abs_difference=delta,
        band=ctx.band,
        same_band=delta <= ctx.band,
        chance=1 / ctx.data.num_classes,
        speedup_bf16_over_fp32=(
            record["fp32"]["epoch_seconds_median_after_first"] / record["bf16"]["epoch_seconds_median_after_first"]
        ),
    )
    if delta > ctx.band:
        record.update(
            status="failed",
            reason=f"bf16 and fp32 best test accuracies differ by {delta:.3f} > band {ctx.band} ({k} epochs)",
        )
    elif record["fp32"].get("stopped"):
        record.update(status="stopped", reason=f"compared after {k} epochs: {record['fp32']['stopped']}")
