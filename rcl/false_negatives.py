"""Gupta et al.'s recipes: the SimCLR-supervised robustness gap, the hypersphere, and removing false negatives.

Gupta, Akhtar, Mian, Shah, *Contrastive Self-Supervised Learning Leads to Higher Adversarial Susceptibility*
(AAAI 2023, arXiv 2207.10862):

- **The gap** (``gap_fraction``): a SimCLR encoder with a linear head is less robust than a supervised network
  trained with the same network, augmentations and schedule. We train three arms here (``supervised``, ``simclr``
  and ``supcon``, the contrast of the paper's Figure 1) with SimCLR's augmentation, Adam at the profile's rate and
  ``cfg.fn_epochs`` epochs, and measure clean accuracy and PGD-20 accuracy over a grid of radii (``eps_records``:
  0.25 to 8/255, from delta = 0, model in eval mode), the robust/clean ratio and the flip rate among correctly
  classified images; also at a quarter and half of the epochs (``budgets``), so the gap can be seen opening or
  closing as training grows, and at matched clean accuracy (``matched_clean``).
- **Why** (``hypersphere``, ``class_margins``): NT-Xent pushes every other image of the batch away, including the
  images of the *same class* ("false negatives"). Wang & Isola's (2020) alignment and uniformity, and the margin
  between an example's own class centroid and the nearest other one, show how the classes sit on the sphere.
- **The fix** (``simclr(..., false_negatives=...)``): remove the false negatives from NT-Xent's denominator,

  ``l_i = -log exp(s_ip / t) / sum_{a != i, a not in F(i)} exp(s_ia / t)``, ``F(i)`` = other views with i's label,

  with the true labels (the oracle) or with pseudo-labels from k-means on the current features
  (:func:`rcl.losses.kmeans_pseudo_labels`, recomputed every epoch). The paper's exact detection rule and tables are
  not available offline: the k-means version is **our reading** of it. The same removal is plugged into adversarial
  contrastive pre-training (the main study's: the attack maximises NT-Xent between a view and its perturbation).

Paper's figures (quoted in :mod:`rcl.references`): removal closes up to 68 % of the gap and gives about 5 %
average robust-accuracy gain inside two adversarial contrastive methods.

Every model is loaded from ``run_dir/08_false_negatives/`` when it is there and trained otherwise.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rcl import study
from rcl.attacks import AttackConfig, attack_mode
from rcl.augment import SimCLRAugment
from rcl.data import Dataset, Split, balanced_subset
from rcl.evaluate import accuracy, correct, features, robust_accuracy
from rcl.losses import alignment, kmeans_pseudo_labels, uniformity
from rcl.models import Classifier, ContrastiveNet
from rcl.profiles import Config
from rcl.runtime import make_generator, seeded_init
from rcl.train import TrainConfig, finetune, pretrain_contrastive, train_supervised
from rcl.verdicts import Claims, Floor, paired_statistic

CHAPTER = "08_false_negatives"
REMOVALS = (None, "labels", "kmeans")  # no removal | oracle (true labels) | k-means pseudo-labels
SUPERVISED = "supervised"
SUPCON = "SupCon"
ARMS = (SUPERVISED, "SimCLR", SUPCON)  # the matched comparison: one network, augmentation and schedule
EPS_GRID = tuple(e / 255 for e in (0.25, 0.5, 1, 2, 4, 8))  # PGD-20 radii of the eps curve
EVAL_STEPS = 20
RADIUS_FLOOR = 0.05  # a radius enters the robust/clean comparison when both arms keep at least 5 % robust accuracy


def scheme_name(false_negatives: str | None = None, adversarial: bool = False) -> str:
    """``"SimCLR"``, ``"SimCLR-FN(labels)"``, ``"SimCLR-FN(kmeans)"``, with ``" +AT"`` for adversarial pre-training."""
    if false_negatives not in REMOVALS:
        raise ValueError(f"false_negatives must be one of {REMOVALS}, got {false_negatives!r}")
    name = "SimCLR" if false_negatives is None else f"SimCLR-FN({false_negatives})"
    return name + (" +AT" if adversarial else "")


# ----------------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Plan:
    """What the chapter runs. ``n_pretrain``/``n_eval``: class-balanced examples for training and for the test
    evaluation (None = all); ``removals``: standard SimCLR runs; ``adversarial``: adversarial SimCLR runs, each
    ``adversarial_epochs`` long (None: ``cfg.fn_epochs``; they are compared with each other only, and each epoch
    costs about four of a standard run's, so the CPU profiles give them fewer)."""

    n_pretrain: int | None
    n_eval: int | None
    removals: tuple[str | None, ...]
    adversarial: tuple[str | None, ...]
    adversarial_epochs: int | None = None


# Profiles that run a slice; every other profile runs every removal, standard and adversarial, on the whole splits
# (the laptop profile: its whole training set, 10,000 images, and every test image it loads).
SLICES = {
    "smoke": dict(n_pretrain=128, n_eval=64, adversarial=(None, "kmeans")),
    "laptop": dict(adversarial=(None, "kmeans"), adversarial_epochs=4),
}


def plan(
    cfg: Config,
    *,
    n_pretrain: int | None = None,
    n_eval: int | None = None,
    removals: tuple | list | None = None,
    adversarial: tuple | list | None = None,
) -> Plan:
    """The runs for ``cfg`` (arguments left at None take the profile's choice): every removal, standard and
    adversarial, on the whole splits; ``smoke`` and ``laptop``: their ``SLICES`` entry (fewer images, two
    adversarial runs)."""
    part = SLICES.get(cfg.profile, {})
    removals = tuple(removals) if removals is not None else REMOVALS
    adversarial = tuple(adversarial) if adversarial is not None else part.get("adversarial", REMOVALS)
    for r in (*removals, *adversarial):
        if r not in REMOVALS:
            raise ValueError(f"unknown false-negative removal {r!r}; choose from {REMOVALS}")
    if None not in removals:
        raise ValueError("removals must include None (plain SimCLR): the gap is measured from it")
    return Plan(
        n_pretrain if n_pretrain is not None else part.get("n_pretrain"),
        n_eval if n_eval is not None else part.get("n_eval"),
        removals,
        adversarial,
        part.get("adversarial_epochs"),
    )


def chapter_dir(cfg: Config) -> Path:
    return cfg.run_dir / CHAPTER


def train_split(cfg: Config, data: Dataset, pl: Plan) -> Split:
    n = pl.n_pretrain
    return data.train if n is None or n >= len(data.train) else balanced_subset(data.train, n, seed=cfg.seed)


def matched_config(cfg: Config, progress: bool = True, epochs: int | None = None) -> TrainConfig:
    """The schedule every arm shares: Adam at ``cfg.lr`` (constant), batch ``cfg.batch_size``, ``epochs`` (default
    ``cfg.fn_epochs``)."""
    run = study.train_config(cfg, cfg.fn_epochs if epochs is None else epochs)
    run.progress = progress
    return run


def budgets(cfg: Config) -> tuple[int, ...]:
    """The training budgets the gap is measured at: a quarter, half and all of ``cfg.fn_epochs`` (distinct, >= 1)."""
    total = cfg.fn_epochs
    return tuple(sorted({max(1, round(total / 4)), max(1, round(total / 2)), total}))


def _budget_dir(cfg: Config, name: str, epochs: int | None) -> Path:
    """``<chapter>/<name>`` for the full budget, ``<chapter>/<name>@<epochs>ep`` for an earlier one."""
    folder = chapter_dir(cfg) / _folder(name)
    return folder if epochs is None or epochs == cfg.fn_epochs else folder.with_name(f"{folder.name}@{epochs}ep")


def _start_from_earlier(cfg: Config, name: str, epochs: int) -> Path:
    """The checkpoint folder of ``name`` at ``epochs``; when it is new, seeded with the latest earlier budget's
    ``last.pt``. With a constant learning rate and per-epoch random streams, training on from epoch k is the same
    run as training ``epochs`` epochs from the start, so the earlier budgets cost nothing extra."""
    folder = _budget_dir(cfg, name, epochs)
    if (folder / "last.pt").exists():
        return folder
    earlier = [b for b in budgets(cfg) if b < epochs and (_budget_dir(cfg, name, b) / "last.pt").exists()]
    if earlier:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_budget_dir(cfg, name, max(earlier)) / "last.pt", folder / "last.pt")
    return folder


# ----------------------------------------------------------------------------------------------------- training
def supervised(
    cfg: Config, data: Dataset, pl: Plan | None = None, progress: bool = True, epochs: int | None = None
) -> Classifier:
    """Load or train the supervised network at matched network, augmentation (SimCLR's) and schedule, for
    ``epochs`` (default ``cfg.fn_epochs``; an earlier budget of :func:`budgets` is the same run stopped early)."""
    pl = pl or plan(cfg)
    epochs = cfg.fn_epochs if epochs is None else epochs
    ckpt_dir = _start_from_earlier(cfg, SUPERVISED, epochs)
    with seeded_init(cfg.seed, study.model_name(cfg, _budget_dir(cfg, SUPERVISED, None))):
        model = Classifier(study.new_encoder(cfg), data.num_classes)
    train_supervised(
        model,
        train_split(cfg, data, pl),
        matched_config(cfg, progress, epochs),
        augment=SimCLRAugment(),
        ckpt_dir=ckpt_dir,
    )
    return model


def simclr(
    cfg: Config,
    data: Dataset,
    false_negatives: str | None = None,
    adversarial: bool = False,
    pl: Plan | None = None,
    progress: bool = True,
    epochs: int | None = None,
) -> ContrastiveNet:
    """Load or train SimCLR (NT-Xent at ``cfg.temperature``), with false negatives removed by ``"labels"`` (oracle)
    or ``"kmeans"`` (pseudo-labels, k = number of classes), standard or adversarial (the main study's attack), for
    ``epochs`` (default ``cfg.fn_epochs``)."""
    return _contrastive(cfg, data, "simclr", false_negatives, adversarial, pl, progress, epochs)


def supcon(
    cfg: Config, data: Dataset, pl: Plan | None = None, progress: bool = True, epochs: int | None = None
) -> ContrastiveNet:
    """Load or train SupCon (Khosla et al. 2020: the labels make same-class views positives) with the matched recipe:
    the paper's contrast between a contrastive loss that uses labels and one that does not."""
    return _contrastive(cfg, data, "supcon", None, False, pl, progress, epochs)


def _contrastive(cfg, data, method, false_negatives, adversarial, pl, progress, epochs) -> ContrastiveNet:
    pl = pl or plan(cfg)
    name = SUPCON if method == "supcon" else scheme_name(false_negatives, adversarial)
    epochs = cfg.fn_epochs if epochs is None else epochs
    ckpt_dir = _start_from_earlier(cfg, name, epochs)
    with seeded_init(cfg.seed, study.model_name(cfg, _budget_dir(cfg, name, None))):
        model = study.new_contrastive(cfg)
    pretrain_contrastive(
        model,
        train_split(cfg, data, pl),
        matched_config(cfg, progress, epochs),
        method=method,
        temperature=cfg.temperature,
        attack=study.attack(cfg, "train") if adversarial else None,
        false_negatives=false_negatives,
        augment=SimCLRAugment(),
        ckpt_dir=ckpt_dir,
    )
    return model


def linear_classifier(
    cfg: Config,
    data: Dataset,
    net: nn.Module,
    name: str,
    pl: Plan | None = None,
    progress: bool = True,
    epochs: int | None = None,
) -> Classifier:
    """Load or train a standard linear head (``cfg.linear_epochs``, Adam) on the frozen encoder of ``net`` (the
    model ``name`` trained for ``epochs``, default ``cfg.fn_epochs``)."""
    pl = pl or plan(cfg)
    ckpt_dir = _budget_dir(cfg, f"linear-{_folder(name)}", epochs)
    with seeded_init(cfg.seed, study.model_name(cfg, ckpt_dir)):
        model = Classifier(study.new_encoder(cfg), data.num_classes)
    model.encoder.load_state_dict(net.encoder.state_dict())
    run = study.train_config(cfg, cfg.linear_epochs)
    run.progress = progress
    finetune(model, train_split(cfg, data, pl), run, mode="linear", ckpt_dir=ckpt_dir)
    return model


def models(cfg: Config, pl: Plan | None = None) -> list[tuple[str, int]]:
    """Every model the chapter uses, as ``(name, epochs)``, each after the earlier budget it continues from: the three
    matched arms at every budget, then the SimCLR runs with false negatives removed and the adversarial ones (full
    budget). The chapter and the job graph (:mod:`rcl.reproduce.jobs`) both read this list."""
    pl = pl or plan(cfg)
    out = [(arm, epochs) for arm in ARMS for epochs in budgets(cfg)]
    out += [(scheme_name(r, False), cfg.fn_epochs) for r in pl.removals if r is not None]
    out += [(scheme_name(r, True), pl.adversarial_epochs or cfg.fn_epochs) for r in pl.adversarial]
    return out


def network(
    cfg: Config, data: Dataset, name: str, epochs: int | None = None, pl: Plan | None = None, progress: bool = True
) -> nn.Module:
    """Load or train the model ``name`` of :func:`models` (``"supervised"``, ``"SupCon"`` or a SimCLR scheme name
    such as ``"SimCLR-FN(kmeans) +AT"``) for ``epochs``."""
    if name == SUPERVISED:
        return supervised(cfg, data, pl, progress, epochs)
    if name == SUPCON:
        return supcon(cfg, data, pl, progress, epochs)
    adversarial = name.endswith(" +AT")
    base = name.removesuffix(" +AT")
    removal = base[len("SimCLR-FN(") : -1] if base.startswith("SimCLR-FN(") else None
    if scheme_name(removal, adversarial) != name:
        raise ValueError(f"unknown model {name!r}; the chapter's models are {sorted({n for n, _ in models(cfg)})}")
    return simclr(cfg, data, removal, adversarial, pl, progress, epochs)


def classifier(
    cfg: Config, data: Dataset, name: str, epochs: int | None = None, pl: Plan | None = None, progress: bool = True
) -> Classifier:
    """The model ``name`` as an image classifier: the supervised network itself, or a linear head trained on the
    frozen encoder of a contrastive one (:func:`linear_classifier`)."""
    net = network(cfg, data, name, epochs, pl, progress)
    return net if name == SUPERVISED else linear_classifier(cfg, data, net, name, pl, progress, epochs)


def random_encoder(cfg: Config, data: Dataset, pl: Plan | None = None, progress: bool = True) -> Classifier:
    """The chapter's control: :func:`linear_classifier`'s head (same recipe, same training images) on a frozen,
    randomly initialised encoder. What a model must beat to enter a verdict (:func:`floor`)."""
    with seeded_init(cfg.seed, study.model_name(cfg, _budget_dir(cfg, "random-encoder", None))):
        net = study.new_contrastive(cfg)
    return linear_classifier(cfg, data, net, "random-encoder", pl, progress)


def floor(cfg: Config, data: Dataset, test: Split, pl: Plan | None = None) -> Floor:
    """The random-encoder control's clean accuracy on ``test`` plus :data:`rcl.verdicts.FLOOR_MARGIN`."""
    control = random_encoder(cfg, data, pl)
    return Floor(accuracy(control, test, precision=cfg.precision), len(test), "a random encoder with the same head")


def survival_claims(
    claims: Claims,
    a: dict[float, Tensor],
    b: dict[float, Tensor],
    *,
    names: tuple[str, str],
    floor: Floor,
    text: str,
    paper: str = "",
    kind: str | None = None,
    part: str = "",
) -> list[float]:
    """Model a keeps more of its correctly classified images under attack than model b: at each radius where both
    keep at least :data:`RADIUS_FLOOR` robust accuracy, the robust/clean ratio (the share of the images it got right
    that survive), a minus b, with a paired bootstrap interval over the test images; one claim part per radius
    (``"eps 2/255"``), raw robust accuracy beside it. ``a``, ``b``: :func:`eps_records`' outcomes (``{0.0: clean
    bool [N], eps: robust bool [N]}``); ``part`` prefixes the parts' names (``"labels eps 2/255"``). Untestable when
    a model is below ``floor``. Returns the radii tested."""
    from rcl.results import format_eps

    clean_a, clean_b = a[0.0].float().mean().item(), b[0.0].float().mean().item()
    weak = [f"{n} {100 * c:.1f} %" for n, c in zip(names, (clean_a, clean_b)) if not floor.learned(c, len(a[0.0]))]
    if weak:
        why = f"untestable at this scale: {', '.join(weak)} clean, not above the floor ({floor})"
        claims.check(text, None, why, n=len(a[0.0]), paper=paper, kind=kind, part=_part(paper, part, "floor"))
        return []
    tested = []
    for eps in sorted(e for e in a if e > 0):
        robust = [a[eps].float().mean().item(), b[eps].float().mean().item()]
        if min(robust) < RADIUS_FLOOR:
            continue
        pair_a, pair_b = torch.stack([a[0.0], a[eps]], 1).float(), torch.stack([b[0.0], b[eps]], 1).float()
        diff, low, high = paired_statistic(_survival, pair_a, pair_b, seed=_radius_seed(eps))
        evidence = (
            f"at {format_eps(eps)}: robust/clean {names[0]} {_survival(pair_a):.3f} ({100 * robust[0]:.1f} / "
            f"{100 * clean_a:.1f} %) vs {names[1]} {_survival(pair_b):.3f} ({100 * robust[1]:.1f} / "
            f"{100 * clean_b:.1f} %)"
        )
        claims.interval(
            f"{text} at {format_eps(eps)}", diff, low, high, evidence=evidence, n=len(a[0.0]), paper=paper,
            kind=kind, part=_part(paper, part, f"eps {format_eps(eps)}"),
        )  # fmt: skip
        tested.append(eps)
    if not tested:
        why = f"untestable: no radius where both keep {100 * RADIUS_FLOOR:.0f} % robust accuracy"
        claims.check(text, None, why, n=len(a[0.0]), paper=paper, kind=kind, part=_part(paper, part, "radii"))
    return tested


def _part(paper: str, prefix: str, name: str) -> str:
    return " ".join(p for p in (prefix, name) if p) if paper else ""


def _radius_seed(eps: float) -> int:
    """A bootstrap seed per radius, so that each radius' interval is repeatable."""
    return round(eps * 255 * 1000)


def _survival(pairs: Tensor) -> float:
    """The share of correctly classified images that survive: ``pairs`` [N, 2] of (clean, robust) outcomes."""
    return (pairs[:, 1].sum() / pairs[:, 0].sum().clamp_min(1)).item()


def _folder(name: str) -> str:
    return name.replace("(", "-").replace(")", "").replace(" +", "-").replace(" ", "")


# ----------------------------------------------------------------------------------------------------- measures
def evaluate(cfg: Config, model: nn.Module, test: Split, n_eval: int | None = None) -> dict:
    """``{"clean_acc", "robust_acc"}`` (fractions) on ``n_eval`` class-balanced test examples, PGD of the field's
    standard (``rcl.study.attack(cfg, "std")``: L-inf 8/255, step 2/255)."""
    if n_eval is not None and n_eval < len(test):
        test = balanced_subset(test, n_eval, seed=cfg.seed)
    batch = cfg.eval_batch_size
    return {
        "clean_acc": accuracy(model, test, batch_size=batch),
        "robust_acc": robust_accuracy(model, test, study.attack(cfg, "std"), batch_size=batch, seed=cfg.seed),
    }


def eps_attack(cfg: Config, eps: float) -> AttackConfig:
    """PGD-20 on cross-entropy at L-inf ``eps``, step ``2.5 * eps / 20`` (Madry et al.'s rule), from delta = 0 (the
    main study's start), model in eval mode: the attack of the eps curve."""
    return AttackConfig(eps, 2.5 * eps / EVAL_STEPS, EVAL_STEPS, random_start=False, precision=cfg.precision)


def eps_records(
    cfg: Config, model: nn.Module, test: Split, scheme: str, epochs: int, eps_grid: tuple[float, ...] = EPS_GRID
) -> tuple[list[dict], dict[float, Tensor]]:
    """Clean and PGD-20 accuracy of ``model`` (images -> logits) on ``test`` at every eps of ``eps_grid``.

    The radii are attacked from the smallest up, each only on the images that survived every smaller radius: an
    adversarial image found inside a smaller ball lies inside every larger one, so an image counts as robust at
    ``eps`` only when no attack at a radius <= ``eps`` broke it (the worst case over the attacks run, as AutoAttack
    counts its suite; never weaker than attacking each radius alone, and the curve cannot rise with eps). The
    attack has no random start, so attacking a subset gives each image the outcome it would get in the full batch;
    the cost falls with the survivors (a fraction of six full attacks).

    Returns the records (``scheme``, ``epochs``, attack settings, ``clean_acc``, ``robust_acc``, ``ratio`` =
    robust/clean, ``flip_rate`` = share of the correctly classified images that the attack turns wrong, ``n``,
    ``attacked`` = images attacked at this radius) and the per-image outcomes ``{0.0: clean bool [N], eps: robust
    bool [N]}`` for paired comparisons.
    """
    if any(b <= a for a, b in zip(eps_grid, eps_grid[1:])) or not eps_grid or eps_grid[0] <= 0:
        raise ValueError(f"eps_grid must be positive radii in increasing order, got {eps_grid}")
    batch = cfg.eval_batch_size
    clean = correct(model, test, batch_size=batch, precision=cfg.precision)
    outcomes, rows, alive = {0.0: clean}, [], clean
    for eps in eps_grid:
        atk = eps_attack(cfg, eps)
        index = alive.nonzero().squeeze(1)
        robust = torch.zeros_like(clean)
        if len(index):
            robust[index] = correct(model, test.take(index.to(test.device)), atk, batch_size=batch, seed=cfg.seed)
        outcomes[eps], alive = robust, robust
        clean_acc, robust_acc = clean.float().mean().item(), robust.float().mean().item()
        rows.append(
            {
                "scheme": scheme,
                "epochs": epochs,
                "attack": "pgd-ce",
                **atk.record(),
                "clean_acc": clean_acc,
                "robust_acc": robust_acc,
                "ratio": robust_acc / max(clean_acc, 1e-12),
                "flip_rate": (clean & ~robust).sum().item() / max(int(clean.sum()), 1),
                "n": len(test),
                "attacked": len(index),
            }
        )
    return rows, outcomes


def robust_per_image(outcomes: dict[float, Tensor]) -> Tensor:
    """Per test image, the share of the eps curve's radii at which it stays correct: float [N] in [0, 1].

    ``outcomes``: :func:`eps_records`' per-image outcomes (``{0.0: clean, eps: robust}``; the clean entry is left
    out). Its mean is the model's mean robust accuracy over the radii (:func:`mean_robust`), and two models'
    scores on the same images are what a paired comparison resamples (``rcl.verdicts.paired_interval``)."""
    robust = [o for eps, o in outcomes.items() if eps > 0]
    if not robust:
        raise ValueError("outcomes holds no radius above 0: pass eps_records' per-image outcomes")
    return torch.stack(robust).float().mean(dim=0)


def matched_clean(curves: list[dict], weaker: str, stronger: str) -> dict:
    """Compare at matched clean accuracy: the budget of ``stronger`` whose clean accuracy is closest to the
    ``weaker`` arm's final one. ``curves``: :func:`eps_records` rows of every arm and budget. Returns
    ``{"epochs", "clean_acc", "weaker_clean_acc"}`` of the chosen budget."""
    final = max(r["epochs"] for r in curves if r["scheme"] == weaker)
    target = next(r["clean_acc"] for r in curves if r["scheme"] == weaker and r["epochs"] == final)
    candidates = {r["epochs"]: r["clean_acc"] for r in curves if r["scheme"] == stronger}
    if not candidates:
        raise ValueError(f"no eps-curve rows for {stronger!r}")
    epochs = min(candidates, key=lambda e: (abs(candidates[e] - target), e))
    return {"epochs": epochs, "clean_acc": candidates[epochs], "weaker_clean_acc": target}


def with_budget(curves: pd.DataFrame, images: int, batch_size: int) -> pd.DataFrame:
    """``curves`` with the training budget beside every number: ``images`` per epoch and optimiser ``steps``."""
    steps_per_epoch = math.ceil(images / batch_size)
    return curves.assign(images=images, steps=curves.epochs * steps_per_epoch)


def mean_robust(curves: pd.DataFrame) -> pd.Series:
    """Each scheme's robust accuracy averaged over its eps-curve rows (one budget): the area under the eps curve,
    one number per model that no choice of radius favours."""
    return curves.groupby("scheme", sort=False).robust_acc.mean()


def gap_closed_by_eps(curves: pd.DataFrame, n: int) -> pd.DataFrame:
    """Per eps: the supervised - SimCLR gap, its noise band (``rcl.verdicts.noise`` on ``n`` test images) and, for
    every other SimCLR variant in ``curves``, the fraction of the gap it closes, where the gap is real (supervised
    above SimCLR by more than its band) and the variant is more robust than SimCLR; NaN elsewhere (a gap inside the
    noise, or the other way round, cannot be closed, and a removal that lowered robustness closed none of it)."""
    from rcl.verdicts import noise

    rows = []
    for eps, part in curves.groupby("eps"):
        robust = part.set_index("scheme").robust_acc
        gap = robust[SUPERVISED] - robust["SimCLR"]
        band = noise(robust[SUPERVISED], robust["SimCLR"], n)
        for scheme, value in robust.items():
            if scheme in (SUPERVISED, SUPCON, "SimCLR"):
                continue
            helped = value > robust["SimCLR"]  # a share of the gap only where the removal raised robustness
            closed = gap_fraction(robust[SUPERVISED], robust["SimCLR"], value) if gap > band and helped else math.nan
            rows.append({"eps": eps, "scheme": scheme, "gap": gap, "gap_band": band, "gap_closed": closed})
    return pd.DataFrame(rows)


def gap_fraction(supervised_acc: float, simclr_acc: float, new_acc: float) -> float:
    """Fraction of the supervised-SimCLR robustness gap that a new method closes:
    ``(new - simclr) / (supervised - simclr)``.

    1 closes the whole gap, 0 nothing; above 1 overtakes supervised, below 0 makes things worse. If SimCLR is
    *more* robust than supervised the gap is negative and the same formula says how much of that (reversed) gap the
    new method goes back; if there is no gap (``|supervised - simclr| < 1e-12``) the fraction is undefined: NaN.
    Accuracies are fractions in [0, 1].
    """
    for name, value in (("supervised_acc", supervised_acc), ("simclr_acc", simclr_acc), ("new_acc", new_acc)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be an accuracy in [0, 1], got {value}")
    gap = supervised_acc - simclr_acc
    if abs(gap) < 1e-12:
        return math.nan
    return (new_acc - simclr_acc) / gap


@torch.no_grad()
def hypersphere(
    encoder: nn.Module, split: Split, *, augment: SimCLRAugment | None = None, batch_size: int = 256, seed: int = 0
) -> dict:
    """Wang & Isola's alignment and uniformity of ``encoder``'s L2-normalised features on ``split``.

    ``alignment`` = E ||f(v1) - f(v2)||^2 over two augmented views (``augment``, default SimCLR's) of each image
    (lower: views closer); ``uniformity`` = log E exp(-2 ||f(x) - f(y)||^2) over pairs of clean images (lower:
    spread more evenly). Also ``uniformity_within`` (pairs of the same class, averaged over classes): how far SimCLR
    pushes apart images that a classifier should keep together.
    """
    augment = augment or SimCLRAugment()
    device = next(encoder.parameters()).device
    gen = make_generator(device, seed)
    z1, z2 = [], []
    with attack_mode(encoder, "eval"):
        for start in range(0, len(split), batch_size):
            x = split.images[start : start + batch_size].to(device).float().div(255)
            z1.append(encoder(augment(x, gen)).float())
            z2.append(encoder(augment(x, gen)).float())
    z1, z2 = torch.cat(z1), torch.cat(z2)
    clean = features(encoder, split, batch_size=batch_size, normalize=True, device=device)
    return {
        "alignment": float(alignment(z1, z2)),
        "uniformity": float(uniformity(clean)),
        "uniformity_within": uniformity_within(clean, split.labels.cpu()),
    }


def uniformity_within(feats: Tensor, labels: Tensor) -> float:
    """Wang & Isola's uniformity among the examples of each class, averaged over the classes with two or more:
    ``feats`` [N, D] (normalised here), ``labels`` [N]. Lower: a class spread further over the sphere."""
    u = F.normalize(feats.float(), dim=1)
    within = [uniformity(u[labels == c]) for c in labels.unique() if int((labels == c).sum()) >= 2]
    return float(torch.stack(within).mean()) if within else math.nan


def paired_bootstrap(
    measure, feats_a: Tensor, feats_b: Tensor, labels: Tensor, *, resamples: int = 200, seed: int = 0
) -> tuple[float, float, float]:
    """``measure(feats_a, labels) - measure(feats_b, labels)`` and its 95 % paired bootstrap interval over the test
    examples (the same resampled examples for both models): ``(diff, low, high)``. For a geometry measure of two
    encoders on the same images (``feats_*`` [N, D], ``labels`` [N]), e.g. :func:`uniformity_within`."""
    if feats_a.shape[0] != feats_b.shape[0] or feats_a.shape[0] != labels.shape[0]:
        raise ValueError("feats_a, feats_b and labels must hold the same test examples")
    n = len(labels)
    both, twice = torch.cat([feats_a, feats_b]), torch.cat([labels, labels])
    index = torch.arange(n)  # row i of a is row i of both, row i of b is row n + i: one resample serves both

    def measured(rows: Tensor) -> float:
        return measure(both[rows], twice[rows])

    return paired_statistic(measured, index, index + n, resamples=resamples, seed=seed)


def class_margins(feats: Tensor, labels: Tensor) -> tuple[Tensor, dict]:
    """Inter-class margins on the hypersphere.

    ``feats``: ``[N, D]`` features (normalised here), ``labels``: ``[N]``. Each class's centroid is the normalised
    mean of its points; an example's margin is ``cos(f, own centroid) - max_{other c} cos(f, centroid_c)``, in
    [-2, 2]: negative means the example sits closer to another class. Returns ``(margins [N], summary)`` with the
    summary ``mean_margin``, ``frac_negative`` (share of examples closer to another class) and
    ``centroid_cos_max`` (the largest cosine between two class centroids: the two closest classes).
    """
    if feats.ndim != 2 or labels.shape != (feats.shape[0],):
        raise ValueError(f"feats must be [N, D] and labels [N], got {tuple(feats.shape)} and {tuple(labels.shape)}")
    u = F.normalize(feats.float(), dim=1)
    classes = labels.unique()
    if len(classes) < 2:
        raise ValueError("class margins need at least two classes in labels")
    centroids = F.normalize(torch.stack([u[labels == c].mean(0) for c in classes]), dim=1)  # [C, D]
    sims = u @ centroids.T  # [N, C]
    own = (labels[:, None] == classes[None, :]).to(sims.device)
    margins = sims[own] - sims.masked_fill(own, float("-inf")).max(dim=1).values
    between = centroids @ centroids.T
    between.fill_diagonal_(-float("inf"))
    summary = {
        "mean_margin": float(margins.mean()),
        "frac_negative": float((margins < 0).float().mean()),
        "centroid_cos_max": float(between.max()),
    }
    return margins, summary


def pseudo_label_quality(pseudo: Tensor, labels: Tensor) -> dict:
    """How well same-pseudo-label pairs find true false negatives (same-class pairs), over all pairs ``i < j``.

    ``precision``: share of pairs removed (same pseudo-label) that are really same-class; ``recall``: share of
    same-class pairs that are removed. Random labels give precision about 1/C.
    """
    if pseudo.shape != labels.shape or pseudo.ndim != 1:
        raise ValueError(f"pseudo and labels must both be [N], got {tuple(pseudo.shape)} and {tuple(labels.shape)}")
    same_p = pseudo[:, None] == pseudo[None, :]
    same_y = labels[:, None] == labels[None, :]
    upper = torch.triu(torch.ones_like(same_p), diagonal=1)
    removed, true = same_p & upper, same_y & upper
    hits = float((removed & true).sum())
    return {
        "precision": hits / max(float(removed.sum()), 1.0),
        "recall": hits / max(float(true.sum()), 1.0),
    }


def kmeans_quality(encoder: nn.Module, split: Split, k: int, seed: int = 0) -> dict:
    """Pseudo-labels from k-means on ``encoder``'s features of ``split`` and their :func:`pseudo_label_quality`."""
    feats = features(encoder, split)
    pseudo = kmeans_pseudo_labels(feats, k, generator=make_generator("cpu", seed))
    return pseudo_label_quality(pseudo, split.labels.cpu())


# ----------------------------------------------------------------------------------------------------- the study
def run(cfg: Config, data: Dataset, pl: Plan | None = None, progress: bool = True) -> tuple[list[dict], dict]:
    """Load or train every full-budget model of ``pl`` and evaluate it; returns ``(records, models)``.

    Records (one per model): ``scheme`` (supervised, SupCon, SimCLR, SimCLR-FN(labels|kmeans), with " +AT"),
    ``scenario`` ("ST" standard / "AT" adversarial pre-training, linear head), attack settings, ``clean_acc``,
    ``robust_acc``, ``removal`` and ``adversarial``. ``models``: ``{"nets": {scheme: ContrastiveNet or Classifier},
    "classifiers": {scheme: Classifier}}``.
    """
    pl = pl or plan(cfg)
    atk = study.attack(cfg, "std")
    nets: dict[str, nn.Module] = {}
    classifiers: dict[str, Classifier] = {}
    final = {}
    for name, epochs in models(cfg, pl):  # each model's last budget
        final[name] = max(epochs, final.get(name, 0))
    for name, epochs in final.items():
        nets[name] = network(cfg, data, name, epochs, pl, progress)
        classifiers[name] = classifier(cfg, data, name, epochs, pl, progress)
    records = []
    for name, model in classifiers.items():
        adversarial = name.endswith("+AT")
        removal = None
        if name.startswith("SimCLR-FN("):
            removal = name[len("SimCLR-FN(") :].split(")")[0]
        records.append(
            {
                "scheme": name,
                "scenario": "AT" if adversarial else "ST",
                "threat_model": "II",
                "attack": "pgd-ce",
                **atk.record(),
                **evaluate(cfg, model, data.test, pl.n_eval),
                "removal": removal if name != SUPERVISED else None,
                "adversarial": adversarial,
                "epochs": final[name],
            }
        )
    return records, {"nets": nets, "classifiers": classifiers}


def gap_table(records: list[dict], metric: str = "robust_acc") -> list[dict]:
    """For every SimCLR variant in ``records`` (from :func:`run`): its ``metric``, the ``gain`` over its plain SimCLR
    (same standard/adversarial pre-training) and, for standard pre-training, the fraction of the supervised-SimCLR
    gap it closes (``gap_closed``). NaN where there is no gap to close: for adversarial runs (their baseline is
    adversarial SimCLR, not the gap), and where supervised is not above SimCLR by more than the noise band
    (``rcl.verdicts.noise`` on the records' ``n`` test images, when they say it): a share of a gap that may be zero,
    or of one the other way round, reads as progress whatever happened; and where the removal did not raise
    ``metric`` (a negative share of a gap reads as a share beside the paper's "up to 68 %")."""
    from rcl.verdicts import noise

    by_name = {r["scheme"]: r for r in records}
    if SUPERVISED not in by_name:
        raise ValueError("records need the supervised model to measure the gap")
    out = []
    for r in records:
        if r["scheme"] in (SUPERVISED, SUPCON):  # SupCon is a matched arm, not a removal of false negatives
            continue
        base = by_name.get(scheme_name(None, bool(r["adversarial"])))
        if base is None:
            continue
        supervised, simclr = by_name[SUPERVISED][metric], base[metric]
        n = r.get("n")
        real = supervised - simclr > (0.0 if n is None else noise(supervised, simclr, int(n)))
        gain = r[metric] - simclr
        shown = real and gain > 0 and not r["adversarial"]  # a share of the gap only where removal helped
        closed = gap_fraction(supervised, simclr, r[metric]) if shown else math.nan
        out.append({"scheme": r["scheme"], metric: r[metric], "gain": gain, "gap_closed": closed})
    return out


__all__ = [
    "ARMS",
    "CHAPTER",
    "classifier",
    "models",
    "network",
    "EPS_GRID",
    "budgets",
    "eps_attack",
    "eps_records",
    "gap_closed_by_eps",
    "matched_clean",
    "mean_robust",
    "paired_bootstrap",
    "uniformity_within",
    "robust_per_image",
    "with_budget",
    "supcon",
    "Plan",
    "REMOVALS",
    "SLICES",
    "SUPERVISED",
    "class_margins",
    "evaluate",
    "gap_fraction",
    "gap_table",
    "hypersphere",
    "kmeans_quality",
    "linear_classifier",
    "matched_config",
    "plan",
    "pseudo_label_quality",
    "run",
    "scheme_name",
    "simclr",
    "supervised",
]
