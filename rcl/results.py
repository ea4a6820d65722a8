"""Results on disk: tidy records per chapter, the claims checked on them, and the run's summary.

Every chapter writes its numbers under ``run_dir/<chapter>/`` as CSV (tidy records, one row per
measurement) and JSON (anything else). Robustness records share the columns in ``COLUMNS``, so
``collect`` can lay every scheme x scenario x attack of a run side by side (the headless runner's
summary and chapter 09 both read them).

**Claims.** A chapter never states in prose what its own run shows: every such statement is a
:class:`Claim`, computed from the numbers by :meth:`Claims.check`, :meth:`Claims.greater` ("accuracy a
is above accuracy b") or :meth:`Claims.paired` (the same, from per-image outcomes on the same images),
printed with the numbers and the sample size behind it, and written to ``run_dir/<chapter>/claims.json``.
Each claim declares its **kind**: ``paper`` (a claim of the papers' register, ``docs/claims.md``),
``method`` (a property that checks the code) or ``observation`` (about this run). Its **verdict** is
one of ``holds``, ``does not hold``, ``undecided`` (the difference is inside its noise band: the sign
could flip on another sample of the same size) and ``untestable`` (a floor, a ceiling, a model at
chance, or a number the run lacks). :func:`collect_claims` reads them all back; :func:`summary` puts
them in ``summary.md``, paper claims counted first.

**Noise.** Two accuracies on different samples: :func:`noise`, two standard errors of the difference
(with Agresti and Coull's adjustment, so that 0 % and 100 % get a band too). Two models on the same
test images: :func:`paired_interval`, a paired bootstrap of the per-image difference, much narrower
when the two models get the same images right.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from rcl.fileio import write_atomic

if TYPE_CHECKING:
    from torch import Tensor

COLUMNS = ["chapter", "scheme", "scenario", "attack", "norm", "eps", "steps", "clean_acc", "robust_acc"]
ROBUSTNESS_FILE = "robustness.csv"
CLAIMS_FILE = "claims.json"
KINDS = ("paper", "method", "observation")
VERDICTS = ("holds", "does not hold", "undecided", "untestable")
CHANCE_MARGIN = 0.15  # a model within 15 points of chance (clean accuracy) has learned too little to test a claim


def _atomic_write_text(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    write_atomic(path, lambda handle: handle.write(data), size_hint=len(data))


def save_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` as CSV atomically; returns the path."""
    path = Path(path)
    _atomic_write_text(path, frame.to_csv(index=False))
    return path


def save_json(obj, path: str | Path) -> Path:
    """Write a JSON-serialisable object atomically (indented); returns the path."""
    path = Path(path)
    _atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return path


def save_robustness(records: list[dict] | pd.DataFrame, chapter_dir: str | Path) -> pd.DataFrame:
    """Write robustness records to ``chapter_dir/robustness.csv`` with the shared columns first.

    Each record holds at least ``scheme, scenario, attack, eps, steps, clean_acc, robust_acc``
    (accuracies as fractions in [0, 1], ``eps`` in [0, 1] pixel units). Extra columns are kept.
    """
    chapter_dir = Path(chapter_dir)
    frame = records if isinstance(records, pd.DataFrame) else pd.DataFrame.from_records(records)
    frame = frame.copy()
    frame["chapter"] = chapter_dir.name
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    frame = frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS]]
    save_table(frame, chapter_dir / ROBUSTNESS_FILE)
    return frame


def _damaged(path: Path, err: Exception) -> ValueError:
    chapter = path.parent.name[:2]
    return ValueError(
        f"{path} is damaged ({type(err).__name__}: {err}); it is written by chapter {chapter}: delete it and run that "
        f"chapter again (python -m rcl.reproduce --only {chapter}, with the run's other options)"
    )


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV a chapter wrote; a damaged or emptied one is a ``ValueError`` naming the file and the fix."""
    path = Path(path)
    try:
        return pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise _damaged(path, err) from None


def collect(run_dir: str | Path) -> pd.DataFrame:
    """All robustness records under ``run_dir`` (every ``*/robustness.csv``), one DataFrame."""
    run_dir = Path(run_dir)
    frames = [read_table(path) for path in sorted(run_dir.glob(f"*/{ROBUSTNESS_FILE}"))]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------ formatting
def format_eps(eps) -> str:
    """Pixel units of [0, 1] as k/255: ``8/255`` -> ``"8/255"``, ``0.02`` -> ``"5.1/255"``, ``0`` -> ``"0"``."""
    if eps is None or pd.isna(eps):
        return ""
    k = round(float(eps) * 255, 2)
    return "0" if k == 0 else f"{k:g}/255"


def format_pct(value, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage without the sign: ``0.1289`` -> ``"12.9"``; NaN/None -> ``""``."""
    if value is None or pd.isna(value):
        return ""
    return f"{100 * float(value):.{digits}f}"


def _cell(value) -> str:
    """One markdown table cell: integers without ``.0``, other floats to 3 significant decimals, NaN empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int,)) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame, index: bool = False) -> str:
    """``frame`` as a GitHub markdown table (no title); cells formatted by :func:`_cell`."""
    if index:
        frame = frame.reset_index()
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def summary_markdown(frame: pd.DataFrame, title: str = "Results") -> str:
    """A markdown table of ``frame`` under a ``## title`` (accuracies as percentages, eps as k/255, ``n`` as int).

    Columns that are empty in every row are left out."""
    if frame.empty:
        return f"## {title}\n\n(no results yet)\n"
    shown = frame.copy().dropna(axis=1, how="all")
    for column in ("clean_acc", "robust_acc"):
        if column in shown:
            shown[column] = shown[column].map(format_pct)
    for column in ("eps", "alpha"):
        if column in shown:
            shown[column] = shown[column].map(format_eps)
    shown = shown.astype(object).where(shown.notna(), None)
    return "\n".join([f"## {title}", "", markdown_table(shown), ""])


# ------------------------------------------------------------------------------------------------ claims
def noise(a: float, b: float | None = None, n: int | Sequence[int] = 1) -> float:
    """Two standard errors of an accuracy ``a`` measured on ``n`` examples, or of the difference ``a - b``.

    ``a``, ``b``: fractions in [0, 1]; ``n``: examples behind each (one int for both, or ``(n_a, n_b)``).
    Returns a fraction, a rough 95 % band. Each accuracy's variance is Agresti and Coull's
    ``p~ (1 - p~) / (n + 4)`` with ``p~ = (p n + 2) / (n + 4)`` (two successes and two failures added), so an
    accuracy of 0 or 1 on a few dozen images still gets a band of a few points rather than none. The two
    measurements are treated as independent (on the same test images this is a conservative bound).
    """
    n_a, n_b = (n, n) if isinstance(n, (int, float)) else tuple(n)
    if n_a < 1 or (b is not None and n_b < 1):
        raise ValueError(f"n must be >= 1 (the number of examples behind each accuracy), got {n}")

    def variance(p: float, size: float) -> float:
        adjusted = (p * size + 2) / (size + 4)
        return adjusted * (1 - adjusted) / (size + 4)

    return 2 * math.sqrt(variance(a, n_a) + (0.0 if b is None else variance(b, n_b)))


def paired_interval(
    a: Sequence[float] | Tensor,
    b: Sequence[float] | Tensor,
    *,
    level: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """The mean per-example difference ``a - b`` and its paired bootstrap interval: ``(diff, low, high)``.

    ``a``, ``b``: one score per test example for two models on the *same* examples, in the same order (bool or
    0/1 outcomes, or fractions such as the share of radii an image survives): float [N]. The examples are
    resampled with replacement ``resamples`` times (seeded) and the ``level`` percentile interval of the mean
    difference returned. Images both models get right (or both wrong) add no noise, so the interval is
    narrower than :func:`noise`'s, which treats the two accuracies as independent.
    """
    import torch

    a = torch.as_tensor(a, dtype=torch.float64).flatten()
    b = torch.as_tensor(b, dtype=torch.float64).flatten()
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(
            f"a and b must hold one score per example of the same test images, got {a.numel()} and {b.numel()}"
        )
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level}")
    diff = a - b
    gen = torch.Generator().manual_seed(seed)
    chunk = max(1, 2**22 // len(diff))  # resamples per draw: about 4M indices (32 MB) at a time
    means = torch.cat(
        [
            diff[torch.randint(len(diff), (min(chunk, resamples - done), len(diff)), generator=gen)].mean(dim=1)
            for done in range(0, resamples, chunk)
        ]
    )
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return diff.mean().item(), low, high


def at_chance(clean_acc: float, chance: float) -> bool:
    """Whether a model whose clean accuracy is ``clean_acc`` has learned too little to test a claim: within
    :data:`CHANCE_MARGIN` (15 points) of ``chance`` (``1 / classes``)."""
    return clean_acc < chance + CHANCE_MARGIN


@dataclass(frozen=True)
class Claim:
    """One statement about this run's results, and whether the numbers bear it out.

    ``holds``: True, False, or None when the run cannot test it (``evidence`` says why). ``evidence``: the numbers
    behind the verdict, in words. ``n``: the sample size behind them (test images, pairs, ...), None when not a
    sample. ``within_noise``: the effect is inside its noise band, so the verdict is *undecided* whatever its sign.
    ``kind``: ``paper``, ``method`` or ``observation`` (:data:`KINDS`). ``paper``: the key of the papers' claim it
    tests (``rcl.paper_claims``, ``docs/claims.md``), "" otherwise. ``effect``: the difference it measured (a - b,
    a fraction) when it compares two numbers, so that runs of several seeds can show its spread.
    """

    text: str
    holds: bool | None
    evidence: str
    n: int | None = None
    within_noise: bool = False
    chapter: str = ""
    paper: str = ""
    kind: str = ""
    effect: float | None = None  # the measured difference (a - b, a fraction) where the claim compares two numbers

    @property
    def verdict(self) -> str:
        """One of :data:`VERDICTS`: untestable, undecided (within noise), holds or does not hold."""
        if self.holds is None:
            return "untestable"
        if self.within_noise:
            return "undecided"
        return "holds" if self.holds else "does not hold"

    def __str__(self) -> str:
        evidence = self.evidence + (f"; n = {self.n}" if self.n is not None else "")
        source = f"paper claim {self.paper}" if self.paper else self.kind
        lines = [f"[{self.verdict}] {self.text}" + (f" ({source})" if source else ""), f"    {evidence}"]
        if self.within_noise:
            lines.append("    inside the noise band: a sample of this size cannot tell the difference from zero")
        return "\n".join(lines)


def _kind_of(kind: str | None, paper: str) -> str:
    """The claim's kind: ``"paper"`` when it names a register key, else ``kind`` (``method`` or ``observation``)."""
    if paper:
        if kind not in (None, "paper"):
            raise ValueError(f"kind={kind!r} with paper={paper!r}: a check of a register claim is of kind 'paper'")
        return "paper"
    if kind not in ("method", "observation"):
        raise ValueError(
            f"kind must be 'method' (a property that checks the code) or 'observation' (about this run), got "
            f"{kind!r}; a claim of the papers passes paper=<register key> instead"
        )
    return kind


def claim(
    text: str,
    holds: bool | None,
    evidence: str,
    n: int | None = None,
    *,
    kind: str | None = None,
    within_noise: bool = False,
    chapter: str = "",
    paper: str = "",
    effect: float | None = None,
) -> Claim:
    """Build and print a :class:`Claim` (see :class:`Claims` to also save it with the chapter's results)."""
    if holds is not None:
        holds = bool(holds)
    made = Claim(
        str(text), holds, str(evidence), None if n is None else int(n), bool(within_noise), chapter, paper,
        _kind_of(kind, paper), None if effect is None else float(effect),
    )  # fmt: skip
    print(made)
    return made


class Claims:
    """The claims a chapter checks on its own run, written to ``out/claims.json`` as they are made.

    Creating it starts a fresh file (a re-run of the chapter replaces its old verdicts); checking a claim whose
    text is already there replaces it (a re-run cell). Example::

        claims = results.Claims(out)
        claims.greater("adversarial training raises robust accuracy", at, st, n=256, names=("AT", "ST"),
                       kind="observation")
        claims.check("the loss fell during training", last < first, f"first {first:.3f}, last {last:.3f}",
                     kind="observation")
    """

    def __init__(self, out: str | Path | None):
        self.out = None if out is None else Path(out)
        self.items: list[Claim] = []
        self._save()

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Claim]:
        return iter(self.items)

    def check(
        self,
        text: str,
        holds: bool | None,
        evidence: str,
        n: int | None = None,
        *,
        kind: str | None = None,
        within_noise: bool = False,
        paper: str = "",
        effect: float | None = None,
    ) -> None:
        """Print the verdict of ``text`` given ``holds`` (None: untestable, ``evidence`` says why) and the
        ``evidence`` (numbers, with ``n``), and save it. ``kind``: ``method`` or ``observation``; ``paper``: the
        register key of the papers' claim it tests instead (``rcl.paper_claims``); ``effect``: the difference
        measured, when there is one (:meth:`greater` and :meth:`paired` pass it)."""
        if paper:
            from rcl.paper_claims import claim as registered

            registered(paper)  # KeyError naming the valid keys
        chapter = self.out.name if self.out is not None else ""
        made = claim(
            text, holds, evidence, n, kind=kind, within_noise=within_noise, chapter=chapter, paper=paper, effect=effect
        )
        self.items = [c for c in self.items if c.text != made.text] + [made]
        self._save()

    def _untestable(self, names, values, clean, chance) -> str | None:
        """Why ``a > b`` cannot be tested: a missing number, a model at chance, both at 0 % or both at 100 %."""
        missing = [name for name, v in zip(names, values) if v is None or pd.isna(v)]
        if missing:
            return f"untestable: no number for {' and '.join(missing)} in this run"
        if clean is not None:
            if chance is None:
                raise ValueError("clean= needs chance= (1 / number of classes) to tell a model at chance")
            weak = [f"{name} {100 * c:.1f} %" for name, c in zip(names, clean) if at_chance(c, chance)]
            if weak:
                return (
                    f"untestable: {', '.join(weak)} clean, within {100 * CHANCE_MARGIN:.0f} points of chance "
                    f"({100 * chance:.0f} %): a model at chance tests nothing"
                )
        a, b = values
        if max(a, b) == 0 or min(a, b) == 1:
            where = "0 % (the floor)" if max(a, b) == 0 else "100 % (the ceiling)"
            return f"untestable: {names[0]} and {names[1]} both at {where}"
        return None

    def greater(
        self,
        text: str,
        a: float,
        b: float,
        *,
        n: int | Sequence[int],
        names: tuple[str, str] = ("a", "b"),
        kind: str | None = None,
        paper: str = "",
        clean: tuple[float, float] | None = None,
        chance: float | None = None,
    ) -> None:
        """The claim ``text`` that accuracy ``a`` is above accuracy ``b`` (fractions in [0, 1], on ``n`` examples
        each, treated as independent samples: :func:`noise`).

        Untestable when a number is missing, both sit at 0 % or at 100 %, or (given the two models' ``clean``
        accuracies and ``chance``) a model is within 15 points of chance; undecided inside the noise band."""
        why = self._untestable(names, (a, b), clean, chance)
        if why:
            self.check(text, None, why, n=None if not isinstance(n, (int, float)) else int(n), kind=kind, paper=paper)
            return
        a, b = float(a), float(b)
        band, diff = noise(a, b, n), a - b
        evidence = (
            f"{names[0]} {100 * a:.1f} % vs {names[1]} {100 * b:.1f} %: {100 * diff:+.1f} points, "
            f"noise ±{100 * band:.1f} points"
        )
        if not isinstance(n, (int, float)):  # two sample sizes: name them, keep the smaller as the claim's n
            evidence += f" (n = {int(n[0])} for {names[0]}, {int(n[1])} for {names[1]})"
            n = min(n)
        self.check(
            text, diff > 0, evidence, n=int(n), kind=kind, within_noise=abs(diff) <= band, paper=paper, effect=diff
        )

    def paired(
        self,
        text: str,
        a: Sequence[float] | Tensor,
        b: Sequence[float] | Tensor,
        *,
        names: tuple[str, str] = ("a", "b"),
        kind: str | None = None,
        paper: str = "",
        clean: tuple[float, float] | None = None,
        chance: float | None = None,
        what: str = "accuracy",
    ) -> None:
        """The claim ``text`` that model a scores above model b on the same test images, from per-image scores
        ``a``, ``b`` (float or bool [N], same images in the same order; e.g. robust outcomes, or the share of the
        radii an image survives). The difference's interval is :func:`paired_interval`'s (95 %); undecided when it
        holds 0. Untestable as in :meth:`greater`. ``what`` names the score in the evidence."""
        import torch

        a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
        mean_a, mean_b = a.mean().item(), b.mean().item()
        why = self._untestable(names, (mean_a, mean_b), clean, chance)
        if why:
            self.check(text, None, why, n=len(a), kind=kind, paper=paper)
            return
        diff, low, high = paired_interval(a, b)
        evidence = (
            f"{what} {names[0]} {100 * mean_a:.1f} % vs {names[1]} {100 * mean_b:.1f} %: {100 * diff:+.1f} points, "
            f"paired 95 % interval [{100 * low:+.1f}, {100 * high:+.1f}]"
        )
        self.check(
            text, diff > 0, evidence, n=len(a), kind=kind, within_noise=low <= 0 <= high, paper=paper, effect=diff
        )

    def frame(self) -> pd.DataFrame:
        """The claims as a table: chapter, claim, verdict, evidence, n, within_noise."""
        return claims_frame(self.items)

    def _save(self) -> None:
        if self.out is not None:
            save_json([asdict(c) for c in self.items], self.out / CLAIMS_FILE)


def claims_frame(items: Iterable[Claim | dict]) -> pd.DataFrame:
    """Claims (objects or their dicts) as a DataFrame: chapter, kind, paper, claim, verdict, evidence, n,
    within_noise."""
    rows = []
    for item in items:
        c = item if isinstance(item, Claim) else Claim(**item)
        rows.append(
            {
                "chapter": c.chapter,
                "kind": c.kind,
                "paper": c.paper,
                "claim": c.text,
                "verdict": c.verdict,
                "evidence": c.evidence,
                "n": c.n,
                "within_noise": c.within_noise,
                "effect": c.effect,
            }
        )
    columns = ["chapter", "kind", "paper", "claim", "verdict", "evidence", "n", "within_noise", "effect"]
    return pd.DataFrame(rows, columns=columns)


def verdict_counts(claims: pd.DataFrame) -> str:
    """The headline of a run's claims: paper claims by verdict first, then the method and observation checks, e.g.
    ``"paper claims: 3 holds, 1 does not hold, 9 undecided, 4 untestable; other checks: ..."``."""
    parts = []
    for label, part in (
        ("paper claims", claims[claims.kind == "paper"]),
        ("other checks", claims[claims.kind != "paper"]),
    ):
        counts = part.verdict.value_counts()
        tally = ", ".join(f"{int(counts[v])} {v}" for v in VERDICTS if v in counts) or "none"
        parts.append(f"{label} ({len(part)}): {tally}")
    return "; ".join(parts)


def collect_claims(run_dir: str | Path) -> pd.DataFrame:
    """Every chapter's claims under ``run_dir`` (``*/claims.json``), in chapter order."""
    items = []
    for path in sorted(Path(run_dir).glob(f"*/{CLAIMS_FILE}")):
        try:
            loaded = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise _damaged(path, err) from None
        if not isinstance(loaded, list) or not all(isinstance(item, dict) for item in loaded):
            raise _damaged(path, TypeError("not a list of claims"))
        items += loaded
    return claims_frame(items)


def across_seeds(runs: dict[str, str | Path]) -> pd.DataFrame:
    """One verdict per claim over runs of several seeds (``{label: run_dir}``): ``holds`` or ``does not hold``
    only when every run says so (the same sign, outside the noise, in each), ``untestable`` when any run could not
    test it, ``undecided`` otherwise (inside the noise somewhere, or the seeds disagree). Columns: chapter, kind,
    paper, claim, one verdict column per run, ``verdict`` (the combined one) and ``spread`` (the effect in each
    run, in points, where the claim measured one). A claim missing from a run is left out."""
    frames = {label: collect_claims(run_dir) for label, run_dir in runs.items()}
    keys = ["chapter", "kind", "paper", "claim"]
    table = None
    for label, frame in frames.items():
        part = frame[[*keys, "verdict", "effect"]].rename(columns={"verdict": label, "effect": f"{label} effect"})
        table = part if table is None else table.merge(part, on=keys, how="inner")
    if table is None or table.empty:
        return pd.DataFrame(columns=[*keys, *runs, "verdict", "spread"])
    labels = list(runs)

    def combined(row) -> str:
        verdicts = {row[label] for label in labels}
        if "untestable" in verdicts:
            return "untestable"
        return verdicts.pop() if len(verdicts) == 1 and verdicts <= {"holds", "does not hold"} else "undecided"

    def spread(row) -> str:
        effects = [row[f"{label} effect"] for label in labels]
        if any(e is None or pd.isna(e) for e in effects):
            return ""
        return " / ".join(f"{100 * e:+.1f}" for e in effects) + " points"

    table["verdict"] = table.apply(combined, axis=1)
    table["spread"] = table.apply(spread, axis=1)
    order = table.kind.ne("paper").astype(int)
    return (
        table.assign(_o=order)
        .sort_values("_o", kind="stable")[[*keys, *labels, "verdict", "spread"]]
        .reset_index(drop=True)
    )


REFERENCE_RUN = Path("results") / "laptop-cifar10"  # the committed reference run, under the project root
PUBLISHING_ENV = "RCL_PUBLISHING_TO"  # set by ``rcl.reproduce --publish DIR`` while the run that DIR will hold runs


def reference_run(reference: str | Path | None = None) -> Path | None:
    """The committed reference run's folder (``reference``, default ``<project root>/results/laptop-cifar10``) when
    it holds a ``run.json``; otherwise ``None``, after printing why (none committed, or this very run is the one
    being published there by ``rcl.reproduce --publish``)."""
    from rcl.runtime import project_root

    root = project_root()
    folder = Path(reference) if reference is not None else root / REFERENCE_RUN
    shown = folder.resolve().relative_to(root.resolve()) if folder.resolve().is_relative_to(root.resolve()) else folder
    publishing = os.environ.get(PUBLISHING_ENV)
    if publishing and Path(publishing).resolve() == folder.resolve():
        print(f"this run is the reference run: rcl.reproduce --publish copies it to {shown} when the course ends")
        return None
    if not (folder / "run.json").exists():
        print(f"no committed reference run at {shown}")
        return None
    return folder


def reference_claims(chapter: str, reference: str | Path | None = None) -> str | None:
    """What the committed reference run found for this chapter: its verdicts, printed and returned.

    ``chapter``: the chapter's results folder name (``"01_supervised"``); ``reference``: a published run (default
    ``<project root>/results/laptop-cifar10``). A learner on the smoke profile sees which of the chapter's checks a
    real-data run passes, without typing a number into the notebook: every line comes from the reference run's
    ``claims.json`` and ``run.json``. ``None`` (after saying why) when there is no reference run to read.
    """
    folder = reference_run(reference)
    if folder is None:
        return None
    record = json.loads((folder / "run.json").read_text())
    claims = collect_claims(folder)
    claims = claims[claims.chapter == chapter]
    lines = [
        f"reference run {folder.name}: profile {record.get('profile')}, dataset {record.get('dataset')}, seed "
        f"{record.get('seed')}, commit {str(record.get('commit'))[:12]}; {chapter}: {verdict_counts(claims)}"
    ]
    for c in claims.itertuples():
        source = f"paper claim {c.paper}" if c.paper else c.kind
        size = f"; n = {int(c.n)}" if pd.notna(c.n) and c.n else ""
        lines.append(f"[{c.verdict}] {c.claim}" + (f" ({source})" if source else "") + f"\n    {c.evidence}{size}")
    text = "\n".join(lines)
    print(text)
    return text


# ----------------------------------------------------------------------------------------------- summary
SUMMARY_FILE, SUMMARY_CSV, CLAIMS_CSV = "summary.md", "summary.csv", "claims.csv"
CKA_SUMMARY_FILE = "cka_summary.csv"


def _read_csv(path: Path) -> pd.DataFrame:
    """A chapter's table, or an empty one when the chapter has not written it (yet)."""
    return read_table(path) if path.exists() else pd.DataFrame()


def _sizes(frame: pd.DataFrame, common: bool = False) -> str:
    """``"n = 64 test images"`` from a frame's ``n`` column (``"n = 48, 256 ..."`` when they differ, or only the
    most frequent one with ``common``); ``""`` without one."""
    if "n" not in frame or frame["n"].dropna().empty:
        return ""
    if common:
        return f"n = {int(frame['n'].dropna().mode().iloc[0])} test images"
    values = sorted({int(v) for v in frame["n"].dropna()})
    return f"n = {', '.join(str(v) for v in values)} test images"


def _acc_cell(robust, clean) -> str:
    """``"12.5 (31.6)"``: robust accuracy with the clean accuracy in brackets, as percentages."""
    if robust is None or pd.isna(robust):
        return ""
    return (
        f"{format_pct(robust)} ({format_pct(clean)})"
        if clean is not None and not pd.isna(clean)
        else format_pct(robust)
    )


def _setting(row) -> str:
    """``"TM-II PGD-5 4/255"`` / ``"autoattack-ce+t 8/255"``: the attack of a robustness record, in words."""
    attack = str(row.get("attack") or "")
    eps = format_eps(row.get("eps"))
    tm = row.get("threat_model")
    if attack.startswith("pgd"):
        steps = row.get("steps")
        steps = "" if steps is None or pd.isna(steps) else f"-{int(steps)}"
        prefix = f"TM-{tm} " if isinstance(tm, str) and tm else ""
        return f"{prefix}PGD{steps} {eps}".strip()
    return f"{attack} {eps}".strip()


def settings_table(frame: pd.DataFrame, rows: Sequence[str] = ("scheme", "scenario")) -> pd.DataFrame:
    """Robustness records -> one row per ``rows`` value, a ``clean`` column and one robust column per attack
    setting (:func:`_setting`); percentages as text. A setting measured on another number of test images than the
    rest says so in its column name."""
    frame = frame.copy()
    frame["setting"] = [_setting(r) for r in frame.to_dict("records")]
    sizes = frame.groupby("setting", sort=False)["n"].first() if "n" in frame else pd.Series(dtype=float)
    common = sizes.mode().iloc[0] if not sizes.dropna().empty else None
    rename = {s: f"{s} (n = {int(v)})" for s, v in sizes.items() if not pd.isna(v) and v != common}
    keys = list(rows)
    table = frame.groupby(keys, sort=False)["clean_acc"].first().map(format_pct).rename("clean").to_frame()

    def order(item):  # threat model I, then II, then AutoAttack; smaller radius first
        row = item[1].iloc[0]
        attack, tm = str(row.get("attack") or ""), row.get("threat_model")
        family = 2 if attack.startswith("autoattack") else (0 if tm == "I" else 1)
        return family, float(row.get("eps") or 0)

    for setting, part in sorted(frame.groupby("setting", sort=False), key=order):
        table[rename.get(setting, setting)] = part.groupby(keys, sort=False)["robust_acc"].first().map(format_pct)
    return table.fillna("").reset_index()


def _main_table(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Chapter 04: scenario x scheme, robust (clean) at the main setting; with its caption."""
    if "threat_model" in frame:
        frame = frame[frame.threat_model.fillna("II") == "II"]
    eps = frame.eps.dropna()
    if not eps.empty:  # the main study's radius, 4/255, or the closest one measured
        main = eps.iloc[(eps - 4 / 255).abs().argsort().iloc[0]]
        frame = frame[frame.eps == main]
    cells = {(r["scenario"], r["scheme"]): _acc_cell(r["robust_acc"], r["clean_acc"]) for r in frame.to_dict("records")}
    scenarios = list(dict.fromkeys(frame.scenario))
    schemes = list(dict.fromkeys(frame.scheme))
    table = pd.DataFrame([{"scenario": sc, **{s: cells.get((sc, s), "") for s in schemes}} for sc in scenarios])
    first = frame.iloc[0].to_dict() if not frame.empty else {}
    caption = (
        f"{_setting(first)} (threat model II: end-to-end PGD on the cross-entropy): robust accuracy % (clean "
        f"accuracy % in brackets); {_sizes(frame)}."
    )
    return table, caption


def _acl_table(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    cells = {(r["scheme"], r["scenario"]): _acc_cell(r["robust_acc"], r["clean_acc"]) for r in frame.to_dict("records")}
    schemes, modes = list(dict.fromkeys(frame.scheme)), list(dict.fromkeys(frame.scenario))
    table = pd.DataFrame([{"pre-training": s, **{m: cells.get((s, m), "") for m in modes}} for s in schemes])
    first = frame.iloc[0].to_dict() if not frame.empty else {}
    caption = (
        f"Fine-tuning mode per column; {_setting(first)}: robust accuracy % (clean % in brackets); {_sizes(frame)}."
    )
    return table, caption


def _fn_table(frame: pd.DataFrame, gaps: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    table = pd.DataFrame(
        {
            "model": frame.scheme,
            "pre-training": frame.scenario.map({"ST": "standard", "AT": "adversarial"}).fillna(frame.scenario),
            "clean": frame.clean_acc.map(format_pct),
            "robust": frame.robust_acc.map(format_pct),
        }
    )
    if not gaps.empty and {"scheme", "gain", "gap_closed"} <= set(gaps.columns):
        by = gaps.drop_duplicates("scheme").set_index("scheme")
        table["gain (points)"] = [
            "" if s not in by.index or pd.isna(by.gain[s]) else f"{100 * by.gain[s]:+.1f}" for s in frame.scheme
        ]
        table["gap closed"] = [
            "" if s not in by.index or pd.isna(by.gap_closed[s]) else f"{100 * by.gap_closed[s]:.0f} %"
            for s in frame.scheme
        ]
    first = frame.iloc[0].to_dict() if not frame.empty else {}
    return table, f"{_setting(first)}, accuracy %; {_sizes(frame)}."


def _cka_table(chapter_dir: Path) -> tuple[pd.DataFrame, str]:
    summary = _read_csv(chapter_dir / CKA_SUMMARY_FILE)
    if not summary.empty:
        n = f"; CKA on n = {int(summary.n.iloc[0])} test images" if "n" in summary else ""
        shown = summary.drop(columns=[c for c in ("n",) if c in summary])
        shown = shown.apply(lambda col: col.map(lambda v: f"{v:.2f}" if isinstance(v, float) else v))
        return shown, f"CKA between each layer's representation of a clean image and of its adversarial version{n}."
    diagonal = _read_csv(chapter_dir / "cka_diagonal.csv")
    if diagonal.empty:
        return pd.DataFrame(), ""
    layers = list(diagonal["layer"])
    rows = [
        {
            "model": model,
            f"CKA at {layers[0]}": f"{diagonal[model].iloc[0]:.2f}",
            f"CKA at {layers[-1]}": f"{diagonal[model].iloc[-1]:.2f}",
            "lowest": f"{diagonal[model].min():.2f} ({layers[int(diagonal[model].argmin())]})",
        }
        for model in diagonal.columns
        if model != "layer"
    ]
    return pd.DataFrame(rows), "CKA(clean, adversarial) per layer: first layer, last layer, and the lowest."


def _run_settings(run_dir: Path) -> dict:
    """profile, dataset, seed, ... as the executed notebooks printed them (``rcl.profiles.describe``'s line)."""
    import re

    found: dict[str, str] = {}
    for path in sorted((run_dir / "notebooks").glob("*.ipynb")):
        try:
            notebook = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for cell in notebook.get("cells", []):
            for output in cell.get("outputs", []):
                text = output.get("text", "")
                text = "".join(text) if isinstance(text, list) else text
                match = re.search(r"profile=(\S+) dataset=(\S+) device=(\S+) seed=(\d+)", text)
                if match:
                    found = dict(zip(("profile", "dataset", "device", "seed"), match.groups()))
                    precision = re.search(r" precision=(\S+)", text)
                    return found | ({"precision": precision.group(1)} if precision else {})
        params = notebook.get("metadata", {}).get("papermill", {}).get("parameters", {})
        found = found or {k: str(v) for k, v in params.items() if k in ("profile", "dataset", "device", "seed")}
    return found


def git_commit(root: Path | None = None) -> str:
    """The git commit the code ran from (short hash, ``+ local changes`` when tracked files differ)."""
    from rcl.runtime import project_root

    root = root or project_root()
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + (" + local changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def summary(
    run_dir: str | Path,
    status: Sequence[dict] | None = None,
    *,
    profile: str | None = None,
    dataset: str | None = None,
    seed: int | None = None,
    fell_back: bool = False,
    commit: str | None = None,
    jobs: Sequence[dict] | None = None,
    wall: float | None = None,
) -> str:
    """Write ``summary.md`` (a headline and one compact table per question), ``summary.csv`` (every robustness
    record, tidy) and ``claims.csv`` into ``run_dir``; returns the markdown.

    ``status``: the runner's ``[{"notebook", "status", "seconds"}]`` (wall time and the chapters table).
    ``profile``, ``dataset``, ``seed``: default to what the executed notebooks in ``run_dir/notebooks`` printed.
    ``fell_back``: the requested dataset was missing and the run used the synthetic one. ``commit``: default
    ``git rev-parse --short HEAD`` of the project. ``jobs``: the training jobs' rows when a launcher ran them
    (``rcl.jobs``), shown as their own table. ``wall``: the run's wall time when its chapters ran beside the jobs
    and each other (default: the chapters' times added up, as when they ran one after the other).
    """
    run_dir = Path(run_dir)
    found = _run_settings(run_dir)
    profile = profile or found.get("profile", "unknown")
    dataset = dataset or found.get("dataset", "unknown")
    seed = seed if seed is not None else found.get("seed", "unknown")
    commit = commit or git_commit()
    records = collect(run_dir)
    save_table(records, run_dir / SUMMARY_CSV)
    claims = collect_claims(run_dir)
    save_table(claims, run_dir / CLAIMS_CSV)

    ran = [s for s in (status or []) if s.get("status") == "ran"]
    chapters_time = sum(float(s.get("seconds") or 0) for s in ran)
    wall = chapters_time if wall is None else wall
    head = f"**profile {profile} · dataset {dataset} · seed {seed} · precision {found.get('precision', 'unknown')} · "
    head += f"commit {commit}"
    if status is not None:
        skipped = len(status) - len(ran)
        head += f" · wall time {_duration(wall)}** ({len(ran)} chapter{'s' * (len(ran) != 1)} ran, {skipped} skipped)"
    else:
        head += "**"
    lines = ["# rcl.reproduce summary", "", head, ""]
    if fell_back:
        lines += [f"**The requested dataset was not available: this run fell back to `{dataset}`.**", ""]
    if profile == "smoke" or dataset == "synthetic":
        lines += [
            "> "
            + (
                "Smoke profile: a tiny network trained for a few epochs on a few hundred images. "
                if profile == "smoke"
                else ""
            )  # fmt: skip
            + ("Synthetic stand-in images, not CIFAR. " if dataset == "synthetic" else "")
            + "These numbers show that the code runs end to end; they cannot confirm or refute the papers.",
            "",
        ]
    if not claims.empty:
        lines += [f"**Claims:** {verdict_counts(claims)} (table at the end).", ""]

    def section(title: str, table: pd.DataFrame, caption: str) -> None:
        lines.extend([f"## {title}", ""])
        if table.empty:
            lines.extend(["(not run yet)", ""])
            return
        lines.extend([caption, "", markdown_table(table), ""])

    by_chapter = {c: part for c, part in records.groupby("chapter", sort=False)} if not records.empty else {}
    if "04_scenarios" in by_chapter:
        section("Robustness by scheme and scenario (chapter 04)", *_main_table(by_chapter["04_scenarios"]))
    else:
        section("Robustness by scheme and scenario (chapter 04)", pd.DataFrame(), "")
    first = [by_chapter[c] for c in ("01_supervised", "02_simclr", "03_supcon") if c in by_chapter]
    if first:
        frame = pd.concat(first, ignore_index=True)
        caption = f"Accuracy %; TM-I attacks the representation, TM-II the classifier end to end; {_sizes(frame)}."
        section("Each scheme's own networks (chapters 01-03)", settings_table(frame), caption)
    if "05_robustness" in by_chapter:
        frame = by_chapter["05_robustness"]
        caption = f"Robust accuracy % per attack setting; {_sizes(frame, common=True)} unless a column says otherwise."
        section("Threat models, radii and AutoAttack (chapter 05)", settings_table(frame), caption)
    section("CKA: how much of each layer survives the attack (chapter 06)", *_cka_table(run_dir / "06_cka"))
    if "07_acl" in by_chapter:
        section("ACL pre-training and TRADES fine-tuning (chapter 07)", *_acl_table(by_chapter["07_acl"]))
    else:
        section("ACL pre-training and TRADES fine-tuning (chapter 07)", pd.DataFrame(), "")
    if "08_false_negatives" in by_chapter:
        gaps = _read_csv(run_dir / "08_false_negatives" / "gap.csv")
        section(
            "False negatives and the robustness gap (chapter 08)", *_fn_table(by_chapter["08_false_negatives"], gaps)
        )
    else:
        section("False negatives and the robustness gap (chapter 08)", pd.DataFrame(), "")
    if claims.empty:
        section("Claims checked on this run", pd.DataFrame(), "")
    else:
        claims = claims.assign(order=(claims.kind != "paper").astype(int)).sort_values(["order"], kind="stable")
        shown = claims.assign(
            kind=[f"paper ({p})" if p else k for k, p in zip(claims.kind, claims.paper)],
            evidence=[e + (f"; n = {int(n)}" if not pd.isna(n) else "") for e, n in zip(claims.evidence, claims.n)],
        )[["chapter", "kind", "claim", "verdict", "evidence"]]
        caption = (
            f"{verdict_counts(claims)}. Undecided: the difference is inside its noise band; untestable: a floor, a "
            "ceiling or a model at chance."
        )
        section("Claims checked on this run", shown, caption)
    if jobs:
        caption = "Run by the launcher (rcl.jobs); each chapter started once the jobs it needs were done."
        section("Training jobs", pd.DataFrame(jobs), caption)
    if status:
        chapters = pd.DataFrame(status)
        chapters["seconds"] = chapters["seconds"].map(lambda v: f"{float(v):.0f}")
        caption = f"Wall time {_duration(wall)} for the chapters that ran."
        if jobs is not None and wall != chapters_time:
            caption = (
                f"Wall time {_duration(wall)} for the jobs and the chapters, side by side; the chapters' own times add "
                f"up to {_duration(chapters_time)}."
            )
        section("Chapters", chapters, caption)
    lines += [
        f"Every robustness record of the run, tidy: `{SUMMARY_CSV}`; every claim: `{CLAIMS_CSV}`; each chapter's "
        "figures and tables: its folder.",
        "",
    ]
    text = "\n".join(lines)
    _atomic_write_text(run_dir / SUMMARY_FILE, text)
    return text


# ------------------------------------------------------------------------------------- small table helpers
def config_table(cfg, names: Sequence[str]) -> pd.DataFrame:
    """Chosen settings of a ``rcl.profiles.Config`` as a one-column table; radii and step sizes (fields ending in
    ``_eps`` or ``_alpha``, and ``eps_grid``) shown as k/255, everything else as it is (``train_steps`` stays 2)."""
    values = cfg.as_dict() if hasattr(cfg, "as_dict") else dict(cfg)
    shown = {}
    for name in names:
        value = values[name]
        if name.endswith(("_eps", "_alpha")):
            value = format_eps(value)
        elif name == "eps_grid":
            value = ", ".join(format_eps(v) for v in value)
        shown[name] = value
    return pd.Series(shown, name="value").to_frame()


def readable(frame: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``frame`` with every float shown to ``digits`` significant digits (small values in scientific notation:
    an input gradient of 3.1e-06 is not printed as 0.0000); other values unchanged."""

    def show(value):
        if isinstance(value, float) and not math.isnan(value):
            return f"{value:.{digits}g}"
        return value

    return frame.map(show)


def flip_rate(y, pred_clean, pred_adv) -> tuple[int, int]:
    """How often an attack changes a right answer: ``(flipped, right)`` where ``right`` counts the examples
    classified correctly on the clean input and ``flipped`` those of them misclassified after the attack.

    Examples already wrong on the clean input are left out: the attack cannot be credited with them.
    ``y``, ``pred_clean``, ``pred_adv``: int tensors or arrays ``[N]``.
    """
    import torch

    y, pred_clean, pred_adv = (torch.as_tensor(v).cpu() for v in (y, pred_clean, pred_adv))
    right = pred_clean == y
    return int((right & (pred_adv != y)).sum()), int(right.sum())
