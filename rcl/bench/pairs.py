"""The four pairs: rcl's fast path against the usual way of writing it, each on the same architecture, batch size
and inputs, in one process.

1. SimCLR training step: :func:`rcl.train.pretrain_contrastive` (uint8 data resident on the device through
   :class:`rcl.data.DeviceLoader`, :func:`rcl.augment.simclr_augment` per sample on the device,
   :func:`rcl.losses.nt_xent`, fused Adam, bf16 autocast + channels_last on CUDA), timed eager and again with
   ``TrainConfig(compile=True)`` (compilation timed apart), against a baseline written the usual way:
   torchvision per-image PIL transforms in a torch ``DataLoader`` with worker processes, fp32 eager, a textbook
   NT-Xent; same optimiser (Adam 3e-4).
2. PGD-10 (L-inf 8/255, step 2/255): :func:`rcl.attacks.pgd` against ``torchattacks.PGD``.
3. Augmentation alone: batched :func:`rcl.augment.simclr_augment` against the torchvision per-image transforms.
4. Layer-by-layer minibatch CKA (Nguyen et al. 2021): :class:`rcl.cka.MinibatchCKA` (all layer pairs with matrix
   products) against a per-layer-pair loop of the same unbiased HSIC, on the same activations.

Each returns ``{"ours", "baseline", "ratio", "withheld"}``: the ratio is ours / baseline in throughput, or None
with the reason when the two sides did different work (:func:`rcl.bench.work.ratio_or_withheld`).
"""

from __future__ import annotations

import copy
import math
import time

import torch
from torch import Tensor, nn

from rcl.attacks import pgd
from rcl.augment import simclr_augment
from rcl.bench.baselines import PilPairs, pairwise_minibatch_cka, textbook_nt_xent, torchvision_simclr_transform
from rcl.bench.settings import ALPHA, CKA_TOLERANCE, EPOCH_IMAGES, EPS, LR, PGD_STEPS, TEMPERATURE, BenchSize
from rcl.bench.timing import side_record, sync, time_interleaved
from rcl.bench.work import WorkCounter, architecture, ratio_or_withheld
from rcl.cka import MinibatchCKA
from rcl.data import Split
from rcl.losses import nt_xent
from rcl.models import Classifier, ContrastiveNet, ProjectionHead, resnet18
from rcl.runtime import memory_format
from rcl.train import TrainConfig, pretrain_contrastive


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
        sides[name] = side_record(seconds[name], work["images"], "images", work, path=runner["path"], **runner["extra"])
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

    sync(device)
    start = time.perf_counter()
    run()  # warm-up: moves the model, builds the kernels (compiles with compile=True)
    sync(device)
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
    transform = torchvision_simclr_transform()
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
        sides[name] = side_record(seconds[name], n, "images", work, path=path)
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

        transform = torchvision_simclr_transform()
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
        sides[name] = side_record(seconds[name], n, "views", work, path=path)
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
    ours = side_record(ours_s, 1.0, "matrices", work_o, path="rcl.cka.MinibatchCKA")
    base = side_record(base_s, 1.0, "matrices", work_b, path="per-layer-pair unbiased HSIC loop")
    value, reason = ratio_or_withheld(
        ours["matrices_per_s"], base["matrices_per_s"], work_o, work_b, extra_reason=extra
    )
    return {"ours": ours, "baseline": base, "ratio": value, "withheld": reason, "max_abs_diff": gap}
