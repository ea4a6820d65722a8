"""Verdicts: what a chapter's own run shows about a claim, with the noise behind it.

A chapter never states in prose what its run shows: every such statement is a :class:`Claim`, computed from the
numbers by :meth:`Claims.check`, :meth:`Claims.greater` ("accuracy a is above accuracy b") or :meth:`Claims.paired`
(the same, from per-image outcomes on the same images), printed with the numbers and the sample size behind it, and
written to ``run_dir/<chapter>/claims.json``. Each claim declares its **kind**: ``paper`` (a claim of the papers'
register, ``docs/claims.md``), ``method`` (a property that checks the code) or ``observation`` (about this run). Its
**verdict** is one of ``holds``, ``does not hold``, ``undecided`` (the difference is inside its noise band: the sign
could flip on another sample of the same size) and ``untestable`` (a floor, a ceiling, a model at chance, or a number
the run lacks). :func:`collect_claims` reads a run's claims back, :func:`across_seeds` combines runs of several seeds,
:func:`reference_claims` shows what the committed reference run found.

**Noise.** Two accuracies on different samples: :func:`noise`, two standard errors of the difference (with Agresti
and Coull's adjustment, so that 0 % and 100 % get a band too). Two models on the same test images:
:func:`paired_interval`, a paired bootstrap of the per-example difference, much narrower when the two models get the
same images right.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from rcl.results import damaged_file, save_json

if TYPE_CHECKING:
    from torch import Tensor

CLAIMS_FILE = "claims.json"
KINDS = ("paper", "method", "observation")
VERDICTS = ("holds", "does not hold", "undecided", "untestable")
CHANCE_MARGIN = 0.15  # a model within 15 points of chance (clean accuracy) has learned too little to test a claim


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

        claims = verdicts.Claims(out)
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
            raise damaged_file(path, err) from None
        if not isinstance(loaded, list) or not all(isinstance(item, dict) for item in loaded):
            raise damaged_file(path, TypeError("not a list of claims"))
        items += loaded
    return claims_frame(items)


def across_seeds(runs: dict[str, str | Path]) -> pd.DataFrame:
    """One verdict per claim over runs of several seeds (``{label: run_dir}``): ``holds`` or ``does not hold``
    only when every run says so (the same sign, outside the noise, in each), ``untestable`` when any run could not
    test it, ``undecided`` otherwise (inside the noise somewhere, or the seeds disagree). Columns: chapter, kind,
    paper, claim, one verdict column per run, ``verdict`` (the combined one) and ``spread`` (the effect in each
    run, in points, where the claim measured one). A claim missing from a run is left out."""
    return combine_seeds({label: collect_claims(run_dir) for label, run_dir in runs.items()})


def combine_seeds(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """:func:`across_seeds` over claims already read (``{label: collect_claims(run_dir)}``)."""
    keys = ["chapter", "kind", "paper", "claim"]
    for label, frame in frames.items():
        twice = frame[frame.duplicated(keys)]
        if len(twice):
            raise ValueError(
                f"runs: {label} states the claim {twice.claim.iloc[0]!r} ({twice.chapter.iloc[0]}) twice; each claim "
                "is checked once, in the chapter that runs its experiment (rcl.verdicts.Claims)"
            )
    table = None
    for label, frame in frames.items():
        part = frame[[*keys, "verdict", "effect"]].rename(columns={"verdict": label, "effect": f"{label} effect"})
        table = part if table is None else table.merge(part, on=keys, how="inner")
    if table is None or table.empty:
        return pd.DataFrame(columns=[*keys, *frames, "verdict", "spread"])
    labels = list(frames)

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
