"""Tests of rcl.attacks: the threat model is respected, the attack works, it matches torchattacks, and it leaves
the model as it found it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rcl.attacks import AttackConfig, attack_mode, contrastive_loss_fn, fgsm, pgd, sign_coherence


def small_cnn(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """A tiny CNN with BatchNorm (so model modes matter), in eval mode unless a test says otherwise."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    # non-trivial running statistics, so eval-mode BN is not the identity
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.to(dtype).eval()


def batch(n: int = 16, size: int = 16, seed: int = 1, dtype: torch.dtype = torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=gen, dtype=dtype)
    x[0] = 0.0  # saturated images: the [0, 1] clipping must act
    x[1] = 1.0
    y = torch.randint(0, 10, (n,), generator=gen)
    return x, y


def per_sample_ce(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


# --------------------------------------------------------------------------- threat model


@pytest.mark.parametrize("norm,eps,alpha", [("linf", 8 / 255, 2 / 255), ("l2", 0.5, 0.1)])
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_stays_in_eps_ball_and_in_unit_range(norm, eps, alpha, random_start):
    model = small_cnn()
    x, y = batch()
    x_adv = pgd(model, x, y, eps, alpha, 7, norm=norm, random_start=random_start)
    delta = (x_adv - x).flatten(1)
    dist = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    assert x_adv.shape == x.shape and x_adv.dtype == torch.float32
    assert float(dist.max()) <= eps + 1e-6
    assert float(dist.min()) > 0.5 * eps  # it moved: 7 steps of alpha >= eps / 4 reach far into the ball
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert not x_adv.requires_grad and x_adv.grad_fn is None


def separable_batch(n: int = 40, size: int = 12, seed: int = 2):
    """Images whose class is visible (a per-class colour pattern plus noise), so a tiny CNN learns them fast."""
    gen = torch.Generator().manual_seed(seed)
    patterns = torch.rand(10, 3, size, size, generator=gen)
    y = torch.arange(n) % 10
    x = (0.5 * patterns[y] + 0.5 * torch.rand(n, 3, size, size, generator=gen)).clamp(0, 1)
    return x, y


def fitted_cnn(x, y, steps: int = 40):
    """small_cnn fitted to (x, y), so that clean predictions are mostly right and an attack has something to undo."""
    model = small_cnn().train()
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture(scope="module")
def fitted():
    x, y = separable_batch()
    return fitted_cnn(x, y), x, y


@pytest.mark.parametrize("norm,eps,alpha", [("linf", 0.03, 0.0075), ("l2", 1.0, 0.25)])
def test_pgd_raises_the_loss_more_than_clean_and_random_noise(fitted, norm, eps, alpha):
    model, x, y = fitted
    gen = torch.Generator().manual_seed(3)
    if norm == "linf":  # random noise of the same size: a random corner of the ball
        noise = eps * torch.randint(0, 2, x.shape, generator=gen).float().mul_(2).sub_(1)
    else:
        noise = torch.randn(x.shape, generator=gen)
        noise *= eps / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    x_noise = (x + noise).clamp(0, 1)
    x_adv = pgd(model, x, y, eps, alpha, 10, norm=norm, generator=torch.Generator().manual_seed(0))
    clean, noisy, adv = (per_sample_ce(model, v, y) for v in (x, x_noise, x_adv))
    assert float(adv.mean()) > 2 * float(noisy.mean()) + 0.2
    assert float(adv.mean()) > 2 * float(clean.mean()) + 0.2
    assert float((adv > clean).float().mean()) >= 0.95  # nearly every example got worse
    with torch.no_grad():  # and predictions that were right are flipped
        acc_clean, acc_adv = ((model(v).argmax(1) == y).float().mean() for v in (x, x_adv))
    assert float(acc_clean) > 0.8 and float(acc_adv) < float(acc_clean) - 0.3


def test_l_inf_step_and_l2_step_have_the_requested_size():
    """One step from the clean point, inside [0, 1] and the ball: L-inf moves every pixel by alpha, L2 by a vector of
    Euclidean length alpha per sample (the gradient is normalised per sample, not per batch)."""
    model = small_cnn()
    x, y = batch(n=8)
    x = 0.25 + 0.5 * x  # away from 0 and 1: no clipping
    x_inf = pgd(model, x, y, eps=0.1, alpha=0.01, steps=1, random_start=False)
    moved = (x_inf - x).abs().flatten(1)
    assert torch.allclose(moved.amax(dim=1), torch.full((8,), 0.01), atol=1e-6)
    assert float((moved > 0.0099).float().mean()) > 0.99  # the sign step moves (almost) every pixel
    x_l2 = pgd(model, x, y, eps=1.0, alpha=0.2, steps=1, norm="l2", random_start=False)
    assert torch.allclose((x_l2 - x).flatten(1).norm(dim=1), torch.full((8,), 0.2), atol=1e-5)


def test_pgd_of_one_example_does_not_depend_on_the_rest_of_the_batch():
    """Mean-reduced cross-entropy scales every gradient by 1/B; sign and per-sample normalised steps undo that."""
    model = small_cnn(dtype=torch.float64)
    x, y = batch(n=12, dtype=torch.float64)
    for norm, eps, alpha in (("linf", 8 / 255, 2 / 255), ("l2", 0.5, 0.1)):
        full = pgd(model, x, y, eps, alpha, 5, norm=norm, random_start=False)
        part = pgd(model, x[:3], y[:3], eps, alpha, 5, norm=norm, random_start=False)
        assert full.dtype == torch.float64
        assert torch.allclose(full[:3], part, atol=1e-9)


# --------------------------------------------------------------------------- independent references


def test_pgd_linf_matches_torchattacks():
    torchattacks = pytest.importorskip("torchattacks")
    model = small_cnn()
    x, y = batch(n=32)
    ours = pgd(model, x, y, 8 / 255, 2 / 255, 10, random_start=False)
    theirs = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=False)(x, y)
    # same update / projection / clipping order, same float32 ops: identical up to rounding
    assert float((ours - theirs).abs().max()) < 1e-6


def test_pgd_l2_matches_torchattacks():
    torchattacks = pytest.importorskip("torchattacks")
    model = small_cnn()
    x, y = batch(n=32)
    ours = pgd(model, x, y, 0.5, 0.1, 10, norm="l2", random_start=False)
    theirs = torchattacks.PGDL2(model, eps=0.5, alpha=0.1, steps=10, random_start=False)(x, y)
    assert float((ours - theirs).abs().max()) < 1e-5


def test_fgsm_is_the_sign_of_the_input_gradient():
    torchattacks = pytest.importorskip("torchattacks")
    model = small_cnn()
    x, y = batch()
    eps = 4 / 255
    # reference written out: ordinary backward on a copy of the input
    x_ref = x.clone().requires_grad_(True)
    F.cross_entropy(model(x_ref), y).backward()
    expected = (x + eps * x_ref.grad.sign()).clamp(0, 1)
    model.zero_grad(set_to_none=True)
    ours = fgsm(model, x, y, eps)
    assert torch.allclose(ours, expected, atol=1e-7)
    assert torch.equal(ours, pgd(model, x, y, eps, alpha=eps, steps=1, random_start=False))
    assert torch.allclose(ours, torchattacks.FGSM(model, eps=eps)(x, y), atol=1e-7)


def test_contrastive_attack_raises_the_nt_xent_loss():
    losses = pytest.importorskip("rcl.losses")
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    x, _ = batch(n=16)
    with torch.no_grad():
        z_clean = encoder(x)
    loss_fn = contrastive_loss_fn(0.5)
    x_adv = pgd(encoder, x, z_clean, 8 / 255, 2 / 255, 5, loss_fn=loss_fn, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = losses.nt_xent(encoder(x), z_clean, 0.5)
        after = losses.nt_xent(encoder(x_adv), z_clean, 0.5)
    assert float(after) > float(before) + 0.01
    assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6


# --------------------------------------------------------------------------- model state


def _flags(model):
    return [m.training for m in model.modules()]


@pytest.mark.parametrize("mode", ["eval", "train", "keep"])
def test_training_flags_are_restored_module_by_module(mode):
    x, y = batch(n=8)
    for setup in ("train", "eval", "mixed"):
        model = small_cnn()
        if setup == "train":
            model.train()
        elif setup == "mixed":  # e.g. a frozen feature extractor under a training head
            model.train()
            model[1].eval()
            model[4].eval()
        before = _flags(model)
        pgd(model, x, y, 8 / 255, 2 / 255, 2, model_mode=mode)
        assert _flags(model) == before, (mode, setup)


def test_attack_mode_sets_the_mode_inside_and_restores_after_an_error():
    model = small_cnn().train()
    model[1].eval()
    before = _flags(model)
    with pytest.raises(RuntimeError, match="boom"), attack_mode(model, "eval"):
        assert not any(_flags(model))
        raise RuntimeError("boom")
    assert _flags(model) == before
    with attack_mode(model, "train"):
        assert all(_flags(model))
    with attack_mode(model, "keep"):
        assert _flags(model) == before


def test_train_mode_updates_batchnorm_statistics_and_eval_mode_does_not():
    x, y = batch()
    for mode, should_change in (("eval", False), ("keep", False), ("train", True)):
        model = small_cnn()  # eval mode: "keep" leaves it there
        bn = model[1]
        mean, var = bn.running_mean.clone(), bn.running_var.clone()
        pgd(model, x, y, 8 / 255, 2 / 255, 3, model_mode=mode)
        changed = not (torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var))
        assert changed == should_change, mode
        assert int(bn.num_batches_tracked) == (3 if should_change else 0)


def test_parameter_gradients_are_never_touched():
    model = small_cnn()
    x, y = batch()
    pgd(model, x, y, 8 / 255, 2 / 255, 3)
    fgsm(model, x, y, 8 / 255)
    assert all(p.grad is None for p in model.parameters())
    # existing gradients (an attack inside a training step) are left exactly as they were
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    pgd(model, x, y, 0.5, 0.1, 3, norm="l2", model_mode="train")
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())


def test_inputs_are_not_modified_and_work_under_no_grad():
    model = small_cnn()
    x, y = batch()
    x_copy = x.clone()
    with torch.no_grad():  # evaluation code often wraps everything in no_grad
        x_adv = pgd(model, x, y, 8 / 255, 2 / 255, 3)
    assert torch.equal(x, x_copy)
    assert float((x_adv - x).abs().max()) > 4 / 255


# --------------------------------------------------------------------------- randomness and trivial cases


def test_same_generator_seed_gives_the_same_attack():
    model = small_cnn()
    x, y = batch()
    for norm, eps, alpha in (("linf", 8 / 255, 2 / 255), ("l2", 0.5, 0.1)):
        runs = [
            pgd(model, x, y, eps, alpha, 2, norm=norm, generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8)
        ]
        assert torch.equal(runs[0], runs[1])
        assert not torch.equal(runs[0], runs[2])
    # the global RNG is used when no generator is passed
    torch.manual_seed(5)
    a = pgd(model, x, y, 8 / 255, 2 / 255, 1)
    torch.manual_seed(5)
    assert torch.equal(a, pgd(model, x, y, 8 / 255, 2 / 255, 1))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_fills_the_ball(norm):
    """With an (almost) zero step, what remains is the random start: inside the ball, spread over it."""
    model = small_cnn()
    x, y = batch(n=64)
    x = 0.25 + 0.5 * x
    eps = 0.1 if norm == "linf" else 1.0
    x_adv = pgd(model, x, y, eps, 1e-9, 1, norm=norm, generator=torch.Generator().manual_seed(0))
    delta = (x_adv - x).flatten(1)
    if norm == "linf":
        assert float(delta.abs().max()) <= eps + 1e-6
        assert abs(float(delta.mean())) < 0.01 and float(delta.abs().mean()) == pytest.approx(eps / 2, rel=0.05)
    else:
        radius = delta.norm(dim=1)
        assert float(radius.max()) <= eps + 1e-6
        assert 0.3 * eps < float(radius.mean()) < 0.7 * eps  # radius uniform in [0, eps] (torchattacks.PGDL2)


def test_trades_start_is_a_small_gaussian_around_x():
    """TRADES' released start, x + 0.001 * randn (whatever eps), clipped here to [0, 1]; a zero step keeps it."""
    model = small_cnn()
    x, y = batch(n=64)
    x = 0.25 + 0.5 * x
    x_adv = pgd(model, x, y, 8 / 255, 1e-12, 1, random_start="normal", generator=torch.Generator().manual_seed(0))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x_adv, x + 0.001 * noise, rtol=0, atol=1e-6)
    cfg = AttackConfig(8 / 255, 2 / 255, 2, random_start="normal")
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(
        cfg.run(model, x, y, generator=gen()),
        pgd(model, x, y, 8 / 255, 2 / 255, 2, random_start="normal", generator=gen()),
    )
    with pytest.raises(ValueError, match="random_start"):
        AttackConfig(8 / 255, 2 / 255, 2, random_start="gaussian")
    with pytest.raises(ValueError, match="random_start"):
        pgd(model, x, y, 8 / 255, 2 / 255, 1, random_start="gaussian")


@pytest.mark.parametrize("eps,steps", [(0.0, 5), (8 / 255, 0)])
def test_zero_budget_returns_a_detached_copy_of_x(eps, steps):
    model = small_cnn()
    x, y = batch()
    x_in = x.clone().requires_grad_(True)
    out = pgd(model, x_in, y, eps, 2 / 255, steps, random_start=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, x) and out.data_ptr() != x_in.data_ptr() and not out.requires_grad


def test_attack_config_runs_pgd_and_validates_when_built():
    model = small_cnn()
    x, y = batch()
    cfg = AttackConfig(eps=0.5, alpha=0.1, steps=3, norm="l2")
    out = cfg.run(model, x, y, generator=torch.Generator().manual_seed(1))
    expected = pgd(model, x, y, 0.5, 0.1, 3, norm="l2", generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, expected)
    with pytest.raises(ValueError, match="norm"):
        AttackConfig(8 / 255, 2 / 255, 10, norm="l1")
    with pytest.raises(ValueError, match="eps"):
        AttackConfig(-1.0, 2 / 255, 10)
    with pytest.raises(AttributeError):
        cfg.eps = 1.0  # frozen: a config can be shared safely


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(x=torch.rand(3, 16, 16)), "4-D"),
        (dict(x=torch.rand(2, 3, 16, 16) + 1.01), r"\[0, 1\]"),
        (dict(x=torch.rand(2, 3, 16, 16) - 0.5), r"\[0, 1\]"),
        (dict(x=torch.randint(0, 255, (2, 3, 16, 16), dtype=torch.uint8)), "float"),
        (dict(eps=-0.1), "eps must be a finite number >= 0"),
        (dict(eps=float("nan")), "eps"),
        (dict(alpha=0.0), "alpha must be a finite number > 0"),
        (dict(alpha=-1.0), "alpha"),
        (dict(steps=-1), "steps must be an integer >= 0"),
        (dict(steps=2.5), "steps must be an int"),
        (dict(norm="l1"), "'linf', 'l2'"),
        (dict(model_mode="training"), "'eval', 'train', 'keep'"),
        (dict(target=torch.zeros(3, dtype=torch.long)), r"\[B\] = \[2\]"),
        (dict(target=torch.zeros(2, 10)), "loss_fn"),
    ],
)
def test_bad_inputs_raise_value_errors_saying_what_to_do(change, match):
    model = small_cnn()
    args = dict(x=torch.rand(2, 3, 16, 16), target=torch.zeros(2, dtype=torch.long), eps=8 / 255, alpha=2 / 255)
    args.update(dict(steps=3, norm="linf", model_mode="eval"))
    args.update(change)
    with pytest.raises(ValueError, match=match):
        pgd(model, args.pop("x"), args.pop("target"), args.pop("eps"), args.pop("alpha"), args.pop("steps"), **args)


def test_values_within_rounding_of_the_unit_range_are_accepted_and_alpha_is_free_without_steps():
    model = small_cnn()
    x, y = batch(n=4)
    x[2, 0, 0, 0] = 1.0 + 5e-7
    x[3, 0, 0, 0] = -5e-7
    out = pgd(model, x, y, 8 / 255, 2 / 255, 1)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(pgd(model, x, y, 8 / 255, 0.0, 0), x)  # steps == 0: alpha unused, not checked


def test_bad_temperature_is_refused():
    with pytest.raises(ValueError, match="temperature"):
        contrastive_loss_fn(0.0)


# --------------------------------------------------------------------------- CUDA path (bf16 autocast)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_attack_keeps_fp32_images_in_the_ball():
    x, y = separable_batch()
    model = fitted_cnn(x, y).cuda()
    x, y = x.cuda(), y.cuda()
    gen = torch.Generator(device="cuda").manual_seed(0)
    x_adv = pgd(model, x, y, 0.03, 0.0075, 10, generator=gen)
    assert x_adv.dtype == torch.float32 and x_adv.is_cuda
    assert float((x_adv - x).abs().max()) <= 0.03 + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert float(per_sample_ce(model, x_adv, y).mean()) > 2 * float(per_sample_ce(model, x, y).mean()) + 0.2
    x_l2 = pgd(model, x, y, 1.0, 0.25, 5, norm="l2", generator=gen)
    assert float((x_l2 - x).flatten(1).norm(dim=1).max()) <= 1.0 + 1e-5
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="make_generator"):  # a CPU generator for CUDA images
        pgd(model, x, y, 8 / 255, 2 / 255, 1, generator=torch.Generator().manual_seed(0))


def test_range_check_can_be_skipped_for_trusted_batches_without_skipping_shape_checks():
    model = small_cnn()
    x, y = batch(n=4)
    x[0, 0, 0, 0] = 1.5  # out of range: refused by default, trusted (no host sync) with check_range=False
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        AttackConfig(8 / 255, 2 / 255, 1).run(model, x, y)
    out = AttackConfig(8 / 255, 2 / 255, 1).run(model, x, y, check_range=False)
    assert out.shape == x.shape
    with pytest.raises(ValueError, match="4-D"):
        pgd(model, x[0], y, 8 / 255, 2 / 255, 1, check_range=False)


@pytest.mark.parametrize("where", ["one pixel", "all"])
def test_nan_inputs_are_refused_like_out_of_range_ones(where):
    model = small_cnn()
    x, y = batch(n=4)
    if where == "one pixel":
        x[2, 1, 3, 3] = float("nan")
    else:
        x[:] = float("nan")
    count = 1 if where == "one pixel" else x.numel()
    for attack in (lambda: pgd(model, x, y, 8 / 255, 2 / 255, 2), lambda: fgsm(model, x, y, 8 / 255)):
        with pytest.raises(ValueError, match=rf"\[0, 1\], got {count} NaN value\(s\) among its {x.numel()}"):
            attack()


@pytest.mark.parametrize("model_dtype,x_dtype", [(torch.float32, torch.float64), (torch.float64, torch.float32)])
def test_pgd_accepts_inputs_in_another_float_dtype_than_the_model(model_dtype, x_dtype):
    model = small_cnn(dtype=model_dtype)
    x, y = batch(n=6, dtype=x_dtype)
    x_adv = pgd(model, x, y, 8 / 255, 2 / 255, 3, random_start=False)
    assert x_adv.dtype == torch.promote_types(x_dtype, torch.float32)
    assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6 and 0 <= float(x_adv.min()) <= float(x_adv.max()) <= 1
    same = pgd(model, x.to(model_dtype), y, 8 / 255, 2 / 255, 3, random_start=False)  # the same attack, one dtype
    torch.testing.assert_close(x_adv.to(same.dtype), same, atol=1e-5, rtol=0)


def test_sign_coherence_is_half_for_noise_one_for_a_constant_sign_and_zero_for_a_checkerboard():
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(4, 3, 32, 32, generator=gen) - 0.5
    assert torch.allclose(sign_coherence(noise), torch.full((4,), 0.5), atol=0.03)
    assert torch.equal(sign_coherence(torch.full((2, 3, 8, 8), -0.01)), torch.ones(2))
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    checkerboard = ((rows + cols) % 2 * 2 - 1).float().expand(1, 3, 8, 8)
    assert torch.equal(sign_coherence(checkerboard), torch.zeros(1))
    halves = torch.cat([torch.ones(1, 1, 4, 8), -torch.ones(1, 1, 4, 8)], dim=2)  # one sign change in 7 row pairs
    assert sign_coherence(halves).item() == pytest.approx((56 + 48) / 112)
    with pytest.raises(ValueError, match="delta must be"):
        sign_coherence(torch.zeros(3, 32, 32))
