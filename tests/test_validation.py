"""Every setting is checked where it enters (profiles.resolve, Config.replace, course.setup, TrainConfig):
a bad value is a ValueError that names the setting and its valid range (issue 12, items 9 and 11)."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from rcl import course
from rcl.profiles import PROFILES, Config, resolve
from rcl.train import TrainConfig


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"eval_batch_size": 2.5}, "eval_batch_size must be an integer >= 1, got 2.5"),
        ({"width": 0}, "width must be an integer >= 1, got 0"),
        ({"lr": -1}, "lr must be a finite number > 0, got -1"),
        ({"lr": math.inf}, "lr must be a finite number > 0, got inf"),
        ({"acl_lr": math.nan}, "acl_lr must be a finite number > 0, got nan"),
        ({"temperature": 0}, "temperature must be a finite number > 0, got 0"),
        ({"arch": "vgg"}, "arch must be one of 'resnet18', 'resnet50', got 'vgg'"),
        ({"n_train": -3}, "n_train must be None or an integer >= 1, got -3"),
        ({"n_test": 0}, "n_test must be None or an integer >= 1, got 0"),
        ({"train_steps": -1}, "train_steps must be an integer >= 0, got -1"),
        ({"pretrain_epochs": 1.5}, "pretrain_epochs must be an integer >= 0, got 1.5"),
        ({"fn_epochs": -1}, "fn_epochs must be an integer >= 0, got -1"),
        ({"eval_alpha": -0.1}, "eval_alpha must be in \\[0, 1\\] \\(pixel units\\), got -0.1"),
        ({"eps_grid": (0, 2)}, "eps_grid\\[1\\] must be in \\[0, 1\\]"),
        ({"eps_grid": ()}, "eps_grid must hold at least one epsilon"),
        ({"cka_examples": 3}, "cka_examples must be an integer >= 4, got 3"),
        ({"n_val": 0}, "n_val must be an integer >= 1, got 0"),
        ({"torch_compile": 1}, "torch_compile must be True or False, got 1"),
        ({"dataset": "bogus"}, "unknown dataset 'bogus'; valid names are: cifar10, cifar100, imagefolder:<path>"),
        ({"dataset": "imagefolder:"}, "needs a path"),
        ({"seed": -1}, r"seed must be an integer in \[0, 4294967295\], got -1"),
        ({"seed": 1.5}, r"seed must be an integer in \[0, 4294967295\], got 1.5"),
    ],
)
def test_resolve_checks_every_field_with_its_range(override, message):
    with pytest.raises(ValueError, match=message):
        resolve("smoke", device="cpu", **override)


def test_every_profile_is_valid_and_replace_is_checked_too():
    for name in PROFILES:
        resolve(name, device="cpu")
    cfg = resolve("smoke", device="cpu")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        cfg.replace(batch_size=0)
    with pytest.raises(ValueError, match="width must be an integer >= 1"):
        dataclasses.replace(cfg, width=-2)
    assert cfg.replace(eps_grid=[0, 1]).eps_grid == (0.0, 1.0)  # stored in its canonical type
    assert cfg.replace(n_train=None).n_train is None


def test_every_field_has_a_check():
    """A field added later gets at least the check of its type, so no setting enters unchecked."""
    from rcl.profiles import _RULES, _rule_for_type

    for f in dataclasses.fields(Config):
        assert f.name in _RULES or _rule_for_type(f.type) is not None, f"{f.name} ({f.type}) has no check"


def test_setup_takes_any_setting_from_overrides():
    cfg = course.setup(
        "smoke", "synthetic", "cpu", width=4, overrides={"n_train": 60, "n_test": None, "seed": 3}, check_data=False
    )
    assert (cfg.width, cfg.n_train, cfg.n_test, cfg.seed) == (4, 60, None, 3)
    with pytest.raises(ValueError, match="width is given twice"):
        course.setup("smoke", "synthetic", "cpu", width=4, overrides={"width": 8})
    with pytest.raises(ValueError, match="unknown setting.*valid ones are"):
        course.setup("smoke", "synthetic", "cpu", overrides={"wdith": 8})
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        course.setup("smoke", "synthetic", "cpu", overrides={"batch_size": 0})
    with pytest.raises(ValueError, match="overrides cannot set dataset"):
        course.setup("smoke", "synthetic", "cpu", overrides={"dataset": "cifar10"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": math.inf}, "lr must be a finite number > 0, got inf"),
        ({"lr": math.nan}, "lr must be a finite number > 0, got nan"),
        ({"epochs": 1.5}, "epochs must be an integer >= 0, got 1.5"),
        ({"batch_size": 2.5}, "batch_size must be an integer >= 1, got 2.5"),
        ({"weight_decay": -1}, "weight_decay must be a finite number >= 0, got -1"),
        ({"momentum": 5}, "momentum must be a number in \\[0, 1\\), got 5"),
        ({"gamma": 0}, "gamma must be a finite number > 0, got 0"),
        ({"warmup_epochs": 0.5}, "warmup_epochs must be an integer >= 0, got 0.5"),
        ({"seed": -2}, r"seed must be an integer in \[0, 4294967295\], got -2"),
        ({"milestones": (15, 2.5)}, "milestones\\[1\\] must be an integer >= 0, got 2.5"),
        ({"compile": "yes"}, "compile must be True or False"),
    ],
)
def test_train_config_checks_its_ranges(kwargs, message):
    base = {"epochs": 1, "batch_size": 8, "lr": 0.1}
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{**base, **kwargs})


def test_train_config_keeps_valid_values():
    run = TrainConfig(epochs=2, batch_size=8, lr=1, momentum=0.0, weight_decay=0, milestones=[1])
    assert (run.lr, run.weight_decay, run.milestones) == (1.0, 0.0, (1,))


def test_the_autoattack_suite_is_one_the_library_builds():
    with pytest.raises(ValueError, match="autoattack_suite"):
        resolve("smoke", device="cpu", autoattack_suite="plus")
    with pytest.raises(ValueError, match="autoattack_steps"):
        resolve("smoke", device="cpu", autoattack_steps=0)
    assert resolve("smoke", device="cpu", autoattack_suite="standard").autoattack_suite == "standard"


# ---------------------------------------------------------------- mistakes users made (issue: nothing silent)
@pytest.mark.parametrize("eps", [8, 255, float("inf"), float("nan")])
def test_linf_radii_in_0_255_units_or_infinite_are_refused(eps):
    from rcl.attacks import AttackConfig, pgd
    from rcl.models import Classifier, resnet18

    with pytest.raises(ValueError, match="eps"):
        AttackConfig(eps=eps, alpha=2 / 255, steps=1)
    model = Classifier(resnet18(width=2), 3).eval()
    with pytest.raises(ValueError, match="eps"):
        pgd(model, torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), eps, 2 / 255, 1)
    AttackConfig(eps=2.0, alpha=0.5, steps=1, norm="l2")  # an L2 radius above 1 is a real budget


def test_accuracy_refuses_labels_the_model_has_no_class_for():
    from rcl.data import Split
    from rcl.evaluate import accuracy
    from rcl.models import Classifier, resnet18

    split = Split(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 5, 7]))
    with pytest.raises(ValueError, match="labels go up to 7 but the model gives 3 classes"):
        accuracy(Classifier(resnet18(width=2), 3), split)


def test_cka_of_a_constant_or_non_finite_layer_says_so():
    from rcl.cka import linear_cka

    with pytest.raises(ValueError, match="same for all 10 examples"):
        linear_cka(torch.ones(10, 5), torch.randn(10, 5))
    broken = torch.randn(10, 5)
    broken[0, 0] = float("nan")
    with pytest.raises(ValueError, match="y holds NaN or inf"):
        linear_cka(torch.randn(10, 5), broken)


def test_channels_last_and_empty_batches_give_results_not_torch_errors():
    from rcl.attacks import pgd
    from rcl.evaluate import accuracy
    from rcl.models import Classifier, resnet18

    model = Classifier(resnet18(width=2), 3).eval()
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    plain = pgd(model, x, y, 8 / 255, 2 / 255, 2, random_start=False, precision="fp32")
    nhwc = pgd(model, x.contiguous(memory_format=torch.channels_last), y, 8 / 255, 2 / 255, 2, random_start=False)
    assert nhwc.shape == plain.shape and (nhwc - x).abs().max() <= 8 / 255 + 1e-6
    empty = pgd(model, torch.rand(0, 3, 8, 8), torch.zeros(0, dtype=torch.long), 8 / 255, 2 / 255, 2)
    assert empty.shape == (0, 3, 8, 8)
    from rcl.data import Split

    with pytest.raises(ValueError, match="the split is empty"):
        accuracy(model, Split(torch.zeros(0, 3, 8, 8, dtype=torch.uint8), torch.zeros(0, dtype=torch.long)))


def _tiny_split(n=6):
    from rcl.data import Split

    return Split(torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8), torch.arange(n) % 3)


def _nan_model():
    from rcl.models import Classifier, resnet18

    model = Classifier(resnet18(width=2), 3).eval()
    with torch.no_grad():
        next(model.parameters())[0, 0, 0, 0] = float("nan")
    return model


def test_accuracy_of_a_network_with_a_nan_weight_is_an_error_not_a_score():
    from rcl.evaluate import accuracy

    with pytest.raises(ValueError, match="Classifier gives NaN or infinite outputs for 6 of 6 images"):
        accuracy(_nan_model(), _tiny_split(), precision="fp32")


def test_robust_accuracy_of_a_network_with_a_nan_weight_is_an_error_not_a_score():
    from rcl.attacks import AttackConfig
    from rcl.evaluate import correct, robust_accuracy

    attack = AttackConfig(2 / 255, 1 / 255, 1, precision="fp32")
    with pytest.raises(ValueError, match="Classifier gives NaN or infinite outputs"):
        robust_accuracy(_nan_model(), _tiny_split(), attack)
    with pytest.raises(ValueError, match="Classifier gives NaN or infinite outputs"):
        correct(_nan_model(), _tiny_split(), precision="fp32")


def test_accuracy_of_a_float64_model_under_bf16_autocast_is_measured():
    from rcl.evaluate import accuracy
    from rcl.models import Classifier, resnet18

    model = Classifier(resnet18(width=2), 3).eval()
    split = _tiny_split()
    plain = accuracy(model, split, precision="fp32")
    assert accuracy(copy.deepcopy(model).double(), split, precision="bf16") == plain  # autocast leaves float64 alone


def test_layer_cka_refuses_float_images_in_0_255():
    from rcl.cka import layer_cka
    from rcl.models import resnet18

    images = torch.rand(8, 3, 8, 8) * 255
    with pytest.raises(ValueError, match=r"data must lie in \[0, 1\], got values in \[.*, 2[0-9.]+\]"):
        layer_cka(resnet18(width=2), images, batch_size=4)
    with pytest.raises(ValueError, match=r"data must lie in \[0, 1\]"):
        layer_cka(resnet18(width=2), [(images[:4], None)], batch_size=4)


def test_channels_last_arrays_are_named_by_their_layout_in_pgd_and_layer_cka():
    """[N, H, W, 3], as numpy and PIL hold images: named, not torch's "expected 3 channels, got 8"."""
    from rcl.attacks import pgd
    from rcl.cka import layer_cka
    from rcl.models import Classifier, resnet18

    nhwc = torch.rand(4, 8, 8, 3)
    with pytest.raises(ValueError, match=r"x has shape \(4, 8, 8, 3\), channels last .* x.permute\(0, 3, 1, 2\)"):
        pgd(Classifier(resnet18(width=2), 3), nhwc, torch.tensor([0, 1, 2, 0]), 8 / 255, 2 / 255, 1)
    with pytest.raises(ValueError, match=r"data has shape \(4, 8, 8, 3\), channels last"):
        layer_cka(resnet18(width=2), nhwc, batch_size=4)
    assert layer_cka(resnet18(width=2), nhwc.permute(0, 3, 1, 2), batch_size=4).matrix.shape[0] > 1


@pytest.mark.parametrize("seed", [2**32, 10**30, -1])
def test_a_huge_seed_names_the_setting_and_its_range(seed):
    with pytest.raises(ValueError, match=rf"seed must be an integer in \[0, 4294967295\], got {seed}"):
        resolve("smoke", "synthetic", "cpu", seed=seed)
