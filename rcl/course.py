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
            _load(cfg, n_train=10, n_test=10)
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


__all__ = ["setup", "load_data", "notebook_for"]
