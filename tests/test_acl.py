"""Tests of rcl.acl: ACL's protocol in one place, what each variant trains on, dual BatchNorm, checkpoint selection.

Tiny sizes (ResNet-18 at width 4, 16x16 synthetic images, a few dozen examples): the file runs in seconds.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import half_size

from rcl import acl, profiles
from rcl.attacks import AttackConfig
from rcl.data import Dataset, Split, synthetic_dataset
from rcl.evaluate import robust_accuracy
from rcl.models import DualBatchNorm, collapse_dual_bn
from rcl.train import TrainConfig, pretrain_acl

EPS = 8 / 255


@pytest.fixture(scope="module")
def data() -> Dataset:
    ds = synthetic_dataset(n_train=96, n_test=32, num_classes=4, seed=0)
    return Dataset(ds.name, ds.classes, half_size(ds.train), half_size(ds.test))


def _cfg(tmp_path, **kw) -> profiles.Config:
    sizes = dict(width=4, acl_epochs=1, acl_batch_size=32, acl_finetune_epochs=2, train_steps=1, std_steps=2)
    return profiles.resolve("smoke", device="cpu", run_dir=tmp_path, **{**sizes, **kw})


def test_protocol_holds_the_papers_settings():
    p = acl.PROTOCOL
    assert (p.temperature, p.crop_scale, p.head_layers) == (0.5, (0.1, 1.0), 3)
    assert (p.attack_eps, p.attack_alpha, p.attack_steps) == (8 / 255, 2 / 255, 5)
    assert (p.beta, p.finetune_steps, p.finetune_lr, p.finetune_weight_decay, p.finetune_batch_size) == (
        6.0,
        10,
        0.1,
        2e-4,
        128,
    )
    assert (p.finetune_epochs, p.finetune_milestones, p.n_val, p.eval_steps) == (25, (15, 20), 5000, 20)


def test_milestones_scale_with_epochs():
    # released --decreasing_lr 15,20: epochs 15 and 20 (1-based) already run at the decayed rate -> 14 and 19 done
    assert acl.finetune_milestones(25) == (14, 19)
    assert acl.finetune_milestones(50) == (28, 38)
    assert acl.finetune_milestones(2) == (1, 2)
    with pytest.raises(ValueError, match="epochs"):
        acl.finetune_milestones(0)


def test_plan_per_profile_and_validation(tmp_path):
    quick = acl.plan(profiles.resolve("quick", device="cpu", run_dir=tmp_path))
    assert quick.modes == acl.MODES and quick.variants == acl.VARIANTS and quick.n_pretrain is None
    assert quick.n_val == 5000
    smoke = acl.plan(_cfg(tmp_path))
    assert set(smoke.modes) < set(acl.MODES) and smoke.n_eval is not None
    assert acl.plan(_cfg(tmp_path), modes=["partial"]).modes == ("partial",)
    with pytest.raises(ValueError, match="variant"):
        acl.plan(_cfg(tmp_path), variants=["A2B"])
    with pytest.raises(ValueError, match="mode"):
        acl.plan(_cfg(tmp_path), modes=["half"])


def test_settings_follow_the_profile(tmp_path):
    paper = profiles.resolve("paper", device="cpu", run_dir=tmp_path)
    assert acl.finetune_attack(paper).steps == 10 and acl.eval_attack(paper).steps == 20
    assert acl.eval_attack(paper).eps == pytest.approx(8 / 255)
    # laptop: the test attack is PGD-20 as released; validation (every epoch) takes the profile's cheaper steps
    laptop = profiles.resolve("laptop", device="cpu", run_dir=tmp_path)
    assert acl.eval_attack(laptop).steps == 20 and acl.val_attack(laptop).steps == laptop.std_steps < 20
    smoke = profiles.resolve("smoke", device="cpu", run_dir=tmp_path)
    assert acl.eval_attack(smoke).steps == acl.val_attack(smoke).steps == smoke.std_steps
    run = acl.pretrain_config(paper, progress=False)
    # SGD stands in for LARS: LARS's lr 5.0 scales a per-layer trust ratio, a plain SGD step takes 0.5
    assert (run.optimizer, run.schedule, run.warmup_epochs, run.batch_size, run.lr) == ("sgd", "cosine", 10, 512, 0.5)
    ft = acl.finetune_config(paper, progress=False)
    assert (ft.milestones, ft.weight_decay, ft.batch_size) == ((14, 19), 2e-4, 128)
    net = acl.new_acl_net(_cfg(tmp_path), dual_bn=True)
    assert net.head.config["layers"] == 3 and net.head.config["batch_norm"] and net.head.config["dual_bn"]


class _Recorder:
    """Records (training?, BN route, input) of every forward pass of a model."""

    def __init__(self, model):
        self.calls = []
        self.model = model
        model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        routes = {m.route for m in module.modules() if isinstance(m, DualBatchNorm)}
        self.calls.append((module.training, routes.pop() if len(routes) == 1 else None, args[0].detach().clone()))

    def training_inputs(self):
        return [(route, x) for training, route, x in self.calls if training and torch.is_tensor(x)]


def _one_step(tmp_path, data, variant):
    """One ACL step on 32 images with an identity augmentation, so the clean views are the images themselves."""
    cfg = _cfg(tmp_path)
    torch.manual_seed(0)
    model = acl.new_acl_net(cfg, dual_bn=variant in acl.DUAL_BN_VARIANTS)
    rec = _Recorder(model)
    train = data.train.take(torch.arange(32))
    x = train.images.float() / 255
    run = TrainConfig(epochs=1, batch_size=32, lr=0.1, optimizer="sgd", progress=False)
    pretrain_acl(model, train, run, variant=variant, attack=AttackConfig(EPS, EPS / 2, 2), augment=lambda v, g: v)
    return model, rec, x


def _same_set(a: torch.Tensor, x: torch.Tensor) -> bool:
    """a holds the images of x (in the loader's shuffled order)."""
    return torch.allclose(torch.sort(a.flatten(1), dim=0).values, torch.sort(x.flatten(1), dim=0).values, atol=1e-6)


def _perturbed(a: torch.Tensor, x: torch.Tensor) -> bool:
    """Every image of a lies within eps of an image of x but none equals it."""
    dist = (a.flatten(1)[:, None, :] - x.flatten(1)[None, :, :]).abs().amax(dim=2)  # [n, n] L-inf
    nearest = dist.min(dim=1).values
    return bool((nearest <= EPS + 1e-6).all() and (nearest > 1e-4).all())


def test_a2a_trains_on_two_adversarial_views(tmp_path, data):
    _, rec, x = _one_step(tmp_path, data, "A2A")
    (_, batch), *_ = rec.training_inputs()
    assert batch.shape[0] == 2 * len(x)
    assert _perturbed(batch[: len(x)], x) and _perturbed(batch[len(x) :], x)


def test_a2s_trains_on_a_clean_and_an_adversarial_view(tmp_path, data):
    _, rec, x = _one_step(tmp_path, data, "A2S")
    routes = {route: batch for route, batch in rec.training_inputs()}
    assert set(routes) == {"clean", "adv"}  # one forward pass per branch
    assert _same_set(routes["clean"], x)
    assert _perturbed(routes["adv"], x)


def test_ds_routes_clean_and_adversarial_views_to_separate_batchnorms(tmp_path, data):
    model, rec, x = _one_step(tmp_path, data, "DS")
    routes = {route: batch for route, batch in rec.training_inputs()}
    assert set(routes) == {"clean", "adv"}
    assert _same_set(routes["clean"][: len(x)], x) and _perturbed(routes["adv"], x)
    # the two branches hold different statistics after training
    duals = [m for m in model.encoder.modules() if isinstance(m, DualBatchNorm)]
    assert duals
    for m in duals:
        assert not torch.allclose(m.clean.running_mean, m.adv.running_mean)
    gap = acl.bn_branch_gap(model)
    assert len(gap) == len(duals) and all(r["mean_shift"] > 0 for r in gap)


def test_ds_needs_dual_batchnorm(tmp_path, data):
    model = acl.new_acl_net(_cfg(tmp_path), dual_bn=False)
    with pytest.raises(ValueError, match="dual"):
        run = TrainConfig(epochs=1, batch_size=32, lr=0.1, progress=False)
        pretrain_acl(model, data.train, run, variant="DS", attack=AttackConfig(EPS, EPS / 2, 1))


def test_wrong_bn_route_is_the_other_branch(tmp_path, data):
    model, _, x = _one_step(tmp_path, data, "DS")
    from rcl.models import Classifier, build_model

    adv_encoder = acl.single_bn_encoder(model, "adv")
    clf = Classifier(build_model(adv_encoder.config), data.num_classes)
    clf.encoder.load_state_dict(adv_encoder.state_dict())
    wrong = acl.with_bn_branch(clf, model, "clean").eval()
    clean_encoder = collapse_dual_bn(model.encoder, "clean").eval()
    with torch.no_grad():
        assert torch.allclose(wrong.encoder(x), clean_encoder(x), atol=1e-5)
        assert not torch.allclose(wrong(x), clf.eval()(x), atol=1e-4)
        assert torch.equal(wrong.fc.weight, clf.fc.weight)


def test_finetune_selects_the_epoch_with_best_validation_robust_accuracy(tmp_path, data):
    cfg = _cfg(tmp_path, acl_finetune_epochs=3, n_val=32)
    pl = acl.plan(cfg, n_finetune=32)
    torch.manual_seed(0)
    source = acl.new_acl_net(cfg)
    model, history = acl.finetune(cfg, data, source, "test", "full", pl, progress=False)
    scores = [r["val_robust_acc"] for r in history]
    best = scores.index(max(scores))  # the first epoch reaching the best score
    assert history[-1]["best_epoch"] == best + 1
    _, val = acl.finetune_splits(cfg, data, pl)
    assert len(val) == pl.n_val
    measured = robust_accuracy(model, val, acl.val_attack(cfg), batch_size=max(128, 256), seed=cfg.seed)
    assert measured == pytest.approx(scores[best])
    # load or train: a second call reads the checkpoint and returns the same history
    _, again = acl.finetune(cfg, data, source, "test", "full", pl, progress=False)
    assert [r["val_robust_acc"] for r in again] == scores


def test_finetune_splits_are_disjoint_and_balanced(tmp_path, data):
    cfg = _cfg(tmp_path, n_val=16)
    train, val = acl.finetune_splits(cfg, data, acl.plan(cfg, n_finetune=40))
    assert len(val) == 16 and len(train) == 40
    assert torch.bincount(val.labels, minlength=4).tolist() == [4, 4, 4, 4]
    joined = torch.cat([train.images.flatten(1), val.images.flatten(1)])
    assert torch.unique(joined, dim=0).shape[0] == len(joined)


@pytest.mark.slow
def test_results_rows_for_ds_and_its_wrong_route(tmp_path, data):
    cfg = _cfg(tmp_path, n_val=16)
    pl = acl.plan(cfg, variants=["DS"], modes=["linear"], n_pretrain=32, n_finetune=32, n_eval=16)
    records, models = acl.results(cfg, data, pl, baseline=False, progress=False)
    assert [r["scheme"] for r in records] == ["DS", "DS (clean BN route)"]
    for r in records:
        assert r["scenario"] == "linear" and 0 <= r["clean_acc"] <= 1 and 0 <= r["robust_acc"] <= 1
        assert r["eps"] == pytest.approx(cfg.std_eps) and r["steps"] == cfg.std_steps
    assert (tmp_path / "07_acl" / "pretrain-DS" / "last.pt").exists()
    assert (tmp_path / "07_acl" / "finetune-DS-linear" / "best.pt").exists()
    assert set(models["classifiers"]) == {("DS", "linear")}


# ------------------------------------------------------------------------------------------- fidelity to the release
# Each test below pins one setting of the released code (VITA-Group/Adversarial-Contrastive-Learning) and fails if
# the default drifts back. References are written from the released equations, not calls to rcl's own functions.
def _released_nt_xent(features: torch.Tensor, t: float = 0.5) -> torch.Tensor:
    """The released ``utils.nt_xent``, written out: rows 2i and 2i+1 are the two views of image i."""
    n = features.norm(dim=1, keepdim=True)
    sim = (features @ features.T) / (n * n.T).clamp(min=1e-8)
    e = torch.exp(sim / t)
    idx = torch.arange(len(e))
    idx[::2] += 1
    idx[1::2] -= 1
    e = e[idx]  # positive pairs on the diagonal
    ratio = e.diag() / (e.sum(0) - torch.exp(torch.tensor(1 / t)))  # the column sum less the self-similarity e^(1/t)
    return -torch.log(ratio).mean()


def _interleave(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.stack([a, b], dim=1).flatten(0, 1)


def _scramble_bn(model, seed=1):
    """Random affine weights per branch, so that the clean and the adversarial BatchNorm compute different things."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))


def _recorded_step(tmp_path, data, variant):
    """One pre-training step (32 images, identity augmentation) on a network with scrambled BatchNorms.

    Returns (the network before the step, the inputs of the step's training-mode forward passes, clean images,
    the step's loss).
    """
    torch.manual_seed(0)
    model = acl.new_acl_net(_cfg(tmp_path), dual_bn=variant in acl.DUAL_BN_VARIANTS)
    _scramble_bn(model)
    before = copy.deepcopy(model)
    inputs = []
    model.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach().clone()) if m.training else None)
    train = data.train.take(torch.arange(32))
    run = TrainConfig(epochs=1, batch_size=32, lr=0.1, optimizer="sgd", progress=False)
    history = pretrain_acl(
        model, train, run, variant=variant, attack=AttackConfig(EPS, EPS / 2, 2), augment=lambda v, g: v
    )
    return before, inputs, train.images.float() / 255, history[0]["loss"]


def _branches(net):
    """The released architecture's two encoders: every weight shared, BatchNorm separate (clean, adversarial)."""
    return collapse_dual_bn(net, "clean").train(), collapse_dual_bn(net, "adv").train()


def test_ds_loss_equals_the_released_equations(tmp_path, data):
    before, inputs, x, loss = _recorded_step(tmp_path, data, "DS")
    clean_batch = next(a for a in inputs if _same_set(a[: len(x)], x))
    adv_batch = next(a for a in inputs if _perturbed(a, x))
    standard, adversarial = _branches(before)
    b = len(x)
    with torch.no_grad():  # train.py: loss = (nt_xent(model(inputs, 'normal')) + nt_xent(model(inputs_adv, 'pgd'))) / 2
        clean = standard(_interleave(clean_batch[:b], clean_batch[b:]))
        adv = adversarial(_interleave(adv_batch[:b], adv_batch[b:]))
        reference = (_released_nt_xent(clean) + _released_nt_xent(adv)) / 2
    assert loss == pytest.approx(reference.item(), abs=1e-5)


def test_a2s_loss_equals_the_paper_with_separate_batchnorms(tmp_path, data):
    """A2S (the paper's Fig. 1c; the released code has no A2S script): NT-Xent between a clean view through the
    standard encoder and an adversarial view through the adversarial one, independent BN, shared weights."""
    before, inputs, x, loss = _recorded_step(tmp_path, data, "A2S")
    clean_view = next(a for a in inputs if _same_set(a, x))
    adv_view = next(a for a in inputs if _perturbed(a, x))
    standard, adversarial = _branches(before)
    with torch.no_grad():
        reference = _released_nt_xent(_interleave(standard(clean_view), adversarial(adv_view)))
        shared = _released_nt_xent(
            standard(torch.cat([clean_view, adv_view])).view(2, len(x), -1).transpose(0, 1).flatten(0, 1)
        )
    assert loss == pytest.approx(reference.item(), abs=1e-5)
    assert abs(loss - shared.item()) > 1e-3  # one BatchNorm for both views would be another loss


def test_a2s_calls_the_clean_bn_for_the_clean_view_and_the_adv_bn_for_the_adversarial_view(tmp_path, data):
    cfg = _cfg(tmp_path)
    torch.manual_seed(0)
    model = acl.new_acl_net(cfg, dual_bn=True)
    before = copy.deepcopy(model)
    calls = {"clean": [], "adv": []}
    stem = model.encoder.bn1
    for branch in calls:
        getattr(stem, branch).register_forward_hook(
            lambda m, args, out, branch=branch: calls[branch].append((m.training, args[0].detach().clone()))
        )
    train = data.train.take(torch.arange(32))
    x = train.images.float() / 255
    steps = 2
    run = TrainConfig(epochs=1, batch_size=32, lr=0.1, optimizer="sgd", progress=False)
    pretrain_acl(model, train, run, variant="A2S", attack=AttackConfig(EPS, EPS / 2, steps), augment=lambda v, g: v)
    with torch.no_grad():
        clean_conv = before.encoder.conv1(before.encoder.input_norm(x))  # what the stem BN sees for the clean images
    trained = {branch: [a for training, a in c if training] for branch, c in calls.items()}
    assert len(trained["clean"]) == 1 and len(trained["adv"]) == 1
    assert _same_set(trained["clean"][0], clean_conv)  # the clean view through the clean BN
    assert not _same_set(trained["adv"][0], clean_conv) and trained["adv"][0].shape == clean_conv.shape
    # the attack: clean reference through the clean BN, every step's perturbed view through the adv BN, eval mode
    attack_calls = {branch: [a for training, a in c if not training] for branch, c in calls.items()}
    assert len(attack_calls["clean"]) == 1 and len(attack_calls["adv"]) == steps
    # running statistics: each branch moved (momentum 0.1 from zero) by the mean of what it saw in training
    for branch in calls:
        expected = 0.1 * trained[branch][0].mean(dim=(0, 2, 3))
        torch.testing.assert_close(getattr(stem, branch).running_mean, expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(stem.clean.running_mean, stem.adv.running_mean)


def test_a2s_and_ds_are_built_with_dual_bn_and_a2a_without(tmp_path):
    assert acl.DUAL_BN_VARIANTS == ("A2S", "DS")
    with pytest.raises(ValueError, match="dual"):
        run = TrainConfig(epochs=1, batch_size=32, lr=0.1, progress=False)
        model = acl.new_acl_net(_cfg(tmp_path), dual_bn=False)
        pretrain_acl(
            model,
            Split(torch.zeros(32, 3, 16, 16, dtype=torch.uint8), torch.zeros(32, dtype=torch.long)),
            run,
            variant="A2S",
            attack=AttackConfig(EPS, EPS / 2, 1),
        )


def test_projection_head_is_the_released_proj_head(tmp_path):
    # released proj_head: fc1 (bias) - bn1 - relu - fc2 (no bias) - bn2 - relu - fc3 (no bias) - bn3; every BN dual
    for dual in (False, True):
        head = acl.new_acl_net(_cfg(tmp_path), dual_bn=dual).head
        bn = DualBatchNorm if dual else torch.nn.BatchNorm1d
        kinds = [type(m) for m in head.net]
        assert kinds == [torch.nn.Linear, bn, torch.nn.ReLU] * 2 + [torch.nn.Linear, bn]
        assert isinstance(head.net[-1], bn)  # ends in BatchNorm
        linears = [m for m in head.net if isinstance(m, torch.nn.Linear)]
        assert [m.bias is not None for m in linears] == [True, False, False]
        d = linears[0].in_features
        assert all((m.in_features, m.out_features) == (d, d) for m in linears)


def test_network_normalises_its_inputs_with_imagenet_statistics(tmp_path):
    net = acl.new_acl_net(_cfg(tmp_path)).eval()
    mean_std = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # released NormalizeByChannelMeanStd
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in mean_std)
    bare = copy.deepcopy(net.encoder)
    bare.input_norm = torch.nn.Identity()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(net.encoder(x), bare((x - mean) / std))
    assert net.encoder.config["input_norm"] == {"mean": mean_std[0], "std": mean_std[1]}
    assert net.encoder.arch == "resnet18"


def test_pgd_settings_follow_the_release(tmp_path):
    paper = profiles.resolve("paper", device="cpu", run_dir=tmp_path)
    pre, ft, ev = acl.pretrain_attack(paper), acl.finetune_attack(paper), acl.eval_attack(paper)
    # PGD_contrastive: 8/255, step 2/255, 5 steps, uniform start, model.eval()
    assert (pre.eps, pre.alpha, pre.steps, pre.random_start, pre.model_mode) == (8 / 255, 2 / 255, 5, "uniform", "eval")
    # trades_loss: 8/255, step 2/255, 10 steps, x + 0.001 * randn, model.eval()
    assert (ft.eps, ft.alpha, ft.steps, ft.random_start, ft.model_mode) == (8 / 255, 2 / 255, 10, "normal", "eval")
    # eval_adv_test / pgd_attack: 8/255, step 2/255, 20 steps, uniform start, model.eval()
    assert (ev.eps, ev.alpha, ev.steps, ev.random_start, ev.model_mode) == (8 / 255, 2 / 255, 20, "uniform", "eval")


def test_finetune_schedule_equals_the_released_multistep(tmp_path):
    from rcl.train import lr_factor

    ft = acl.finetune_config(profiles.resolve("paper", device="cpu", run_dir=tmp_path), progress=False)
    steps_per_epoch = 3
    ours = [ft.lr * lr_factor(e * steps_per_epoch, ft, steps_per_epoch) for e in range(25)]
    # train_trades.py: for epoch in 1..25: scheduler.step() (MultiStepLR [15, 20], gamma 0.1), then train
    released = [0.1 * 0.1 ** sum(epoch >= m for m in (15, 20)) for epoch in range(1, 26)]
    assert ours == pytest.approx(released)
    assert (ft.optimizer, ft.momentum, ft.weight_decay, ft.batch_size) == ("sgd", 0.9, 2e-4, 128)


def test_finetune_starts_from_a_zero_fc_with_train_mode_frozen_bn(tmp_path, data, monkeypatch):
    cfg = _cfg(tmp_path, n_val=16)
    source = acl.new_acl_net(cfg, dual_bn=True)
    seen = {}

    def fake_finetune(model, train, run, **kw):
        seen.update(kw, fc_weight=model.fc.weight.detach().clone(), fc_bias=model.fc.bias.detach().clone())
        seen["encoder"] = model.encoder
        return [{"epoch": 1, "val_robust_acc": 0.0}]

    monkeypatch.setattr(acl, "_finetune", fake_finetune)
    acl.finetune(cfg, data, source, "test", "linear", acl.plan(cfg, n_finetune=16), progress=False)
    assert torch.count_nonzero(seen["fc_weight"]) == 0 and torch.count_nonzero(seen["fc_bias"]) == 0
    assert seen["frozen_bn"] == "train" and seen["augment"] is True
    assert (seen["loss"], seen["beta"]) == ("trades", 6.0)
    # the encoder is the pre-trained network's adversarial branch (--bnNameCnt 1), with its input normalisation
    adv = collapse_dual_bn(source.encoder, "adv")
    assert seen["encoder"].config == adv.config and "input_norm" in adv.config
    for key, value in adv.state_dict().items():
        assert torch.equal(seen["encoder"].state_dict()[key], value), key
    # --fixbn, on request
    acl.finetune(cfg, data, source, "fixbn", "linear", acl.plan(cfg, n_finetune=16), progress=False, frozen_bn="eval")
    assert seen["frozen_bn"] == "eval"


def test_pretrained_network_starts_from_the_same_weights_whichever_process_builds_it(tmp_path, data):
    """Issue 16: a job in another process draws the same initial weights as the chapter (seeded_init by name)."""
    first = acl.pretrain(_cfg(tmp_path / "a", acl_epochs=0), data, "DS", progress=False)
    torch.rand(1000)  # another chapter drew from the global RNG in between
    second = acl.pretrain(_cfg(tmp_path / "b", acl_epochs=0), data, "DS", progress=False)
    sa, sb = first.state_dict(), second.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    state = torch.random.get_rng_state()
    acl.pretrain(_cfg(tmp_path / "a", acl_epochs=0), data, "A2A", progress=False)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random stream is untouched


def test_a_control_whose_recipe_diverges_is_fine_tuned_again_at_a_tenth_of_the_rate(monkeypatch, tmp_path, capsys):
    """Measured on the laptop profile: TRADES at lr 0.1 on a random ACL network diverges in its first epoch. The
    control is then the same recipe at lr 0.01 (a control that converges is the stricter floor), in its own folder,
    and the records say which rate it trained at."""
    from rcl.train_loop import TrainingDiverged

    cfg = profiles.resolve("smoke", "synthetic", "cpu", run_dir=tmp_path)
    calls = []

    def fake_finetune(cfg, data, source, name, mode, pl=None, progress=True):
        calls.append((name, cfg.acl_finetune_lr))
        if len(calls) == 1:
            raise TrainingDiverged("the loss became nan")
        return "classifier", [{"epoch": 1}]

    monkeypatch.setattr(acl, "finetune", fake_finetune)
    model, history, run = acl.finetune_control(cfg, None, object(), "linear")
    low = cfg.acl_finetune_lr / 10
    assert calls == [(acl.CONTROL, cfg.acl_finetune_lr), (f"{acl.CONTROL}-lr{low:g}", low)]
    assert run == f"{acl.CONTROL}-lr{low:g}" and acl._run_lr(cfg, run) == pytest.approx(low)
    assert acl._run_lr(cfg, acl.CONTROL) == cfg.acl_finetune_lr
    assert "fine-tuning it again at lr" in capsys.readouterr().out


def test_the_control_floor_takes_the_higher_clean_accuracy_of_its_kept_and_last_epoch():
    """Measured on the laptop profile: the control's kept epoch (best validation robust accuracy, noise near 0 on a
    random encoder) had 10 % clean accuracy, its last 26 %. A floor at 10 % would let an encoder at 30 % through."""
    control = {"scheme": acl.CONTROL, "finetune_lr": 0.01, "clean_acc": 0.102, "clean_acc_last": 0.262}
    records = [
        {**control, "scenario": "linear"},
        {**control, "scenario": "full", "clean_acc": 0.35, "clean_acc_last": 0.30},
        {"scheme": "DS", "scenario": "linear", "finetune_lr": 0.1, "clean_acc": 0.9, "clean_acc_last": 0.9},
    ]
    linear = acl.control_floor(records, "linear", 1000)
    assert linear.accuracy == pytest.approx(0.262)
    assert not linear.learned(0.34, 1000)  # above the kept epoch by 24 points, below the last by less than 10
    assert linear.learned(0.40, 1000)
    assert "lr 0.01" in str(linear)
    assert acl.control_floor(records, "full", 1000).accuracy == pytest.approx(0.35)
    with pytest.raises(KeyError, match="partial"):
        acl.control_floor(records, "partial", 1000)


def _row(scheme, mode, best_epoch, clean):
    return {"scheme": scheme, "scenario": mode, "best_epoch": best_epoch, "clean_acc": clean, "robust_acc": 0.1,
            "robust_acc_main": 0.2, "clean_acc_last": clean, "robust_acc_last": 0.1}  # fmt: skip


def test_chapter_07s_table_joins_every_column_by_its_mode():
    """Issue 33: the best epochs were copied in by position from an alphabetical pivot (DS showed 4, 4, 3 where
    robustness.csv has 4, 3, 4). Modes first seen as linear, partial, full sort as full, linear, partial."""
    import pandas as pd

    table = pd.DataFrame(
        [_row("DS", "linear", 4, 0.30), _row("DS", "partial", 3, 0.31), _row("DS", "full", 4, 0.35),
         _row("DS (clean BN route)", "linear", 2, 0.25)]
    )  # fmt: skip
    wide = acl.by_mode(table)
    assert list(wide["best_epoch"].columns) == ["linear", "partial", "full"]
    assert wide.loc["DS", "best_epoch"].tolist() == [4, 3, 4]
    assert wide.loc["DS", "clean_acc"].tolist() == [30.0, 31.0, 35.0]
    assert wide.loc["DS (clean BN route)", ("best_epoch", "linear")] == 2
    assert wide.loc["DS (clean BN route)", "clean_acc_last"].isna().tolist() == [False, True, True]


def test_the_committed_chapter_07_tables_are_what_their_robustness_csv_says():
    """Issue 33: in every committed run, chapter 07's printed table is acl.by_mode of the run's robustness.csv."""
    import json

    from rcl.results import read_table
    from rcl.runtime import project_root
    from rcl.site.pages import published_runs

    for run in published_runs(project_root()):
        folder = project_root() / run.folder
        notebook = json.loads((folder / "notebooks" / "07_acl.ipynb").read_text())
        shown = [
            "".join(output["data"]["text/plain"])
            for cell in notebook["cells"] if cell["cell_type"] == "code"
            for output in cell["outputs"]
            if output["output_type"] == "execute_result" and "best_epoch" in "".join(output["data"]["text/plain"])
        ]  # fmt: skip
        expected = acl.by_mode(read_table(folder / "07_acl" / "robustness.csv")).to_string(line_width=80)
        assert shown == [expected], run.label
