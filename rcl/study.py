"""The main study's recipes (Ghofrani et al., arXiv 2302.02502): three schemes x six scenarios.

Schemes: ``SL`` (supervised cross-entropy), ``CL`` (SimCLR, NT-Xent) and ``SCL`` (SupCon).
Each pre-trains an encoder, standard or adversarial; a scenario then fits a classifier on it:

| scenario | pre-training | then |
| --- | --- | --- |
| ST | standard | standard linear head on the frozen encoder |
| AT | adversarial | standard linear head |
| Partial-AT | adversarial | adversarial training of the linear head on the frozen encoder |
| Full-AT | adversarial | adversarial fine-tuning of the whole network |
| ST->Partial-AT | standard | adversarial training of the linear head |
| ST->Full-AT | standard | adversarial fine-tuning of the whole network |

Every model is loaded from its run folder when it is there and trained otherwise ("load or
train"), so each chapter runs on its own and the next chapter reuses what the last one trained:
pre-trained encoders live in the chapter that teaches them (``01_supervised``, ``02_simclr``,
``03_supcon``), scenario classifiers in ``04_scenarios``.

For SL we also fit a fresh linear head on the frozen encoder in ST, so the three schemes are
compared through the same kind of head.

Evaluation (chapters 04-06): :func:`evaluate_scenarios` measures every scheme x scenario under the
threat models and attack settings asked for and returns tidy records (columns ``scheme, scenario,
threat_model, attack, norm, eps, steps, alpha, n, clean_acc, robust_acc``, accuracies as fractions):

- threat model I (``"I"``): PGD maximises the contrastive loss between the representation of the
  perturbed image and that of the clean one (the attacker never sees the head; for SCL it attacks through
  SupCon with the labels, as the released ``testEvalNet_adv`` does, for CL and SL through NT-Xent);
- threat model II (``"II"``): end-to-end PGD on the classifier's cross-entropy.

:func:`adversarial_batch` and :func:`cka_maps` give chapter 06 the adversarial inputs and the three
layer-by-layer CKA matrices (clean, adversarial, clean vs adversarial) of one encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn
from torch import Tensor

from rcl.attacks import AttackConfig
from rcl.checkpoint import load_checkpoint
from rcl.cka import LayerCKA, layer_cka
from rcl.data import Dataset, Split, balanced_subset
from rcl.evaluate import accuracy, threat_model_1, threat_model_2
from rcl.models import Classifier, ContrastiveNet, ProjectionHead, encoder
from rcl.profiles import PROFILES, Config
from rcl.runtime import make_generator, model_device, seeded_init
from rcl.train import TrainConfig, finetune, pretrain_contrastive, train_supervised
from rcl.verdicts import Floor

SCHEMES = ("SL", "CL", "SCL")
SCENARIOS = ("ST", "AT", "Partial-AT", "Full-AT", "ST->Partial-AT", "ST->Full-AT")
SCHEME_NAMES = {"SL": "supervised", "CL": "SimCLR", "SCL": "SupCon"}
SCHEME_CHAPTER = {"SL": "01_supervised", "CL": "02_simclr", "SCL": "03_supcon"}
SCENARIO_CHAPTER = "04_scenarios"

# scenario -> (adversarial pre-training?, fine-tuning mode, adversarial fine-tuning?)
SCENARIO_RECIPE = {
    "ST": (False, "linear", False),
    "AT": (True, "linear", False),
    "Partial-AT": (True, "linear", True),
    "Full-AT": (True, "full", True),
    "ST->Partial-AT": (False, "linear", True),
    "ST->Full-AT": (False, "full", True),
}
# Controls, trained like a scenario but kept out of its tables: Full-AT's budget without the attack (AT pre-training,
# then the same epochs of standard fine-tuning of the whole network), the control of the Full-AT claims.
CONTROL_RECIPE = {"AT->Full-ST": (True, "full", False)}
RECIPES = {**SCENARIO_RECIPE, **CONTROL_RECIPE}


def _check(scheme: str, scenario: str | None = None) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if scenario is not None and scenario not in RECIPES:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(RECIPES)}")


def attack(cfg: Config, kind: str = "train") -> AttackConfig:
    """The PGD settings of the profile: ``train`` (adversarial training), ``eval`` (the main study's
    L-inf 4/255, 40 steps, step 0.01) or ``std`` (the field's 8/255 PGD-20).

    ``train`` and ``eval`` start at delta = 0, as the released ``pgd_linf`` / ``pgd_linf_end2end`` do; ``std``
    starts at a uniform random point of the ball, as the field's PGD (Madry et al. 2018) does.
    """
    settings = {
        "train": (cfg.train_eps, cfg.train_alpha, cfg.train_steps),
        "eval": (cfg.eval_eps, cfg.eval_alpha, cfg.eval_steps),
        "std": (cfg.std_eps, cfg.std_alpha, cfg.std_steps),
    }
    if kind not in settings:
        raise ValueError(f"unknown attack kind {kind!r}; choose one of {', '.join(settings)}")
    eps, alpha, steps = settings[kind]
    return AttackConfig(eps=eps, alpha=alpha, steps=steps, random_start=kind == "std", precision=cfg.precision)


def train_config(cfg: Config, epochs: int, lr: float | None = None, progress: bool = True) -> TrainConfig:
    """Adam at the profile's learning rate, no schedule, no weight decay (the main study's optimiser)."""
    return TrainConfig(
        epochs=epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr if lr is None else lr,
        optimizer="adam",
        seed=cfg.seed,
        device=cfg.device,
        compile=cfg.torch_compile,
        precision=cfg.precision,
        progress=progress,
    )


def new_encoder(cfg: Config, dual_bn: bool = False) -> nn.Module:
    """A freshly initialised encoder of the profile's architecture and width."""
    return encoder(cfg.arch, width=cfg.width, dual_bn=dual_bn)


def new_contrastive(cfg: Config) -> ContrastiveNet:
    """Encoder + the main study's 2-layer projection head (feature_dim -> feature_dim -> head_dim)."""
    enc = new_encoder(cfg)
    return ContrastiveNet(enc, ProjectionHead(enc.feature_dim, enc.feature_dim, cfg.head_dim))


def model_name(cfg: Config, ckpt_dir: Path) -> str:
    """A model's name for :func:`rcl.runtime.seeded_init`: its checkpoint folder relative to the run folder
    (e.g. ``"01_supervised/SL-AT"``), so its initial weights depend on the run seed and what it is, nothing else."""
    return Path(ckpt_dir).relative_to(cfg.run_dir).as_posix()


def with_training_eps(cfg: Config, eps: float) -> Config:
    """``cfg`` with adversarial training at L-inf ``eps`` (pixel units), its step scaled with it (same number of
    steps, so every radius is reached the same way). Models trained with it live in their own folders
    (``-eps<k>`` after the name, k in /255 units) beside the profile's own."""
    return cfg.replace(train_eps=eps, train_alpha=cfg.train_alpha * eps / cfg.train_eps)


def _eps_suffix(cfg: Config) -> str:
    """``""`` at the profile's training radius, else ``"-eps<k>"`` (k = eps x 255)."""
    default = PROFILES.get(cfg.profile, {}).get("train_eps")
    return "" if default is None or abs(cfg.train_eps - default) < 1e-9 else f"-eps{round(cfg.train_eps * 255, 2):g}"


def pretrain_dir(cfg: Config, scheme: str, adversarial: bool) -> Path:
    """``run_dir/<scheme's chapter>/<scheme>-ST`` or ``-AT`` (``-AT-eps16`` at another training radius)."""
    name = f"{scheme}-AT{_eps_suffix(cfg)}" if adversarial else f"{scheme}-ST"
    return cfg.run_dir / SCHEME_CHAPTER[scheme] / name


def scenario_dir(cfg: Config, scheme: str, scenario: str) -> Path:
    """``run_dir/04_scenarios/<scheme>-<scenario>`` (``->`` spelled ``-then-``: ``CL-ST-then-Full-AT``; a scenario
    with adversarial training at another radius than the profile's gets ``-eps<k>``)."""
    _check(scheme, scenario)
    adversarial = RECIPES[scenario][0] or RECIPES[scenario][2]
    suffix = _eps_suffix(cfg) if adversarial else ""
    return cfg.run_dir / SCENARIO_CHAPTER / f"{scheme}-{scenario.replace('->', '-then-')}{suffix}"


def pretrain(cfg: Config, data: Dataset, scheme: str, adversarial: bool = False, progress: bool = True) -> nn.Module:
    """Load or train the pre-trained network of ``scheme``.

    Returns a ``Classifier`` for SL (trained end to end with cross-entropy; PGD-CE when adversarial)
    and a ``ContrastiveNet`` for CL/SCL (NT-Xent / SupCon; adversarial: the attack maximises the
    contrastive loss between a view and its perturbation, and the loss adds that pair's term).
    """
    _check(scheme)
    ckpt_dir = pretrain_dir(cfg, scheme, adversarial)
    adv = attack(cfg, "train") if adversarial else None
    with seeded_init(cfg.seed, model_name(cfg, ckpt_dir)):
        model = Classifier(new_encoder(cfg), data.num_classes) if scheme == "SL" else new_contrastive(cfg)
    if scheme == "SL":
        run = train_config(cfg, cfg.supervised_epochs, progress=progress)
        train_supervised(model, data.train, run, attack=adv, ckpt_dir=ckpt_dir)
        return model
    run = train_config(cfg, cfg.pretrain_epochs, progress=progress)
    pretrain_contrastive(
        model,
        data.train,
        run,
        method="simclr" if scheme == "CL" else "supcon",
        temperature=cfg.temperature,
        attack=adv,
        ckpt_dir=ckpt_dir,
    )
    return model


def scenario_model(
    cfg: Config, data: Dataset, scheme: str, scenario: str, progress: bool = True
) -> tuple[Classifier, nn.Module]:
    """Load or train the classifier of ``scheme`` under ``scenario``.

    Returns ``(classifier, representation)``: the classifier is what threat model II attacks; the
    representation (encoder + the pre-trained projection head for CL/SCL, the encoder for SL) is what
    threat model I attacks. Both share the classifier's encoder.
    """
    _check(scheme, scenario)
    adversarial_pretraining, mode, adversarial_finetuning = RECIPES[scenario]
    pretrained = pretrain(cfg, data, scheme, adversarial_pretraining, progress)
    ckpt_dir = scenario_dir(cfg, scheme, scenario)
    with seeded_init(cfg.seed, model_name(cfg, ckpt_dir)):
        classifier = Classifier(new_encoder(cfg), data.num_classes)
    classifier.encoder.load_state_dict(pretrained.encoder.state_dict())
    epochs = cfg.linear_epochs if mode == "linear" and not adversarial_finetuning else cfg.finetune_epochs
    finetune(
        classifier,
        data.train,
        train_config(cfg, epochs, progress=progress),
        mode=mode,
        attack=attack(cfg, "train") if adversarial_finetuning else None,
        loss="ce",
        augment=False,  # the released fine-tuning phases train on the un-augmented images (ToTensor only)
        ckpt_dir=ckpt_dir,
    )
    if scheme == "SL":
        representation = classifier.encoder
    else:
        representation = ContrastiveNet(classifier.encoder, pretrained.head)
    return classifier, representation


def random_encoder_linear(cfg: Config, data: Dataset, progress: bool = True) -> Classifier:
    """Load or train chapter 02's floor: a standard linear head (``cfg.linear_epochs``, un-augmented images, as the
    scenarios' heads) on a frozen, *randomly initialised* encoder (``run_dir/02_simclr/random-encoder-linear``): what
    any pre-training has to beat, and the control of :func:`floor`."""
    ckpt_dir = cfg.run_dir / SCHEME_CHAPTER["CL"] / "random-encoder-linear"
    with seeded_init(cfg.seed, model_name(cfg, ckpt_dir)):  # the same random encoder in any process, any order
        model = Classifier(new_encoder(cfg), data.num_classes)
    finetune(
        model,
        data.train,
        train_config(cfg, cfg.linear_epochs, progress=progress),
        mode="linear",
        augment=False,  # as the ST and AT heads it is the control of (scenario_model)
        ckpt_dir=ckpt_dir,
    )
    return model


def surrogate(cfg: Config, data: Dataset, progress: bool = True) -> Classifier:
    """Load or train chapter 06's held-out surrogate (``run_dir/06_cka/surrogate``): a supervised network trained
    like chapter 01's standard one from another initialisation, used only to make one set of adversarial images that
    every encoder is compared on (none of the compared encoders made them)."""
    ckpt_dir = cfg.run_dir / "06_cka" / "surrogate"
    with seeded_init(cfg.seed, model_name(cfg, ckpt_dir)):
        model = Classifier(new_encoder(cfg), data.num_classes)
    train_supervised(model, data.train, train_config(cfg, cfg.supervised_epochs, progress=progress), ckpt_dir=ckpt_dir)
    return model


def floor(cfg: Config, data: Dataset, test: Split, progress: bool = True) -> Floor:
    """The floor a model must clear to enter a verdict (:class:`rcl.verdicts.Floor`): the random-encoder control's
    clean accuracy on ``test`` (the images the models are compared on) plus :data:`rcl.verdicts.FLOOR_MARGIN`."""
    control = random_encoder_linear(cfg, data, progress=progress)
    return Floor(accuracy(control, test), len(test), "a random encoder with a standard linear head")


def scenario_budget(cfg: Config, data: Dataset, scheme: str, scenario: str) -> dict:
    """What training the classifier of ``scheme`` under ``scenario`` costs, as :func:`scenario_model` runs it:
    ``pretraining_epochs``, the head / fine-tuning ``mode``, its ``epochs``, ``images`` per epoch, optimiser
    ``steps`` (batches) and ``passes``: forward+backward passes through the network per image and epoch (1 for a
    standard head, the attack's steps + 2 for an adversarial one: PGD, then the clean and the adversarial batch)."""
    _check(scheme, scenario)
    adversarial_pretraining, mode, adversarial_finetuning = RECIPES[scenario]
    epochs = cfg.linear_epochs if mode == "linear" and not adversarial_finetuning else cfg.finetune_epochs
    images = len(data.train)
    return {
        "scheme": scheme,
        "scenario": scenario,
        "pretraining_epochs": cfg.supervised_epochs if scheme == "SL" else cfg.pretrain_epochs,
        "pretraining": "adversarial" if adversarial_pretraining else "standard",
        "mode": mode,
        "head": "adversarial" if adversarial_finetuning else "standard",
        "epochs": epochs,
        "images": images,
        "steps": epochs * -(-images // cfg.batch_size),
        "passes": cfg.train_steps + 2 if adversarial_finetuning else 1,
    }


# The scenarios chapters 05 and 06 evaluate unless told otherwise: a slice on the profiles sized for a CPU, so the
# chapters stay short there (chapter 04 trains and tables all six on every profile); all six elsewhere.
CHAPTER_SCENARIOS = {
    "smoke": {"05": ("ST", "AT", "Full-AT"), "06": ("ST", "AT", "Full-AT")},
    "laptop": {"05": ("ST", "AT", "Full-AT"), "06": ("ST", "AT", "Full-AT")},
}


EPS_SWEEP = (2 / 255, 8 / 255, 16 / 255)  # the training radii of chapter 06's sweep (the released eps=2 / eps=16 maps)
# The schemes chapter 06 trains at every radius of the sweep: one on the CPU profiles (each radius costs an
# adversarial pre-training and a head), all three elsewhere.
SWEEP_SCHEMES = {"smoke": ("SL",)}


def sweep_schemes(cfg: Config) -> list[str]:
    """The schemes chapter 06 trains at every radius of :data:`EPS_SWEEP` under ``cfg.profile``."""
    return list(SWEEP_SCHEMES.get(cfg.profile, SCHEMES))


def chapter_scenarios(cfg: Config, chapter: str) -> list[str]:
    """The scenarios chapter ``chapter`` (``"05"`` or ``"06"``) evaluates by default under ``cfg.profile``."""
    return list(CHAPTER_SCENARIOS.get(cfg.profile, {}).get(str(chapter)[:2], SCENARIOS))


def eval_subset(data: Dataset, n: int | None = None, seed: int = 0) -> Split:
    """``n`` class-balanced test examples (seeded), or the whole test split when ``n`` is None or too large."""
    if n is not None and n < 1:
        raise ValueError(f"n must be >= 1 (or None for the whole test split), got {n}")
    return balanced_subset(data.test, None if n is None or n >= len(data.test) else n, seed)


THREAT_MODELS = {"I": "pgd-contrastive", "II": "pgd-ce"}


def evaluate_scenario(
    cfg: Config,
    data: Dataset,
    scheme: str,
    scenario: str,
    *,
    kinds: Sequence[str] = ("eval",),
    threat_models: Sequence[str] = ("II",),
    test: Split | None = None,
    progress: bool = True,
) -> list[dict]:
    """Clean and robust accuracy of one scheme x scenario (trained if missing), one record per attack.

    ``kinds``: attack settings of :func:`attack` (``"eval"``: the main study's L-inf 4/255 PGD;
    ``"std"``: 8/255 PGD). ``threat_models``: ``"I"`` (representation attack through the contrastive
    loss at ``cfg.temperature``) and/or ``"II"`` (end-to-end PGD-CE). ``test``: the examples to use
    (default: the whole test split). Records: ``scheme, scenario, threat_model, attack, norm, eps,
    steps, alpha, n, clean_acc, robust_acc`` (fractions in [0, 1]; eps and alpha in [0, 1] pixel units).
    """
    unknown = [t for t in threat_models if t not in THREAT_MODELS]
    if unknown:
        raise ValueError(f"unknown threat model(s) {unknown}; choose from {', '.join(THREAT_MODELS)}")
    classifier, representation = scenario_model(cfg, data, scheme, scenario, progress)
    return evaluate_classifier(
        cfg,
        classifier,
        data.test if test is None else test,
        scheme=scheme,
        scenario=scenario,
        representation=representation,
        kinds=kinds,
        threat_models=threat_models,
    )


def evaluate_classifier(
    cfg: Config,
    classifier: nn.Module,
    test: Split,
    *,
    scheme: str,
    scenario: str,
    representation: nn.Module | None = None,
    kinds: Sequence[str] = ("eval",),
    threat_models: Sequence[str] = ("II",),
) -> list[dict]:
    """The records of :func:`evaluate_scenario` for a classifier already in hand (e.g. chapter 01's end-to-end SL).

    ``scheme`` and ``scenario`` label the records (any string); ``scheme="SCL"`` also makes threat model I attack
    through SupCon with the labels (NT-Xent otherwise). Threat model I needs ``representation`` (the network whose
    output the contrastive attack pushes away from the clean one).
    """
    unknown = [t for t in threat_models if t not in THREAT_MODELS]
    if unknown:
        raise ValueError(f"unknown threat model(s) {unknown}; choose from {', '.join(THREAT_MODELS)}")
    if "I" in threat_models and representation is None:
        raise ValueError("threat model I attacks the representation: pass representation=<encoder or ContrastiveNet>")
    batch = cfg.eval_batch_size
    clean = accuracy(classifier, test, batch_size=batch)
    records = []
    for kind in kinds:
        atk = attack(cfg, kind)
        for tm in threat_models:
            if tm == "I":
                method = "supcon" if scheme == "SCL" else "simclr"  # released testEvalNet_adv: SupCon with labels
                robust = threat_model_1(
                    classifier, representation, test, atk, cfg.temperature, method=method, batch_size=batch
                )
            else:
                robust = threat_model_2(classifier, test, atk, batch_size=batch)
            records.append(
                {
                    "scheme": scheme,
                    "scenario": scenario,
                    "threat_model": tm,
                    "attack": THREAT_MODELS[tm],
                    **atk.record(),
                    "n": len(test),
                    "clean_acc": clean,
                    "robust_acc": robust,
                }
            )
    return records


def evaluate_scenarios(
    cfg: Config,
    data: Dataset,
    schemes: Sequence[str] = SCHEMES,
    scenarios: Sequence[str] = SCENARIOS,
    **kwargs,
) -> list[dict]:
    """:func:`evaluate_scenario` for every scheme x scenario (same keyword arguments), records concatenated."""
    return [
        record
        for scheme in schemes
        for scenario in scenarios
        for record in evaluate_scenario(cfg, data, scheme, scenario, **kwargs)
    ]


def adversarial_batch(
    classifier: nn.Module, split: Split, atk: AttackConfig, n: int | None = None, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """The first ``n`` examples of ``split`` and their PGD-CE adversarial versions against ``classifier``.

    Returns ``(x, y, x_adv)`` on the classifier's device: x, x_adv float [n, 3, H, W] in [0, 1] with
    ``||x_adv - x||_inf <= atk.eps``, y int64 [n]. Attacked in batches of 256 with a seeded random start.
    """
    device = model_device(classifier)
    n = len(split) if n is None else min(n, len(split))
    x = split.images[:n].to(device).float().div(255)
    y = split.labels[:n].to(device)
    gen = make_generator(device, seed)
    x_adv = torch.cat([atk.run(classifier, x[i : i + 256], y[i : i + 256], generator=gen) for i in range(0, n, 256)])
    return x, y, x_adv


def cka_maps(encoder: nn.Module, x: Tensor, x_adv: Tensor, batch_size: int = 256) -> dict[str, LayerCKA]:
    """Layer-by-layer minibatch linear CKA of ``encoder`` (Nguyen et al. 2021) on ``x`` and ``x_adv``.

    x, x_adv: float [N, 3, H, W] in [0, 1], the same examples in the same order. Returns
    ``{"clean": CKA(layer_i(x), layer_j(x)), "adversarial": CKA(layer_i(x_adv), layer_j(x_adv)),
    "clean-vs-adversarial": CKA(layer_i(x), layer_j(x_adv))}``, each a ``LayerCKA(matrix [L, L], taps, taps)``.
    The diagonal of the last one is how much each layer's representation of an image survives the attack.
    """
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv must hold the same examples, got shapes {tuple(x.shape)}, {tuple(x_adv.shape)}")
    return {
        "clean": layer_cka(encoder, x, batch_size=batch_size),
        "adversarial": layer_cka(encoder, x_adv, batch_size=batch_size),
        "clean-vs-adversarial": cross_cka(encoder, x, encoder, x_adv, batch_size=batch_size),
    }


def cross_cka(encoder_a: nn.Module, x_a: Tensor, encoder_b: nn.Module, x_b: Tensor, batch_size: int = 256) -> LayerCKA:
    """Layer-by-layer CKA between two encoders (rows: ``encoder_a``'s taps on ``x_a``, columns: ``encoder_b``'s on
    ``x_b``). ``x_a``, ``x_b``: float [N, 3, H, W] in [0, 1], row i of both from the same image: the clean images
    twice, or each encoder's own adversarial version of them (the main study's cross-scheme maps on adversarial
    representations)."""
    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a and x_b must hold the same examples, got shapes {tuple(x_a.shape)}, {tuple(x_b.shape)}")
    chunks = iter(x_b.split(batch_size))
    return layer_cka(encoder_a, x_a, model_b=encoder_b, inputs_b=lambda _: next(chunks), batch_size=batch_size)


def redundancy(matrix: Tensor | Sequence[Sequence[float]]) -> float:
    """How redundant a network's layers are: the mean off-diagonal entry of its layer-by-layer CKA matrix [L, L]
    (0: every layer represents the images differently; 1: all layers alike). The main study shows the heatmaps;
    this one number per model is our summary of their "block structure"."""
    from rcl.cka_verdicts import mean_off_diagonal

    m = torch.as_tensor(matrix, dtype=torch.float64)
    if m.dim() != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise ValueError(f"matrix must be a square layer-by-layer CKA matrix [L, L] with L >= 2, got {tuple(m.shape)}")
    return float(mean_off_diagonal(m[None])[0])


def _verdict(key: str, text: str, holds, evidence: str) -> dict:
    return {"key": key, "claim": text, "holds": None if holds is None else bool(holds), "evidence": evidence}


def redundancy_claims(table: pd.DataFrame) -> list[dict]:
    """The main study's redundancy claims (``rcl.paper_claims``) decided on ``table``: mean off-diagonal clean CKA
    (:func:`redundancy`), index the schemes SL/CL/SCL, one column per scenario (ST, AT, Full-AT). Each verdict is
    ``{"key", "claim", "holds", "evidence"}``; ``holds`` is None, with the reason, when a needed column is missing.
    The same function judges this run's encoders and the authors' released matrices."""
    r = table

    def need(*columns):
        absent = [c for c in columns if c not in r.columns]
        return f"untestable: {', '.join(absent)} not measured (scenarios: {', '.join(r.columns)})" if absent else None

    out = []
    why = need("ST", "AT")
    out.append(
        _verdict(
            "ghofrani-at-layer-redundancy",
            "adversarial training makes layers more redundant (mean off-diagonal CKA, AT above ST, every scheme)",
            None if why else (r["AT"] > r["ST"]).all(),
            why or "; ".join(f"{s}: ST {r.ST[s]:.3f}, AT {r.AT[s]:.3f}" for s in r.index),
        )
    )
    why = need("AT", "Full-AT")
    change = None if why else r["Full-AT"] - r["AT"]
    out.append(
        _verdict(
            "ghofrani-ft-redundancy-cl",
            "adversarial fine-tuning reduces CL's redundancy (Full-AT below AT)",
            None if why else change["CL"] < 0,
            why or f"CL: AT {r['AT']['CL']:.3f}, Full-AT {r['Full-AT']['CL']:.3f}",
        )
    )
    out.append(
        _verdict(
            "ghofrani-ft-weak-scl-sl",
            "adversarial fine-tuning changes SL's and SCL's redundancy less than CL's (|Full-AT - AT|)",
            None if why else (change.abs()["SL"] < change.abs()["CL"] and change.abs()["SCL"] < change.abs()["CL"]),
            why or "; ".join(f"{s}: {change[s]:+.3f}" for s in r.index),
        )
    )
    why = need("ST")
    out.append(
        _verdict(
            "ghofrani-cl-consistent-st",
            "under standard training CL's layers are the most consistent (highest mean off-diagonal CKA)",
            None if why else r["ST"].idxmax() == "CL",
            why or "; ".join(f"{s}: {r.ST[s]:.3f}" for s in r.index),
        )
    )
    return out


def convergence_claim(cross: dict[tuple[str, str], float]) -> dict:
    """The main study's "universal set" claim decided on ``cross``: ``{(pair, scenario): mean diagonal of the
    cross-scheme CKA on adversarial images}`` with pairs like ``"SL vs CL"`` and scenarios ``"ST"``, ``"AT"``."""
    pairs = sorted({p for p, _ in cross})
    missing = [f"{p} ({c})" for p in pairs for c in ("ST", "AT") if (p, c) not in cross]
    text = (
        "adversarial training makes the schemes' adversarial representations converge (cross-scheme CKA, AT above ST)"
    )
    if missing or not pairs:
        return _verdict("ghofrani-at-universal-set", text, None, f"untestable: {', '.join(missing) or 'no pair'}")
    return _verdict(
        "ghofrani-at-universal-set",
        text,
        all(cross[p, "AT"] > cross[p, "ST"] for p in pairs),
        "; ".join(f"{p}: ST {cross[p, 'ST']:.2f}, AT {cross[p, 'AT']:.2f}" for p in pairs),
    )


def eps_claim(sweep: pd.DataFrame, block: str) -> dict:
    """The main study's training-radius claim decided on ``sweep`` (rows: ``scheme``, ``train_eps`` and the
    clean-vs-adversarial CKA at ``"stem"``, ``block`` (the last residual block) and ``"pool"``; ``robust_acc`` when
    measured): for every scheme the CKA near the end rises with the radius, more than at the stem, and robust accuracy
    with it (when the column is there)."""
    verdicts, evidence = [], []
    for scheme, part in sweep.sort_values("train_eps").groupby("scheme", sort=False):
        rising = [list(part[block]), list(part["pool"])] + ([list(part.robust_acc)] if "robust_acc" in part else [])
        late_gain = part[block].iloc[-1] - part[block].iloc[0]
        stem_gain = part["stem"].iloc[-1] - part["stem"].iloc[0]
        verdicts.append(all(_rises(v) for v in rising) and late_gain > stem_gain)
        robust = " -> ".join(f"{100 * v:.1f} %" for v in part.robust_acc) if "robust_acc" in part else "not measured"
        evidence.append(
            f"{scheme}: {block} {' -> '.join(f'{v:.2f}' for v in part[block])}, pool "
            f"{' -> '.join(f'{v:.2f}' for v in part['pool'])}, stem gain {stem_gain:+.2f}, robust {robust}"
        )
    eps = ", ".join(f"{e * 255:g}" for e in sorted(sweep.train_eps.unique()))
    text = f"a larger training eps ({eps}/255) raises clean-vs-adversarial CKA near the network's end (and robustness)"
    return _verdict("ghofrani-eps-late-similarity", text, all(verdicts) if verdicts else None, "; ".join(evidence))


def _rises(values: Sequence[float]) -> bool:
    return all(later > earlier for earlier, later in zip(values, values[1:]))


def scheme_records(cfg: Config, data: Dataset, scheme: str, progress: bool = True) -> list[dict]:
    """The robustness records chapters 01-03 save for ``scheme`` (models loaded, or trained if missing).

    SL (chapter 01): the end-to-end networks of :func:`pretrain`, scenarios ``"end-to-end ST"`` and
    ``"end-to-end AT"``, under threat model II at the ``eval`` and ``std`` settings. CL and SCL (chapters 02,
    03): the linear heads of scenarios ``"ST"`` and ``"AT"`` (:func:`scenario_model`), under threat models I
    and II at ``eval`` and threat model II at ``std``. Records as in :func:`evaluate_scenario`.
    """
    _check(scheme)
    records = []
    for adversarial in (False, True):
        scenario = "AT" if adversarial else "ST"
        if scheme == "SL":
            net = pretrain(cfg, data, scheme, adversarial, progress)
            runs = [(net, None, ("II",), ("eval", "std"))]
        else:
            net, rep = scenario_model(cfg, data, scheme, scenario, progress)
            runs = [(net, rep, ("I", "II"), ("eval",)), (net, rep, ("II",), ("std",))]
        for classifier, representation, threat_models, kinds in runs:
            records += evaluate_classifier(
                cfg,
                classifier,
                data.test,
                scheme=scheme,
                scenario=f"end-to-end {scenario}" if scheme == "SL" else scenario,
                representation=representation,
                kinds=kinds,
                threat_models=threat_models,
            )
    return records


def pretrain_history(cfg: Config, scheme: str, adversarial: bool = False) -> list[dict]:
    """Per-epoch records (``epoch, loss, acc, ...``) of the pre-training run of ``scheme``, read from its
    ``last.pt``; ``[]`` when it has not been trained yet (call :func:`pretrain` first)."""
    _check(scheme)
    path = pretrain_dir(cfg, scheme, adversarial) / "last.pt"
    if not path.exists():
        return []
    return list((load_checkpoint(path).get("extra") or {}).get("history", []))
