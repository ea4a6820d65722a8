"""rcl.course: the set-up every chapter shares, and its loud fallback to synthetic data."""

from __future__ import annotations

import pytest

import rcl.data
from rcl import course


@pytest.fixture
def offline_cifar(monkeypatch):
    """CIFAR behaves as on a machine without the files and without network; everything else is real."""
    real = rcl.data.load_dataset

    def load_dataset(name, *args, **kwargs):
        if name.startswith("cifar"):
            raise rcl.data.DatasetUnavailable(f"{name} is not available: no files and no network (test)")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(rcl.data, "load_dataset", load_dataset)


def test_setup_prints_the_profile_line_and_seeds(capsys, tmp_path):
    import torch

    cfg = course.setup("smoke", "synthetic", "cpu", seed=3, run_dir=tmp_path, pretrain_epochs=1)
    assert (cfg.profile, cfg.dataset, cfg.seed, cfg.run_dir, cfg.pretrain_epochs) == (
        "smoke",
        "synthetic",
        3,
        tmp_path,
        1,
    )
    assert "profile=smoke dataset=synthetic device=cpu" in capsys.readouterr().out
    first = torch.rand(3)
    course.setup("smoke", "synthetic", "cpu", seed=3, run_dir=tmp_path)
    assert torch.equal(torch.rand(3), first)


def test_setup_falls_back_to_synthetic_loudly_and_moves_the_run_folder(offline_cifar, capsys, tmp_path):
    cfg = course.setup("smoke", "cifar10", "cpu", data_root=tmp_path)
    err = capsys.readouterr().err
    assert "FALLING BACK TO THE SYNTHETIC DATASET" in err and "cifar10" in err and str(tmp_path) in err
    assert cfg.dataset == "synthetic" and cfg.run_dir.name == "smoke-synthetic"
    data = course.load_data(cfg.replace(n_train=40, n_test=20))
    assert (data.name, len(data.train), len(data.test)) == ("synthetic", 40, 20)


def test_setup_keeps_an_explicit_run_folder_on_fallback(offline_cifar, tmp_path):
    cfg = course.setup("smoke", "cifar10", "cpu", run_dir=tmp_path / "mine", data_root=tmp_path)
    assert cfg.dataset == "synthetic" and cfg.run_dir == tmp_path / "mine"


def test_load_data_falls_back_without_setup(offline_cifar, capsys, tmp_path):
    cfg = course.setup("smoke", "cifar10", "cpu", data_root=tmp_path, check_data=False, n_train=20, n_test=20)
    assert cfg.dataset == "cifar10"
    data = course.load_data(cfg)
    assert data.name == "synthetic" and len(data.train) == 20
    assert "call rcl.course.setup() first" in capsys.readouterr().err


def test_setup_still_raises_for_an_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset"):
        course.setup("smoke", "imagenet", "cpu")


def test_notebook_for_names_the_chapter_notebook():
    assert course.notebook_for("00_setup") == "notebooks/00_setup_and_data.ipynb"
    assert course.notebook_for("97_missing") == "notebooks/97_missing.ipynb"


def test_this_run_states_the_settings_the_chapter_runs_with(capsys, tmp_path):
    """Issue 25: the prose quoted PGD-40, 5 attack steps and tau 0.07 where the laptop run used PGD-10, 2 steps and
    tau 0.2; the box is computed from the run's own settings instead."""
    from rcl import acl, profiles

    laptop = profiles.resolve("laptop", "synthetic", "cpu", run_dir=tmp_path)
    box = course.this_run(laptop, "01")["this run"]
    assert box["evaluation attack (the main study's)"] == (
        f"PGD-{laptop.eval_steps}, L-inf 4/255, step {laptop.eval_alpha * 255:.3g}/255, from the clean image"
    )
    assert (
        box["the field's attack"].startswith(f"PGD-{laptop.std_steps}, L-inf 8/255")
        and "random point" in box["the field's attack"]
    )
    assert box["adversarial training attack"].startswith(f"PGD-{laptop.train_steps}, L-inf 8/255")
    printed = capsys.readouterr().out
    assert printed.startswith("laptop profile") and "smoke" not in printed
    assert course.this_run(laptop, "02")["this run"]["contrastive temperature"] == laptop.temperature
    acl_box = course.this_run(laptop, "07")["this run"]
    assert acl_box["test attack"].startswith(f"PGD-{acl.eval_attack(laptop).steps}, L-inf 8/255")
    assert acl_box["validation (picks the epoch)"].startswith(f"PGD-{laptop.std_steps},")
    aa = course.this_run(laptop, "05")["this run"]["AutoAttack"]
    assert f"{laptop.autoattack_steps} iterations" in aa and laptop.autoattack_suite in aa
    capsys.readouterr()
    course.this_run(profiles.resolve("smoke", "synthetic", "cpu", run_dir=tmp_path), "08")
    assert capsys.readouterr().out.startswith("smoke profile")
