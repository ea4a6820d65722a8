"""Honest ratios: what each side of a measurement did, observed, and the rule that reports a ratio only when both
sides did the same work.

A work record is a dict (model architecture, batch size, images, attack steps, output shape, ...); a forward hook
(:class:`WorkCounter`) counts what actually reaches a model, so the record is observed, not assumed. When two
records differ the ratio is withheld with its reason (stored as ``null`` in the report).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def withheld_reason(ours: dict, baseline: dict, keys: Sequence[str] | None = None) -> str | None:
    """Why a ratio between two measurements must not be reported, or None when they did the same work.

    ``ours`` and ``baseline`` are work records (dicts), e.g. ``{"model": {...}, "batch_size": 64, "images": 192,
    "steps": 10, "output_shape": [64, 3, 32, 32]}``. Every key in ``keys`` (default: the union of both records'
    keys) must be present on both sides with equal values; a missing key counts as a difference.
    """
    keys = sorted(set(ours) | set(baseline)) if keys is None else list(keys)
    for key in keys:
        if key not in ours or key not in baseline:
            side = "ours" if key not in ours else "baseline"
            return f"{key} not recorded for {side}"
        a, b = _plain(ours[key]), _plain(baseline[key])
        if a != b:
            return f"{key} differs: ours {a!r}, baseline {b!r}"
    return None


def ratio_or_withheld(
    ours_rate: float | None,
    baseline_rate: float | None,
    ours_work: dict,
    baseline_work: dict,
    *,
    extra_reason: str | None = None,
) -> tuple[float | None, str | None]:
    """``(ours_rate / baseline_rate, None)`` when the work matches, else ``(None, reason)``.

    Rates are throughputs (higher is better: images/s, views/s, or 1/seconds). ``extra_reason`` withholds the ratio
    for a reason found elsewhere (e.g. the two CKA matrices disagree).
    """
    reason = extra_reason or withheld_reason(ours_work, baseline_work)
    if reason is None:
        for name, rate in (("ours", ours_rate), ("baseline", baseline_rate)):
            if rate is None or not math.isfinite(rate) or rate <= 0:
                reason = f"{name} has no valid measurement ({rate!r})"
                break
    if reason is not None:
        return None, reason
    return ours_rate / baseline_rate, None


def _plain(value: Any) -> Any:
    """JSON-comparable form: tuples and torch.Size -> lists, nested dicts kept."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, torch.Size)):
        return [_plain(v) for v in value]
    return value


class WorkCounter:
    """A forward hook that records what reaches a model: calls, rows (examples) and the last output shape.

    ``with WorkCounter(model) as w: ...`` then ``w.calls``, ``w.rows``, ``w.output_shape``.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.calls = 0
        self.rows = 0
        self.output_shape: list[int] | None = None
        self._handle = None

    def _hook(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        self.calls += 1
        if torch.is_tensor(output):
            self.rows += int(output.shape[0])
            self.output_shape = list(output.shape)

    def reset(self) -> None:
        """Forget what was counted so far (the hook stays)."""
        self.calls, self.rows, self.output_shape = 0, 0, None

    def attach(self) -> WorkCounter:
        """Start counting (register the hook); ``with WorkCounter(model)`` does this and :meth:`detach`."""
        self._handle = self.model.register_forward_hook(self._hook)
        return self

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> WorkCounter:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()


def architecture(model: nn.Module) -> dict:
    """What makes two models the same network: its ``config`` and its parameter count."""
    return {
        "config": _plain(getattr(model, "config", type(model).__name__)),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
