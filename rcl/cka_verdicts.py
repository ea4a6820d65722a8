"""The main study's CKA claims (Ghofrani et al., chapter 06) decided on this run, each effect with its interval.

Every model's taps give one Gram stack per input (:func:`rcl.cka.tap_grams`), named ``"<scheme>/<scenario>/<input>"``
with input ``clean`` (the test images), ``own`` (each classifier's own PGD images) or ``shared`` (one set of PGD images
made against a held-out surrogate, the same for every encoder). One :class:`rcl.cka.GramBootstrap` over all of them
draws the same half-samples of the images for every side of every comparison; each claim's effect is a difference of
CKA statistics, positive when the claim holds, decided by :meth:`rcl.verdicts.Claims.interval` (undecided when its 95 %
interval holds 0). A part that rests on a model below the floor (its linear head not above the random-encoder
control, :class:`rcl.verdicts.Floor`) is untestable. The register (``rcl.paper_claims``) names each claim's parts.

The same statistics on the authors' released matrices (no images, so no interval) are :mod:`rcl.study`'s
``redundancy_claims``, ``convergence_claim`` and ``eps_claim``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from rcl.cka import GramBootstrap
from rcl.verdicts import Claims

SCHEMES = ("SL", "CL", "SCL")
MAX_IMAGES = 2000  # the Gram matrices of the verdicts hold at most this many images (10 taps: 320 MB per stack)


def mean_off_diagonal(samples: Tensor) -> Tensor:
    """Redundancy between layers: the mean off-diagonal entry of layer-by-layer CKA ``[R, L, L]`` -> ``[R]``."""
    size = samples.shape[-1]
    off = ~torch.eye(size, dtype=torch.bool)
    return samples[:, off].mean(dim=1)


def _name(scheme: str, scenario: str, inputs: str = "clean") -> str:
    return f"{scheme}/{scenario}/{inputs}"


class CkaEvidence:
    """What the chapter's CKA claims read: the bootstrap, the taps, and which models are below the floor.

    ``boot``: a :class:`GramBootstrap` whose names are ``"<scheme>/<scenario>/<input>"``; ``taps``: the tap names in
    order (stem first, ``pool`` last); ``weak``: ``{(scheme, scenario): why}`` for every model below the floor.
    """

    def __init__(self, boot: GramBootstrap, taps: Sequence[str], weak: dict[tuple[str, str], str] | None = None):
        self.boot, self.taps, self.weak = boot, list(taps), dict(weak or {})
        self.n = boot.n

    def has(self, *models: tuple[str, str], inputs: str = "clean") -> bool:
        return all(_name(s, c, inputs) in self.boot.grams for s, c in models)

    def redundancy(self, scheme: str, scenario: str) -> Tensor:
        """Mean off-diagonal clean CKA of one encoder, ``[1 + resamples]``."""
        name = _name(scheme, scenario)
        return mean_off_diagonal(self.boot.cka(name, name))

    def survival(self, scheme: str, scenario: str, layer: str, inputs: str = "own") -> Tensor:
        """CKA between a layer on the clean images and on their adversarial versions, ``[1 + resamples]``."""
        i = self.taps.index(layer)
        return self.boot.cka(_name(scheme, scenario), _name(scheme, scenario, inputs))[:, i, i]

    def cross(self, a: str, b: str, scenario: str, inputs: str) -> Tensor:
        """Mean diagonal of the CKA between two schemes' encoders, layer by layer, ``[1 + resamples]``."""
        return self.boot.cka(_name(a, scenario, inputs), _name(b, scenario, inputs)).diagonal(dim1=1, dim2=2).mean(1)

    def decide(
        self,
        claims: Claims,
        text: str,
        effect: Callable[[], Tensor] | None,
        *,
        paper: str,
        part: str,
        models: Sequence[tuple[str, str]],
        evidence: Callable[[], str],
        inputs: str = "clean",
    ) -> None:
        """One part of a register claim: ``effect()`` (``[1 + resamples]``, positive when it holds) with its
        interval, or untestable when a model is missing from this run or below the floor."""
        missing = [f"{s} / {c}" for s, c in models if not self.has((s, c), inputs=inputs)]
        weak = [f"{s} / {c}: {self.weak[s, c]}" for s, c in models if (s, c) in self.weak]
        if missing or weak or effect is None:
            why = f"{', '.join(missing)} not in this run" if missing else "; ".join(weak)
            claims.check(text, None, f"untestable: {why}", n=self.n, paper=paper, part=part)
            return
        value, low, high = GramBootstrap.interval(effect())
        claims.interval(text, value, low, high, evidence=evidence(), n=self.n, paper=paper, part=part)


def _v(samples: Tensor) -> str:
    return f"{samples[0].item():.3f}"


def redundancy_claims(claims: Claims, ev: CkaEvidence) -> None:
    """``ghofrani-at-layer-redundancy`` (per scheme: AT minus ST), ``ghofrani-ft-redundancy-cl`` (CL: AT minus
    Full-AT), ``ghofrani-ft-weak-scl-sl`` (per scheme: CL's change from AT to Full-AT is larger in size than SL's,
    SCL's) and ``ghofrani-cl-consistent-st`` (per scheme: CL's ST redundancy minus SL's, SCL's)."""
    r = ev.redundancy
    for s in SCHEMES:
        ev.decide(
            claims, f"adversarial training makes {s}'s layers more redundant (mean off-diagonal CKA, AT minus ST)",
            lambda s=s: r(s, "AT") - r(s, "ST"), paper="ghofrani-at-layer-redundancy", part=s,
            models=[(s, "ST"), (s, "AT")], evidence=lambda s=s: f"{s}: ST {_v(r(s, 'ST'))}, AT {_v(r(s, 'AT'))}",
        )  # fmt: skip
    ev.decide(
        claims, "adversarial fine-tuning reduces CL's redundancy (mean off-diagonal CKA, AT minus Full-AT)",
        lambda: r("CL", "AT") - r("CL", "Full-AT"), paper="ghofrani-ft-redundancy-cl", part="",
        models=[("CL", "AT"), ("CL", "Full-AT")],
        evidence=lambda: f"CL: AT {_v(r('CL', 'AT'))}, Full-AT {_v(r('CL', 'Full-AT'))}",
    )  # fmt: skip

    def change(s: str) -> Tensor:
        return (r(s, "Full-AT") - r(s, "AT")).abs()

    for s in ("SL", "SCL"):
        ev.decide(
            claims, f"adversarial fine-tuning changes {s}'s redundancy less than CL's (|Full-AT - AT|, CL minus {s})",
            lambda s=s: change("CL") - change(s), paper="ghofrani-ft-weak-scl-sl", part=s,
            models=[(x, c) for x in ("CL", s) for c in ("AT", "Full-AT")],
            evidence=lambda s=s: f"|change| CL {_v(change('CL'))}, {s} {_v(change(s))}",
        )  # fmt: skip
    for s in ("SL", "SCL"):
        ev.decide(
            claims, f"under standard training CL's layers are more consistent than {s}'s (mean off-diagonal CKA)",
            lambda s=s: r("CL", "ST") - r(s, "ST"), paper="ghofrani-cl-consistent-st", part=s,
            models=[("CL", "ST"), (s, "ST")], evidence=lambda s=s: f"ST: CL {_v(r('CL', 'ST'))}, {s} {_v(r(s, 'ST'))}",
        )  # fmt: skip


def middle_tap(taps: Sequence[str]) -> str:
    """The tap halfway through the network (the reference the disparity claim compares the last layer with)."""
    return list(taps)[len(taps) // 2]


def last_block(taps: Sequence[str]) -> str:
    """The last residual block's tap: the last one before ``pool``."""
    return [t for t in taps if t != "pool"][-1]


def disparity_claims(claims: Claims, ev: CkaEvidence) -> None:
    """``ghofrani-st-clean-adv-disparity`` (per scheme, standard-trained encoders: clean-vs-adversarial CKA at the
    middle of the network minus at the pooled features; the stem, near 1 by construction, is no reference) and
    ``ghofrani-at-clean-adv-similarity`` (per scheme: at the last residual block, AT minus ST), on each model's own
    adversarial images."""
    mid, last, block = middle_tap(ev.taps), ev.taps[-1], last_block(ev.taps)
    for s in SCHEMES:
        ev.decide(
            claims, f"standard-trained {s}: clean and adversarial representations part with depth "
            f"(clean-vs-adversarial CKA at {mid} minus at {last})",
            lambda s=s: ev.survival(s, "ST", mid) - ev.survival(s, "ST", last),
            paper="ghofrani-st-clean-adv-disparity", part=s, models=[(s, "ST")], inputs="own",
            evidence=lambda s=s: f"{s} / ST: {mid} {_v(ev.survival(s, 'ST', mid))}, {last} "
            f"{_v(ev.survival(s, 'ST', last))}",
        )  # fmt: skip
    for s in SCHEMES:
        ev.decide(
            claims, f"adversarial training keeps {s}'s clean and adversarial representations more alike "
            f"(clean-vs-adversarial CKA at {block}, AT minus ST)",
            lambda s=s: ev.survival(s, "AT", block) - ev.survival(s, "ST", block),
            paper="ghofrani-at-clean-adv-similarity", part=s, models=[(s, "ST"), (s, "AT")], inputs="own",
            evidence=lambda s=s: f"{s} at {block}: ST {_v(ev.survival(s, 'ST', block))}, AT "
            f"{_v(ev.survival(s, 'AT', block))}",
        )  # fmt: skip


def universal_claim(claims: Claims, ev: CkaEvidence) -> None:
    """``ghofrani-at-universal-set`` per pair of schemes: the mean diagonal of their cross-model CKA on the *shared*
    adversarial images (made against a held-out surrogate, the same for every encoder), AT minus ST."""
    for a, b in itertools.combinations(SCHEMES, 2):
        models = [(a, "ST"), (b, "ST"), (a, "AT"), (b, "AT")]
        ev.decide(
            claims, f"adversarial training makes {a}'s and {b}'s representations of the same adversarial images "
            "converge (cross-model CKA, mean over layers, AT minus ST)",
            lambda a=a, b=b: ev.cross(a, b, "AT", "shared") - ev.cross(a, b, "ST", "shared"),
            paper="ghofrani-at-universal-set", part=f"{a}-{b}", models=models, inputs="shared",
            evidence=lambda a=a, b=b: f"{a} vs {b}: ST {_v(ev.cross(a, b, 'ST', 'shared'))}, AT "
            f"{_v(ev.cross(a, b, 'AT', 'shared'))}",
        )  # fmt: skip


def eps_cka_claims(claims: Claims, ev: CkaEvidence, radii: Sequence[str]) -> None:
    """The CKA parts of ``ghofrani-eps-late-similarity``, per scheme: clean-vs-adversarial CKA at the last residual
    block, the largest training radius minus the smallest, and larger than the same rise at the stem. ``radii``:
    the AT scenarios' names in radius order (e.g. ``["AT-eps2", "AT", "AT-eps16"]``)."""
    block, stem = last_block(ev.taps), ev.taps[0]
    low, high = radii[0], radii[-1]
    for s in SCHEMES:

        def rise(layer: str, s: str = s) -> Tensor:
            return ev.survival(s, high, layer) - ev.survival(s, low, layer)

        ev.decide(
            claims, f"{s}: a larger training radius raises clean-vs-adversarial CKA at {block} more than at {stem}",
            lambda: rise(block) - rise(stem), paper="ghofrani-eps-late-similarity", part=f"{s} CKA",
            models=[(s, r) for r in radii], inputs="own",
            evidence=lambda s=s: f"{s} at {block}: "
            + " -> ".join(f"{_v(ev.survival(s, r, block))}" for r in radii)
            + f"; rise at {block} {_v(rise(block))}, at {stem} {_v(rise(stem))}",
        )  # fmt: skip
