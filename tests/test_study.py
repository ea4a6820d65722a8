"""rcl.study's evaluation helpers: subsets, adversarial batches and the three CKA maps of chapter 06."""

from __future__ import annotations

import pytest
import torch

from rcl import study
from rcl.attacks import AttackConfig
from rcl.cka import layer_cka
from rcl.data import synthetic_dataset
from rcl.models import Classifier, resnet18


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(n_train=40, n_test=40, num_classes=4, seed=0)


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return Classifier(resnet18(width=4), 4).eval()


def test_eval_subset_is_balanced_and_capped(data):
    subset = study.eval_subset(data, 20, seed=1)
    assert len(subset) == 20
    assert torch.bincount(subset.labels, minlength=4).tolist() == [5, 5, 5, 5]
    assert len(study.eval_subset(data, None)) == len(study.eval_subset(data, 1000)) == 40
    with pytest.raises(ValueError, match="n must be >= 1"):
        study.eval_subset(data, 0)


def test_adversarial_batch_stays_in_the_ball(data, classifier):
    atk = AttackConfig(eps=4 / 255, alpha=0.01, steps=2)
    x, y, x_adv = study.adversarial_batch(classifier, data.test, atk, n=12)
    assert x.shape == x_adv.shape == (12, 3, 32, 32) and y.tolist() == data.test.labels[:12].tolist()
    assert (x_adv - x).abs().max() <= atk.eps + 1e-6
    assert 0 <= x_adv.min() and x_adv.max() <= 1
    assert (x_adv != x).any()


def test_cka_maps_pair_each_clean_batch_with_its_own_adversarial_batch(data, classifier):
    x = data.test.images[:24].float() / 255
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 0.1
    x_adv = (x + noise).clamp(0, 1)
    maps = study.cka_maps(classifier.encoder, x, x_adv, batch_size=8)  # three minibatches
    clean = maps["clean"].matrix
    assert torch.allclose(clean, clean.T) and torch.allclose(
        clean.diagonal(), torch.ones(len(clean), dtype=clean.dtype)
    )
    # x_adv == x: clean-vs-adversarial is the clean map
    same = study.cka_maps(classifier.encoder, x, x.clone(), batch_size=8)["clean-vs-adversarial"].matrix
    assert torch.allclose(same, clean, atol=1e-9)
    # the cross map is computed against the matching batch of x_adv, in order
    expected = layer_cka(classifier.encoder, x, inputs_b=lambda b: (b + noise[: len(b)]).clamp(0, 1), batch_size=24)
    cross = study.cka_maps(classifier.encoder, x, x_adv, batch_size=24)["clean-vs-adversarial"].matrix
    assert torch.allclose(cross, expected.matrix, atol=1e-9)


def test_cka_maps_refuses_mismatched_inputs(classifier):
    with pytest.raises(ValueError, match="same examples"):
        study.cka_maps(classifier.encoder, torch.rand(8, 3, 32, 32), torch.rand(6, 3, 32, 32))


def test_evaluate_scenario_rejects_unknown_threat_model(data):
    from rcl.profiles import resolve

    with pytest.raises(ValueError, match="unknown threat model"):
        study.evaluate_scenario(resolve("smoke", device="cpu"), data, "SL", "ST", threat_models=("III",))


def test_a_model_is_the_same_whichever_order_or_history_trains_it(tmp_path):
    """Issue 12.4: initial weights come from (run seed, model name), not from the global RNG's history."""
    from rcl.profiles import resolve

    data = synthetic_dataset(n_train=32, n_test=8, num_classes=4, seed=0)
    sizes = dict(device="cpu", width=4, head_dim=8, supervised_epochs=1, pretrain_epochs=1, batch_size=16)
    first, second = (resolve("smoke", run_dir=tmp_path / name, **sizes) for name in ("first", "second"))

    sl_first = study.pretrain(first, data, "SL", progress=False)
    cl_first = study.pretrain(first, data, "CL", progress=False)
    torch.rand(1000)  # another chapter drew from the global RNG in between
    cl_second = study.pretrain(second, data, "CL", progress=False)
    sl_second = study.pretrain(second, data, "SL", progress=False)

    for a, b in ((sl_first, sl_second), (cl_first, cl_second)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    state = torch.random.get_rng_state()
    study.pretrain(first, data, "SL", progress=False)  # loading does not touch the caller's RNG either
    assert torch.equal(state, torch.random.get_rng_state())
    other_seed = resolve("smoke", run_dir=tmp_path / "other", seed=1, **{k: v for k, v in sizes.items()})
    sl_other = study.pretrain(other_seed, data, "SL", progress=False)
    assert not torch.equal(sl_other.fc.weight, sl_first.fc.weight)
