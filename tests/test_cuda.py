"""The CUDA path: what only a GPU exercises (bf16 autocast, channels_last, device generators, device-resident data).

Every test here is marked ``cuda`` and skips without a GPU; the GPU check (``tools/gpu_check.sh``) runs them with
``pytest -k cuda`` on the lent machine. Sizes are tiny: each test takes seconds there. ``compile=True`` on CUDA is not
tested here: ``rcl.bench`` (the check's next phase) times it on the full network and records a failure to compile.
"""

from __future__ import annotations

import pytest
import torch

from rcl.augment import pad_crop_flip, simclr_augment
from rcl.checkpoint import load_checkpoint, save_checkpoint
from rcl.cka import MinibatchCKA, layer_cka
from rcl.data import DeviceLoader, synthetic_dataset
from rcl.evaluate import accuracy, robust_accuracy
from rcl.losses import nt_xent
from rcl.models import Classifier, ContrastiveNet, ProjectionHead, resnet18
from rcl.runtime import autocast, make_generator, memory_format, resolve_precision
from rcl.train import TrainConfig, finetune, pretrain_contrastive, train_supervised

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(n_train=256, n_test=128, seed=0)


def _conv_is_channels_last(model: torch.nn.Module) -> bool:
    return model.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_cuda_defaults_are_bf16_and_channels_last():
    assert resolve_precision(CUDA) == "bf16"
    assert memory_format(CUDA) == torch.channels_last
    assert memory_format(CUDA, "fp32") == torch.contiguous_format
    x = torch.randn(4, 8, device=CUDA)
    w = torch.randn(8, 8, device=CUDA)
    with autocast(CUDA):
        assert (x @ w).dtype == torch.bfloat16
    with autocast(CUDA, "fp32"):
        assert (x @ w).dtype == torch.float32


def test_cuda_device_loader_keeps_data_on_the_gpu(data):
    loader = DeviceLoader(data.train, 64, shuffle=True, drop_last=True, device=CUDA)
    batches = list(loader)
    assert len(batches) == 4
    x, y = batches[0]
    assert x.is_cuda and y.is_cuda and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert loader.split.images.is_cuda and loader.split.images.dtype == torch.uint8


def test_cuda_augmentations_are_seeded_per_device_generator(data):
    x = data.train.images[:32].to(CUDA).float() / 255
    a = simclr_augment(x, make_generator(CUDA, 3))
    b = simclr_augment(x, make_generator(CUDA, 3))
    c = simclr_augment(x, make_generator(CUDA, 4))
    assert a.is_cuda and a.shape == x.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    crops = pad_crop_flip(x, make_generator(CUDA, 0))
    assert crops.is_cuda and crops.shape == x.shape


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_cuda_supervised_training_learns_in_both_precisions(precision, tmp_path):
    data = synthetic_dataset(n_train=512, n_test=384, num_classes=4, seed=0)  # as test_bench's CPU band test
    torch.manual_seed(0)
    model = Classifier(resnet18(width=8), data.num_classes)
    cfg = TrainConfig(epochs=3, batch_size=64, lr=3e-3, device="cuda", precision=precision, progress=False)
    history = train_supervised(model, data.train, cfg, ckpt_dir=tmp_path)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert history[-1]["loss"] < history[0]["loss"]
    assert next(model.parameters()).is_cuda and next(model.parameters()).dtype == torch.float32
    assert _conv_is_channels_last(model) == (precision == "bf16")
    assert accuracy(model, data.test, batch_size=128) > 1 / data.num_classes + 0.2  # well above chance
    # the checkpoint written on the GPU reads back on the CPU
    stored = load_checkpoint(tmp_path / "last.pt", map_location="cpu")
    assert stored["epoch"] == 3


def test_cuda_simclr_pretraining_then_linear_head(data, tmp_path):
    torch.manual_seed(0)
    enc = resnet18(width=8)
    net = ContrastiveNet(enc, ProjectionHead(enc.feature_dim, enc.feature_dim, 16))
    cfg = TrainConfig(epochs=2, batch_size=64, lr=3e-3, device="cuda", progress=False)
    history = pretrain_contrastive(net, data.train, cfg, temperature=0.5)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    clf = Classifier(resnet18(width=8), data.num_classes)
    clf.encoder.load_state_dict(net.encoder.state_dict())
    finetune(clf, data.train, TrainConfig(epochs=1, batch_size=64, lr=1e-2, device="cuda", progress=False))
    acc = accuracy(clf, data.test, batch_size=128)
    assert 0.0 <= acc <= 1.0
    path = tmp_path / "clf.pt"
    save_checkpoint(path, clf)
    cpu = Classifier(resnet18(width=8), data.num_classes)
    load_checkpoint(path, cpu, map_location="cpu")
    assert torch.equal(cpu.fc.weight, clf.fc.weight.cpu())


def test_cuda_adversarial_finetuning_and_robust_accuracy(data):
    from rcl.attacks import AttackConfig

    torch.manual_seed(0)
    model = Classifier(resnet18(width=8), data.num_classes)
    attack = AttackConfig(8 / 255, 2 / 255, 3)
    cfg = TrainConfig(epochs=1, batch_size=64, lr=1e-2, optimizer="sgd", device="cuda", progress=False)
    history = finetune(model, data.train, cfg, mode="full", attack=attack)
    assert "adv_acc" in history[-1]
    clean = accuracy(model, data.test, batch_size=128)
    robust = robust_accuracy(model, data.test, AttackConfig(8 / 255, 2 / 255, 5), batch_size=128)
    assert 0.0 <= robust <= clean + 2 / len(data.test)  # PGD does not help (a stray example aside)


def test_cuda_cka_matches_the_cpu(data):
    torch.manual_seed(0)
    enc = resnet18(width=8).eval()
    split = data.test
    on_gpu = layer_cka(enc.to(CUDA), split.to(CUDA), batch_size=64)
    on_cpu = layer_cka(enc.cpu(), split, batch_size=64)
    assert torch.allclose(on_gpu.matrix, on_cpu.matrix, atol=2e-3)  # both float64 on the CPU
    cka = MinibatchCKA(2)
    feats = [torch.randn(32, 16, device=CUDA, dtype=torch.float64)] * 2
    cka.update(feats)
    assert torch.allclose(cka.compute().cpu(), torch.ones(2, 2, dtype=torch.float64), atol=1e-6)


def test_cuda_nt_xent_in_bf16_autocast_is_close_to_fp32():
    gen = torch.Generator(device="cuda").manual_seed(0)
    z1 = torch.randn(256, 32, device=CUDA, generator=gen)
    z2 = z1 + 0.1 * torch.randn(256, 32, device=CUDA, generator=gen)
    exact = nt_xent(z1, z2, 0.2)
    with autocast(CUDA):
        fast = nt_xent(z1.bfloat16(), z2.bfloat16(), 0.2)
    assert torch.isfinite(fast) and abs(float(fast) - float(exact)) < 0.05 * float(exact) + 0.05
