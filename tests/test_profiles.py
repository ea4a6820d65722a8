"""Profiles resolve to coherent configs; bad settings fail with a message that says what to do."""

import pytest
import torch

from rcl.profiles import PROFILES, describe, resolve


def test_auto_is_smoke_on_cpu():
    cfg = resolve("auto", device="cpu")
    assert cfg.profile == "smoke"
    assert cfg.dataset == "synthetic"
    assert cfg.device == torch.device("cpu")
    assert cfg.run_dir.name == "smoke-synthetic"


def test_every_profile_resolves_with_the_papers_attack_settings():
    for name in PROFILES:
        cfg = resolve(name, device="cpu")
        assert cfg.eval_eps == pytest.approx(4 / 255)
        assert cfg.std_eps == pytest.approx(8 / 255)
        assert cfg.train_eps == pytest.approx(8 / 255)
    paper = resolve("paper", device="cpu")
    assert (paper.arch, paper.batch_size, paper.pretrain_epochs, paper.lr) == ("resnet50", 256, 200, 3e-4)
    assert (paper.eval_steps, paper.eval_alpha, paper.temperature) == (40, 0.01, 0.07)


def test_overrides_win_and_none_keeps_the_profile():
    cfg = resolve("smoke", device="cpu", width=16, batch_size=None)
    assert cfg.width == 16
    assert cfg.batch_size == PROFILES["smoke"]["batch_size"]
    assert cfg.replace(seed=3).seed == 3


def test_torch_compile_is_off_by_default_and_reaches_every_training_config():
    from rcl import acl, study

    assert not any(resolve(name, device="cpu").torch_compile for name in PROFILES)
    cfg = resolve("smoke", device="cpu", torch_compile=True)
    assert "torch_compile=True" in describe(cfg)
    runs = [study.train_config(cfg, 1), acl.pretrain_config(cfg), acl.finetune_config(cfg)]
    assert all(run.compile for run in runs)
    assert "compile" not in runs[0].identity()  # a run may resume with or without it


def test_dataset_names_the_run_folder(tmp_path):
    (tmp_path / "where").mkdir()
    cfg = resolve("smoke", dataset=f"imagefolder:{tmp_path / 'where'}", device="cpu")
    assert cfg.run_dir.name.startswith("smoke-imagefolder-where-")  # and a hash of the tree's absolute path
    assert resolve("smoke", device="cpu", run_dir=tmp_path).run_dir == tmp_path


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"profile": "fast"}, "unknown profile"),
        ({"wdith": 8}, "unknown setting"),
        ({"train_eps": 8}, "must be in \\[0, 1\\]"),
        ({"device": "tpu"}, "unknown device"),
    ],
)
def test_bad_settings_say_what_to_do(kwargs, message):
    kwargs = {"device": "cpu", **kwargs}
    with pytest.raises(ValueError, match=message):
        resolve(**kwargs)


def test_chapter_dir_is_created(tmp_path):
    cfg = resolve("smoke", device="cpu", run_dir=tmp_path)
    path = cfg.chapter_dir("02_simclr")
    assert path.is_dir() and path.parent == tmp_path


def test_laptop_profile_is_a_cpu_sized_run_on_real_cifar10():
    from rcl import acl, study
    from rcl import false_negatives as fn

    cfg = resolve("laptop", device="cpu")
    assert cfg.dataset == "cifar10" and cfg.run_dir.name == "laptop-cifar10"
    assert (cfg.arch, cfg.width, cfg.n_train, cfg.n_test) == ("resnet18", 16, 10000, 1000)
    # the attack reaches the training radius from delta = 0 in its steps
    assert cfg.train_steps * cfg.train_alpha >= cfg.train_eps
    assert cfg.eval_steps * cfg.eval_alpha >= cfg.eval_eps
    assert cfg.train_eps in cfg.eps_grid and cfg.eval_eps in cfg.eps_grid
    # chapters 05 and 06 evaluate a slice; chapter 04 trains all six scenarios on every profile
    assert study.chapter_scenarios(cfg, "05") == ["ST", "AT", "Full-AT"]
    assert study.chapter_scenarios(cfg, "06") == ["ST", "AT", "Full-AT"]
    assert study.chapter_scenarios(resolve("quick", device="cpu"), "05") == list(study.SCENARIOS)
    plan = acl.plan(cfg)
    # chapter 07: every variant and mode on the whole training set (the matched experiment of issue 24)
    assert plan.variants == acl.VARIANTS and plan.modes == acl.MODES
    assert (plan.n_pretrain, plan.n_finetune, plan.n_val) == (None, None, 500) and plan.notes
    assert acl.plan(resolve("quick", device="cpu")).n_pretrain is None
    fn_plan = fn.plan(cfg)
    # chapter 08: the whole training set and every test image (the matched comparison of issue 24)
    assert fn_plan.n_pretrain is None and fn_plan.n_eval is None
    assert fn_plan.removals == fn.REMOVALS and fn_plan.adversarial == (None, "kmeans")
    assert fn.plan(resolve("quick", device="cpu")).adversarial == fn.REMOVALS
