"""Tests of rcl.evaluate: accuracies against independent references, attack properties, tables.

A small CNN is trained here with a plain loop (not rcl.train) on 16x16 synthetic images, so these tests do
not depend on the training module.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchattacks
from conftest import TinyCNN, half_size
from torch import nn

from rcl.attacks import AttackConfig
from rcl.data import Split, synthetic_dataset
from rcl.evaluate import (
    STANDARD_COLUMNS,
    AutoAttackConfig,
    accuracy,
    autoattack_accuracy,
    autoattack_record,
    eps_curve,
    features,
    layer_probe,
    robust_accuracy,
    run_autoattack,
    threat_model_1,
    threat_model_2,
    to_frame,
)
from rcl.models import Classifier, resnet18
from rcl.profiles import resolve

ATTACK = AttackConfig(eps=8 / 255, alpha=2 / 255, steps=5)


@pytest.fixture(scope="module")
def data():
    ds = synthetic_dataset(n_train=512, n_test=200, num_classes=10, seed=1)
    return half_size(ds.train), half_size(ds.test)


@pytest.fixture(scope="module")
def trained(data):
    """A TinyCNN (conv-relu-pool, conv-relu -> linear; ``body`` gives the 32-d representation) trained for a few
    epochs with Adam (about 40% test accuracy)."""
    train, _ = data
    torch.manual_seed(0)
    model = TinyCNN((16, 32))
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
    assert autoattack_accuracy(trained, subset, eps=8 / 255, version="ce+t", n=48, steps=10, seed=0) == aa  # seeded
    with pytest.raises(ValueError, match="version"):
        autoattack_accuracy(trained, subset, eps=8 / 255, version="plus")


# ------------------------------------------------------------------------------------------- AutoAttack suites
class Linear(nn.Module):
    """Flatten -> linear: a model with any number of classes, for the settings tests."""

    def __init__(self, n_classes: int, side: int = 8) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * side * side, n_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_autoattack_pins_the_reference_settings():
    """Every setting of fra31/auto-attack's version='standard' (autoattack.py: AutoAttack.__init__, set_version)."""
    config = AutoAttackConfig(8 / 255)
    assert (config.version, config.norm, config.steps, config.square_queries) == ("standard", "linf", 100, 5000)
    assert (config.n_target_classes, config.seed) == (9, 0)
    assert config.deviations(10) == [] and "reference settings" in config.suite_note(10)
    for n_classes in (10, 100):  # 9 targets whatever the number of classes (torchattacks would use 99)
        model = Linear(n_classes)
        suite = config.build(model, n_classes)
        assert [name for name, _ in suite] == ["apgd-ce", "apgd-t", "fab-t", "square"]
        apgd, apgdt, fab, square = (atk for _, atk in suite)
        assert isinstance(apgd, torchattacks.APGD) and isinstance(apgdt, torchattacks.APGDT)
        assert isinstance(fab, torchattacks.FAB) and isinstance(square, torchattacks.Square)
        for atk in (apgd, apgdt, fab, square):
            assert atk.model is model and atk.norm == "Linf" and atk.eps == 8 / 255
            assert atk.n_restarts == 1 and atk.seed == 0
        assert (apgd.loss, apgd.steps, apgd.thr_decr, apgd.eot_iter) == ("ce", 100, 0.75, 1)
        assert (apgdt.steps, apgdt.thr_decr, apgdt.eot_iter, apgdt.n_target_classes) == (100, 0.75, 1, 9)
        assert (fab.steps, fab.multi_targeted, fab.n_target_classes) == (100, True, 9)
        assert (fab.alpha_max, fab.eta, fab.beta) == (0.1, 1.05, 0.9)
        assert (square.n_queries, square.p_init, square.loss, square.rescale_schedule) == (5000, 0.8, "margin", False)
        assert [c["attack"] for c in config.components(n_classes)] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    # ce+t: the first two attacks with the same settings; eps, norm, steps and seed passed through
    light = AutoAttackConfig(0.5, version="ce+t", norm="L2", steps=7, seed=3)
    suite = light.build(Linear(100), 100)
    assert [name for name, _ in suite] == ["apgd-ce", "apgd-t"]
    apgd, apgdt = (atk for _, atk in suite)
    assert (apgd.loss, apgd.steps, apgd.n_restarts, apgd.thr_decr, apgd.eot_iter) == ("ce", 7, 1, 0.75, 1)
    assert (apgdt.steps, apgdt.n_restarts, apgdt.n_target_classes, apgdt.thr_decr) == (7, 1, 9, 0.75)
    assert all(atk.norm == "L2" and atk.eps == 0.5 and atk.seed == 3 for atk in (apgd, apgdt))
    assert light.components()[1] == {
        "attack": "apgd-t",
        "norm": "l2",
        "eps": 0.5,
        "restarts": 1,
        "seed": 3,
        "loss": "dlr-targeted",
        "steps": 7,
        "rho": 0.75,
        "eot_iter": 1,
        "target_classes": 9,
    }


def test_autoattack_with_fewer_than_ten_classes():
    config = AutoAttackConfig(8 / 255)
    assert config.target_classes(5) == 4 and config.target_classes(4) == 3  # every other class
    _, apgdt, fab, _ = (atk for _, atk in config.build(Linear(5), 5))
    assert apgdt.n_target_classes == fab.n_target_classes == 4
    assert config.record(5)["n_target_classes"] == 4
    assert "4 target classes, every other class of 5 (reference 9)" in config.suite_note(5)
    split = Split(torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8), torch.arange(6) % 3)
    with pytest.raises(ValueError, match="classes"):  # the targeted DLR loss needs 4 logits
        run_autoattack(Linear(3), split, AutoAttackConfig(8 / 255, version="ce+t", steps=2))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(version="plus"), "version"),
        (dict(version="rand"), "version"),
        (dict(eps=0.0), "eps"),
        (dict(eps=-8 / 255), "eps"),
        (dict(eps=float("nan")), "eps"),
        (dict(eps=2.0), "eps"),
        (dict(norm="L1"), "norm"),
        (dict(steps=0), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(steps=True), "steps"),
        (dict(square_queries=0), "square_queries"),
        (dict(n_target_classes=0), "n_target_classes"),
        (dict(seed=-1), "seed"),
    ],
)
def test_autoattack_bad_settings_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AutoAttackConfig(**{"eps": 8 / 255, **kwargs})
    if "n_target_classes" not in kwargs:  # the rest are also arguments of autoattack_accuracy
        with pytest.raises(ValueError, match=message):
            autoattack_accuracy(Linear(10), _labelled_split(4), **{"eps": 8 / 255, **kwargs})


def test_autoattack_bad_run_arguments():
    config = AutoAttackConfig(8 / 255, version="ce+t", steps=1)
    with pytest.raises(ValueError, match="n must be"):
        run_autoattack(Linear(10), _labelled_split(4), config, n=0)
    with pytest.raises(ValueError, match="batch_size"):
        run_autoattack(Linear(10), _labelled_split(4), config, batch_size=0)
    with pytest.raises(ValueError, match="config"):
        run_autoattack(Linear(10), _labelled_split(4), "standard")


@pytest.fixture(scope="module")
def centroid():
    """A nearest-class-mean linear classifier on 8x8 images (no training: fast and deterministic), and its test set.

    ``Flatten -> Linear`` with the class means as weights; about 30-40 % test accuracy on the synthetic data.
    """
    ds = synthetic_dataset(n_train=512, n_test=64, num_classes=10, seed=1)
    train, test = (
        Split(F.avg_pool2d(s.images.float(), 4).round().to(torch.uint8), s.labels) for s in (ds.train, ds.test)
    )
    x = train.images.float().flatten(1) / 255
    means = torch.stack([x[train.labels == c].mean(0) for c in range(10)])
    model = nn.Sequential(nn.Flatten(), nn.Linear(x.shape[1], 10))
    with torch.no_grad():
        model[1].weight.copy_(means)
        model[1].bias.copy_(-0.5 * means.pow(2).sum(1))
    return model.eval(), test


class Rounded(nn.Module):
    """``model(round(16 x) / 16)``: zero input gradient everywhere, so only the black-box Square attack can work."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 16) / 16)


def _by_hand(model, split, eps, steps, queries, seed=0):
    """Which examples survive: row 0 clean, row k after attack k alone, each attack run on every example one at a
    time (an independent reading of the reference's run_standard_evaluation and set_version('standard'))."""
    attacks = [
        torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, loss="ce", rho=0.75),
        torchattacks.APGDT(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, rho=0.75),
        torchattacks.FAB(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, multi_targeted=True),
        torchattacks.Square(
            model,
            norm="Linf",
            eps=eps,
            n_queries=queries,
            n_restarts=1,
            seed=seed,
            p_init=0.8,
            loss="margin",
            resc_schedule=False,
        ),  # fmt: skip
    ]
    attacks[1].n_target_classes = attacks[2].n_target_classes = 9
    x, y = split.images.float() / 255, split.labels
    survived = torch.zeros(len(attacks) + 1, len(x), dtype=torch.bool)
    with torch.random.fork_rng(), torch.no_grad():
        for i in range(len(x)):
            xi, yi = x[i : i + 1], y[i : i + 1]
            survived[0, i] = model(xi).argmax(1) == yi
            for k, atk in enumerate(attacks):
                with torch.enable_grad():
                    x_adv = atk(xi, yi)
                survived[k + 1, i] = model(x_adv).argmax(1) == yi
    return survived


def test_autoattack_is_the_worst_case_over_the_suite(centroid):
    model, test = centroid
    model = Rounded(model)
    # 12 examples where each kind of attack matters: #0 misclassified, #18 falls to APGD-CE, #47 to APGD-T,
    # #2, #7, #19, #29, #53, #60 only to Square, #1, #10, #23 to none (found by running the suite once)
    subset = test.take(torch.tensor([0, 1, 2, 7, 10, 18, 19, 23, 29, 47, 53, 60]))
    config = AutoAttackConfig(8 / 255, steps=2, square_queries=50)
    result = run_autoattack(model, subset, config, batch_size=1)  # one example per call: the same random draws
    survived = _by_hand(model, subset, 8 / 255, steps=2, queries=50)
    assert torch.equal(result.clean, survived[0])
    assert torch.equal(result.robust, survived.all(0))  # robust only if every attack of the suite fails
    cumulative = [survived[: k + 2].all(0).float().mean().item() for k in range(4)]
    assert list(result.after) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert list(result.after.values()) == pytest.approx(cumulative)
    assert (
        cumulative[0] < survived[0].float().mean() and cumulative[1] < cumulative[0] and cumulative[3] < cumulative[2]
    )


def test_autoattack_subset_and_bounds(centroid):
    model, test = centroid
    model = Rounded(model)
    standard = run_autoattack(model, test, AutoAttackConfig(8 / 255, steps=2, square_queries=50), n=32)
    light = run_autoattack(model, test, AutoAttackConfig(8 / 255, version="ce+t", steps=2), n=32)
    assert torch.equal(standard.clean, light.clean) and standard.n == light.n == 32
    assert not (standard.robust & ~light.robust).any()  # the full suite breaks everything ce+t breaks
    assert light.robust_acc > standard.robust_acc  # and more: Square finds what masked gradients hide
    assert light.after["apgd-t"] == standard.after["apgd-t"]  # the same first two attacks
    for result in (standard, light):
        assert not (result.robust & ~result.clean).any() and result.robust_acc <= result.clean_acc
        after = list(result.after.values())
        assert after == sorted(after, reverse=True) and after[-1] == result.robust_acc
    assert standard.clean_acc == pytest.approx(accuracy(model, test.take(torch.arange(32))))


def test_autoattack_is_seeded_and_leaves_rng_and_modes_alone(centroid):
    model, test = centroid
    config = AutoAttackConfig(4 / 255, version="ce+t", steps=2)
    test = test.take(torch.arange(16))
    model.train()
    model[1].eval()
    state = torch.random.get_rng_state()
    first = run_autoattack(model, test, config, batch_size=8)
    assert torch.equal(torch.random.get_rng_state(), state)  # torchattacks re-seeds inside fork_rng only
    assert model.training and model[0].training and not model[1].training
    model.eval()
    again = run_autoattack(model, test, config, batch_size=8)
    assert torch.equal(first.robust, again.robust) and first.after == again.after
    assert autoattack_accuracy(model, test, 4 / 255, version="ce+t", steps=2, batch_size=8) == first.robust_acc


def test_autoattack_record_says_which_suite_ran(centroid):
    model, test = centroid
    config = AutoAttackConfig(8 / 255, version="ce+t", steps=2)
    record = autoattack_record(model, test, config, n=8, scheme="SL", scenario="ST")
    assert list(record) == [
        "scheme",
        "scenario",
        "threat_model",
        "attack",
        "norm",
        "eps",
        "steps",
        "alpha",
        "n",
        "clean_acc",
        "robust_acc",
        "square_queries",
        "n_target_classes",
        "n_restarts",
        "seed",
        "suite_note",
    ]
    assert (record["attack"], record["norm"], record["eps"], record["steps"]) == ("autoattack-ce+t", "linf", 8 / 255, 2)
    assert (record["threat_model"], record["n"], record["n_target_classes"], record["n_restarts"]) == ("II", 8, 9, 1)
    assert record["square_queries"] is None and record["alpha"] != record["alpha"]  # no Square; APGD has no alpha
    assert record["suite_note"] == "APGD-CE + APGD-T only (no FAB-T, no Square); reduced iterations: 2 (reference 100)"
    assert 0.0 <= record["robust_acc"] <= record["clean_acc"]
    reference = AutoAttackConfig(8 / 255).record(10)
    assert reference["attack"] == "autoattack-standard" and reference["square_queries"] == 5000
    assert (
        reference["suite_note"] == "full suite (APGD-CE, APGD-T, FAB-T, Square), reference settings (fra31/auto-attack)"
    )
    assert list(to_frame([record]).columns)[:6] == ["scheme", "scenario", "attack", "eps", "steps", "clean_acc"]


def test_autoattack_suite_of_each_profile():
    paper = AutoAttackConfig.from_config(resolve("paper", device="cpu"))
    assert (paper.version, paper.steps, paper.square_queries, paper.eps) == ("standard", 100, 5000, 8 / 255)
    assert paper.deviations(10) == [] and paper.deviations(100) == []
    quick = AutoAttackConfig.from_config(resolve("quick", device="cpu"))
    assert (quick.version, quick.steps) == ("ce+t", 100) and quick.deviations(10) == []
    smoke = AutoAttackConfig.from_config(resolve("smoke", device="cpu"), eps=4 / 255)
    assert (smoke.version, smoke.eps, smoke.seed) == ("ce+t", 4 / 255, 0)
    assert smoke.deviations() == [f"reduced iterations: {smoke.steps} (reference 100)"]


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
