"""Tests of rcl.evaluate: accuracies against independent references, attack properties, tables.

A small CNN is trained here with a plain loop (not rcl.train) on 16x16 synthetic images, so these tests do
not depend on the training module.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rcl.attacks import AttackConfig
from rcl.data import Split, synthetic_dataset
from rcl.evaluate import (
    STANDARD_COLUMNS,
    accuracy,
    autoattack_accuracy,
    eps_curve,
    features,
    layer_probe,
    robust_accuracy,
    threat_model_1,
    threat_model_2,
    to_frame,
)
from rcl.models import Classifier, resnet18

ATTACK = AttackConfig(eps=8 / 255, alpha=2 / 255, steps=5)


def _small(split: Split) -> Split:
    return Split(F.avg_pool2d(split.images.float(), 2).round().to(torch.uint8), split.labels)


class TinyNet(nn.Module):
    """conv-relu-pool x2 -> linear; ``embed`` gives the 32-d representation."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.body(x))


@pytest.fixture(scope="module")
def data():
    ds = synthetic_dataset(n_train=512, n_test=200, num_classes=10, seed=1)
    return _small(ds.train), _small(ds.test)


@pytest.fixture(scope="module")
def trained(data):
    """A TinyNet trained for a few epochs with Adam (about 40% test accuracy)."""
    train, _ = data
    torch.manual_seed(0)
    model = TinyNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = train.images.float() / 255, train.labels
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


class LabelReader(nn.Module):
    """Perfect logits: the label is written into pixel (0, 0, 0) as 20 * label / 255."""

    def forward(self, x):
        label = (x[:, 0, 0, 0] * 255 / 20).round().long()
        return F.one_hot(label, 10).float() * 10


def _labelled_split(n: int = 37) -> Split:
    labels = torch.arange(n) % 10
    images = torch.zeros(n, 3, 8, 8, dtype=torch.uint8)
    images[:, 0, 0, 0] = (labels * 20).to(torch.uint8)
    return Split(images, labels)


# ------------------------------------------------------------------------------------------- accuracy
def test_accuracy_of_perfect_and_constant_models():
    split = _labelled_split(37)  # 37 = 7 batches of 5 + a partial batch of 2: nothing may be dropped
    assert accuracy(LabelReader(), split, batch_size=5) == 1.0

    class AlwaysThree(nn.Module):
        def forward(self, x):
            return F.one_hot(torch.full((len(x),), 3), 10).float()

    assert accuracy(AlwaysThree(), split, batch_size=5) == pytest.approx(4 / 37)  # labels 3, 13, 23, 33


def test_accuracy_matches_a_direct_computation(trained, data):
    _, test = data
    with torch.no_grad():
        direct = (trained(test.images.float() / 255).argmax(1) == test.labels).float().mean().item()
    assert accuracy(trained, test, batch_size=64) == pytest.approx(direct)
    assert 0.3 < direct < 1.0  # the fixture learned something, so the robustness tests mean something


def test_robust_accuracy_properties(trained, data):
    _, test = data
    clean = accuracy(trained, test)
    robust = robust_accuracy(trained, test, ATTACK, batch_size=64)
    assert 0.0 <= robust < clean  # the attack hurts a standard model
    zero = AttackConfig(eps=0.0, alpha=1 / 255, steps=5)
    assert robust_accuracy(trained, test, zero, batch_size=64) == clean
    again = robust_accuracy(trained, test, ATTACK, batch_size=64)
    assert again == robust  # seeded random starts: repeatable
    assert threat_model_2(trained, test, ATTACK, batch_size=64) == robust


def test_robust_accuracy_keeps_model_modes(trained, data):
    _, test = data
    trained.train()
    trained.fc.eval()
    robust_accuracy(trained, test.take(torch.arange(8)), ATTACK)
    assert trained.training and trained.body.training and not trained.fc.training
    trained.eval()


def test_threat_model_1_attacks_the_representation(trained, data):
    _, test = data
    clean = accuracy(trained, test)
    tm1 = threat_model_1(trained, trained.body, test, ATTACK, temperature=0.5, batch_size=64)
    assert 0.0 <= tm1 <= clean
    assert tm1 < clean  # pushing the embedding away from the clean one changes predictions


def test_eps_curve(trained, data):
    _, test = data
    records = eps_curve(trained, test.take(torch.arange(100)), [0.0, 2 / 255, 8 / 255], steps=5)
    assert [r["eps"] for r in records] == [0.0, 2 / 255, 8 / 255]
    assert records[0]["robust_acc"] == records[0]["clean_acc"]
    assert records[2]["robust_acc"] <= records[1]["robust_acc"] <= records[0]["robust_acc"]
    assert records[1]["alpha"] == pytest.approx(2.5 * (2 / 255) / 5)


@pytest.mark.slow
def test_autoattack_ce_plus_t(trained, data):
    _, test = data
    subset = test.take(torch.arange(48))
    clean = accuracy(trained, subset)
    state = torch.random.get_rng_state()
    aa = autoattack_accuracy(trained, subset, eps=8 / 255, version="ce+t", n=48, steps=10, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # torchattacks' re-seeding stays inside
    assert 0.0 <= aa < clean
    pgd = robust_accuracy(trained, subset, AttackConfig(8 / 255, 2 / 255, 10))
    assert aa <= pgd + 0.05  # APGD-CE + APGD-T is at least about as strong as PGD-10
    assert autoattack_accuracy(trained, subset, eps=8 / 255, n=48, steps=10, seed=0) == aa  # seeded
    with pytest.raises(ValueError, match="version"):
        autoattack_accuracy(trained, subset, eps=8 / 255, version="plus")


# ------------------------------------------------------------------------------------------- features and probes
def test_features(trained, data):
    _, test = data
    z = features(trained.body, test, batch_size=64)
    assert z.shape == (len(test), 32) and z.device.type == "cpu"
    with torch.no_grad():
        assert torch.allclose(z[:5], trained.body(test.images[:5].float() / 255), atol=1e-5)
    unit = features(trained.body, test, normalize=True)
    assert torch.allclose(unit.norm(dim=1), torch.ones(len(test)), atol=1e-5)


class LeakyEncoder(nn.Module):
    """Two taps: "leak" carries the label (from pixel (0, 0, 0)) in a 4x4 map, "noise" carries nothing."""

    tap_names = ["leak", "noise"]

    def forward_taps(self, x, names=None):
        label = (x[:, 0, 0, 0] * 255 / 20).round().long()
        leak = F.one_hot(label, 10).float()[:, :, None, None].expand(-1, -1, 4, 4)
        noise = torch.sin(1e3 * x[:, 1:2, :4, :4] + torch.arange(len(x))[:, None, None, None].float())
        return {"leak": leak, "noise": noise}


def test_layer_probe_against_known_features():
    train, test = _labelled_split(200), _labelled_split(50)
    records = layer_probe(LeakyEncoder(), train, test, epochs=30, lr=1e-2, batch_size=50)
    assert [(r["layer"], r["depth"], r["dim"]) for r in records] == [("leak", 0, 10), ("noise", 1, 1)]
    assert records[0]["clean_acc"] == 1.0  # pooled one-hot: perfectly decodable
    assert records[1]["clean_acc"] <= 0.4  # a single noise channel: near chance (0.1)


def test_layer_probe_adversarial(data):
    train, test = data
    torch.manual_seed(0)
    classifier = Classifier(resnet18(8), 10).eval()
    taps = ["stem", "layer2.1", "pool"]
    records = layer_probe(
        classifier.encoder, train, test, taps=taps, epochs=1, attack=ATTACK, classifier=classifier, batch_size=128
    )
    assert [r["layer"] for r in records] == taps
    assert [r["dim"] for r in records] == [8, 16, 64]
    for r in records:
        assert 0.0 <= r["robust_acc"] <= 1.0 and 0.0 <= r["clean_acc"] <= 1.0
    with pytest.raises(ValueError, match="classifier"):
        layer_probe(classifier.encoder, train, test, taps=taps, attack=ATTACK)


# ------------------------------------------------------------------------------------------- tables
def test_to_frame_column_order():
    records = [
        {"robust_acc": 0.4, "clean_acc": 0.8, "note": "a", "scheme": "CL", "eps": 8 / 255},
        {"scheme": "SL", "scenario": "ST", "attack": "pgd", "steps": 20, "clean_acc": 0.9, "extra": 1},
    ]
    frame = to_frame(records)
    assert list(frame.columns) == [
        "scheme",
        "scenario",
        "attack",
        "eps",
        "steps",
        "clean_acc",
        "robust_acc",
        "note",
        "extra",
    ]
    assert frame.shape == (2, 9) and frame["scheme"].tolist() == ["CL", "SL"]
    assert frame["robust_acc"].isna().tolist() == [False, True]
    assert list(to_frame([{"clean_acc": 1.0, "scheme": "x"}]).columns) == ["scheme", "clean_acc"]
    assert STANDARD_COLUMNS[:3] == ("scheme", "scenario", "attack")
