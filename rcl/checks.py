"""Argument checks shared by the configs: one line each, and an error that names the setting and its valid range.

Every checker returns the value in its canonical type (``integer`` an ``int``, ``number`` a ``float``) or raises
``ValueError`` with the setting's name, the range it must lie in and the value it got, e.g.
``"width must be an integer >= 1, got 0"`` or ``"lr must be a finite number > 0, got inf"``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any


def integer(name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` as an ``int`` (booleans and floats such as 1.5 are refused), at least ``minimum`` when given."""
    wanted = "an integer" + (f" >= {minimum}" if minimum is not None else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be {wanted}, got {value}")
    return int(value)


def optional_integer(name: str, value: Any, minimum: int | None = None) -> int | None:
    """``None``, or an ``int`` at least ``minimum``."""
    if value is None:
        return None
    try:
        return integer(name, value, minimum)
    except ValueError:
        wanted = "an integer" + (f" >= {minimum}" if minimum is not None else "")
        raise ValueError(f"{name} must be None or {wanted}, got {value!r}") from None


def number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    hint: str = "",
) -> float:
    """``value`` as a finite ``float`` in the given range (``low_open``/``high_open``: the bound itself is out).

    The message states the range as an inequality or an interval: ``"lr must be a finite number > 0, got -1.0"``,
    ``"momentum must be a number in [0, 1), got 5.0"``. ``hint`` is appended after a semicolon.
    """
    if low is not None and high is not None:
        wanted = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        wanted = f"a finite number {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        wanted = f"a finite number {'<' if high_open else '<='} {high:g}"
    else:
        wanted = "a finite number"
    tail = f"; {hint}" if hint else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {wanted}, got {value!r}{tail}")
    converted = float(value)
    bad = not math.isfinite(converted)
    if low is not None:
        bad = bad or (converted <= low if low_open else converted < low)
    if high is not None:
        bad = bad or (converted >= high if high_open else converted > high)
    if bad:
        raise ValueError(f"{name} must be {wanted}, got {value!r}{tail}")
    return converted


def boolean(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


__all__ = ["integer", "optional_integer", "number", "boolean", "choice"]
