"""The precision rcl picks on a CPU, measured: the machine's matmul peak in fp32 and bf16, and rcl's supervised
training step in the precision ``"auto"`` picks (:func:`rcl.runtime.precision_choice`: bf16 + channels_last where
the processor computes bf16 natively) against the plain fp32 PyTorch loop, for ResNet-18 of a few widths (images/s,
GFLOP/s, share of the peak).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rcl.bench.estimate import count_flops
from rcl.bench.settings import CPU_WIDTHS, LR, MATMUL_N
from rcl.bench.timing import side_record, time_interleaved, time_repeats
from rcl.bench.work import WorkCounter, architecture, ratio_or_withheld
from rcl.data import Split
from rcl.models import Classifier, resnet18
from rcl.runtime import precision_choice
from rcl.train import TrainConfig, train_supervised


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
            side = side_record(seconds[name], work["images"], "images", work)
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
