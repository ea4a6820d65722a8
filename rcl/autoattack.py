"""AutoAttack with the reference settings (Croce & Hein, ICML 2020), built from torchattacks' components.

The reference implementation (fra31/auto-attack, ``autoattack/autoattack.py``: ``AutoAttack.__init__`` and
``set_version('standard')``; what RobustBench reports) runs four attacks, in this order, each only on the examples
that every earlier attack left classified correctly, so an example counts as robust only if all four fail:

=========  ==============================================================================================
apgd-ce    APGD on cross-entropy: 100 iterations, 1 restart, rho 0.75, 1 EOT sample, random start
apgd-t     APGD on the targeted DLR loss ``-(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2)`` (z_(k): k-th largest
           logit): 100 iterations, 1 restart per target, rho 0.75; targets are the 9 classes ranked 2nd to 10th
           by the clean logits, whatever the number of classes
fab-t      targeted FAB: 100 iterations, 1 restart, the same 9 targets, alpha_max 0.1, eta 1.05, beta 0.9
square     Square (black-box random search) on the margin loss: 5,000 queries, 1 restart, p_init 0.8,
           no rescaling of the p schedule (``resc_schedule=False``)
=========  ==============================================================================================

Every attack is re-seeded with the same ``seed`` at each call, as the reference does. ``"ce+t"`` is the cheaper
subset APGD-CE + APGD-T (the two gradient attacks) with the same per-attack settings; it can only report a robust
accuracy >= the full suite's on the same inputs.

torchattacks' own ``AutoAttack`` is not the reference: its APGD, APGD-T and FAB default to 10 iterations, APGD-T
and FAB-T use every other class as a target (99 on CIFAR-100), and its Square rescales the p schedule. Hence
:class:`AutoAttackConfig` builds the components itself, with every setting written out and inspectable.

Fewer than 10 classes: the reference would index the 11th-largest logit and fail; we use every other class as a
target (``min(9, n_classes - 1)`` targets) and say so in the record. The targeted DLR loss needs 4 logits, so a
model with fewer than 4 classes is refused.

``eps`` is in pixel units of [0, 1] (8/255 is the usual L-inf budget on CIFAR); inputs x: [B, 3, H, W] in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from rcl import checks
from rcl.attacks import attack_mode
from rcl.data import DeviceLoader, Split
from rcl.runtime import model_device

VERSIONS: dict[str, tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "ce+t": ("apgd-ce", "apgd-t"),
}
"""The attacks of each suite, in the order they run."""

# The reference's settings (fra31/auto-attack, autoattack.py, AutoAttack.__init__ + set_version('standard'), L-inf/L2).
REFERENCE_STEPS = 100  # APGD, APGD-T and FAB iterations (n_iter)
REFERENCE_SQUARE_QUERIES = 5000
REFERENCE_TARGET_CLASSES = 9  # APGD-T and FAB-T (n_target_classes)
N_RESTARTS = 1  # every attack of the standard version (APGD-T: per target class)
APGD_RHO = 0.75  # step-size halving threshold (thr_decr)
APGD_EOT_ITER = 1  # no expectation over transformation (the model is deterministic)
FAB_ALPHA_MAX, FAB_ETA, FAB_BETA = 0.1, 1.05, 0.9
SQUARE_P_INIT = 0.8
SQUARE_LOSS = "margin"
SQUARE_RESCALE_SCHEDULE = False
MIN_CLASSES = 4  # the targeted DLR loss divides by z_(1) - (z_(3) + z_(4)) / 2

_TORCHATTACKS_NORM = {"linf": "Linf", "l2": "L2"}
_BALL_TOLERANCE = 1e-5  # float rounding allowed outside the eps-ball before an attack's output is refused

__all__ = [
    "AutoAttackConfig",
    "AutoAttackResult",
    "VERSIONS",
    "autoattack_record",
    "run_autoattack",
]


@dataclass(frozen=True)
class AutoAttackConfig:
    """One AutoAttack suite and its settings; the defaults are the reference's (fra31/auto-attack ``standard``).

    ``eps``: radius in pixel units of [0, 1] (> 0; at most 1 for L-inf). ``version``: ``"standard"`` (APGD-CE,
    APGD-T, FAB-T, Square) or ``"ce+t"`` (APGD-CE, APGD-T). ``norm``: ``"linf"`` or ``"l2"`` (torchattacks'
    spelling ``"Linf"``/``"L2"`` is accepted). ``steps``: iterations of APGD-CE, APGD-T and FAB-T (reference
    100; fewer only to keep a smoke run short, and the record says so). ``square_queries``: Square's query budget
    (reference 5,000). ``n_target_classes``: targets of APGD-T and FAB-T (reference 9; capped at
    ``n_classes - 1``). ``seed``: the seed every attack re-seeds with at each call.
    """

    eps: float
    version: str = "standard"
    norm: str = "linf"
    steps: int = REFERENCE_STEPS
    square_queries: int = REFERENCE_SQUARE_QUERIES
    n_target_classes: int = REFERENCE_TARGET_CLASSES
    seed: int = 0

    def __post_init__(self) -> None:
        """Check every field (``ValueError`` naming it, see :mod:`rcl.checks`); ``norm`` and ``eps`` are stored
        lower-case and as a float."""
        suites = "'standard': APGD-CE, APGD-T, FAB-T, Square; 'ce+t': APGD-CE, APGD-T"
        checks.choice("version", self.version, VERSIONS, hint=suites)
        norm = self.norm.lower() if isinstance(self.norm, str) else self.norm
        checks.choice("norm", norm, _TORCHATTACKS_NORM, hint="torchattacks' 'Linf' and 'L2' are accepted too")
        object.__setattr__(self, "norm", norm)
        eps = checks.radius("eps", self.eps, norm, strict=True, hint="in pixel units of [0, 1], e.g. 8/255 for L-inf")
        object.__setattr__(self, "eps", eps)
        for name, minimum, hint in (
            ("steps", 1, "the reference uses 100; a smoke run may use a few"),
            ("square_queries", 1, "the reference uses 5000"),
            ("n_target_classes", 1, "the reference uses 9"),
            ("seed", 0, "any int >= 0"),
        ):
            object.__setattr__(self, name, checks.integer(name, getattr(self, name), minimum, hint=hint))

    @classmethod
    def from_config(cls, cfg: Any, eps: float | None = None) -> AutoAttackConfig:
        """The suite a profile asks for: ``cfg.autoattack_suite`` at ``cfg.autoattack_steps`` iterations, seeded
        with ``cfg.seed``, at ``eps`` (default ``cfg.std_eps``, the field's 8/255)."""
        return cls(
            eps=cfg.std_eps if eps is None else eps,
            version=cfg.autoattack_suite,
            steps=cfg.autoattack_steps,
            seed=cfg.seed,
        )

    @property
    def attacks(self) -> tuple[str, ...]:
        """The attacks of the suite, in the order they run."""
        return VERSIONS[self.version]

    @property
    def name(self) -> str:
        """The ``attack`` column of a record: ``"autoattack-standard"`` or ``"autoattack-ce+t"``."""
        return f"autoattack-{self.version}"

    def target_classes(self, n_classes: int) -> int:
        """APGD-T and FAB-T targets for ``n_classes`` outputs: ``min(n_target_classes, n_classes - 1)``."""
        n_classes = checks.integer(
            "n_classes", n_classes, MIN_CLASSES, hint="APGD-T's targeted DLR loss needs 4 logits"
        )
        return min(self.n_target_classes, n_classes - 1)

    def deviations(self, n_classes: int | None = None) -> list[str]:
        """How this configuration departs from the reference's per-attack settings (empty: none)."""
        out = []
        if self.steps != REFERENCE_STEPS:
            out.append(f"reduced iterations: {self.steps} (reference {REFERENCE_STEPS})")
        if "square" in self.attacks and self.square_queries != REFERENCE_SQUARE_QUERIES:
            out.append(f"{self.square_queries} Square queries (reference {REFERENCE_SQUARE_QUERIES})")
        targets = self.n_target_classes if n_classes is None else self.target_classes(n_classes)
        if targets != REFERENCE_TARGET_CLASSES:
            why = f"every other class of {n_classes}" if targets == (n_classes or 0) - 1 else "set by hand"
            out.append(f"{targets} target classes, {why} (reference {REFERENCE_TARGET_CLASSES})")
        return out

    def suite_note(self, n_classes: int | None = None) -> str:
        """One line for a record: which suite, and whether it ran at the reference settings."""
        if self.version == "standard":
            base = "full suite (APGD-CE, APGD-T, FAB-T, Square)"
        else:
            base = "APGD-CE + APGD-T only (no FAB-T, no Square)"
        deviations = self.deviations(n_classes)
        if not deviations:
            return f"{base}, reference settings (fra31/auto-attack)"
        return f"{base}; " + "; ".join(deviations)

    def components(self, n_classes: int | None = None) -> list[dict]:
        """Every setting of every attack of the suite, one dict per attack in running order (a table to print)."""
        targets = self.n_target_classes if n_classes is None else self.target_classes(n_classes)
        common = {"norm": self.norm, "eps": self.eps, "restarts": N_RESTARTS, "seed": self.seed}
        table = {
            "apgd-ce": {"loss": "ce", "steps": self.steps, "rho": APGD_RHO, "eot_iter": APGD_EOT_ITER},
            "apgd-t": {
                "loss": "dlr-targeted",
                "steps": self.steps,
                "rho": APGD_RHO,
                "eot_iter": APGD_EOT_ITER,
                "target_classes": targets,
            },
            "fab-t": {
                "loss": "targeted min-norm",
                "steps": self.steps,
                "target_classes": targets,
                "alpha_max": FAB_ALPHA_MAX,
                "eta": FAB_ETA,
                "beta": FAB_BETA,
            },
            "square": {
                "loss": SQUARE_LOSS,
                "queries": self.square_queries,
                "p_init": SQUARE_P_INIT,
                "rescale_schedule": SQUARE_RESCALE_SCHEDULE,
            },
        }
        return [{"attack": name, **common, **table[name]} for name in self.attacks]

    def build(self, model: nn.Module, n_classes: int, device: torch.device | str | None = None) -> list[tuple]:
        """The suite as configured torchattacks objects: ``[(name, attack), ...]`` in running order.

        ``n_classes``: the model's number of outputs (>= 4). Each object attacks ``model`` on ``device`` (default:
        the model's) and re-seeds the global RNG with ``seed`` when called, so call them inside
        ``torch.random.fork_rng`` (as :func:`run_autoattack` does).
        """
        import torchattacks  # imported here: torchattacks is heavy and only AutoAttack needs it

        targets = self.target_classes(n_classes)
        norm = _TORCHATTACKS_NORM[self.norm]
        common = dict(norm=norm, eps=self.eps, n_restarts=N_RESTARTS, seed=self.seed)
        suite = []
        for name in self.attacks:
            if name == "apgd-ce":
                atk = torchattacks.APGD(
                    model, steps=self.steps, loss="ce", eot_iter=APGD_EOT_ITER, rho=APGD_RHO, **common
                )
            elif name == "apgd-t":
                atk = torchattacks.APGDT(model, steps=self.steps, eot_iter=APGD_EOT_ITER, rho=APGD_RHO, **common)
                atk.n_target_classes = targets  # torchattacks would use n_classes - 1 (99 on CIFAR-100)
            elif name == "fab-t":
                atk = torchattacks.FAB(
                    model,
                    steps=self.steps,
                    alpha_max=FAB_ALPHA_MAX,
                    eta=FAB_ETA,
                    beta=FAB_BETA,
                    multi_targeted=True,
                    **common,
                )
                atk.n_target_classes = targets
            else:
                atk = torchattacks.Square(
                    model,
                    n_queries=self.square_queries,
                    p_init=SQUARE_P_INIT,
                    loss=SQUARE_LOSS,
                    resc_schedule=SQUARE_RESCALE_SCHEDULE,
                    **common,
                )
            atk.set_device(torch.device(device) if device is not None else model_device(model))
            suite.append((name, atk))
        return suite

    def record(self, n_classes: int | None = None) -> dict:
        """The attack columns of a robustness record (``attack, norm, eps, steps, alpha`` then the suite's own).

        ``alpha`` is NaN: APGD has no fixed step (it starts at 2 * eps and halves it when the loss stalls).
        ``square_queries`` is None when the suite has no Square.
        """
        return {
            "attack": self.name,
            "norm": self.norm,
            "eps": self.eps,
            "steps": self.steps,
            "alpha": math.nan,
            "square_queries": self.square_queries if "square" in self.attacks else None,
            "n_target_classes": self.n_target_classes if n_classes is None else self.target_classes(n_classes),
            "n_restarts": N_RESTARTS,
            "seed": self.seed,
            "suite_note": self.suite_note(n_classes),
        }


@dataclass(frozen=True)
class AutoAttackResult:
    """What :func:`run_autoattack` measured.

    ``clean`` and ``robust``: bool [N] on the CPU, per example in split order (robust: classified correctly
    after every attack of the suite, so ``robust <= clean``). ``after``: robust accuracy in [0, 1] after each
    attack, in running order (non-increasing). ``n_classes``: the model's number of outputs.
    """

    config: AutoAttackConfig
    n_classes: int
    clean: Tensor
    robust: Tensor
    after: dict[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.clean.numel())

    @property
    def clean_acc(self) -> float:
        return self.clean.sum().item() / self.n

    @property
    def robust_acc(self) -> float:
        return self.robust.sum().item() / self.n

    def record(self, **labels: Any) -> dict:
        """A robustness record: ``labels`` (e.g. ``scheme``, ``scenario``), ``threat_model="II"`` (end to end,
        white box), the columns of :meth:`AutoAttackConfig.record`, ``n``, ``clean_acc``, ``robust_acc``."""
        columns = self.config.record(self.n_classes)
        head = {k: columns.pop(k) for k in ("attack", "norm", "eps", "steps", "alpha")}
        return {
            **labels,
            "threat_model": "II",
            **head,
            "n": self.n,
            "clean_acc": self.clean_acc,
            "robust_acc": self.robust_acc,
            **columns,
        }


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor) -> Tensor:
    """Arg-max labels in float32, the precision the torchattacks components attack in."""
    return model(x).float().argmax(1)


def _outside_ball(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    return size > eps * (1 + _BALL_TOLERANCE) + _BALL_TOLERANCE


def run_autoattack(
    model: nn.Module,
    split: Split,
    config: AutoAttackConfig,
    *,
    n: int | None = None,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> AutoAttackResult:
    """Run the suite of ``config`` on the first ``n`` examples of ``split`` (all if ``None``), batch by batch.

    ``model``: x [B, 3, H, W] in [0, 1] -> logits [B, C] (C >= 4). Per batch, the examples the model classifies
    correctly are attacked by the suite's first attack; each later attack gets only the examples every earlier one
    failed on (the reference's ``run_standard_evaluation``). An example is robust if no attack found an input
    within ``eps`` that the model misclassifies. The model runs in eval mode in float32 and every sub-module's
    train/eval flag is restored afterwards; torchattacks re-seeds the global RNG, so the run happens inside
    ``torch.random.fork_rng`` and the caller's RNG state is untouched. Same inputs and seed: same result.
    """
    if not isinstance(config, AutoAttackConfig):
        raise ValueError(f"config must be an AutoAttackConfig, got {type(config).__name__}")
    device = torch.device(device) if device is not None else model_device(model)
    if n is not None:
        n = checks.integer("n", n, 1, hint="or None for the whole split")
        split = split.take(torch.arange(min(n, len(split))))
    if len(split) == 0:
        raise ValueError("the split is empty: nothing to evaluate")
    batch_size = checks.integer("batch_size", batch_size, 1, hint="e.g. 512")
    loader = DeviceLoader(split, batch_size, shuffle=False, drop_last=False, device=device)
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    clean_all, robust_all = [], []
    survivors = [0] * len(config.attacks)
    with torch.random.fork_rng(devices=cuda_devices), attack_mode(model, "eval"):
        with torch.no_grad():
            n_classes = int(model(next(iter(loader))[0][:1]).shape[1])
        if n_classes < MIN_CLASSES:
            raise ValueError(
                f"AutoAttack needs a model with >= {MIN_CLASSES} classes (APGD-T's targeted DLR loss uses the 4 "
                f"largest logits); this model has {n_classes}"
            )
        suite = config.build(model, n_classes, device)
        for x, y in loader:
            robust = _predict(model, x) == y
            clean_all.append(robust.to("cpu", copy=True))  # robust is changed in place below
            for k, (name, atk) in enumerate(suite):
                idx = robust.nonzero().squeeze(1)
                if idx.numel() > 0:
                    x_adv = atk(x[idx], y[idx])
                    outside = _outside_ball(x_adv, x[idx], config.eps, config.norm)
                    if outside.any():
                        raise RuntimeError(f"{name} returned {int(outside.sum())} input(s) outside the eps-ball")
                    robust[idx[_predict(model, x_adv) != y[idx]]] = False
                survivors[k] += int(robust.sum())
            robust_all.append(robust.cpu())
    total = len(split)
    return AutoAttackResult(
        config=config,
        n_classes=n_classes,
        clean=torch.cat(clean_all),
        robust=torch.cat(robust_all),
        after={name: count / total for name, count in zip(config.attacks, survivors)},
    )


def autoattack_record(
    model: nn.Module,
    split: Split,
    config: AutoAttackConfig,
    *,
    n: int | None = None,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    **labels: Any,
) -> dict:
    """:func:`run_autoattack`, as one robustness record (see :meth:`AutoAttackResult.record`).

    ``labels`` lead the record, e.g. ``scheme="SL", scenario="Full-AT"``. Columns: ``scheme, scenario,
    threat_model, attack, norm, eps, steps, alpha, n, clean_acc, robust_acc, square_queries, n_target_classes,
    n_restarts, seed, suite_note``.
    """
    return run_autoattack(model, split, config, n=n, batch_size=batch_size, device=device).record(**labels)
