"""What every chapter does first: resolve the profile, seed, load the data (with an offline fallback).

A chapter's set-up cell is two calls::

    cfg = rcl.course.setup(profile, dataset, device, seed, run_dir)
    data = rcl.course.load_data(cfg)

``setup`` prints one line naming the profile, dataset, device, network and run folder, so a reader
(and a papermill log) always sees what ran. ``load_data`` falls back to the synthetic dataset when
CIFAR is not on disk and cannot be downloaded, and says so loudly; ``setup`` makes the same check
first, so that the fallback also moves the run folder to ``runs/<profile>-synthetic`` and
checkpoints trained on stand-in images never land in the CIFAR run folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from rcl import profiles
from rcl.runtime import PRECISION_ENV, project_root, seed_everything

_BANNER = "!" * 100


def _warn(lines: list[str]) -> None:
    """Print a warning that cannot be missed: a banner on stderr (red in a notebook, kept by papermill)."""
    text = "\n".join([_BANNER, *(f"!!  {line}" for line in lines), _BANNER])
    print(text, file=sys.stderr, flush=True)


def _is_unavailable(err: Exception) -> bool:
    from rcl.data import DatasetUnavailable

    return isinstance(err, DatasetUnavailable)


def _fallback_cfg(cfg: profiles.Config, reason: str, *, move_run_dir: bool = True) -> profiles.Config:
    """``cfg`` on the synthetic dataset, with the run folder moved along (unless it was given explicitly)."""
    default_run_dir = profiles.resolve(cfg.profile, cfg.dataset, cfg.device).run_dir
    run_dir = cfg.run_dir
    if move_run_dir and run_dir == default_run_dir:
        run_dir = profiles.resolve(cfg.profile, "synthetic", cfg.device).run_dir
    where = (
        f"results of this run go to {run_dir}"
        if move_run_dir
        else f"this Config still writes to {run_dir}: call rcl.course.setup() first so the run folder follows"
    )
    _warn(
        [
            f"dataset {cfg.dataset!r} could not be loaded. {reason}",
            "FALLING BACK TO THE SYNTHETIC DATASET: every number in this run is about stand-in images,",
            "not about the papers' data. To use the real data, put it under "
            f"{cfg.data_root} (see data/README.md) or run once with internet access.",
            where,
        ]
    )
    return cfg.replace(dataset="synthetic", run_dir=run_dir)


def setup(
    profile: str = "auto",
    dataset: str | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    run_dir: str | Path | None = None,
    *,
    data_root: str | Path | None = None,
    check_data: bool = True,
    overrides: dict | None = None,
    **settings,
) -> profiles.Config:
    """Resolve the profile, seed every generator, check the dataset is there, print one line.

    Arguments are the chapter's ``parameters`` cell (``None`` keeps the profile's value); keyword
    ``settings`` change any size of the profile (``pretrain_epochs=5``); ``overrides`` is the chapter's generic
    ``overrides`` parameter, a dict of any other profile setting (``{"n_train": 60}``; ``seed`` and ``data_root``
    too), where ``None`` is a value (``{"n_test": None}``: the whole split); ``python -m rcl.reproduce -p name=value``
    fills it for settings the chapter has no parameter of its own for. A setting given both ways must agree.
    ``data_root`` defaults to ``<project>/data``. A ``precision`` other than ``"auto"`` (``"fp32"`` | ``"bf16"``)
    also sets ``RCL_PRECISION`` for the rest of this process, so evaluation, CKA and attacks follow it. With
    ``check_data`` a
    dataset that cannot be loaded (CIFAR offline, no files: ``DatasetUnavailable``) switches the config to ``synthetic``
    with a loud warning; an unknown dataset name still raises ``ValueError``.
    """
    if overrides is not None and not isinstance(overrides, dict):
        raise ValueError(f'overrides must be a dict of settings, e.g. {{"n_train": 60}}, got {overrides!r}')
    own = sorted({"profile", "dataset", "device", "run_dir"} & set(overrides or {}))
    if own:
        raise ValueError(f"overrides cannot set {', '.join(own)}: each is a parameter of its own")
    merged = {"seed": seed, "data_root": data_root, **settings}
    for name, value in (overrides or {}).items():
        mine = merged.get(name)
        if mine is not None and mine != value and not (name == "seed" and mine == 0):  # seed 0 is the default
            raise ValueError(f"{name} is given twice, as {mine!r} and as overrides[{name!r}] = {value!r}")
        merged[name] = value
    explicit_none = {n: None for n, v in (overrides or {}).items() if v is None and n not in ("seed", "data_root")}
    seed = merged.pop("seed")
    data_root = merged.pop("data_root")
    cfg = profiles.resolve(profile, dataset, device, seed, run_dir=run_dir, data_root=data_root, **merged)
    if explicit_none:  # resolve() reads None as "keep the profile's value"; in overrides it is the value itself
        cfg = cfg.replace(**explicit_none)
    if check_data and cfg.dataset != "synthetic":
        try:
            _load(cfg, n_train=cfg.n_train, n_test=cfg.n_test)  # the sizes the run asks for: checked up front
        except Exception as err:  # only DatasetUnavailable falls back; a wrong name or path still raises
            if not _is_unavailable(err):
                raise
            cfg = _fallback_cfg(cfg, str(err))
    if cfg.precision != "auto":  # every "auto" of this process (evaluation, CKA, attacks) follows the run's choice
        os.environ[PRECISION_ENV] = cfg.precision
    seed_everything(cfg.seed)
    print(profiles.describe(cfg))
    return cfg


def _load(cfg: profiles.Config, *, n_train: int | None, n_test: int | None):
    from rcl.data import load_dataset

    return load_dataset(cfg.dataset, cfg.data_root, n_train=n_train, n_test=n_test, seed=cfg.seed)


def load_data(cfg: profiles.Config):
    """The chapter's ``Dataset`` (``cfg.n_train`` / ``cfg.n_test`` class-balanced examples, uint8 on the CPU).

    If ``cfg.dataset`` cannot be loaded (CIFAR offline and not on disk), prints a loud warning and
    returns the synthetic dataset of the same size instead of failing; call ``setup`` first so that
    the run folder follows the fallback.
    """
    try:
        return _load(cfg, n_train=cfg.n_train, n_test=cfg.n_test)
    except Exception as err:  # see setup()
        if not _is_unavailable(err):
            raise
        synthetic = _fallback_cfg(cfg, str(err), move_run_dir=False)
        return _load(synthetic, n_train=cfg.n_train, n_test=cfg.n_test)


def notebook_for(chapter: str, root: Path | None = None) -> str:
    """The notebook that writes run folder ``chapter`` (``"02_simclr"`` -> ``"notebooks/02_simclr.ipynb"``).

    Matches on the two-digit number, so it stays right if a notebook's name changes.
    """
    folder = (root or project_root()) / "notebooks"
    number = chapter[:2]
    found = sorted(folder.glob(f"{number}_*.ipynb"))
    return f"notebooks/{found[0].name}" if found else f"notebooks/{chapter}.ipynb"


# ------------------------------------------------------------------------------------------------ this run
PROFILE_NOTES = {
    "smoke": "smoke profile: a narrow network trained for a few epochs on a few hundred images; its numbers test "
    "that the code runs, they cannot confirm or refute the papers",
    "laptop": "laptop profile: a small network trained for a few epochs on 10,000 real CIFAR-10 images on a CPU; "
    "differences of a few points are inside the noise of 1,000 test images, and the papers trained far longer",
    "quick": "quick profile: the standard network on the whole training set for a few dozen epochs on one GPU, "
    "shorter than the papers' schedules",
    "paper": "paper profile: the papers' own settings, as far as their sources state them (docs/protocol.md)",
}


def describe_attack(attack) -> str:
    """An attack's settings in words: ``"PGD-10, L-inf 4/255, step 2.55/255, from the clean image"``."""
    from rcl.results import format_eps

    start = {False: "from the clean image", True: "from a random point of the ball", "uniform": "from a random point "
             "of the ball", "normal": "from x + 0.001 N(0, 1)"}[attack.random_start]  # fmt: skip
    norm = "L-inf" if attack.norm == "linf" else "L2"
    radius = format_eps(attack.eps) if attack.norm == "linf" else f"{attack.eps:g}"
    return f"PGD-{attack.steps}, {norm} {radius}, step {attack.alpha * 255:.3g}/255, {start}"


DEPARTURES = "section 'The laptop profile's departures from the papers'"


def this_run(cfg: profiles.Config, chapter: str, data=None):
    """The settings this chapter's run uses, as a table to show before its results ("this run"): computed from
    ``cfg`` and the chapter's own functions, so the prose never has to state a number the run may not use.

    ``chapter``: its two-digit number (``"01"`` ... ``"09"``); ``data``: the chapter's ``Dataset`` (for the image
    counts). Returns a DataFrame with one column, ``this run``, indexed by setting; it also prints the profile's
    note (what its numbers can and cannot show) and where its departures from the papers are explained."""
    import pandas as pd

    from rcl import study
    from rcl.runtime import precision_choice

    rows: dict[str, object] = {
        "profile": cfg.profile,
        "dataset": cfg.dataset
        + (f" ({len(data.train):,} training / {len(data.test):,} test images)" if data is not None else ""),
        "network": f"{cfg.arch}, width {cfg.width}",
        "precision": precision_choice(cfg.device, cfg.precision)[0],
        "seed": cfg.seed,
    }
    attack = {kind: describe_attack(study.attack(cfg, kind)) for kind in ("train", "eval", "std")}
    schedule = f"Adam, lr {cfg.lr:g}, batch {cfg.batch_size}"
    if chapter in ("01", "02", "03", "04"):
        rows["pre-training"] = (
            f"{cfg.supervised_epochs} epochs (SL), {cfg.pretrain_epochs} epochs (CL, SCL); {schedule}"
            if chapter == "04"
            else f"{cfg.supervised_epochs if chapter == '01' else cfg.pretrain_epochs} epochs; {schedule}"
        )
        if chapter != "01":
            rows["contrastive temperature"] = cfg.temperature
            rows["linear head"] = f"{cfg.linear_epochs} epochs"
        rows["adversarial training attack"] = attack["train"]
    if chapter == "04":
        rows["adversarial fine-tuning"] = f"{cfg.finetune_epochs} epochs"
    if chapter in ("01", "02", "03", "04", "05", "06"):
        rows["evaluation attack (the main study's)"] = attack["eval"]
    if chapter in ("01", "05", "08"):
        rows["the field's attack"] = attack["std"]
    if chapter in ("01", "05"):
        rows["eps curve"] = ", ".join(f"{e * 255:g}/255" for e in cfg.eps_grid)
    if chapter == "05":
        rows["AutoAttack"] = (
            f"suite {cfg.autoattack_suite}, {cfg.autoattack_steps} iterations, {cfg.autoattack_n} test images"
        )
    if chapter == "06":
        rows["CKA"] = f"{cfg.cka_examples} test images"
        rows["layer probes"] = f"{cfg.probe_epochs} epochs"
    if chapter == "07":
        from rcl import acl

        rows["ACL pre-training"] = (
            f"{cfg.acl_epochs} epochs, batch {cfg.acl_batch_size}, SGD lr {cfg.acl_lr:g}, temperature "
            f"{cfg.acl_temperature:g}; attack {describe_attack(acl.pretrain_attack(cfg))}"
        )
        rows["TRADES fine-tuning"] = (
            f"{cfg.acl_finetune_epochs} epochs, lr {cfg.acl_finetune_lr:g}; attack "
            f"{describe_attack(acl.finetune_attack(cfg))}"
        )
        rows["validation (picks the epoch)"] = describe_attack(acl.val_attack(cfg))
        rows["test attack"] = describe_attack(acl.eval_attack(cfg))
    if chapter == "08":
        from rcl import false_negatives as fn

        rows["training"] = (
            f"{cfg.fn_epochs} epochs (budgets {', '.join(map(str, fn.budgets(cfg)))}); {schedule}; temperature "
            f"{cfg.temperature:g}; linear heads {cfg.linear_epochs} epochs"
        )
        rows["eps curve"] = f"PGD-{fn.EVAL_STEPS} from the clean image at " + ", ".join(
            f"{e * 255:g}/255" for e in fn.EPS_GRID
        )
        rows["adversarial pre-training attack"] = attack["train"]
    print(PROFILE_NOTES.get(cfg.profile, f"profile {cfg.profile}"))
    if cfg.profile != "paper":
        print(
            f"How these settings depart from the papers', and why: docs/protocol.md ({DEPARTURES}); the papers' and "
            "public figures the chapters compare with, with their sources: docs/references.md."
        )
    return pd.DataFrame({"this run": pd.Series(rows, dtype=object)}).rename_axis("setting")


__all__ = ["setup", "load_data", "notebook_for", "this_run", "describe_attack", "PROFILE_NOTES"]
