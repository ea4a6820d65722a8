"""rcl.bench: ratio refusal, work counting, the baselines against rcl's own code, the report, and precision.

The precision test is the issue's "bf16/channels_last training reaches the same accuracy band as fp32": a tiny
ResNet trained on synthetic data with precision="bf16" (bf16 autocast + channels_last, forced on the CPU) and with
precision="fp32", same seed; both must learn well above chance and end within 0.1 of each other.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from rcl.bench.baselines import pairwise_minibatch_cka, textbook_nt_xent
from rcl.bench.readme import render_readme
from rcl.bench.report import format_report
from rcl.bench.run import run_bench
from rcl.bench.settings import SIZES
from rcl.bench.work import WorkCounter, ratio_or_withheld, withheld_reason
from rcl.cka import MinibatchCKA
from rcl.data import synthetic_dataset
from rcl.evaluate import accuracy
from rcl.losses import nt_xent
from rcl.models import Classifier, resnet18
from rcl.runtime import autocast, memory_format, pick_device, resolve_precision
from rcl.train import TrainConfig, train_supervised

WORK = {"model": {"config": {"arch": "resnet18", "width": 8}, "parameters": 10}, "batch_size": 64, "images": 192}

TINY = SIZES["tiny"]  # the GPU check's dry-run size: every code path in seconds


@pytest.fixture
def one_thread():
    """One intra-op thread while a test trains: on a busy 2-core machine two OpenMP threads can run 20x slower
    (each barrier waits for a descheduled thread). Only speed depends on it; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_report():
    """One bench run at a tiny size (ResNet-18 width 2, batch 8, no DataLoader workers), shared by the tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_bench("cpu", TINY, repeats=1, workers=0, log=lambda _: None)
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------------- refusal
def test_same_work_gives_the_ratio():
    value, reason = ratio_or_withheld(300.0, 100.0, dict(WORK), dict(WORK))
    assert reason is None
    assert value == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("key", "other"),
    [
        ("batch_size", 32),
        ("images", 128),
        ("model", {"config": {"arch": "resnet50", "width": 8}, "parameters": 10}),
    ],
)
def test_different_work_withholds_the_ratio(key, other):
    baseline = {**WORK, key: other}
    value, reason = ratio_or_withheld(300.0, 100.0, WORK, baseline)
    assert value is None
    assert key in reason and "differs" in reason


def test_attack_steps_and_output_shapes_are_compared():
    ours = {**WORK, "steps": 10, "output_shape": [64, 3, 32, 32]}
    assert "steps" in withheld_reason(ours, {**ours, "steps": 7})
    assert "output_shape" in withheld_reason(ours, {**ours, "output_shape": (64, 3, 16, 16)})
    assert withheld_reason(ours, {**ours, "output_shape": (64, 3, 32, 32)}) is None  # tuple == list


def test_missing_record_or_bad_timing_or_extra_reason_withholds():
    partial = {k: v for k, v in WORK.items() if k != "images"}
    assert ratio_or_withheld(2.0, 1.0, WORK, partial) == (None, "images not recorded for baseline")
    value, reason = ratio_or_withheld(2.0, 0.0, WORK, WORK)
    assert value is None and "baseline" in reason
    value, reason = ratio_or_withheld(2.0, 1.0, WORK, WORK, extra_reason="CKA matrices disagree")
    assert (value, reason) == (None, "CKA matrices disagree")


def test_work_counter_sees_rows_and_calls():
    model = torch.nn.Linear(3, 2)
    with WorkCounter(model) as counter:
        model(torch.zeros(5, 3))
        model(torch.zeros(7, 3))
    model(torch.zeros(4, 3))  # after the block: not counted
    assert (counter.calls, counter.rows, counter.output_shape) == (2, 12, [7, 2])


# --------------------------------------------------------------------------------------------------- baselines
def test_textbook_nt_xent_equals_rcl():
    gen = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen)
    assert float(textbook_nt_xent(z1, z2, 0.5)) == pytest.approx(float(nt_xent(z1, z2, 0.5)), abs=1e-5)


def test_pairwise_cka_loop_equals_minibatch_cka():
    gen = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(2):
        base = torch.randn(12, 6, generator=gen)
        batches.append([base, base @ torch.randn(6, 4, generator=gen), torch.randn(12, 2, 3, generator=gen)])
    cka = MinibatchCKA(3)
    for feats in batches:
        cka.update(feats)
    assert torch.allclose(pairwise_minibatch_cka(batches), cka.compute(), atol=1e-10)


# --------------------------------------------------------------------------------------------------- the run
@pytest.mark.slow
def test_run_bench_tiny_reports_every_figure(tmp_path, tiny_report):
    report = json.loads(json.dumps(tiny_report))  # JSON-serialisable, and a copy
    figures = report["figures"]
    for key in ("simclr_step", "pgd", "augment", "cka"):
        item = figures[key]
        assert item["withheld"] is None, item["withheld"]
        assert item["ratio"] > 0
        assert item["ours"]["work"] == item["baseline"]["work"]
    train = figures["simclr_step"]
    assert train["ours"]["work"]["images"] == TINY.train_batches * TINY.batch
    assert train["ours"]["work"]["images"] == train["baseline"]["work"]["images"]
    assert train["ours"]["s_per_epoch"] == pytest.approx(50_000 / train["ours"]["images_per_s"])
    fast = train["ours_compiled"]  # compile=True: the same work, its compilation timed apart
    if not any(shutil.which(c) for c in ("g++", "clang++", "c++")):  # the bench says why, the rest still runs
        assert fast is None and "C++ compiler" in train["withheld_compiled"]
    else:
        assert train["withheld_compiled"] is None, train["withheld_compiled"]
        assert fast["work"] == train["baseline"]["work"] and train["ratio_compiled"] > 0
        assert fast["compile_seconds"] > 0 and len(fast["repeats_s"]) == len(train["ours"]["repeats_s"])
        assert "compile=True epoch (s)" in format_report(report)
    assert figures["pgd"]["ours"]["work"]["steps"] == 10 == figures["pgd"]["baseline"]["work"]["steps"]
    assert figures["pgd"]["ours"]["max_perturbation"] <= 8 / 255 + 1e-5
    assert figures["cka"]["max_abs_diff"] < 1e-6
    assert figures["cka_10k"]["extrapolated"] and len(figures["cka_10k"]["taps"]) == 10
    assert figures["finetune_pgd10"]["forward_calls_per_batch"] == 12  # 10 attack steps + clean + adversarial
    for name in ("quick", "paper"):
        est = figures["profiles"][name]
        assert est["seconds"] == pytest.approx(sum(row["seconds"] for row in est["stages"]))
    assert figures["profiles"]["paper"]["inputs"]["flop_scale"] > figures["profiles"]["quick"]["inputs"]["flop_scale"]
    assert report["device"]["type"] == "cpu" and report["device"]["name"]
    text = format_report(report)
    assert "SimCLR epoch, 50k images (s)" in text and "quick profile, estimated" in text

    path = tmp_path / "cpu-custom.json"
    path.write_text(json.dumps(report))
    readme = render_readme(tmp_path)
    assert "No GPU figures have been measured yet" in readme
    assert "cpu-custom.json" in readme and "<= 2.5 s (H100)" in readme
    assert (tmp_path / "README.md").read_text() == readme

    gpu = json.loads(json.dumps(report))
    gpu["device"].update(type="cuda", name="NVIDIA H100 80GB HBM3")
    gpu["figures"]["pgd"].update(ratio=None, withheld="steps differs")
    (tmp_path / "gpu.json").write_text(json.dumps(gpu))
    readme = render_readme(tmp_path)
    assert "No GPU figures" not in readme and "withheld" in readme


@pytest.mark.slow
def test_format_report_prints_withheld_reason(tiny_report):
    report = json.loads(json.dumps(tiny_report))
    report["figures"]["augment"].update(ratio=None, withheld="output_shape differs: ours [16], baseline [8]")
    assert "ratio withheld: output_shape differs" in format_report(report)


# --------------------------------------------------------------------------------------------------- precision
def test_precision_can_be_forced_either_way_on_any_machine():
    assert memory_format("cpu", "fp32") == torch.contiguous_format
    assert memory_format("cpu", "bf16") == torch.channels_last
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast("cpu", "fp32"):
        assert (a @ b).dtype == torch.float32
    with autocast("cpu", "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        autocast("cpu", "fp16")
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(epochs=1, batch_size=4, lr=0.1, precision="half")
    # "auto" is recorded as what it resolves to here (a checkpoint without it still resumes: test_train.py)
    auto = TrainConfig(epochs=1, batch_size=4, lr=0.1).identity()["precision"]
    assert auto == resolve_precision(pick_device("cpu"), "auto") and auto in ("fp32", "bf16")
    assert TrainConfig(epochs=1, batch_size=4, lr=0.1, precision="bf16").identity()["precision"] == "bf16"


def test_cpu_precision_section_reports_both_sides_on_the_same_work(tiny_report):
    cpu = tiny_report["figures"]["cpu_precision"]
    assert cpu["precision"] in ("fp32", "bf16") and cpu["why"]
    assert cpu["matmul_gflops"]["fp32"] > 0 and cpu["matmul_gflops"]["bf16"] > 0
    (row,) = cpu["widths"]
    assert row["width"] == TINY.cpu_widths[0]
    assert row["withheld"] is None and row["ratio"] > 0  # same network, batch, images and calls on both sides
    assert row["ours"]["work"]["images"] == row["baseline"]["work"]["images"] == 4 * TINY.cpu_batch
    assert row["baseline"]["precision"] == "fp32" and row["ours"]["precision"] == cpu["precision"]
    assert row["ours"]["gflops"] == pytest.approx(row["ours"]["images_per_s"] * row["flops_per_image"] / 1e9)
    assert "CPU training step" in format_report(tiny_report)


@pytest.mark.slow
def test_bf16_channels_last_training_matches_fp32_accuracy_band(one_thread):
    data = synthetic_dataset(n_train=512, n_test=384, num_classes=4, seed=0)
    accs = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = Classifier(resnet18(width=8), num_classes=4)
        cfg = TrainConfig(epochs=3, batch_size=64, lr=3e-3, seed=0, progress=False, precision=precision)
        history = train_supervised(model, data.train, cfg)
        assert all(math.isfinite(r["loss"]) for r in history)
        if precision == "bf16":
            assert model.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        accs[precision] = accuracy(model, data.test)
    chance = 1 / 4
    assert accs["fp32"] > chance + 0.2 and accs["bf16"] > chance + 0.2, accs
    assert abs(accs["fp32"] - accs["bf16"]) < 0.1, accs
