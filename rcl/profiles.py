"""Profiles: one parameter that picks a coherent set of sizes for the whole study.

- ``smoke``: CPU, seconds per notebook, a tiny-width ResNet-18 on a few hundred images (CI, nbval).
- ``laptop``: CPU, real CIFAR-10, the whole course in about two hours on two cores: a ResNet-18 of width 16 on
  10,000 images, sized so that the models of every comparison leave chance (the committed reference
  runs ``results/laptop-cifar10*`` record their wall times).
- ``quick``: one GPU, the whole study in well under an hour, ResNet-18 on CIFAR-10.
- ``paper``: the papers' own settings (Ghofrani et al. main study; Jiang et al. for ACL).
- ``auto``: ``smoke`` on CPU, ``quick`` on CUDA (in a notebook; ``python -m rcl.reproduce --profile auto`` picks
  ``laptop`` on a CPU where real data is at hand, ``rcl.reproduce.auto_profile``).

Every field can be overridden by keyword: ``resolve("smoke", pretrain_epochs=5)``, and is checked where it enters
(``resolve``, ``Config.replace`` or ``Config(...)``): ``width=0`` is ``ValueError("width must be an integer >= 1,
got 0")``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rcl import checks
from rcl.runtime import PRECISIONS, pick_device, precision_choice, project_root


@dataclass(frozen=True)
class Config:
    """Every size and setting a chapter needs. Epsilons and step sizes are in [0, 1] pixel units."""

    profile: str
    dataset: str
    device: torch.device
    seed: int
    run_dir: Path
    data_root: Path
    # network
    arch: str  # "resnet18" | "resnet50" (CIFAR stem)
    width: int  # base width; 64 is the standard network
    head_dim: int  # projection output (main study: 100)
    # data sizes (None = the whole split)
    n_train: int | None
    n_test: int | None
    batch_size: int
    eval_batch_size: int
    # schedules (main study: Adam 3e-4, no schedule, no weight decay)
    pretrain_epochs: int
    supervised_epochs: int
    finetune_epochs: int  # adversarial fine-tuning (Partial-AT / Full-AT)
    linear_epochs: int  # standard linear evaluation head
    lr: float
    temperature: float
    # adversarial training (pre-training and fine-tuning)
    train_eps: float
    train_alpha: float
    train_steps: int
    # evaluation: the main study's setting (threat models I and II)
    eval_eps: float
    eval_alpha: float
    eval_steps: int
    # evaluation: the field's standard
    std_eps: float
    std_alpha: float
    std_steps: int
    eps_grid: tuple[float, ...]  # accuracy-vs-eps curves
    autoattack_n: int  # test examples given to AutoAttack
    autoattack_suite: str  # "standard" (APGD-CE, APGD-T, FAB-T, Square) | "ce+t" (APGD-CE, APGD-T); rcl.autoattack
    autoattack_steps: int  # APGD/FAB iterations (the reference's 100; fewer on the CPU profiles, smoke and laptop)
    # CKA and probes
    cka_examples: int
    probe_epochs: int
    # ACL (Jiang et al.)
    acl_epochs: int
    acl_batch_size: int
    acl_lr: float
    acl_temperature: float
    acl_finetune_epochs: int
    acl_finetune_lr: float
    n_val: int  # held-out validation examples for checkpoint selection (paper: 5,000)
    # false negatives (Gupta et al.)
    fn_epochs: int
    # speed: torch.compile the training steps (TrainConfig.compile); a one-off compile cost, faster steps
    torch_compile: bool = False
    # "auto" (bf16 + channels_last on CUDA and on CPUs with native bf16, else fp32: rcl.runtime), "bf16" or "fp32"
    precision: str = "auto"

    def __post_init__(self) -> None:
        """Check every field against its valid range (``ValueError`` naming it) and store it in its canonical type."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            rule = _RULES.get(f.name) or _rule_for_type(f.type)
            checked = rule(f.name, value) if rule is not None else value
            if checked is not value:
                object.__setattr__(self, f.name, checked)

    def replace(self, **changes) -> Config:
        """A copy with some fields changed (validated like ``resolve`` overrides)."""
        _check_fields(changes)
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """JSON-friendly view (device and paths as strings)."""
        out = dataclasses.asdict(self)
        out["device"] = str(self.device)
        out["run_dir"] = str(self.run_dir)
        out["data_root"] = str(self.data_root)
        out["eps_grid"] = list(self.eps_grid)
        return out

    def chapter_dir(self, chapter: str) -> Path:
        """``run_dir/<chapter>``, created on demand (e.g. ``cfg.chapter_dir("02_simclr")``); a real folder, never a
        symbolic link (a chapter would write its results through it, over someone else's files)."""
        path = self.run_dir / chapter
        if path.is_symlink():
            raise ValueError(
                f"chapter folder {path} is a symbolic link to {os.readlink(path)}: a chapter writes only into a real "
                "folder inside the run folder. Replace the link with a folder, or pick another run_dir"
            )
        path.mkdir(parents=True, exist_ok=True)
        return path


_EPS_GRID = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)

# The base: ResNet-18 on the whole of CIFAR-10 with the main study's attacks (Ghofrani et al.: PGD at 8/255 for
# training, 4/255 with steps of 0.01 for its threat models; 8/255 with steps of 2/255 for the field's standard)
# and ACL's temperature and fine-tuning rate (Jiang et al.), sized for one GPU (the whole study in well under an
# hour). Each profile below changes what it lists. Device, dataset, seed and folders are filled in by resolve().
_BASE = dict(
    arch="resnet18",
    width=64,
    head_dim=100,
    n_train=None,
    n_test=None,
    batch_size=512,
    eval_batch_size=1024,
    pretrain_epochs=30,
    supervised_epochs=15,
    finetune_epochs=5,
    linear_epochs=10,
    lr=1e-3,
    temperature=0.2,
    train_eps=8 / 255,
    train_alpha=0.01,
    train_steps=5,
    eval_eps=4 / 255,
    eval_alpha=0.01,
    eval_steps=40,
    std_eps=8 / 255,
    std_alpha=2 / 255,
    std_steps=20,
    eps_grid=_EPS_GRID,
    autoattack_n=1000,
    autoattack_suite="ce+t",
    autoattack_steps=100,
    cka_examples=5000,
    probe_epochs=10,
    acl_epochs=30,
    acl_batch_size=512,
    acl_lr=1.0,
    acl_temperature=0.5,
    acl_finetune_epochs=8,
    acl_finetune_lr=0.1,
    n_val=5000,
    fn_epochs=30,
    torch_compile=False,
)

# What each profile changes in the base.
_CHANGES: dict[str, dict] = {
    # CPU, seconds per notebook: a tiny-width ResNet-18 on a few hundred synthetic images (CI, nbval).
    "smoke": dict(
        width=8,
        head_dim=32,
        n_train=512,
        n_test=256,
        batch_size=32,
        eval_batch_size=256,
        pretrain_epochs=2,
        supervised_epochs=2,
        finetune_epochs=1,
        linear_epochs=5,
        lr=3e-3,
        train_alpha=2 / 255,
        train_steps=2,
        eval_steps=5,
        std_steps=5,
        autoattack_n=64,
        autoattack_steps=10,
        cka_examples=128,
        probe_epochs=5,
        acl_epochs=2,
        acl_batch_size=128,
        acl_lr=0.5,
        acl_finetune_epochs=1,
        n_val=128,
        fn_epochs=2,
    ),
    # Sized by measurement on a 2-core CPU with real CIFAR-10 (tools/pilot_budget.py; every departure from the
    # papers, with its reason: docs/protocol.md, "The laptop profile's departures from the papers"):
    # the whole course in at most two hours there, with every model of a comparison clear of chance. Width 16: in
    # bf16 on a CPU with native bf16 its training step costs what width 8 costs in fp32 (python -m rcl.bench).
    "laptop": dict(
        width=16,
        n_train=10000,
        n_test=1000,  # two models compared on the same 1,000 test images (issue: at least 1,000)
        batch_size=128,
        eval_batch_size=500,
        pretrain_epochs=10,
        supervised_epochs=6,
        finetune_epochs=2,
        linear_epochs=20,
        train_alpha=0.02,  # two steps of 0.02 reach the 8/255 boundary from delta = 0
        train_steps=2,
        eval_steps=10,
        std_steps=10,
        eps_grid=(0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255),
        autoattack_n=100,
        autoattack_steps=10,
        cka_examples=1000,  # CKA verdicts with bootstrap intervals need at least 1,000 images (issue 32)
        probe_epochs=5,
        acl_epochs=4,  # 12 gave DS the same linear clean accuracy (tools/pilot_acl_budget.py, docs/protocol.md)
        acl_batch_size=128,
        acl_lr=0.5,
        acl_finetune_epochs=4,  # TRADES from a weak encoder leaves chance only after a few epochs
        n_val=500,
        fn_epochs=8,  # chapter 08: budgets 2, 4, 8 (learning curves: tools/pilot_budget.py)
    ),
    # One GPU, the whole study in well under an hour: the base as it is.
    "quick": dict(),
    # The papers' own settings: the main study's ResNet-50, Adam at 3e-4, tau 0.07 and 200 epochs per phase; ACL's
    # 1,000 pre-training and 25 fine-tuning epochs; the full AutoAttack on the whole test set.
    "paper": dict(
        arch="resnet50",
        batch_size=256,
        eval_batch_size=512,
        pretrain_epochs=200,
        supervised_epochs=200,
        finetune_epochs=200,  # released numEpochs=200 for every phase (cl_scl_PAT.py, cl_scl_FAT.py)
        linear_epochs=200,
        lr=3e-4,
        temperature=0.07,
        autoattack_n=10000,
        autoattack_suite="standard",
        cka_examples=10000,
        probe_epochs=20,
        acl_epochs=1000,
        acl_lr=0.5,  # SGD + cosine stands in for LARS (lr 5.0 is a LARS rate, not an SGD one): docs/protocol.md
        acl_finetune_epochs=25,
        fn_epochs=200,
    ),
}

# Every profile's sizes: the base with the profile's changes.
PROFILES: dict[str, dict] = {name: {**_BASE, **changes} for name, changes in _CHANGES.items()}

DEFAULT_DATASET = {"smoke": "synthetic", "laptop": "cifar10", "quick": "cifar10", "paper": "cifar10"}

_SIZE_FIELDS = {f.name for f in dataclasses.fields(Config)} - {
    "profile",
    "dataset",
    "device",
    "seed",
    "run_dir",
    "data_root",
}
_ALL_FIELDS = {f.name for f in dataclasses.fields(Config)}


# --------------------------------------------------------------------------------------------
# valid ranges: every field is checked where it enters (resolve, replace, Config(...))
# --------------------------------------------------------------------------------------------


def _at_least(minimum: int, hint: str = "") -> Callable[[str, Any], int]:
    """The check of an integer setting: ``checks.integer(name, value, minimum)``."""
    return functools.partial(checks.integer, minimum=minimum, hint=hint)


def _none_or_at_least(minimum: int) -> Callable[[str, Any], int | None]:
    """The check of a size where ``None`` means the whole split."""
    return functools.partial(checks.optional_integer, minimum=minimum)


def _check_dataset(name: str, value) -> str:
    from rcl.data import parse_dataset_name

    parse_dataset_name(value)  # the one reading of a dataset name, with its errors
    return value


def _check_arch(name: str, value) -> str:
    from rcl.models import ARCHS

    return checks.choice(name, value, ARCHS)


def _check_autoattack_suite(name: str, value) -> str:
    from rcl.autoattack import VERSIONS

    return checks.choice(name, value, tuple(VERSIONS))


def _check_grid(name: str, value) -> tuple[float, ...]:
    grid = checks.sequence(name, value, checks.pixels, of="epsilons in [0, 1]", example="(0, 4/255, 8/255)")
    if not grid:
        raise ValueError(f"{name} must hold at least one epsilon in [0, 1], e.g. (0, 4/255, 8/255), got {value!r}")
    return grid


def _check_cka_examples(name: str, value) -> int:
    from rcl.cka import MIN_BATCH

    return checks.integer(name, value, MIN_BATCH, hint="the unbiased HSIC of CKA divides by n (n - 3)")


def _check_profile(name: str, value) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a profile name ({', '.join(PROFILES)}), got {value!r}")
    return value


def _as_path(name: str, value) -> Path:
    if not isinstance(value, str | Path):
        raise ValueError(f"{name} must be a folder path, got {value!r}")
    return value if isinstance(value, Path) else Path(value)


_RULES = {
    "profile": _check_profile,
    "dataset": _check_dataset,
    "device": lambda name, value: pick_device(value),
    "seed": checks.seed,
    "run_dir": _as_path,
    "data_root": _as_path,
    "arch": _check_arch,
    "width": _at_least(1),
    "head_dim": _at_least(1),
    "n_train": _none_or_at_least(1),
    "n_test": _none_or_at_least(1),
    "batch_size": _at_least(1),
    "eval_batch_size": _at_least(1),
    "acl_batch_size": _at_least(1),
    "lr": checks.positive,
    "acl_lr": checks.positive,
    "acl_finetune_lr": checks.positive,
    "temperature": checks.positive,
    "acl_temperature": checks.positive,
    "train_eps": checks.pixels,
    "eval_eps": checks.pixels,
    "std_eps": checks.pixels,
    "train_alpha": checks.pixels,
    "eval_alpha": checks.pixels,
    "std_alpha": checks.pixels,
    **{
        name: _at_least(0)
        for name in (
            "pretrain_epochs",
            "supervised_epochs",
            "finetune_epochs",
            "linear_epochs",
            "probe_epochs",
            "acl_epochs",
            "acl_finetune_epochs",
            "fn_epochs",
        )
    },
    "train_steps": _at_least(0),
    "eval_steps": _at_least(0),
    "std_steps": _at_least(0),
    "eps_grid": _check_grid,
    "autoattack_n": _at_least(1),
    "autoattack_suite": _check_autoattack_suite,
    "autoattack_steps": _at_least(1),
    "cka_examples": _check_cka_examples,
    "n_val": _at_least(1),
    "torch_compile": checks.boolean,
    "precision": lambda name, value: checks.choice(name, value, PRECISIONS),
}


def _rule_for_type(annotation: str):
    """The check of a field without its own rule (one added later): by its type, epochs and sizes >= 0."""
    return {
        "int": _at_least(0),
        "int | None": _none_or_at_least(0),
        "float": checks.number,
        "bool": checks.boolean,
    }.get(str(annotation).replace("typing.", ""))


def _check_fields(names) -> None:
    unknown = sorted(set(names) - _ALL_FIELDS)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; valid ones are: {', '.join(sorted(_ALL_FIELDS))}")


def canonical_dataset(dataset: str) -> str:
    """``dataset`` checked, with an ``imagefolder:`` path made absolute (a relative one is taken from the working
    directory when it exists there, else from the project root, as :func:`rcl.data.load_dataset` does), so that the
    runner, its chapters and its jobs, whatever folder each starts in, read the same tree, and ``tree/`` and
    ``tree`` are one dataset."""
    from rcl.data import _resolve, parse_dataset_name

    kind, typed = parse_dataset_name(dataset)
    if kind != "imagefolder":
        return kind
    tree = _resolve(typed).absolute()
    if not tree.is_dir():
        here = Path(typed).expanduser()
        looked = [str(here)] if here.is_absolute() else [str(Path.cwd() / here), str(project_root() / here)]
        raise FileNotFoundError(
            f"dataset {dataset!r}: no folder {typed!r} (looked at {' and at '.join(dict.fromkeys(looked))}); give "
            "the path of a tree holding train/<class>/ and test/<class>/ image folders"
        )
    return "imagefolder:" + os.path.normpath(tree)


def resolve(
    profile: str = "auto",
    dataset: str | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    run_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    **overrides,
) -> Config:
    """Build the Config for ``profile`` on ``device``; keyword overrides win over the profile.

    ``run_dir`` defaults to ``<project>/runs/<profile>-<dataset>``, ``data_root`` to
    ``<project>/data``. ``None`` overrides are ignored, so papermill parameters left at
    ``None`` keep the profile's value. Every field is checked against its valid range (``Config.__post_init__``):
    a bad value is a ``ValueError`` that names the setting, the range and the value.
    """
    device = pick_device(device)
    if profile == "auto":
        profile = "quick" if device.type == "cuda" else "smoke"
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of: auto, {', '.join(PROFILES)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    _check_fields(overrides)
    fixed = sorted(set(overrides) - _SIZE_FIELDS)
    if fixed:
        raise ValueError(f"{fixed} are arguments of resolve() itself, not overrides")
    sizes = {**PROFILES[profile], **overrides}
    dataset = canonical_dataset(dataset or DEFAULT_DATASET[profile])
    root = project_root()
    safe_name = dataset
    if dataset.startswith("imagefolder:"):
        tree = dataset.split(":", 1)[1]
        digest = hashlib.sha1(tree.encode()).hexdigest()[:6]  # two trees of the same name get two run folders
        safe_name = f"imagefolder-{Path(tree).name or 'root'}-{digest}"
    run_dir = Path(run_dir) if run_dir else root / "runs" / f"{profile}-{safe_name}"
    data_root = Path(data_root) if data_root else root / "data"
    return Config(
        profile=profile,
        dataset=dataset,
        device=device,
        seed=seed,
        run_dir=run_dir,
        data_root=data_root,
        **sizes,
    )


def describe(cfg: Config) -> str:
    """One line for a notebook's set-up cell; settings that differ from the profile's are listed at its end."""
    profile = PROFILES.get(cfg.profile, {})
    shown = ("arch", "width", "torch_compile", "precision")
    changed = [
        f"{name}={getattr(cfg, name)!r}"
        for name in sorted(profile)
        if name not in shown and getattr(cfg, name) != profile[name]
    ]
    return (
        f"profile={cfg.profile} dataset={cfg.dataset} device={cfg.device} seed={cfg.seed} "
        f"arch={cfg.arch}(width {cfg.width}) precision={precision_choice(cfg.device, cfg.precision)[0]} "
        f"run_dir={cfg.run_dir}"
        + (" torch_compile=True" if cfg.torch_compile else "")
        + (f" changed: {' '.join(changed)}" if changed else "")
    )


__all__ = ["Config", "PROFILES", "DEFAULT_DATASET", "resolve", "describe"]
