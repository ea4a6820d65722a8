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
same images right. Any other effect with a bootstrap interval (a CKA difference, ``rcl.cka.bootstrap_cka``):
:meth:`Claims.interval`. Every effect is saved with its interval (``low``, ``high``).

**One verdict per register claim.** A paper claim often has parts (clean *and* robust accuracy, every fine-tuning
mode, each scheme): each part is one row (``part=``), and :func:`paper_verdicts` gives the claim one verdict under the
register's rule: it holds when every part holds outside its noise, does not hold when a part goes the other way
outside its noise, is untestable when a part could not be tested, and undecided otherwise. Headlines count claims
(register keys), never rows.

**The floor.** A model enters a verdict only when it has learned: its clean accuracy is above a control of the same
recipe (a random encoder under the same head training, on the same test images) by :data:`FLOOR_MARGIN` and outside
the noise (:class:`Floor`). Below it the comparison is untestable at this scale.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
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
FLOOR_MARGIN = 0.10  # a model must beat its control (a random encoder, or chance) by 10 points of clean accuracy


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


def paired_statistic(
    statistic: Callable[[Tensor], float | Tensor],
    a: Tensor,
    b: Tensor,
    *,
    level: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``statistic(a) - statistic(b)`` and its paired bootstrap interval: ``(diff, low, high)``.

    ``a``, ``b``: per-example values of two models on the same test examples, ``[N, ...]`` in the same order (e.g.
    ``[N, 2]``: clean and robust outcomes); the same resampled examples for both. For a statistic that is not a mean
    of per-example differences (a ratio such as the share of correctly classified images that survive an attack).
    """
    import torch

    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape[0] != b.shape[0] or a.shape[0] == 0:
        raise ValueError(f"a and b must hold the same test examples, got {a.shape[0]} and {b.shape[0]}")
    gen = torch.Generator().manual_seed(seed)
    diffs = []
    for _ in range(resamples):
        index = torch.randint(a.shape[0], (a.shape[0],), generator=gen)
        diffs.append(float(statistic(a[index])) - float(statistic(b[index])))
    tail = (1 - level) / 2
    low, high = torch.tensor(diffs, dtype=torch.float64).quantile(torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return float(statistic(a)) - float(statistic(b)), float(low), float(high)


@dataclass(frozen=True)
class Floor:
    """The clean accuracy a model must beat to enter a verdict: a control's accuracy plus :data:`FLOOR_MARGIN`.

    ``accuracy``: the control's clean accuracy (fraction) on ``n`` test images; ``control``: what it is, in words
    (e.g. "a random encoder with the same linear head"). A model with clean accuracy ``clean`` on ``n_model`` images
    has learned when ``clean - accuracy >= margin`` and the difference is outside :func:`noise`'s band.
    """

    accuracy: float
    n: int
    control: str
    margin: float = FLOOR_MARGIN

    @classmethod
    def chance(cls, num_classes: int) -> Floor:
        """The weakest floor, for models with no control of their own: chance (``1 / num_classes``), exact."""
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        return cls(1 / num_classes, 0, f"chance ({100 / num_classes:.0f} %)")

    def learned(self, clean: float, n_model: int | None = None) -> bool:
        """Whether a model with clean accuracy ``clean`` (fraction, on ``n_model`` images) is above the floor."""
        gap = clean - self.accuracy
        if gap < self.margin:
            return False
        if self.n and n_model:
            return gap > noise(clean, self.accuracy, (n_model, self.n))
        return True

    def __str__(self) -> str:
        return f"{self.control} {100 * self.accuracy:.1f} % + {100 * self.margin:.0f} points"


@dataclass(frozen=True)
class Claim:
    """One statement about this run's results, and whether the numbers bear it out.

    ``holds``: True, False, or None when the run cannot test it (``evidence`` says why). ``evidence``: the numbers
    behind the verdict, in words. ``n``: the sample size behind them (test images, pairs, ...), None when not a
    sample. ``within_noise``: the effect is inside its noise band, so the verdict is *undecided* whatever its sign.
    ``kind``: ``paper``, ``method`` or ``observation`` (:data:`KINDS`). ``paper``: the key of the papers' claim it
    tests (``rcl.paper_claims``, ``docs/claims.md``), "" otherwise. ``effect``: the difference it measured (a - b,
    a fraction) when it compares two numbers, so that runs of several seeds can show its spread; ``low``, ``high``: its
    95 % interval. ``part``: which part of the register claim ``paper`` this row tests ("" when it has one part).
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
    low: float | None = None  # the effect's 95 % interval
    high: float | None = None
    part: str = ""  # the part of a register claim this row tests (clean / robust, a mode, a scheme)

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
        source = f"paper claim {self.paper}" + (f", part {self.part}" if self.part else "") if self.paper else self.kind
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
    interval: tuple[float, float] | None = None,
    part: str = "",
) -> Claim:
    """Build and print a :class:`Claim` (see :class:`Claims` to also save it with the chapter's results)."""
    if holds is not None:
        holds = bool(holds)
    if part and not paper:
        raise ValueError(f"part={part!r} without paper=: a part belongs to a register claim (rcl.paper_claims)")
    low, high = (None, None) if interval is None else (float(interval[0]), float(interval[1]))
    made = Claim(
        str(text), holds, str(evidence), None if n is None else int(n), bool(within_noise), chapter, paper,
        _kind_of(kind, paper), None if effect is None else float(effect), low, high, str(part),
    )  # fmt: skip
    print(made)
    return made


Clean = tuple[float, float] | None  # the clean accuracies (fractions) of the two models a claim compares


class Claims:
    """The claims a chapter checks on its own run, written to ``out/claims.json`` as they are made.

    Creating it starts a fresh file (a re-run of the chapter replaces its old verdicts); checking a claim whose
    text is already there replaces it (a re-run cell). Example::

        claims = verdicts.Claims(out)
        claims.paired("adversarial training raises robust accuracy", at_outcomes, st_outcomes, names=("AT", "ST"),
                      clean=(0.55, 0.62), floor=floor, kind="observation")
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
        part: str = "",
        effect: float | None = None,
        interval: tuple[float, float] | None = None,
    ) -> None:
        """Print the verdict of ``text`` given ``holds`` (None: untestable, ``evidence`` says why) and the
        ``evidence`` (numbers, with ``n``), and save it. ``kind``: ``method`` or ``observation``; ``paper``: the
        register key of the papers' claim it tests instead (``rcl.paper_claims``), ``part``: which of its parts;
        ``effect``: the difference measured, when there is one, and ``interval`` its 95 % interval (:meth:`greater`,
        :meth:`paired` and :meth:`interval` pass both)."""
        if paper:
            from rcl.paper_claims import claim as registered

            registered(paper)  # KeyError naming the valid keys
        chapter = self.out.name if self.out is not None else ""
        made = claim(
            text, holds, evidence, n, kind=kind, within_noise=within_noise, chapter=chapter, paper=paper,
            effect=effect, interval=interval, part=part,
        )  # fmt: skip
        self.items = [c for c in self.items if c.text != made.text] + [made]
        self._save()

    @staticmethod
    def _untestable(names, values, clean: Clean, floor: Floor | None, n: int | None = None) -> str | None:
        """Why ``a > b`` cannot be tested: a missing number, a model below the floor, both at 0 % or both at 100 %."""
        missing = [name for name, v in zip(names, values) if v is None or pd.isna(v)]
        if missing:
            return f"untestable: no number for {' and '.join(missing)} in this run"
        if clean is not None:
            if floor is None:
                raise ValueError("clean= needs floor= (verdicts.Floor: a control's accuracy, or Floor.chance(C))")
            weak = [f"{name} {100 * c:.1f} %" for name, c in zip(names, clean) if not floor.learned(c, n)]
            if weak:
                return (
                    f"untestable at this scale: {', '.join(weak)} clean, not above the floor ({floor}, outside the "
                    "noise): a model that has not learned tests nothing"
                )
        a, b = values
        if max(a, b) == 0 or min(a, b) == 1:
            where = "0 % (the floor)" if max(a, b) == 0 else "100 % (the ceiling)"
            return f"untestable: {names[0]} and {names[1]} both at {where}"
        return None

    @staticmethod
    def _floor(floor: Floor | None, chance: float | None) -> Floor | None:
        if floor is not None and chance is not None:
            raise ValueError("give floor= or chance=, not both")
        return Floor.chance(round(1 / chance)) if chance is not None else floor

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
        part: str = "",
        clean: Clean = None,
        floor: Floor | None = None,
        chance: float | None = None,
    ) -> None:
        """The claim ``text`` that accuracy ``a`` is above accuracy ``b`` (fractions in [0, 1], on ``n`` examples
        each, treated as independent samples: :func:`noise`). Prefer :meth:`paired` when both are measured on the
        same images.

        Untestable when a number is missing, both sit at 0 % or at 100 %, or (given the two models' ``clean``
        accuracies) a model is not above ``floor`` (``chance=1/C`` is short for ``Floor.chance(C)``); undecided
        inside the noise band."""
        floor = self._floor(floor, chance)
        size = int(n) if isinstance(n, (int, float)) else int(min(n))
        why = self._untestable(names, (a, b), clean, floor, size)
        if why:
            self.check(text, None, why, n=size, kind=kind, paper=paper, part=part)
            return
        a, b = float(a), float(b)
        band, diff = noise(a, b, n), a - b
        evidence = (
            f"{names[0]} {100 * a:.1f} % vs {names[1]} {100 * b:.1f} %: {100 * diff:+.1f} points, "
            f"95 % band [{100 * (diff - band):+.1f}, {100 * (diff + band):+.1f}] (independent samples)"
        )
        if not isinstance(n, (int, float)):  # two sample sizes: name them, keep the smaller as the claim's n
            evidence += f" (n = {int(n[0])} for {names[0]}, {int(n[1])} for {names[1]})"
        self.check(
            text, diff > 0, evidence, n=size, kind=kind, within_noise=abs(diff) <= band, paper=paper, part=part,
            effect=diff, interval=(diff - band, diff + band),
        )  # fmt: skip

    def paired(
        self,
        text: str,
        a: Sequence[float] | Tensor,
        b: Sequence[float] | Tensor,
        *,
        names: tuple[str, str] = ("a", "b"),
        kind: str | None = None,
        paper: str = "",
        part: str = "",
        clean: Clean = None,
        floor: Floor | None = None,
        chance: float | None = None,
        what: str = "accuracy",
    ) -> None:
        """The claim ``text`` that model a scores above model b on the same test images, from per-image scores
        ``a``, ``b`` (float or bool [N], same images in the same order; e.g. robust outcomes, or the share of the
        radii an image survives). The difference's interval is :func:`paired_interval`'s (95 %); undecided when it
        holds 0. Untestable as in :meth:`greater`. ``what`` names the score in the evidence."""
        import torch

        floor = self._floor(floor, chance)
        a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
        mean_a, mean_b = a.mean().item(), b.mean().item()
        why = self._untestable(names, (mean_a, mean_b), clean, floor, len(a))
        if why:
            self.check(text, None, why, n=len(a), kind=kind, paper=paper, part=part)
            return
        diff, low, high = paired_interval(a, b)
        evidence = (
            f"{what} {names[0]} {100 * mean_a:.1f} % vs {names[1]} {100 * mean_b:.1f} %: {100 * diff:+.1f} points, "
            f"paired 95 % interval [{100 * low:+.1f}, {100 * high:+.1f}]"
        )
        self.check(
            text, diff > 0, evidence, n=len(a), kind=kind, within_noise=low <= 0 <= high, paper=paper, part=part,
            effect=diff, interval=(low, high),
        )  # fmt: skip

    def interval(
        self,
        text: str,
        effect: float,
        low: float,
        high: float,
        *,
        evidence: str,
        n: int,
        kind: str | None = None,
        paper: str = "",
        part: str = "",
        scale: float = 1.0,
        unit: str = "",
    ) -> None:
        """The claim ``text`` that an effect (a difference, positive when the claim holds) is above 0, given its
        value and 95 % interval ``[low, high]`` from any bootstrap (e.g. a CKA difference, ``rcl.cka``).
        Undecided when the interval holds 0. ``evidence``: the numbers compared, in words; the effect and its
        interval are appended (times ``scale``, in ``unit``). Untestable when the effect is not a number."""
        if effect is None or pd.isna(effect):
            self.check(text, None, f"untestable: {evidence}", n=n, kind=kind, paper=paper, part=part)
            return
        shown = f"{scale * effect:+.3f}{unit} [{scale * low:+.3f}, {scale * high:+.3f}]"
        self.check(
            text, effect > 0, f"{evidence}; effect {shown} (95 % interval)", n=n, kind=kind,
            within_noise=low <= 0 <= high, paper=paper, part=part, effect=effect, interval=(low, high),
        )  # fmt: skip

    def frame(self) -> pd.DataFrame:
        """The claims as a table: chapter, claim, verdict, evidence, n, within_noise."""
        return claims_frame(self.items)

    def _save(self) -> None:
        if self.out is not None:
            save_json([asdict(c) for c in self.items], self.out / CLAIMS_FILE)


COLUMNS = [
    "chapter",
    "kind",
    "paper",
    "part",
    "claim",
    "verdict",
    "evidence",
    "n",
    "within_noise",
    "effect",
    "low",
    "high",
]


def claims_frame(items: Iterable[Claim | dict]) -> pd.DataFrame:
    """Claims (objects or their dicts) as a DataFrame, one row per check: :data:`COLUMNS`."""
    rows = []
    for item in items:
        c = item if isinstance(item, Claim) else Claim(**item)
        rows.append(
            {
                "chapter": c.chapter,
                "kind": c.kind,
                "paper": c.paper,
                "part": c.part,
                "claim": c.text,
                "verdict": c.verdict,
                "evidence": c.evidence,
                "n": c.n,
                "within_noise": c.within_noise,
                "effect": c.effect,
                "low": c.low,
                "high": c.high,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def combine(verdicts: Iterable[str]) -> str:
    """One verdict from the verdicts of a claim's required parts: ``does not hold`` when a part goes the other way
    outside its noise, ``holds`` when every part holds, ``untestable`` when a part could not be tested, ``undecided``
    otherwise (a part inside its noise). No parts: ``untestable``."""
    found = list(verdicts)
    if not found:
        return "untestable"
    if "does not hold" in found:
        return "does not hold"
    if all(v == "holds" for v in found):
        return "holds"
    return "untestable" if "untestable" in found else "undecided"


PAPER_COLUMNS = ["chapter", "paper", "verdict", "parts", "effect", "low", "high", "evidence"]


def paper_verdicts(claims: pd.DataFrame) -> pd.DataFrame:
    """One row per register claim that ``claims`` (:func:`claims_frame`) tests, in register order, under the rule of
    :func:`combine` over the parts the register requires (``rcl.paper_claims.PaperClaim.parts``; a part another claim
    owns is cited as ``"<key>/<part>"``). A required part missing from the run is untestable. Columns: chapter,
    paper (the key), verdict, parts (each part's verdict), and the effect, interval and evidence of the part that
    decides (the one that fails, else the one nearest to zero) when the claim has one row, or of every part."""
    from rcl.paper_claims import CLAIMS

    rows = claims[claims.kind == "paper"]
    keys = {c.key for c in CLAIMS}
    legacy = (rows.part == "").all()  # a run from before parts: each key's rows are its parts, named by their text
    out = []
    for registered in CLAIMS:
        own = rows[rows.paper == registered.key]
        cited = rows[rows.paper.isin({name.split("/")[0] for name in registered.parts if "/" in name})]
        if own.empty and (legacy or cited.empty):
            continue
        parts = []
        # () in the register: the parts are whatever the run checked (every mode run, every radius tested)
        names = own.claim if legacy else (registered.parts or tuple(dict.fromkeys(own.part)))
        for name in names:
            # "<key>/<part>" cites another claim's part; a part's own name may hold a "/" too ("eps 0.25/255")
            head, cites, tail = name.partition("/")
            owner, part = (head, tail) if cites and head in keys and not legacy else (registered.key, name)
            if part == "*":  # every part of another claim: its measurement, cited
                of_owner = rows[rows.paper == owner]
                parts += [(f"{owner}/{row.part}", row) for row in of_owner.itertuples()] or [(name, None)]
                continue
            found = rows[(rows.paper == owner) & ((rows.claim if legacy else rows.part) == part)]
            parts.append((name, found.iloc[-1] if len(found) else None))
        verdict = combine("untestable" if row is None else row.verdict for _, row in parts)
        shown = [
            f"{name}: {'not in this run' if row is None else row.verdict}" for name, row in parts if len(parts) > 1
        ]
        present = [row for _, row in parts if row is not None]
        deciding = _deciding(present, verdict)
        out.append(
            {
                "chapter": (own if len(own) else cited).chapter.iloc[0],
                "paper": registered.key,
                "verdict": verdict,
                "parts": "; ".join(shown),
                "effect": None if deciding is None else deciding.effect,
                "low": None if deciding is None else deciding.low,
                "high": None if deciding is None else deciding.high,
                "evidence": " | ".join((f"{row.part}: " if row.part else "") + str(row.evidence) for row in present)
                or "no part of it ran",
            }
        )
    return pd.DataFrame(out, columns=PAPER_COLUMNS)


def _deciding(rows: list, verdict: str):
    """The part whose effect stands for the claim: the one that goes the other way, else the smallest effect."""
    if not rows:
        return None
    against = [r for r in rows if r.verdict == verdict]
    if verdict in ("does not hold", "untestable") and against:
        return against[0]
    with_effect = [r for r in rows if r.effect is not None and not pd.isna(r.effect)]
    return min(with_effect, key=lambda r: abs(r.effect)) if with_effect else rows[0]


def _tally(verdicts: pd.Series) -> str:
    counts = verdicts.value_counts()
    return ", ".join(f"{int(counts[v])} {v}" for v in VERDICTS if v in counts) or "none"


def verdict_counts(claims: pd.DataFrame) -> str:
    """The headline of a run's claims: the papers' claims counted by register key (one verdict each,
    :func:`paper_verdicts`), then the method and observation checks, e.g. ``"paper claims (17 of 22 in the
    register): 3 holds, ...; other checks (40): ..."``. ``claims``: :func:`claims_frame`'s rows, or a table that
    already has one row per key (:func:`combine_seeds`)."""
    from rcl.paper_claims import CLAIMS

    paper = claims[claims.kind == "paper"]
    keys = paper if "parts" in claims.columns else paper_verdicts(claims)
    other = claims[claims.kind != "paper"]
    return (
        f"paper claims ({len(keys)} of {len(CLAIMS)} in the register): {_tally(keys.verdict)}; "
        f"other checks ({len(other)}): {_tally(other.verdict)}"
    )


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
    run and its 95 % interval, in points, ``none`` in a run that measured none; empty where no run measured one). A
    claim missing from a run is left out."""
    return combine_seeds({label: collect_claims(run_dir) for label, run_dir in runs.items()})


def combine_seeds(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """:func:`across_seeds` over claims already read (``{label: collect_claims(run_dir)}``): the paper claims one row
    per register key (each seed's :func:`paper_verdicts`), then the other checks one row each."""
    keys = ["chapter", "kind", "paper", "part", "claim"]
    for label, frame in frames.items():
        twice = frame[frame.duplicated(keys)]
        if len(twice):
            raise ValueError(
                f"runs: {label} states the claim {twice.claim.iloc[0]!r} ({twice.chapter.iloc[0]}) twice; each claim "
                "is checked once, in the chapter that runs its experiment (rcl.verdicts.Claims)"
            )
    labels = list(frames)
    columns = ["chapter", "kind", "paper", "claim", *labels, "verdict", "spread", "parts"]
    per_seed = {}
    for label, frame in frames.items():
        papers = paper_verdicts(frame).assign(kind="paper", claim=lambda f: f.paper)
        others = frame[frame.kind != "paper"].assign(parts="")
        per_seed[label] = pd.concat([papers, others], ignore_index=True)[
            ["chapter", "kind", "paper", "claim", "verdict", "effect", "low", "high", "parts"]
        ]
    table = None
    for label, frame in per_seed.items():
        part = frame.rename(
            columns={"verdict": label, **{c: f"{label} {c}" for c in ("effect", "low", "high", "parts")}}
        )
        table = part if table is None else table.merge(part, on=["chapter", "kind", "paper", "claim"], how="inner")
    if table is None or table.empty:
        return pd.DataFrame(columns=columns)

    def combined(row) -> str:
        verdicts = {row[label] for label in labels}
        if "untestable" in verdicts:
            return "untestable"
        return verdicts.pop() if len(verdicts) == 1 and verdicts <= {"holds", "does not hold"} else "undecided"

    def missing(value) -> bool:
        return value is None or pd.isna(value)

    def shown(label: str, row) -> str:  # one seed's effect and its 95 % interval, in points; "none" if untested
        effect, low, high = (row[f"{label} {c}"] for c in ("effect", "low", "high"))
        if missing(effect):
            return "none"
        interval = "" if missing(low) or missing(high) else f" [{100 * low:+.1f}, {100 * high:+.1f}]"
        return f"{100 * effect:+.1f}{interval}"

    def spread(row) -> str:  # every seed's effect where one measured it: an undecided seed still shows its interval
        if all(missing(row[f"{label} effect"]) for label in labels):
            return ""
        return " / ".join(shown(label, row) for label in labels) + " points"

    table["verdict"] = table.apply(combined, axis=1)
    table["spread"] = table.apply(spread, axis=1)
    table["parts"] = table[f"{labels[0]} parts"] if len(labels) == 1 else table.apply(
        lambda row: " | ".join(f"{label}: {row[f'{label} parts']}" for label in labels if row[f"{label} parts"]),
        axis=1,
    )  # fmt: skip
    order = table.kind.ne("paper").astype(int)
    return table.assign(_o=order).sort_values("_o", kind="stable")[columns].reset_index(drop=True)


REFERENCE_RUN = Path("results") / "laptop-cifar10"  # the committed reference run, under the project root
PUBLISHING_ENV = "RCL_PUBLISHING_TO"  # set by ``rcl.reproduce --publish DIR`` while the run that DIR will hold runs


def reference_run(reference: str | Path | None = None) -> Path | None:
    """The committed reference run's folder (``reference``, default ``<project root>/results/laptop-cifar10``) when
    it holds a ``run.json``; otherwise ``None``, after printing why (none committed, or this run is being published
    by ``rcl.reproduce --publish``: there, or beside it, where the committed runs are about to be replaced)."""
    from rcl.runtime import project_root

    root = project_root()
    folder = Path(reference) if reference is not None else root / REFERENCE_RUN
    shown = folder.resolve().relative_to(root.resolve()) if folder.resolve().is_relative_to(root.resolve()) else folder
    publishing = os.environ.get(PUBLISHING_ENV)
    if publishing and Path(publishing).resolve() == folder.resolve():
        print(f"this run is the reference run: rcl.reproduce --publish copies it to {shown} when the course ends")
        return None
    if publishing:  # a run being published (another seed) would print a reference run it is about to replace
        print(
            f"this run is being published as a reference run ({Path(publishing).name}): the runs committed beside it "
            "are from an earlier revision and are not shown"
        )
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
    settings = record.get("settings") or {}
    network = (
        f"{settings.get('arch')} of width {settings.get('width')}, {settings.get('n_train')} training and "
        f"{settings.get('n_test')} test images; "
        if settings.get("arch")
        else ""
    )
    lines = [
        f"reference run {folder.name}: profile {record.get('profile')}, dataset {record.get('dataset')}, seed "
        f"{record.get('seed')}, commit {str(record.get('commit'))[:12]}; {network}{chapter}: {verdict_counts(claims)}"
    ]
    for c in claims.itertuples():
        source = f"paper claim {c.paper}" if c.paper else c.kind
        size = f"; n = {int(c.n)}" if pd.notna(c.n) and c.n else ""
        lines.append(f"[{c.verdict}] {c.claim}" + (f" ({source})" if source else "") + f"\n    {c.evidence}{size}")
    text = "\n".join(lines)
    print(text)
    return text
