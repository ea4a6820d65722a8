"""Tests of rcl.acl: ACL's protocol in one place, what each variant trains on, dual BatchNorm, checkpoint selection.

Tiny sizes (ResNet-18 at width 4, 16x16 synthetic images, a few dozen examples): the file runs in seconds.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rcl import acl, profiles
from rcl.attacks import AttackConfig
from rcl.data import Dataset, Split, synthetic_dataset
from rcl.evaluate import robust_accuracy
from rcl.models import DualBatchNorm, collapse_dual_bn
from rcl.train import TrainConfig, pretrain_acl

EPS = 8 / 255


def _small(split: Split) -> Split:
    return Split(F.avg_pool2d(split.images.float(), 2).round().to(torch.uint8), split.labels)


@pytest.fixture(scope="module")
def data() -> Dataset:
    ds = synthetic_dataset(n_train=96, n_test=32, num_classes=4, seed=0)
    return Dataset(ds.name, ds.classes, _small(ds.train), _small(ds.test))


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
    assert acl.finetune_milestones(25) == (15, 20)
    assert acl.finetune_milestones(50) == (30, 40)
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
    run = acl.pretrain_config(paper, progress=False)
    assert (run.optimizer, run.schedule, run.warmup_epochs, run.batch_size, run.lr) == ("sgd", "cosine", 10, 512, 5.0)
    ft = acl.finetune_config(paper, progress=False)
    assert (ft.milestones, ft.weight_decay, ft.batch_size) == ((15, 20), 2e-4, 128)
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
    model = acl.new_acl_net(cfg, dual_bn=variant == "DS")
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
    (_, batch), *_ = rec.training_inputs()
    assert _same_set(batch[: len(x)], x)
    assert _perturbed(batch[len(x) :], x)


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
    from rcl.models import Classifier, encoder

    cfg = _cfg(tmp_path)
    clf = Classifier(encoder(cfg.arch, width=cfg.width), data.num_classes)
    clf.encoder.load_state_dict(acl.single_bn_encoder(model, "adv").state_dict())
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
    measured = robust_accuracy(model, val, acl.eval_attack(cfg), batch_size=max(128, 256), seed=cfg.seed)
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
