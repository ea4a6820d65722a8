"""The papers' and public references' numbers, as data, and a way to lay our results beside them.

Every figure here is quoted from a source a reader can open, and none is computed by us: ``docs/references.md`` has
one entry per source (its heading is the row's ``source``), with the setting behind the figure and the words or
table row it was read from. Values are fractions in [0, 1] (accuracies, or a fraction of a gap); a range (e.g.
RobustBench's ResNet-18 entries) has ``value`` as its low end and ``value_high`` as its high end.

Columns of :func:`table`: ``paper`` (the paper whose chapter the row belongs to), ``source``, ``setting`` (network,
epochs, protocol), ``dataset``, ``arch``, ``method``, ``metric`` (``clean_acc``, ``robust_acc``, ``gap_closed``,
``robust_gain``), ``attack``, ``eps``, ``value``, ``value_high``, and the keys that find our matching result:
``scheme``, ``scenario``, ``chapter``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

MAIN = "Ghofrani et al. (arXiv 2302.02502)"
ACL = "Jiang et al., ACL (NeurIPS 2020)"
GUPTA = "Gupta et al. (AAAI 2023)"
PAPERS = (MAIN, ACL, GUPTA)

_E8 = 8 / 255
_NAN = math.nan

# The sources: each is the heading of its entry in docs/references.md (tests/test_references.py checks it).
SOLO_LEARN = "solo-learn README"
SUPCONTRAST = "SupContrast README"
PGD_AT = "EhanW/AdversarialTraining README"
ROBUSTBENCH = "RobustBench CIFAR-10 Linf entries (ResNet-18)"
JIANG = "Jiang et al. 2020 (as reported)"
ACL_RERUNS = "public re-runs of ACL (issues #19, #21)"
ROCL = "RoCL README"
GUPTA_ABSTRACT = "Gupta et al. 2023 (abstract)"
SOURCES = (SOLO_LEARN, SUPCONTRAST, PGD_AT, ROBUSTBENCH, JIANG, ACL_RERUNS, ROCL, GUPTA_ABSTRACT)
REFERENCES_DOC = "docs/references.md"

_PGD_AT_SETTING = (
    "PGD-AT (Madry), end to end: PGD-10 training at 8/255, SGD 0.1, 110 epochs (decay at 100 and 105); PGD-10 eval"
)

# (paper, source, setting, dataset, arch, method, metric, attack, eps, value, value_high, scheme, scenario, chapter)
_ROWS = [
    # standard linear evaluation (SimCLR / SupCon / cross-entropy): where clean accuracy should head
    (MAIN, SOLO_LEARN, "SimCLR, 1000 epochs, online linear eval", "cifar10", "resnet18", "SimCLR",
     "clean_acc", None, _NAN, 0.9074, _NAN, "CL", "ST", "04_scenarios"),
    (MAIN, SOLO_LEARN, "SimCLR, 1000 epochs, online linear eval", "cifar100", "resnet18", "SimCLR",
     "clean_acc", None, _NAN, 0.6578, _NAN, "CL", "ST", "04_scenarios"),
    (MAIN, SOLO_LEARN, "SupCon, 1000 epochs, online linear eval", "cifar10", "resnet18", "SupCon",
     "clean_acc", None, _NAN, 0.9382, _NAN, "SCL", "ST", "04_scenarios"),
    (MAIN, SOLO_LEARN, "SupCon, 1000 epochs, online linear eval", "cifar100", "resnet18", "SupCon",
     "clean_acc", None, _NAN, 0.7038, _NAN, "SCL", "ST", "04_scenarios"),
    (MAIN, SUPCONTRAST, "cross-entropy, end to end", "cifar10", "resnet50", "supervised",
     "clean_acc", None, _NAN, 0.950, _NAN, "SL", "end-to-end ST", "01_supervised"),
    (MAIN, SUPCONTRAST, "SupCon, linear eval", "cifar10", "resnet50", "SupCon",
     "clean_acc", None, _NAN, 0.960, _NAN, "SCL", "ST", "04_scenarios"),
    (MAIN, SUPCONTRAST, "SimCLR, linear eval", "cifar10", "resnet50", "SimCLR",
     "clean_acc", None, _NAN, 0.936, _NAN, "CL", "ST", "04_scenarios"),
    (MAIN, SUPCONTRAST, "cross-entropy, end to end", "cifar100", "resnet50", "supervised",
     "clean_acc", None, _NAN, 0.753, _NAN, "SL", "end-to-end ST", "01_supervised"),
    (MAIN, SUPCONTRAST, "SupCon, linear eval", "cifar100", "resnet50", "SupCon",
     "clean_acc", None, _NAN, 0.765, _NAN, "SCL", "ST", "04_scenarios"),
    (MAIN, SUPCONTRAST, "SimCLR, linear eval", "cifar100", "resnet50", "SimCLR",
     "clean_acc", None, _NAN, 0.707, _NAN, "CL", "ST", "04_scenarios"),
    # adversarial training: where robust accuracy should head
    (MAIN, PGD_AT, _PGD_AT_SETTING, "cifar10", "resnet18", "supervised PGD-AT", "clean_acc", None, _NAN, 0.8455,
     _NAN, "SL", "end-to-end AT", "01_supervised"),
    (MAIN, PGD_AT, _PGD_AT_SETTING, "cifar10", "resnet18", "supervised PGD-AT", "robust_acc", "pgd-ce", _E8,
     0.5277, _NAN, "SL", "end-to-end AT", "01_supervised"),
    (MAIN, ROBUSTBENCH, "adversarial training on CIFAR-10 alone (no extra or generated data, not compressed)",
     "cifar10", "resnet18", "adversarial training", "robust_acc", "autoattack", _E8, 0.4321, 0.5248, "SL",
     "Full-AT", "05_robustness"),
    # ACL and the adversarial contrastive method it compares with
    (ACL, JIANG, "DS pre-training, full adversarial fine-tuning (TRADES)", "cifar10",
     "resnet18", "ACL DS", "robust_acc", "pgd-ce", _E8, 0.528, _NAN, "DS", "full", "07_acl"),
    (ACL, ACL_RERUNS, "DS pre-training, full adversarial fine-tuning (TRADES), released code", "cifar10",
     "resnet18", "ACL DS", "robust_acc", "pgd-ce", _E8, 0.4878, 0.4991, "DS", "full", "07_acl"),
    (ACL, ROCL, "RoCL pre-training, linear eval", "cifar10", "resnet18", "RoCL",
     "clean_acc", None, _NAN, 0.8371, _NAN, None, None, None),
    (ACL, ROCL, "RoCL pre-training, linear eval; attack not named in the README", "cifar10", "resnet18", "RoCL",
     "robust_acc", "pgd-ce", _E8, 0.4027, _NAN, None, None, None),
    # Gupta et al.
    (GUPTA, GUPTA_ABSTRACT, "false-negative removal in SimCLR (their detection rule; the abstract names no dataset)",
     "cifar10", "resnet", "SimCLR-FN", "gap_closed", "pgd-ce", _NAN, 0.68, _NAN, "SimCLR-FN(kmeans)", "ST",
     "08_false_negatives"),
    (GUPTA, GUPTA_ABSTRACT, "false-negative removal inside two adversarial contrastive methods", "cifar10",
     "resnet", "adversarial CL + FN removal", "robust_gain", "pgd-ce", _NAN, 0.05, _NAN, "SimCLR-FN(kmeans) +AT",
     "AT", "08_false_negatives"),
]  # fmt: skip

COLUMNS = [
    "paper",
    "source",
    "setting",
    "dataset",
    "arch",
    "method",
    "metric",
    "attack",
    "eps",
    "value",
    "value_high",
    "scheme",
    "scenario",
    "chapter",
]


def table(paper: str | None = None) -> pd.DataFrame:
    """Every reference figure as one row (columns in the module docstring); ``paper`` keeps one paper's rows."""
    frame = pd.DataFrame(_ROWS, columns=COLUMNS)
    if paper is not None:
        if paper not in PAPERS:
            raise ValueError(f"unknown paper {paper!r}; choose one of: {'; '.join(PAPERS)}")
        frame = frame[frame.paper == paper].reset_index(drop=True)
    return frame


def format_value(value: float, high: float = _NAN) -> str:
    """``0.528`` -> ``"52.8 %"``; a range ``(0.43, 0.57)`` -> ``"43.0–57.0 %"``; NaN -> ``""``."""
    if value is None or pd.isna(value):
        return ""
    if high is not None and not pd.isna(high):
        return f"{100 * value:.1f}–{100 * high:.1f} %"
    return f"{100 * value:.1f} %"


def to_long(frame: pd.DataFrame) -> pd.DataFrame:
    """Tidy robustness records (``rcl.results.collect``) -> one row per metric: ``chapter, scheme, scenario, metric,
    attack, eps, steps, value``. ``clean_acc`` rows carry no attack."""
    rows = []
    for rec in frame.to_dict("records"):
        base = {k: rec.get(k) for k in ("chapter", "scheme", "scenario")}
        for metric in ("clean_acc", "robust_acc", "gap_closed", "robust_gain"):
            value = rec.get(metric)
            if value is None or pd.isna(value):
                continue
            attack = None if metric == "clean_acc" else rec.get("attack")
            rows.append(
                {
                    **base,
                    "metric": metric,
                    "attack": attack,
                    "eps": rec.get("eps") if attack is not None else _NAN,
                    "steps": rec.get("steps") if attack is not None else _NAN,
                    "value": value,
                }
            )
    columns = ["chapter", "scheme", "scenario", "metric", "attack", "eps", "steps", "value"]
    return pd.DataFrame(rows, columns=columns).drop_duplicates(subset=["chapter", "scheme", "scenario", "metric",
                                                                      "attack", "eps"])  # fmt: skip


def gap_long(gaps: pd.DataFrame, chapter: str = "08_false_negatives") -> pd.DataFrame:
    """Chapter 08's gap table (``rcl.false_negatives.gap_table``: scheme, gain, gap_closed, ...) -> long rows:
    ``gap_closed`` for the standard runs (scenario ST) and ``robust_gain`` for the adversarial ones (AT, schemes
    ending in " +AT"), ready to concatenate with :func:`to_long`. An undefined fraction (no gap) stays NaN."""
    rows = []
    for rec in gaps.to_dict("records"):
        adversarial = str(rec["scheme"]).endswith("+AT")
        metric, value = ("robust_gain", rec["gain"]) if adversarial else ("gap_closed", rec["gap_closed"])
        rows.append(
            {
                "chapter": chapter,
                "scheme": rec["scheme"],
                "scenario": "AT" if adversarial else "ST",
                "metric": metric,
                "attack": "pgd-ce",
                "eps": rec.get("eps", _NAN),
                "steps": rec.get("steps", _NAN),
                "value": value,
            }
        )
    return pd.DataFrame(rows, columns=["chapter", "scheme", "scenario", "metric", "attack", "eps", "steps", "value"])


def _given(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value is not pd.NA


def _match(ours: pd.DataFrame, ref: dict) -> dict | None:
    """Our result for reference row ``ref``: same scheme, scenario and metric, from the reference's chapter when it has
    one (else from any chapter); for a robust metric the same attack family and eps when we have it (else the
    closest eps)."""
    if not _given(ref["scheme"]) or ours.empty:
        return None
    hit = ours[(ours.scheme == ref["scheme"]) & (ours.metric == ref["metric"])]
    if _given(ref["scenario"]):
        hit = hit[hit.scenario == ref["scenario"]]
    own = hit[hit.chapter == ref["chapter"]]
    hit = own if not own.empty else hit  # the chapter named first; another chapter's same model otherwise
    if hit.empty:
        return None
    if ref["metric"] == "robust_acc" and _given(ref["attack"]):
        family = hit[hit.attack.fillna("").astype(str).str.startswith(ref["attack"])]
        hit = family if not family.empty else hit
        if not pd.isna(ref["eps"]):
            hit = hit.assign(_d=(hit.eps.astype(float) - ref["eps"]).abs()).sort_values("_d")
    return hit.iloc[0].to_dict()


_REFERENCE_DATASETS = ("cifar10", "cifar100")


def _one_row_per_result(refs: list[dict], hits: list[dict | None], settings: dict) -> list[int]:
    """For each reference row, the index of the row our matching number stands beside (its own index when it is
    that row), or -1 when it must stay empty: each number of ours appears once, beside the reference of the same
    method on the same dataset (and, among those, the same architecture).

    A run on CIFAR-10 or CIFAR-100 pairs only with references on that dataset; a run on other data (synthetic, an
    image folder) pairs with the best-fitting reference row, whose ``our setting`` then names the dataset.
    """
    dataset = str(settings.get("dataset") or "")
    arch = str(settings.get("arch") or "")
    out = list(range(len(refs)))
    groups: dict[tuple, list[int]] = {}
    for number, hit in enumerate(hits):
        if hit is None:
            continue
        if dataset in _REFERENCE_DATASETS and refs[number]["dataset"] != dataset:
            out[number] = -1
            continue
        key = tuple(str(hit.get(k)) for k in ("chapter", "scheme", "scenario", "metric", "attack", "eps"))
        groups.setdefault(key, []).append(number)
    for members in groups.values():

        def fit(number: int) -> tuple[int, int, int]:
            ref = refs[number]
            same_data = ref["dataset"] == dataset or (
                dataset not in _REFERENCE_DATASETS and ref["dataset"] == "cifar10"
            )
            return (int(same_data), int(bool(arch) and str(ref["arch"]) in arch), -number)

        best = max(members, key=fit)
        for number in members:
            out[number] = best
    return out


def run_numbers(run_dir: str | Path) -> pd.DataFrame:
    """Every number of the run folder ``run_dir`` as long rows (:func:`to_long` of its robustness records plus
    chapter 08's gap table, :func:`gap_long`), ready for :func:`beside`. Works on a published run too."""
    from rcl import results

    run_dir = Path(run_dir)
    gap_file = run_dir / "08_false_negatives" / "gap.csv"
    gaps = pd.read_csv(gap_file) if gap_file.exists() else pd.DataFrame(columns=["scheme", "gain", "gap_closed"])
    return pd.concat([to_long(results.collect(run_dir)), gap_long(gaps)], ignore_index=True)


def run_settings(settings: Mapping) -> dict[str, dict]:
    """Per paper, the settings of ours shown beside its figures, from a run's settings (``Config.as_dict()`` or the
    ``settings`` of a published run's ``run.json``)."""
    base = {
        "profile": settings["profile"],
        "dataset": settings["dataset"],
        "arch": f"{settings['arch']} (width {settings['width']})",
    }
    return {
        MAIN: {**base, "epochs": f"{settings['supervised_epochs']} (SL), {settings['pretrain_epochs']} (CL, SCL)"},
        ACL: {**base, "epochs": f"{settings['acl_epochs']} + {settings['acl_finetune_epochs']} fine-tuning"},
        GUPTA: {**base, "epochs": _fn_epochs(settings)},
    }


def _fn_epochs(settings: Mapping) -> str:
    """Chapter 08's epochs as its plan trains them: the adversarial pre-training rows may be shorter."""
    from rcl import false_negatives as fn

    adversarial = fn.SLICES.get(settings["profile"], {}).get("adversarial_epochs")
    if adversarial is None or adversarial == settings["fn_epochs"]:
        return str(settings["fn_epochs"])
    return f"{settings['fn_epochs']} (adversarial pre-training: {adversarial})"


def beside(ours: pd.DataFrame, settings: dict | None = None, paper: str | None = None) -> pd.DataFrame:
    """The reference figures with our matching numbers in the same row.

    ``ours``: our records, long (:func:`to_long`) or tidy (``rcl.results.collect``; converted here).
    ``settings``: what our run used, e.g. ``{"profile": "smoke", "dataset": "synthetic", "arch": "resnet18
    (width 8)", "epochs": "4"}``; shown in a ``our setting`` column beside the reference's ``setting``, ``dataset``
    and ``arch`` so the differences stand in the same row. Rows without a result of ours say which chapter
    produces it. Columns: paper, method, metric, reference, source, reference setting, ours, our setting, chapter.
    """
    if "metric" not in ours.columns:
        ours = to_long(ours)
    settings = settings or {}
    our_setting = ", ".join(f"{k} {v}" for k, v in settings.items())
    refs = table(paper).to_dict("records")
    hits = [_match(ours, ref) for ref in refs]
    beside_row = _one_row_per_result(refs, hits, settings)
    rows = []
    for number, (ref, hit) in enumerate(zip(refs, hits)):
        unpaired = None
        if hit is not None and beside_row[number] == -1:
            hit, unpaired = None, f"this run used {settings.get('dataset')}: nothing of ours on {ref['dataset']}"
        elif hit is not None and beside_row[number] != number:
            other = refs[beside_row[number]]
            hit, unpaired = None, f"ours is beside the {other['source']} row ({other['arch']}, {other['dataset']})"
        attack = ""
        if ref["metric"] == "robust_acc" and _given(ref["attack"]):
            eps = "" if pd.isna(ref["eps"]) else f", eps {ref['eps'] * 255:g}/255"
            attack = f" ({ref['attack']}{eps})"
        if hit is None:
            mine, where = "", unpaired or ("not run yet" if _given(ref["chapter"]) else "not reproduced here")
        elif pd.isna(hit["value"]):  # e.g. no supervised-SimCLR gap in this run: the fraction is undefined
            mine, where = "undefined", f"no gap to close in this run; {our_setting}"
        else:
            mine = format_value(hit["value"]) if ref["metric"] != "gap_closed" else f"{100 * hit['value']:.0f} %"
            if ref["metric"] == "robust_gain":
                mine = f"{100 * hit['value']:+.1f} %"
            where = our_setting
            if ref["metric"] == "robust_acc" and not pd.isna(hit.get("steps", _NAN)):
                where = f"{hit['attack']} {int(hit['steps'])} steps, eps {float(hit['eps']) * 255:g}/255; " + where
        reference = format_value(ref["value"], ref["value_high"])
        if ref["metric"] == "gap_closed":
            reference = f"up to {reference}"
        elif ref["metric"] == "robust_gain":
            reference = f"about +{reference}"
        rows.append(
            {
                "paper": ref["paper"],
                "method": ref["method"],
                "metric": ref["metric"] + attack,
                "reference": reference,
                "source": ref["source"],
                "reference setting": f"{ref['setting']}; {ref['arch']}, {ref['dataset']}",
                "ours": mine,
                "our setting": where,
                "chapter": ref["chapter"] if _given(ref["chapter"]) else "",
            }
        )
    return pd.DataFrame(rows)


__all__ = [
    "ACL",
    "COLUMNS",
    "GUPTA",
    "MAIN",
    "PAPERS",
    "SOURCES",
    "beside",
    "format_value",
    "gap_long",
    "ghofrani_probes",
    "table",
    "to_long",
]


# --------------------------------------------------------------------------------------- the authors' CKA matrices
# The main study's released CKA matrices (ResNet-50, CIFAR-100), kept at rcl's taps (the stem, every residual block,
# the pooled features) in ghofrani_cka.json by tools/derive_ghofrani_cka.py. Compare directions, not values.
GHOFRANI_SCALE = "ResNet-50, CIFAR-100, the authors' training (released matrices)"
_PAIRS = {"SL vs CL": ("SL", "CL"), "SL vs SCL": ("SL", "SCL"), "CL vs SCL": ("SCL", "CL")}  # their key order


def _ghofrani() -> dict:
    import json

    return json.loads((Path(__file__).resolve().parent / "ghofrani_cka.json").read_text())


def ghofrani_taps() -> list[str]:
    """The authors' taps kept: ``stem``, ``layer1.0`` ... ``layer4.2`` (16 bottleneck blocks), ``pool``."""
    return list(_ghofrani()["taps"])


def ghofrani_matrix(key: str):
    """One released CKA matrix at :func:`ghofrani_taps` (float64 tensor [18, 18]), e.g. ``"CL-CL-AT-ST-CIFAR100"``
    (the AT encoder of CL, layer by layer on clean images) or ``"CL-CL-AT_adv-AT_clean-eps=2"``."""
    import torch

    matrices = _ghofrani()["matrices"]
    if key not in matrices:
        raise KeyError(f"no released matrix {key!r}; there are: {', '.join(sorted(matrices))}")
    return torch.tensor(matrices[key]["matrix"], dtype=torch.float64)


def ghofrani_redundancy() -> pd.DataFrame:
    """The authors' mean off-diagonal clean CKA (``rcl.study.redundancy``) per scheme (rows) and scenario (ST, AT,
    Full-AT), the table :func:`rcl.study.redundancy_claims` judges."""
    from rcl.study import redundancy

    keys = {"ST": "ST-ST", "AT": "AT-ST", "Full-AT": "AT-FAT"}
    return pd.DataFrame(
        {
            c: {s: redundancy(ghofrani_matrix(f"{s}-{s}-{k}-CIFAR100")) for s in ("SL", "CL", "SCL")}
            for c, k in keys.items()
        }
    ).rename_axis("scheme")


def ghofrani_diagonals() -> pd.DataFrame:
    """The authors' clean-vs-adversarial CKA per layer (the diagonal of ``<s>-<s>-<c>_adv-<c>_clean``): one row per
    released (scheme, scenario), columns :func:`ghofrani_taps`."""
    rows = []
    for scheme in ("SL", "CL", "SCL"):
        for scenario, tag in (("ST", "ST"), ("AT", "AT"), ("Full-AT", "FAT")):
            key = f"{scheme}-{scheme}-{tag}_adv-{tag}_clean-CIFAR100"
            if key in _ghofrani()["matrices"]:
                values = ghofrani_matrix(key).diagonal().tolist()
                rows.append({"scheme": scheme, "scenario": scenario, **dict(zip(ghofrani_taps(), values))})
    return pd.DataFrame(rows)


def ghofrani_cross() -> dict[tuple[str, str], float]:
    """The authors' cross-scheme CKA on adversarial images: ``{(pair, scenario): mean of the diagonal}`` for the
    pairs ``"SL vs CL"``, ``"SL vs SCL"``, ``"CL vs SCL"`` and the scenarios ST and AT
    (:func:`rcl.study.convergence_claim`)."""
    out = {}
    for pair, (a, b) in _PAIRS.items():
        out[pair, "ST"] = ghofrani_matrix(f"{a}-ST-{b}-ST-Adv-CIFAR100").diagonal().mean().item()
        out[pair, "AT"] = ghofrani_matrix(f"{a}-AT-{b}-AT-CIFAR100").diagonal().mean().item()
    return out


def ghofrani_eps_sweep() -> pd.DataFrame:
    """The authors' clean-vs-adversarial CKA of the AT encoders trained at eps 2, 8 and 16/255: rows ``scheme``,
    ``train_eps``, ``stem``, ``layer4.2`` (their last block) and ``pool`` (:func:`rcl.study.eps_claim`)."""
    rows = []
    for scheme in ("SL", "CL", "SCL"):
        for eps, suffix in ((2, "eps=2"), (8, "CIFAR100"), (16, "eps=16")):
            diagonal = dict(
                zip(ghofrani_taps(), ghofrani_matrix(f"{scheme}-{scheme}-AT_adv-AT_clean-{suffix}").diagonal())
            )
            rows.append(
                {"scheme": scheme, "train_eps": eps / 255}
                | {tap: float(diagonal[tap]) for tap in ("stem", "layer4.2", "pool")}
            )
    return pd.DataFrame(rows)


def ghofrani_probes() -> pd.DataFrame:
    """The authors' own linear-probe accuracy at the last probed layer (the pooled features) of the eight released
    models whose scheme and scenario their files name (ResNet-50, CIFAR-100, 30 probe epochs): rows ``scheme``,
    ``scenario`` (AT, Partial-AT, Full-AT), ``clean_acc``, ``robust_acc`` (on their adversarial inputs), fractions."""
    rows = [
        {"scheme": key.split("/")[0], "scenario": key.split("/")[1], **values}
        for key, values in _ghofrani()["probes_last_layer"].items()
    ]
    order = {"SL": 0, "CL": 1, "SCL": 2, "AT": 0, "Partial-AT": 1, "Full-AT": 2}
    frame = pd.DataFrame(rows, columns=["scheme", "scenario", "clean_acc", "robust_acc"])
    return frame.sort_values(["scheme", "scenario"], key=lambda c: c.map(order)).reset_index(drop=True)
