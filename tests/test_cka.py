"""Tests of rcl.cka against NumPy references written from the papers' formulas, and against the properties CKA is
known for (Kornblith et al. 2019) and the unbiasedness of the minibatch estimator (Nguyen et al. 2021)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from rcl.cka import LayerCKA, MinibatchCKA, layer_cka, linear_cka, rbf_cka, unbiased_hsic

# --------------------------------------------------------------------------- NumPy references


def np_cka(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Kornblith et al. eq. 3-4 with the explicit centering matrix H."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    hsic = lambda a, b: np.trace(a @ h @ b @ h)
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def np_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    return np_cka(x @ x.T, y @ y.T)


def np_rbf_cka(x: np.ndarray, y: np.ndarray, sigma_frac: float) -> float:
    def gram(a):
        a = a.reshape(len(a), -1)
        sq = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
        return np.exp(-sq / (2 * sigma_frac**2 * np.median(sq)))

    return np_cka(gram(x), gram(y))


def np_unbiased_hsic_loops(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Song et al. 2012 eq. 5, every sum written as a loop (diagonals excluded by skipping i == j)."""
    n = k.shape[0]
    tr = sum(k[i, j] * l[j, i] for i in range(n) for j in range(n) if i != j)
    sk = sum(k[i, j] for i in range(n) for j in range(n) if i != j)
    sl = sum(l[i, j] for i in range(n) for j in range(n) if i != j)
    kl = sum(k[i, j] * l[j, m] for i in range(n) for j in range(n) for m in range(n) if i != j and j != m)
    return (tr + sk * sl / ((n - 1) * (n - 2)) - 2 / (n - 2) * kl) / (n * (n - 3))


def np_hsic_u_statistic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """The same estimator from its definition as a U-statistic over distinct 4-tuples (Song et al. 2012, thm. 2)."""
    n = k.shape[0]
    total = 0.0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
    return total / (n * (n - 1) * (n - 2) * (n - 3))


def correlated(n: int, seed: int = 0, d: int = 16, noise: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two representations sharing a latent: y = nonlinear(x W) + noise."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w = torch.randn(d, 2 * d, generator=gen, dtype=torch.float64)
    y = torch.tanh(x @ w / 4) + noise * torch.randn(n, 2 * d, generator=gen, dtype=torch.float64)
    return x, y


# --------------------------------------------------------------------------- full-batch CKA


def test_cka_of_a_representation_with_itself_is_one():
    x, _ = correlated(50)
    assert linear_cka(x, x).item() == pytest.approx(1.0, abs=1e-12)
    assert rbf_cka(x, x).item() == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x).dtype == torch.float64


@pytest.mark.parametrize("n,d", [(40, 8), (10, 60)])  # both code paths: feature space (N > D) and Gram (N <= D)
def test_invariant_to_orthogonal_maps_isotropic_scaling_and_translation(n, d):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.tanh(x[:, : min(d, 5)]) + 0.3 * torch.randn(n, min(d, 5), generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    x_t = 3.7 * x @ q + 5.0
    for cka in (linear_cka, rbf_cka):
        assert cka(x_t, y).item() == pytest.approx(cka(x, y).item(), abs=1e-10)
        assert cka(x_t, x).item() == pytest.approx(1.0, abs=1e-10)


def test_not_invariant_to_an_arbitrary_invertible_linear_map():
    """Unlike CCA, CKA changes when one direction is stretched (it weighs directions by their variance)."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(500, 10, generator=gen, dtype=torch.float64)
    a = (
        torch.diag(torch.tensor([30.0] + [1.0] * 9, dtype=torch.float64))
        @ torch.linalg.qr(torch.randn(10, 10, generator=gen, dtype=torch.float64))[0]
    )
    assert torch.linalg.matrix_rank(a) == 10  # invertible
    assert linear_cka(x, x @ a).item() < 0.5


@pytest.mark.parametrize("n,d1,d2", [(30, 5, 7), (12, 40, 3), (9, 2, 2 * 3 * 4)])
def test_linear_cka_matches_numpy_reference(n, d1, d2):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d1))
    y = np.tanh(x @ rng.normal(size=(d1, d2))) + 0.5 * rng.normal(size=(n, d2))
    expected = np_linear_cka(x, y)
    assert linear_cka(torch.from_numpy(x).float(), torch.from_numpy(y)).item() == pytest.approx(expected, abs=1e-6)
    assert linear_cka(torch.from_numpy(x), torch.from_numpy(y)).item() == pytest.approx(expected, abs=1e-12)
    # trailing dimensions are flattened per example
    y4 = torch.from_numpy(y).reshape(n, -1, 1, 1) if d2 != 24 else torch.from_numpy(y).reshape(n, 2, 3, 4)
    assert linear_cka(torch.from_numpy(x), y4).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("sigma_frac", [0.2, 0.4, 0.8])
@pytest.mark.parametrize("n", [25, 26])  # odd and even counts: the median of an even count averages the middle two
def test_rbf_cka_matches_numpy_reference(sigma_frac, n):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 6))
    y = np.sin(x @ rng.normal(size=(6, 4))) + 0.2 * rng.normal(size=(n, 4))
    got = rbf_cka(torch.from_numpy(x), torch.from_numpy(y), sigma_frac=sigma_frac).item()
    assert got == pytest.approx(np_rbf_cka(x, y, sigma_frac), abs=1e-10)


def test_independent_random_features_have_small_cka():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2000, 10, generator=gen)
    y = torch.randn(2000, 10, generator=gen)
    assert linear_cka(x, y).item() < 0.05
    assert rbf_cka(x[:800], y[:800]).item() < 0.1
    # while a noisy function of x keeps a clear similarity
    assert linear_cka(x, x + 0.5 * y).item() > 0.7


def test_full_batch_errors():
    with pytest.raises(ValueError, match="same N"):
        linear_cka(torch.randn(10, 3), torch.randn(11, 3))
    for n in (1, 2):  # two examples gave CKA 1.0 for any representations
        with pytest.raises(ValueError, match=rf"x must have at least 3 examples along dim 0, got shape \({n}, 3\)"):
            linear_cka(torch.randn(n, 3), torch.randn(n, 5))
        with pytest.raises(ValueError, match="at least 3 examples.*CKA is 1 whatever"):
            rbf_cka(torch.randn(n, 3), torch.randn(n, 5))
    gen = torch.Generator().manual_seed(0)
    x3, y3 = torch.randn(3, 3, generator=gen), torch.randn(3, 5, generator=gen)
    assert linear_cka(x3, y3).item() < 0.99  # 3 examples already tell representations apart
    with pytest.raises(ValueError, match="sigma_frac"):
        rbf_cka(torch.randn(10, 3), torch.randn(10, 3), sigma_frac=0.0)


# --------------------------------------------------------------------------- unbiased HSIC and minibatch CKA


@pytest.mark.parametrize("n", [5, 7])
def test_unbiased_hsic_matches_the_u_statistic_and_the_loop_formula(n):
    rng = np.random.default_rng(n)
    a, b, c = rng.normal(size=(n, 3)), rng.normal(size=(n, 4)), rng.normal(size=(n, 2))
    grams = [a @ a.T, b @ b.T + 1.0, np.exp(-((c[:, None] - c[None]) ** 2).sum(-1))]  # linear, shifted, RBF
    got = unbiased_hsic(torch.from_numpy(np.stack(grams[:2])), torch.from_numpy(np.stack(grams)))
    assert got.shape == (2, 3) and got.dtype == torch.float64
    for i, j in itertools.product(range(2), range(3)):
        assert got[i, j].item() == pytest.approx(np_hsic_u_statistic(grams[i], grams[j]), abs=1e-10)
        assert got[i, j].item() == pytest.approx(np_unbiased_hsic_loops(grams[i], grams[j]), abs=1e-10)


def test_one_update_accumulates_the_per_batch_unbiased_hsic():
    rng = np.random.default_rng(5)
    feats = [rng.normal(size=(8, 3)), rng.normal(size=(8, 2, 2)) + 3.0, rng.normal(size=(8, 5))]
    cka = MinibatchCKA(3)
    cka.update([torch.from_numpy(f).float() for f in feats])
    flat = [f.reshape(8, -1) for f in feats]
    for i, j in itertools.product(range(3), range(3)):
        expected = np_unbiased_hsic_loops(flat[i] @ flat[i].T, flat[j] @ flat[j].T)  # uncentred features
        assert cka.hsic_xy[i, j].item() == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert torch.allclose(cka.hsic_xx, cka.hsic_xy.diagonal())
    assert cka.n_batches == 1 and cka.n_examples == 8
    # a second batch adds its own HSIC
    cka.update([torch.from_numpy(f).float() for f in feats])
    expected = 2 * np_unbiased_hsic_loops(flat[0] @ flat[0].T, flat[2] @ flat[2].T)
    assert cka.hsic_xy[0, 2].item() == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_minibatch_estimate_is_close_to_the_full_batch_cka():
    x, y = correlated(4096, seed=6, noise=0.7)
    full = linear_cka(x, y).item()
    cka = MinibatchCKA(1, 1)
    for xb, yb in zip(x.split(256), y.split(256)):
        cka.update([xb], [yb])
    assert 0.2 < full < 0.95  # a non-trivial similarity
    assert cka.compute()[0, 0].item() == pytest.approx(full, abs=0.05)


def test_unbiased_minibatch_estimate_removes_the_small_batch_bias():
    """Independent features in small batches: the biased per-batch CKA is large, the unbiased estimate is ~0
    (why Nguyen et al. use the unbiased HSIC)."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(16 * 64, 64, generator=gen)
    y = torch.randn(16 * 64, 64, generator=gen)
    cka = MinibatchCKA(1, 1)
    biased = []
    for xb, yb in zip(x.split(16), y.split(16)):
        cka.update([xb], [yb])
        biased.append(linear_cka(xb, yb).item())
    assert np.mean(biased) > 0.5
    assert abs(cka.compute()[0, 0].item()) < 0.05


def test_self_matrix_is_symmetric_with_unit_diagonal_and_equals_the_cross_version():
    x, y = correlated(512, seed=8)
    layers = [x, y, x @ torch.randn(16, 3, dtype=torch.float64) ** 2, torch.relu(y)]
    self_cka, cross_cka = MinibatchCKA(4), MinibatchCKA(4, 4)
    for idx in torch.arange(512).split(128):
        batch = [f[idx] for f in layers]
        self_cka.update(batch)
        cross_cka.update(batch, batch)
    m = self_cka.compute()
    assert m.shape == (4, 4) and m.dtype == torch.float64
    assert torch.allclose(m, m.T, atol=1e-12)
    assert torch.allclose(m.diagonal(), torch.ones(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(cross_cka.compute(), m, atol=1e-12)
    assert float(m[0, 1]) < 0.99  # the off-diagonal is informative


def test_cross_matrix_has_the_requested_shape():
    x, y = correlated(64, seed=9)
    cka = MinibatchCKA(2, 3)
    cka.update([x, y], [y, x, torch.cat([x, y], dim=1)])
    m = cka.compute()
    assert m.shape == (2, 3)
    assert m[0, 1].item() == pytest.approx(1.0, abs=1e-12) and m[1, 0].item() == pytest.approx(1.0, abs=1e-12)


def test_minibatch_errors():
    x = torch.randn(8, 3)
    with pytest.raises(ValueError, match="at least 4"):
        MinibatchCKA(1).update([torch.randn(3, 5)])
    with pytest.raises(ValueError, match="expected 2"):
        MinibatchCKA(2).update([x])
    with pytest.raises(ValueError, match="self version"):
        MinibatchCKA(1).update([x], [x])
    with pytest.raises(ValueError, match="features_y"):
        MinibatchCKA(1, 1).update([x])
    with pytest.raises(ValueError, match="B = 8"):
        MinibatchCKA(2).update([x, torch.randn(9, 3)])
    with pytest.raises(RuntimeError, match="update"):
        MinibatchCKA(1).compute()
    with pytest.raises(ValueError, match="n_layers"):
        MinibatchCKA(0)


# --------------------------------------------------------------------------- layer_cka on a model with taps


class TapNet(nn.Module):
    """The ResNet tap interface in miniature: forward_taps(x, names) -> {name: activation}."""

    tap_names = ["stem", "block", "pool"]

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16, 10)

    def forward_taps(self, x, names=None):
        out = {"stem": self.stem(x)}
        out["block"] = self.block(out["stem"])
        out["pool"] = out["block"].mean(dim=(2, 3))
        return out if names is None else {n: out[n] for n in names}

    def forward(self, x):
        return self.fc(self.forward_taps(x)["pool"])


@dataclass
class FakeSplit:  # what rcl.data.Split holds
    images: torch.Tensor
    labels: torch.Tensor


def images(n: int = 40, seed: int = 10) -> FakeSplit:
    gen = torch.Generator().manual_seed(seed)
    return FakeSplit(torch.randint(0, 256, (n, 3, 8, 8), generator=gen, dtype=torch.uint8), torch.zeros(n))


def test_layer_cka_self_matrix_from_a_split_or_a_tensor():
    model = TapNet().train()
    data = images()
    result = layer_cka(model, data, batch_size=16)
    assert isinstance(result, LayerCKA)
    matrix, taps_a, taps_b = result
    assert taps_a == taps_b == ["stem", "block", "pool"]
    assert matrix.shape == (3, 3) and matrix.dtype == torch.float64
    assert torch.allclose(matrix.diagonal(), torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(matrix, matrix.T, atol=1e-12)
    assert model.training and model.stem[1].training  # mode restored
    # the same images as a float tensor in [0, 1] give the same matrix (40 = 16 + 16 + 8 examples)
    again = layer_cka(model, data.images.float() / 255, batch_size=16)
    assert torch.allclose(again.matrix, matrix, atol=1e-12)
    # and the batches' features are the eval-mode ones: compare with a direct computation
    model.eval()
    with torch.no_grad():
        feats = [model.forward_taps(xb) for xb in (data.images.float() / 255).split(16)]
    direct = MinibatchCKA(3)
    for f in feats:
        direct.update(list(f.values()))
    assert torch.allclose(direct.compute(), matrix, atol=1e-12)


def test_layer_cka_cross_model_taps_and_inputs():
    model_a, model_b = TapNet(0).eval(), TapNet(1).eval()
    data = images()
    # identical second model through the cross path == self version
    same = layer_cka(model_a, data, model_b=model_a, batch_size=16).matrix
    assert torch.allclose(same, layer_cka(model_a, data, batch_size=16).matrix, atol=1e-12)
    # a chosen subset of taps, two different models
    matrix, taps_a, taps_b = layer_cka(model_a, data, model_b=model_b, taps=["pool", "stem"], batch_size=16)
    assert taps_a == taps_b == ["pool", "stem"] and matrix.shape == (2, 2)
    assert float(matrix[1, 1]) < 0.999  # different weights, different representations
    # clean vs perturbed inputs for the same model: identity keeps a unit diagonal, noise lowers it
    ident = layer_cka(model_a, data, inputs_b=lambda x: x, batch_size=16).matrix
    assert torch.allclose(ident.diagonal(), torch.ones(3, dtype=torch.float64), atol=1e-12)
    gen = torch.Generator().manual_seed(0)
    noisy = layer_cka(
        model_a, data, inputs_b=lambda x: (x + 0.3 * torch.randn(x.shape, generator=gen)).clamp(0, 1), batch_size=16
    ).matrix
    assert float(noisy.diagonal().max()) < 0.999


def test_layer_cka_with_an_attack_as_inputs_b_and_max_examples():
    from rcl.attacks import pgd

    model = TapNet().eval()
    data = images(n=40)
    labels = torch.zeros(40, dtype=torch.long)
    seen = []

    def attack(x):  # needs gradients: layer_cka calls it outside no_grad
        seen.append(x.shape[0])
        return pgd(model, x, labels[: x.shape[0]], 8 / 255, 2 / 255, 2)

    matrix, _, _ = layer_cka(model, data, inputs_b=attack, max_examples=24, batch_size=16)
    assert seen == [16, 8]  # stopped at 24 examples
    assert matrix.shape == (3, 3) and torch.isfinite(matrix).all()
    assert all(p.grad is None for p in model.parameters())


def test_layer_cka_errors():
    with pytest.raises(ValueError, match="forward_taps"):
        layer_cka(nn.Linear(3, 3), torch.rand(8, 3, 4, 4), batch_size=8)
    with pytest.raises(ValueError, match="at least 4"):
        layer_cka(TapNet(), torch.rand(3, 3, 8, 8), batch_size=8)
    with pytest.raises(ValueError, match="batch_size"):
        layer_cka(TapNet(), torch.rand(8, 3, 8, 8), batch_size=2)
    with pytest.raises(ValueError, match="unknown taps"):
        layer_cka(TapNet(), torch.rand(8, 3, 8, 8), taps=["layer9"], batch_size=8)


# --------------------------------------------------------------------------- Gram matrices and the bootstrap
def test_cka_from_grams_is_one_minibatch_holding_every_example():
    from rcl.cka import _linear_grams, cka_from_grams

    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(64, d, generator=gen, dtype=torch.float64) for d in (5, 12, 30)]
    mixed = [feats[0] @ torch.randn(5, 7, generator=gen, dtype=torch.float64), feats[2]]
    reference = MinibatchCKA(3, 2)
    reference.update(feats, mixed)
    grams = _linear_grams(feats, 64, None)
    torch.testing.assert_close(cka_from_grams(grams, _linear_grams(mixed, 64, None)), reference.compute())
    torch.testing.assert_close(cka_from_grams(grams, grams).diagonal(), torch.ones(3, dtype=torch.float64))


def test_tap_grams_give_the_layer_matrix_of_the_network():
    from conftest import seeded_classifier

    from rcl.cka import cka_from_grams, tap_grams

    encoder = seeded_classifier(4).encoder.eval()
    x = torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    names, grams = tap_grams(encoder, x, batch_size=16)
    assert grams.shape == (len(names), 40, 40) and grams.dtype == torch.float64
    one_batch = layer_cka(encoder, x, batch_size=40)
    assert names == one_batch.taps_a
    torch.testing.assert_close(cka_from_grams(grams, grams), one_batch.matrix, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="x must be float images"):
        tap_grams(encoder, (255 * x).to(torch.uint8))


def _two_layers(n: int, gen: torch.Generator, mix: float) -> torch.Tensor:
    """Gram stack [2, n, n] of a layer and a second one that is ``mix`` of it plus independent noise."""
    from rcl.cka import _linear_grams

    a = torch.randn(n, 8, generator=gen, dtype=torch.float64)
    b = mix * a + torch.randn(n, 8, generator=gen, dtype=torch.float64)
    return _linear_grams([a, b], n, None)


def _redundancy(samples: torch.Tensor) -> torch.Tensor:
    return samples[:, 0, 1]  # [1 + resamples]: the CKA between the two layers


def test_bootstrap_interval_covers_the_spread_of_fresh_samples():
    """The half-sample interval is as wide as the estimate's own spread over independent draws of the images."""
    from rcl.cka import GramBootstrap, cka_from_grams

    gen = torch.Generator().manual_seed(2)
    fresh = [cka_from_grams(g, g)[0, 1] for g in (_two_layers(300, gen, 0.7) for _ in range(40))]
    spread = torch.stack(fresh).std().item()
    boot = GramBootstrap({"m": _two_layers(300, gen, 0.7)}, resamples=400, seed=3)
    value, low, high = GramBootstrap.interval(_redundancy(boot.cka("m", "m")))
    assert low < value < high
    assert 0.6 < (high - low) / (2 * 1.96 * spread) < 1.6, (high - low, spread)


def test_a_cka_difference_inside_its_bootstrap_interval_is_undecided(capsys):
    from rcl import verdicts
    from rcl.cka import GramBootstrap

    gen = torch.Generator().manual_seed(4)
    grams = {
        "ST": _two_layers(200, gen, 0.7),
        "AT same": _two_layers(200, gen, 0.7),
        "AT more": _two_layers(200, gen, 2),
    }
    boot = GramBootstrap(grams, resamples=200)
    claims = verdicts.Claims(None)
    for name in ("AT same", "AT more"):
        diff = _redundancy(boot.cka(name, name)) - _redundancy(boot.cka("ST", "ST"))
        value, low, high = GramBootstrap.interval(diff)
        claims.interval(f"{name} above ST", value, low, high, evidence="CKA", n=200, kind="observation")
    assert [c.verdict for c in claims] == ["undecided", "holds"]
    assert claims.items[0].low <= 0 <= claims.items[0].high and "(95 % interval)" in claims.items[0].evidence
    # the same half-samples on both sides: a model against itself has a zero-width interval
    assert GramBootstrap.interval(_redundancy(boot.cka("ST", "ST")) * 0) == (0.0, 0.0, 0.0)
    with pytest.raises(KeyError, match="known: ST"):
        boot.cka("ST", "nope")


def test_cka_claims_name_missing_and_weak_models_and_decide_the_rest_with_intervals(capsys):
    """rcl.cka_verdicts: a part whose model this run lacks, or whose model is below the floor, is untestable with the
    reason; a clear redundancy difference holds, with its interval saved."""
    from rcl import cka_verdicts, verdicts
    from rcl.cka import GramBootstrap

    gen = torch.Generator().manual_seed(5)
    grams = {}
    for scheme in ("SL", "CL", "SCL"):
        grams[f"{scheme}/ST/clean"] = _two_layers(200, gen, 0.3)
        grams[f"{scheme}/AT/clean"] = _two_layers(200, gen, 3.0)  # far more alike layers: more redundant
    evidence = cka_verdicts.CkaEvidence(
        GramBootstrap(grams, resamples=50), ["stem", "pool"], {("SCL", "AT"): "clean 12 %"}
    )
    claims = verdicts.Claims(None)
    cka_verdicts.redundancy_claims(claims, evidence)
    by_part = {(c.paper, c.part): c for c in claims}
    layer = {s: by_part["ghofrani-at-layer-redundancy", s] for s in ("SL", "CL", "SCL")}
    assert layer["SL"].verdict == layer["CL"].verdict == "holds" and layer["SL"].low > 0
    assert layer["SCL"].verdict == "untestable" and "SCL / AT: clean 12 %" in layer["SCL"].evidence
    missing = by_part["ghofrani-ft-redundancy-cl", ""]
    assert missing.verdict == "untestable" and "CL / Full-AT not in this run" in missing.evidence
    table = verdicts.paper_verdicts(claims.frame()).set_index("paper")
    assert table.verdict["ghofrani-at-layer-redundancy"] == "untestable"  # one part below the floor
