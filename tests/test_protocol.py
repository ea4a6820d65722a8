"""The main study's protocol, pinned against the authors' released code (softsys4ai/CL-Robustness).

Each reference below is written from the released scripts' equations, in plain loops, independently of rcl's
losses and attacks: ``SupConLoss`` (SupContrast, used by the released code for SimCLR without labels and SupCon with
them), ``pgd_linf`` (the representation attack), ``pgd_linf_end2end`` (PGD on cross-entropy), and the training
steps ``trainCLNet_Ro`` (cl_scl_AT.py) and ``trainEvalNet_Ro`` (sl_AT_baseline.py). docs/protocol.md lists every
setting; a test here fails if a default drifts away from the released one.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rcl import study
from rcl.attacks import AttackConfig
from rcl.data import Split, synthetic_dataset
from rcl.evaluate import threat_model_1
from rcl.models import Classifier, ContrastiveNet, ProjectionHead, resnet18
from rcl.profiles import PROFILES, resolve
from rcl.train import TrainConfig, pretrain_contrastive, train_supervised

EPS, ALPHA, STEPS = 8 / 255, 0.01, 3


# --------------------------------------------------------------------------------------------- references
def released_supcon_loss(features: torch.Tensor, labels: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """SupContrast's ``SupConLoss(temperature, base_temperature=temperature)`` as loops over anchors.

    features: [B, 2, D], L2-normalised here (the released EncoderWithHead normalises its output).
    """
    b = features.shape[0]
    u = F.normalize(features.float(), dim=2)
    contrast = torch.cat([u[:, 0], u[:, 1]])  # view-major [2B, D]
    owner = list(range(b)) * 2
    total = 0.0
    for i in range(2 * b):
        sims = [contrast[i] @ contrast[a] / temperature for a in range(2 * b)]
        denominator = torch.logsumexp(torch.stack([sims[a] for a in range(2 * b) if a != i]), 0)
        positives = [
            a
            for a in range(2 * b)
            if a != i and (owner[a] == owner[i] if labels is None else labels[owner[a]] == labels[owner[i]])
        ]
        total = total - sum(sims[p] - denominator for p in positives) / len(positives)
    return total / (2 * b)


def released_pgd_linf(model, x, labels, method, temperature, *, eps, alpha, steps):
    """``pgd_linf``: delta from 0; loss = SupConLoss(cat[z(x), z(x + delta)]) (labels only for SupCon)."""
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        z = model(x)
        z_adv = model(x + delta)
        loss = released_supcon_loss(torch.stack([z, z_adv], dim=1), labels if method == "supcon" else None, temperature)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta.data = (delta + alpha * grad.sign()).clamp(-eps, eps)
            delta.data = (x + delta.data).clamp(0, 1) - x
    return (x + delta).detach()


def released_pgd_end2end(model, x, labels, *, eps, alpha, steps):
    """``pgd_linf_end2end``: delta from 0, ascent on the mean cross-entropy."""
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        loss = F.cross_entropy(model(x + delta), labels)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta.data = (delta + alpha * grad.sign()).clamp(-eps, eps)
            delta.data = (x + delta.data).clamp(0, 1) - x
    return (x + delta).detach()


class TwoFixedViews:
    """An ``augment(x, generator)`` that returns a fixed flip for the first call of a step and a fixed darkening
    for the second, so the reference can build the same two views (the SimCLR draws are tested elsewhere)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        self.calls += 1
        return x.flip(3) if self.calls % 2 else x * 0.8


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def batch():
    ds = synthetic_dataset(n_train=16, n_test=16, num_classes=4, seed=0)
    return ds.train


def _contrastive_net(seed: int = 0) -> ContrastiveNet:
    torch.manual_seed(seed)
    enc = resnet18(4)
    return ContrastiveNet(enc, ProjectionHead(enc.feature_dim, enc.feature_dim, 8))


def _one_sgd_step_cfg(n: int) -> TrainConfig:
    # one step over the whole split; SGD's first step with momentum is p -= lr * grad, easy to reproduce
    return TrainConfig(epochs=1, batch_size=n, lr=0.05, optimizer="sgd", seed=0, progress=False)


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


# --------------------------------------------------------------------------------------------- item 1
@pytest.mark.parametrize("method", ["simclr", "supcon"])
@pytest.mark.parametrize("model_mode", ["eval", "train"])
def test_adversarial_pretraining_is_the_released_trainCLNet_Ro(batch, method, model_mode):
    """loss = con(z(x0), z(x0_adv)) + con(z(x1), z(x2)), x0 un-augmented and attacked from delta = 0, every stream
    in its own forward pass (per-stream BatchNorm). ``model_mode="train"`` is the released attack exactly; the
    default ``"eval"`` is our documented difference (the attack sees the running statistics)."""
    temperature = 0.5
    x, y = batch.images.float() / 255, batch.labels
    attack = AttackConfig(EPS, ALPHA, STEPS, random_start=False, model_mode=model_mode)

    ours = _contrastive_net()
    start = _params(ours)
    history = pretrain_contrastive(
        ours, batch, _one_sgd_step_cfg(len(batch)), method=method, temperature=temperature, attack=attack,
        augment=TwoFixedViews(),
    )  # fmt: skip

    ref = _contrastive_net()
    labels = y if method == "supcon" else None
    ref.train(model_mode == "train")
    x_adv = released_pgd_linf(ref, x, y, method, temperature, eps=EPS, alpha=ALPHA, steps=STEPS)
    ref.train()
    z0, z0_adv, z1, z2 = ref(x), ref(x_adv), ref(x.flip(3)), ref(x * 0.8)
    loss = released_supcon_loss(torch.stack([z0, z0_adv], 1), labels, temperature) + released_supcon_loss(
        torch.stack([z1, z2], 1), labels, temperature
    )
    loss.backward()

    assert history[0]["loss"] == pytest.approx(loss.item(), rel=1e-5)
    for name, p in ref.named_parameters():
        expected = start[name] - 0.05 * p.grad.float()
        torch.testing.assert_close(dict(ours.named_parameters())[name].detach(), expected, atol=2e-6, rtol=1e-4)


def test_one_batch_for_all_streams_is_not_the_released_loss(batch):
    """The previous design (all views in one BatchNorm batch) gives another loss: the test above can tell."""
    x = batch.images.float() / 255
    net = _contrastive_net().train()
    with torch.no_grad():
        per_stream = released_supcon_loss(torch.stack([net(x), net(x * 0.8)], 1), None, 0.5)
        z = net(torch.cat([x, x * 0.8]))
        one_batch = released_supcon_loss(torch.stack([z[: len(x)], z[len(x) :]], 1), None, 0.5)
    assert not math.isclose(per_stream.item(), one_batch.item(), rel_tol=1e-4)


# --------------------------------------------------------------------------------------------- item 2
def test_supervised_adversarial_training_is_the_released_trainEvalNet_Ro(batch):
    """sl_AT_baseline.py: PGD-CE on the un-augmented x0 from delta = 0; loss CE(f(x0_adv)) + CE(f(x1)), x1 the
    augmented view, separate forward passes."""
    x, y = batch.images.float() / 255, batch.labels
    attack = AttackConfig(EPS, ALPHA, STEPS, random_start=False)
    torch.manual_seed(0)
    ours = Classifier(resnet18(4), 4)
    start = _params(ours)
    history = train_supervised(
        ours, batch, _one_sgd_step_cfg(len(batch)), attack=attack, augment=lambda v, g: v.flip(3)
    )

    torch.manual_seed(0)
    ref = Classifier(resnet18(4), 4).eval()
    x0_adv = released_pgd_end2end(ref, x, y, eps=EPS, alpha=ALPHA, steps=STEPS)
    ref.train()
    loss = F.cross_entropy(ref(x0_adv), y) + F.cross_entropy(ref(x.flip(3)), y)
    loss.backward()
    assert history[0]["loss"] == pytest.approx(loss.item(), rel=1e-5)
    for name, p in ref.named_parameters():
        torch.testing.assert_close(
            dict(ours.named_parameters())[name].detach(), start[name] - 0.05 * p.grad, atol=2e-6, rtol=1e-4
        )


def test_supervised_views_pad_by_five_as_the_released_baselines(monkeypatch):
    """Pad(5) + RandomCrop(32) + flip: a crop can shift the image by up to 5 pixels (10 offsets each way)."""
    import rcl.train as train_module

    seen = {}

    def spy(x, generator=None, *, padding=4, flip_p=0.5):
        seen["padding"] = padding
        return x

    monkeypatch.setattr(train_module, "pad_crop_flip", spy)
    split = Split(torch.zeros(8, 3, 8, 8, dtype=torch.uint8), torch.arange(8) % 2)
    torch.manual_seed(0)
    train_supervised(Classifier(resnet18(4), 2), split, _one_sgd_step_cfg(8))
    assert seen["padding"] == 5


# --------------------------------------------------------------------------------------------- item 3
def test_threat_model_1_attacks_supcon_with_the_labels(batch):
    """testEvalNet_adv -> pgd_linf(..., method='SupCon'): the SCL attacker uses the labels."""
    x, y = batch.images.float() / 255, batch.labels
    net = _contrastive_net().eval()
    torch.manual_seed(1)
    classifier = Classifier(net.encoder, 4).eval()
    attack = AttackConfig(4 / 255, ALPHA, STEPS, random_start=False)
    with_labels = released_pgd_linf(net, x, y, "supcon", 0.5, eps=4 / 255, alpha=ALPHA, steps=STEPS)
    without = released_pgd_linf(net, x, y, "simclr", 0.5, eps=4 / 255, alpha=ALPHA, steps=STEPS)
    assert (with_labels != without).float().mean() > 0.05  # the two attackers move different pixels

    for method, x_adv in (("supcon", with_labels), ("simclr", without)):
        with torch.no_grad():
            expected = (classifier(x_adv).argmax(1) == y).float().mean().item()
        got = threat_model_1(classifier, net, batch, attack, 0.5, method=method, batch_size=len(batch))
        assert got == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="method must be"):
        threat_model_1(classifier, net, batch, attack, 0.5, method="ntxent")


def test_study_attacks_scl_through_supcon(batch, monkeypatch):
    import rcl.study as study_module

    methods = []

    def spy(*args, method="simclr", **kwargs):
        methods.append(method)
        return 0.0

    monkeypatch.setattr(study_module, "threat_model_1", spy)
    cfg = resolve("smoke", device="cpu", eval_steps=1)
    net = _contrastive_net().eval()
    classifier = Classifier(net.encoder, 4).eval()
    for scheme in ("CL", "SCL"):
        study.evaluate_classifier(
            cfg, classifier, batch, scheme=scheme, scenario="ST", representation=net, threat_models=("I",)
        )
    assert methods == ["simclr", "supcon"]


# --------------------------------------------------------------------------------------------- item 4
def test_main_study_attacks_start_at_zero_and_the_standard_one_at_random():
    cfg = resolve("smoke", device="cpu")
    assert study.attack(cfg, "train").random_start is False
    assert study.attack(cfg, "eval").random_start is False
    assert study.attack(cfg, "std").random_start is True
    assert study.attack(cfg, "eval").record()["random_start"] is False


def test_scenario_fine_tuning_trains_on_unaugmented_images(monkeypatch, tmp_path):
    """Linear head, Partial-AT and Full-AT train on ToTensor() images in the released cl_scl_*.py."""
    import rcl.study as study_module

    calls = []
    monkeypatch.setattr(study_module, "finetune", lambda *a, **kw: calls.append(kw))
    monkeypatch.setattr(study_module, "pretrain", lambda cfg, data, scheme, adv, progress: _contrastive_net())
    cfg = resolve("smoke", device="cpu", run_dir=tmp_path, width=4, head_dim=8)
    data = synthetic_dataset(n_train=8, n_test=8, num_classes=4, seed=0)
    for scenario in study.SCENARIOS:
        study.scenario_model(cfg, data, "CL", scenario, progress=False)
    assert [kw["augment"] for kw in calls] == [False] * len(study.SCENARIOS)


# --------------------------------------------------------------------------------------------- item 5
def test_paper_profile_trains_every_phase_for_200_epochs():
    paper = PROFILES["paper"]
    for field in ("pretrain_epochs", "supervised_epochs", "linear_epochs", "finetune_epochs"):
        assert paper[field] == 200, field
    assert (paper["batch_size"], paper["lr"], paper["temperature"], paper["head_dim"]) == (256, 3e-4, 0.07, 100)
    assert (paper["train_eps"], paper["train_alpha"], paper["train_steps"]) == (8 / 255, 0.01, 5)
    assert (paper["eval_eps"], paper["eval_alpha"], paper["eval_steps"]) == (4 / 255, 0.01, 40)
    assert paper["arch"] == "resnet50"
    for dataset in ("cifar10", "cifar100"):
        assert resolve("paper", dataset=dataset, device="cpu").dataset == dataset


def test_the_study_runs_on_a_100_class_dataset(tmp_path):
    """CIFAR-100 is not available offline: the paper profile's second dataset is checked on 100 synthetic classes."""
    data = synthetic_dataset(n_train=200, n_test=100, num_classes=100, seed=0)
    cfg = resolve(
        "smoke", device="cpu", run_dir=tmp_path, width=4, head_dim=8, pretrain_epochs=1, linear_epochs=1,
        batch_size=100, eval_steps=1,
    )  # fmt: skip
    classifier, representation = study.scenario_model(cfg, data, "SCL", "ST", progress=False)
    assert classifier.fc.out_features == 100
    records = study.evaluate_classifier(
        cfg, classifier, data.test, scheme="SCL", scenario="ST", representation=representation,
        threat_models=("I", "II"),
    )  # fmt: skip
    assert [r["threat_model"] for r in records] == ["I", "II"]
    assert all(0.0 <= r["robust_acc"] <= r["clean_acc"] + 1e-9 for r in records)
