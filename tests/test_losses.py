"""rcl.losses against slow loop implementations of the papers' equations (float64)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rcl.losses import alignment, kmeans_pseudo_labels, nt_xent, supcon, trades_kl, uniformity


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ loop references (written from the papers)
def ref_nt_xent(z1, z2, t, fn_labels=None) -> float:
    """SimCLR eq. 1, one anchor at a time; Gupta et al.: same-label non-positives leave the denominator."""
    b = z1.shape[0]
    v = [x / x.norm() for x in torch.cat([z1, z2]).double()]
    total = 0.0
    for i in range(2 * b):
        p = (i + b) % (2 * b)
        denom = 0.0
        for a in range(2 * b):
            if a == i:
                continue
            if fn_labels is not None and a != p and fn_labels[a % b] == fn_labels[i % b]:
                continue
            denom += math.exp(float(v[i] @ v[a]) / t)
        total += -math.log(math.exp(float(v[i] @ v[p]) / t) / denom)
    return total / (2 * b)


def ref_supcon(features, labels, t, fn_labels=None) -> float:
    """Khosla et al. eq. 2 (L_out), anchors without positives skipped."""
    b, nv, _ = features.shape
    views = [(img, view) for view in range(nv) for img in range(b)]
    features = features.detach().double()
    u = {(img, view): features[img, view] / features[img, view].norm() for img, view in views}
    cls = (lambda img: img) if labels is None else (lambda img: int(labels[img]))
    losses = []
    for i in views:
        positives = [a for a in views if a != i and cls(a[0]) == cls(i[0])]
        if not positives:
            continue
        denom = 0.0
        for a in views:
            if a == i or (fn_labels is not None and a not in positives and fn_labels[a[0]] == fn_labels[i[0]]):
                continue
            denom += math.exp(float(u[i] @ u[a]) / t)
        terms = [math.log(math.exp(float(u[i] @ u[p]) / t) / denom) for p in positives]
        losses.append(-sum(terms) / len(terms))
    return sum(losses) / len(losses) if losses else 0.0


# ------------------------------------------------------------------ NT-Xent and SupCon
@pytest.mark.parametrize("t", [0.07, 0.5])
def test_nt_xent_matches_loop_reference(t):
    z1, z2 = torch.randn(6, 5, generator=_gen(1)) * 3, torch.randn(6, 5, generator=_gen(2))
    loss = nt_xent(z1, z2, t)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref_nt_xent(z1, z2, t), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("t", [0.07, 0.5])
def test_supcon_without_labels_equals_nt_xent(t):
    z1, z2 = torch.randn(8, 16, generator=_gen(3)), torch.randn(8, 16, generator=_gen(4))
    a = nt_xent(z1, z2, t)
    b = supcon(torch.stack([z1, z2], dim=1), None, t)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert b.item() == pytest.approx(ref_supcon(torch.stack([z1, z2], 1), None, t), rel=1e-5)


def test_nt_xent_gradients_match_supcon():
    z1 = torch.randn(5, 7, generator=_gen(5), requires_grad=True)
    z2 = torch.randn(5, 7, generator=_gen(6), requires_grad=True)
    g1 = torch.autograd.grad(nt_xent(z1, z2, 0.2), (z1, z2))
    g2 = torch.autograd.grad(supcon(torch.stack([z1, z2], 1), temperature=0.2), (z1, z2))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("views", [1, 2, 3])
def test_supcon_with_labels_matches_loop_reference(views):
    feats = torch.randn(10, views, 6, generator=_gen(7))
    labels = torch.tensor([0, 1, 2, 0, 1, 3, 0, 2, 4, 4])  # label 3 has one image: no positive when V = 1
    loss = supcon(feats, labels, 0.1)
    assert loss.item() == pytest.approx(ref_supcon(feats, labels, 0.1), rel=1e-5)


def test_supcon_unique_labels_single_view_is_zero_not_nan():
    feats = torch.randn(6, 1, 4, generator=_gen(8), requires_grad=True)
    loss = supcon(feats, torch.arange(6))
    assert torch.isfinite(loss) and loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, feats)
    assert torch.isfinite(grad).all() and torch.all(grad == 0)


def test_supcon_some_anchors_without_positive_have_finite_gradients():
    feats = torch.randn(5, 1, 4, generator=_gen(9), requires_grad=True)
    labels = torch.tensor([0, 0, 1, 2, 3])  # only images 0 and 1 have a positive
    fn = torch.tensor([5, 5, 6, 6, 6])  # drops everything else from the others' denominators
    loss = supcon(feats, labels, 0.5, false_negative_labels=fn)
    (grad,) = torch.autograd.grad(loss, feats)
    assert torch.isfinite(grad).all()
    assert loss.item() == pytest.approx(ref_supcon(feats, labels, 0.5, fn), rel=1e-5)


def test_supcon_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[B, V, D\]"):
        supcon(torch.randn(4, 8))
    with pytest.raises(ValueError, match="labels"):
        supcon(torch.randn(4, 2, 8), torch.arange(3))
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.randn(4, 8), torch.randn(4, 8), 0.0)


# ------------------------------------------------------------------ false negatives (Gupta et al.)
def test_empty_batches_are_refused_not_nan():
    with pytest.raises(ValueError, match=r"z1 and z2 hold no examples \(shape \(0, 8\)\).*NaN"):
        nt_xent(torch.zeros(0, 8), torch.zeros(0, 8))
    with pytest.raises(ValueError, match=r"features hold no views \(shape \(0, 2, 8\)\)"):
        supcon(torch.zeros(0, 2, 8), torch.zeros(0, dtype=torch.long))
    assert float(nt_xent(torch.randn(1, 8), torch.randn(1, 8))) == 0.0  # one pair: its positive is all there is


def test_false_negative_removal_matches_loop_reference():
    z1, z2 = torch.randn(8, 5, generator=_gen(10)), torch.randn(8, 5, generator=_gen(11))
    fn = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2])
    loss = nt_xent(z1, z2, 0.5, false_negative_labels=fn)
    assert loss.item() == pytest.approx(ref_nt_xent(z1, z2, 0.5, fn), rel=1e-5)
    # removing terms from the denominators can only lower the loss
    assert loss < nt_xent(z1, z2, 0.5)
    # same-label pairs are not made positives: this differs from SupCon with those labels
    assert not torch.allclose(loss, supcon(torch.stack([z1, z2], 1), fn, 0.5))
    # SupCon's instance version with the same removal agrees
    torch.testing.assert_close(
        loss, supcon(torch.stack([z1, z2], 1), None, 0.5, false_negative_labels=fn), atol=1e-6, rtol=0
    )


def test_false_negative_removal_supcon_with_labels_matches_reference():
    feats = torch.randn(8, 2, 5, generator=_gen(12))
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    fn = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    loss = supcon(feats, labels, 0.3, false_negative_labels=fn)
    assert loss.item() == pytest.approx(ref_supcon(feats, labels, 0.3, fn), rel=1e-5)


def test_false_negative_removal_with_distinct_labels_is_plain_nt_xent():
    z1, z2 = torch.randn(7, 5, generator=_gen(13)), torch.randn(7, 5, generator=_gen(14))
    plain = nt_xent(z1, z2, 0.5)
    torch.testing.assert_close(nt_xent(z1, z2, 0.5, false_negative_labels=torch.arange(7) * 3), plain)
    torch.testing.assert_close(
        supcon(torch.stack([z1, z2], 1), None, 0.5, false_negative_labels=torch.arange(7)), plain
    )


def test_losses_are_float32_under_bf16_autocast():
    z1, z2 = torch.randn(16, 32, generator=_gen(15)), torch.randn(16, 32, generator=_gen(16))
    expected = nt_xent(z1, z2, 0.07)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        a = nt_xent(z1.bfloat16(), z2.bfloat16(), 0.07)
        b = supcon(torch.stack([z1, z2], 1), None, 0.07)
    assert a.dtype == torch.float32 and b.dtype == torch.float32
    torch.testing.assert_close(b, expected, atol=1e-6, rtol=0)  # float32 inputs stay exact under autocast
    torch.testing.assert_close(a, expected, atol=0.1, rtol=0)  # bf16 inputs: only rounding of z


# ------------------------------------------------------------------ TRADES
def test_trades_kl_zero_when_equal_and_matches_manual_kl():
    clean = torch.randn(5, 10, generator=_gen(17))
    adv = clean + torch.randn(5, 10, generator=_gen(18))
    assert trades_kl(clean, clean).abs().item() < 1e-7
    p, q = clean.double().softmax(1), adv.double().softmax(1)
    manual = (p * (p.log() - q.log())).sum(1).mean()
    assert trades_kl(adv, clean).item() == pytest.approx(manual.item(), rel=1e-5)
    assert trades_kl(adv, clean).item() != pytest.approx(trades_kl(clean, adv).item(), rel=1e-3)  # not symmetric


# ------------------------------------------------------------------ Wang & Isola
def test_alignment_and_uniformity_match_direct_formulas():
    z1, z2 = torch.randn(12, 6, generator=_gen(19)), torch.randn(12, 6, generator=_gen(20))
    u1, u2 = F.normalize(z1.double(), dim=1), F.normalize(z2.double(), dim=1)
    assert alignment(z1, z2).item() == pytest.approx(((u1 - u2).norm(dim=1) ** 2).mean().item(), rel=1e-5)
    assert alignment(z1, z2, alpha=1.0).item() == pytest.approx((u1 - u2).norm(dim=1).mean().item(), rel=1e-5)
    pairs = [math.exp(-2 * float((u1[i] - u1[j]).norm() ** 2)) for i in range(12) for j in range(i + 1, 12)]
    assert uniformity(z1).item() == pytest.approx(math.log(sum(pairs) / len(pairs)), rel=1e-5)
    # identical points: uniformity 0 (its maximum); antipodal pair: log e^{-8} = -8
    assert uniformity(torch.ones(4, 3)).item() == pytest.approx(0.0, abs=1e-6)
    assert uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])).item() == pytest.approx(-8.0, rel=1e-6)
    assert alignment(z1, 5 * z1).item() == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------ k-means pseudo-labels
def _clusters(seed: int, k: int = 4, per: int = 30, dim: int = 8):
    g = _gen(seed)
    centres = F.normalize(torch.randn(k, dim, generator=g), dim=1)
    truth = torch.arange(k).repeat_interleave(per)
    z = (centres[truth] + 0.05 * torch.randn(k * per, dim, generator=g)) * (1 + torch.rand(k * per, 1, generator=g))
    order = torch.randperm(k * per, generator=g)
    return z[order], truth[order]


def _agree_up_to_permutation(pred: torch.Tensor, truth: torch.Tensor, k: int) -> bool:
    mapping = {}
    for c in range(k):
        values = pred[truth == c].unique()
        if values.numel() != 1:
            return False
        mapping[c] = int(values)
    return len(set(mapping.values())) == k


@pytest.mark.parametrize(("init", "n_init"), [("k-means++", 3), ("random", 10)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_recovers_separated_clusters(init, n_init, seed):
    z, truth = _clusters(21 + seed)
    pred = kmeans_pseudo_labels(z, 4, generator=_gen(seed), init=init, n_init=n_init)
    assert pred.dtype == torch.int64 and pred.shape == truth.shape
    assert _agree_up_to_permutation(pred, truth, 4)


def test_kmeans_is_deterministic_for_a_generator():
    z, _ = _clusters(22, k=5, per=20)
    a = kmeans_pseudo_labels(z, 7, generator=_gen(3))
    b = kmeans_pseudo_labels(z, 7, generator=_gen(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="k must be"):
        kmeans_pseudo_labels(z, 1000)
