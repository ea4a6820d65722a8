"""Phase 4 of the GPU check, ``quick_slice``: a short slice of the ``quick`` profile on real CIFAR-10 (the JPEG copy
carried in ``.carry/``, read through ``imagefolder:``): a supervised ResNet-18 (bf16 + channels_last, clean test
accuracy after every epoch, PGD at the profile's evaluation setting), SimCLR pre-training (Chen et al. 2020), then a
linear head on the frozen encoder (clean, PGD-CE and the contrastive PGD of threat model I). Seconds per epoch and
accuracies are recorded; the budget may stop any loop between epochs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rcl.bench.gpu_check.context import CheckContext
from rcl.bench.gpu_check.data import load_data
from rcl.bench.gpu_check.training import peak_gib, quick_config, reset_peak, robust, supervised, train_epochs
from rcl.data import Dataset
from rcl.evaluate import accuracy
from rcl.models import Classifier, ContrastiveNet
from rcl.profiles import Config
from rcl.runtime import resolve_precision
from rcl.study import new_contrastive, new_encoder, train_config
from rcl.train import finetune, pretrain_contrastive


def phase_quick_slice(ctx: CheckContext, record: dict) -> None:
    """Supervised bf16, then SimCLR and a linear head; ``stopped`` (with each loop's reason) when the budget cut
    one short. Time for one fp32 epoch is kept for the precision phase unless it is skipped."""
    data = load_data(ctx, record)
    cfg = ctx.cfg = quick_config(ctx, data)
    record["profile"] = {k: v for k, v in cfg.as_dict().items() if k not in ("run_dir", "data_root", "dataset")}
    record["profile"]["dataset"] = data.name
    precision_on = "precision" not in ctx.s.skip

    def keep_for_precision() -> float:  # one fp32 epoch (guessed from bf16) stays for the precision phase
        bf16 = ctx.bf16_epoch_s
        return bf16 * ctx.plan.fp32_guess if precision_on and bf16 is not None else 0.0

    _supervised_bf16(ctx, record, cfg, data)
    _simclr_and_linear(ctx, record, cfg, data, keep_for_precision)
    stops = [
        f"{k}: {record[k]['stopped']}" for k in ("supervised", "simclr", "linear") if record.get(k, {}).get("stopped")
    ]
    if stops:
        record.update(status="stopped", reason="; ".join(stops))


def _supervised_bf16(ctx: CheckContext, record: dict, cfg: Config, data: Dataset) -> None:
    """Supervised, bf16 + channels_last (the default on CUDA), test accuracy after every epoch, then PGD; its rows
    are handed to the precision phase (``ctx.bf16_rows``), whatever happens next."""
    sup = supervised(ctx, record, "supervised", "bf16", ctx.slice.supervised_epochs)
    rows = record["supervised"]["epochs"]
    ctx.bf16_rows = rows
    if rows:
        ctx.bf16_epoch_s = max(r["seconds"] + r["eval_seconds"] for r in rows)
        robust(ctx, sup, record["supervised"], cfg, data)
    del sup
    ctx.save()


def _simclr_and_linear(
    ctx: CheckContext, record: dict, cfg: Config, data: Dataset, keep_s: Callable[[], float]
) -> None:
    """SimCLR pre-training in the default precision, then a linear head on the frozen encoder and its attacks."""
    torch.manual_seed(cfg.seed)
    net = new_contrastive(cfg)
    tc = lambda e: train_config(cfg, e, progress=False)
    record["simclr"] = {
        "epochs": [],
        "temperature": cfg.temperature,
        "batch_size": cfg.batch_size,
        "precision": resolve_precision(ctx.device, "auto"),  # the default path: bf16 + channels_last on CUDA
    }
    reset_peak(ctx.device)
    train_epochs(
        ctx,
        record,
        "simclr",
        ctx.slice.simclr_epochs,
        lambda e: pretrain_contrastive(
            net, data.train, tc(e), method="simclr", temperature=cfg.temperature, ckpt_dir=cfg.run_dir / "simclr"
        ),
        first_guess_s=2 * (ctx.bf16_epoch_s or 0.0) or None,
        keep_s=keep_s,
    )
    record["simclr"]["peak_memory_gib"] = peak_gib(ctx.device)
    if not record["simclr"]["epochs"]:
        return
    clf = Classifier(new_encoder(cfg), data.num_classes)
    clf.encoder.load_state_dict(net.encoder.state_dict())
    record["linear"] = {"epochs": [], "mode": "linear (frozen encoder)"}
    train_epochs(
        ctx,
        record,
        "linear",
        ctx.slice.linear_epochs,
        lambda e: finetune(clf, data.train, tc(e), mode="linear", ckpt_dir=cfg.run_dir / "linear"),
        after_epoch=lambda: {"test_acc": accuracy(clf, data.test, batch_size=cfg.eval_batch_size)},
        first_guess_s=ctx.bf16_epoch_s,
        keep_s=keep_s,
    )
    if record["linear"]["epochs"]:
        robust(ctx, clf, record["linear"], cfg, data, representation=ContrastiveNet(clf.encoder, net.head))
