"""The precision rule (rcl.runtime.precision_choice) and the evidence that bf16 changes nothing but speed.

- "auto" picks bf16 + channels_last on CUDA and on a CPU that computes bf16 natively, fp32 on any other CPU; the
  environment (RCL_PRECISION, set by ``rcl.reproduce -p precision=...``) and an explicit precision win.
- A block that asks for fp32 really runs in fp32 inside a bf16 one (an fp32 attack inside a bf16 training step).
- Training follows its TrainConfig's precision into the attacks inside its steps.
- On real CIFAR-10 (the offline JPEG copy, skipped without it) the same small model trained in fp32 and in bf16
  ends with clean and PGD accuracy inside the noise band of two independent accuracies on the same test images.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rcl import runtime
from rcl.attacks import AttackConfig, pgd
from rcl.course import setup
from rcl.data import load_dataset, synthetic_dataset
from rcl.evaluate import accuracy, robust_accuracy
from rcl.models import Classifier, resnet18
from rcl.runtime import PRECISION_ENV, autocast, precision_choice, resolve_precision
from rcl.train import TrainConfig, train_supervised
from rcl.verdicts import noise


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(PRECISION_ENV, raising=False)


@pytest.mark.parametrize(
    ("features", "expected"),
    [((), "fp32"), (("avx512_bf16",), "bf16"), (("amx_bf16",), "bf16"), (("avx512_bf16", "amx_bf16"), "bf16")],
)
def test_auto_on_cpu_is_bf16_only_with_native_bf16(monkeypatch, no_env, features, expected):
    monkeypatch.setattr(runtime, "cpu_bf16_features", lambda: features)
    resolved, why = precision_choice("cpu")
    assert resolved == expected
    assert ("natively" in why) == bool(features) and ("no native bf16" in why) == (not features)
    assert runtime.memory_format("cpu") == (torch.channels_last if expected == "bf16" else torch.contiguous_format)


def test_auto_is_bf16_on_cuda_and_explicit_choices_win(monkeypatch, no_env):
    monkeypatch.setattr(runtime, "cpu_bf16_features", lambda: ())
    assert resolve_precision("cuda") == "bf16"
    assert resolve_precision("cpu", "bf16") == "bf16" and resolve_precision("cuda", "fp32") == "fp32"
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    assert precision_choice("cpu") == ("bf16", f"{PRECISION_ENV}=bf16 in the environment")
    assert resolve_precision("cpu", "fp32") == "fp32"  # an explicit precision beats the environment
    monkeypatch.setenv(PRECISION_ENV, "half")
    with pytest.raises(ValueError, match=PRECISION_ENV):
        resolve_precision("cpu")


def test_the_cpu_probe_agrees_with_the_processor_flags():
    flags = set()
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo here")
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if not flags:
        pytest.skip("no x86 flags line in /proc/cpuinfo")
    native = runtime.cpu_bf16_features()
    assert ("avx512_bf16" in native) == ("avx512_bf16" in flags)
    assert ("amx_bf16" in native) == ("amx_tile" in flags)


def test_fp32_inside_bf16_really_runs_in_fp32():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with autocast("cpu", "bf16"):
        assert (a @ b).dtype == torch.bfloat16
        with autocast("cpu", "fp32"):
            assert (a @ b).dtype == torch.float32


def test_attacks_inside_training_follow_the_training_precision(monkeypatch):
    seen = []
    real_autocast = runtime.autocast

    def spy(device, precision="auto"):
        seen.append(precision)
        return real_autocast(device, precision)

    monkeypatch.setattr("rcl.attacks.autocast", spy)
    data = synthetic_dataset(n_train=16, n_test=0, num_classes=2, seed=0)
    model = Classifier(resnet18(width=2), num_classes=2)
    attack = AttackConfig(8 / 255, 2 / 255, 1)
    for precision in ("fp32", "bf16"):
        seen.clear()
        cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-3, precision=precision, progress=False)
        train_supervised(model, data.train, cfg, attack=attack)
        assert seen and set(seen) == {precision}
    seen.clear()
    own = AttackConfig(8 / 255, 2 / 255, 1, precision="fp32")  # an attack that names its precision keeps it
    train_supervised(model, data.train, TrainConfig(epochs=1, batch_size=8, lr=1e-3, precision="bf16"), attack=own)
    assert set(seen) == {"fp32"}


def test_pgd_in_either_precision_stays_in_the_ball():
    torch.manual_seed(0)
    model = Classifier(resnet18(width=2), num_classes=3).eval()
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    for precision in ("fp32", "bf16"):
        x_adv = pgd(model, x, y, 8 / 255, 2 / 255, 3, precision=precision)
        assert x_adv.dtype == torch.float32
        assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6


def test_setup_precision_reaches_every_auto_of_the_process(monkeypatch, no_env, tmp_path):
    cfg = setup("smoke", "synthetic", "cpu", run_dir=tmp_path, precision="fp32")
    assert cfg.precision == "fp32"
    assert resolve_precision("cpu") == "fp32"  # setup set RCL_PRECISION for evaluation, CKA, attacks
    with pytest.raises(ValueError, match="precision"):
        setup("smoke", "synthetic", "cpu", run_dir=tmp_path, precision="fp16")


@pytest.mark.slow
def test_bf16_training_on_real_cifar10_matches_fp32_within_noise(cifar10_jpeg: Path):
    """Same initial weights, data order and recipe; fp32 vs bf16 + channels_last. The band: two standard errors of
    the difference of two independent accuracies on the same 500 test images (rcl.verdicts.noise)."""
    data = load_dataset(f"imagefolder:{cifar10_jpeg}", n_train=2000, n_test=500, seed=0)
    attack = AttackConfig(1 / 255, 0.5 / 255, 10, random_start=False)
    n = len(data.test)
    results = {}
    for precision in ("fp32", "bf16"):
        with runtime.seeded_init(0, "precision-test"):
            model = Classifier(resnet18(width=8), num_classes=10)
        cfg = TrainConfig(epochs=6, batch_size=128, lr=2e-3, precision=precision, progress=False)
        train_supervised(model, data.train, cfg)
        attack_p = AttackConfig(**{**attack.__dict__, "precision": precision})
        results[precision] = (
            accuracy(model, data.test, precision=precision),
            robust_accuracy(model, data.test, attack_p),
        )
    (clean32, robust32), (clean16, robust16) = results["fp32"], results["bf16"]
    assert clean32 > 0.25 and clean16 > 0.25, results  # both learned (chance is 0.10)
    assert abs(clean32 - clean16) <= noise(clean32, clean16, n), results
    assert abs(robust32 - robust16) <= noise(robust32, robust16, n), results
