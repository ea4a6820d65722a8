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
    cfg = resolve("smoke", dataset="imagefolder:/some/where", device="cpu")
    assert cfg.run_dir.name == "smoke-imagefolder-where"
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
