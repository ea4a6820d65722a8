"""How a setting is checked where it enters rcl: one line each, one wording for every error.

Every setting (a profile's field, a ``TrainConfig`` or ``AttackConfig`` field, an argument of a public function
such as ``pgd``'s ``eps`` or ``nt_xent``'s ``temperature``) is checked once, where it enters, by one of these
checkers. Each returns the value in its canonical type (``integer`` an ``int``, ``number`` a ``float``) or raises
``ValueError`` naming the setting, the rule it breaks and the value it got, then what to do when the rule alone
does not say it (the ``hint``, after a semicolon)::

    width must be an integer >= 1, got 0
    lr must be a finite number > 0, got inf
    eps must be in [0, 1] (pixel units), got 8.0; an L-inf eps changes pixel values in [0, 1]: 8/255 (0.0314), not 8
    norm must be one of 'linf', 'l2', got 'l1'

Code downstream of an entry point does not check again what was checked there: ``AttackConfig.run`` trusts the
config's fields (``pgd`` checks its raw arguments by building an ``AttackConfig``), the training steps trust the
method's settings. A public function that is itself an entry point (``nt_xent``, ``attack_mode``) still checks its
own arguments.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

PIXEL_HINT = f"8/255 is {8 / 255:.4f}"


def _tail(hint: str) -> str:
    return f"; {hint}" if hint else ""


def integer(name: str, value: Any, minimum: int | None = None, *, maximum: int | None = None, hint: str = "") -> int:
    """``value`` as an ``int`` (booleans and floats such as 1.5 are refused), in ``[minimum, maximum]`` when given."""
    if minimum is not None and maximum is not None:
        wanted = f"an integer in [{minimum}, {maximum}]"
    else:
        wanted = "an integer" + (f" >= {minimum}" if minimum is not None else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be {wanted}, got {value!r}{_tail(hint)}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {wanted}, got {value}{_tail(hint)}")
    return int(value)


MAX_SEED = 2**32 - 1  # what every generator takes, with room for the seeds derived from it (seed + 1, 2 * seed)


def seed(name: str, value: Any) -> int:
    """A random seed: an ``int`` in ``[0, MAX_SEED]`` (torch's ``Generator.manual_seed`` overflows above 2**64)."""
    return integer(name, value, 0, maximum=MAX_SEED)


def optional_integer(name: str, value: Any, minimum: int | None = None, *, hint: str = "") -> int | None:
    """``None``, or an ``int`` at least ``minimum``."""
    if value is None:
        return None
    try:
        return integer(name, value, minimum)
    except ValueError:
        wanted = "an integer" + (f" >= {minimum}" if minimum is not None else "")
        raise ValueError(f"{name} must be None or {wanted}, got {value!r}{_tail(hint)}") from None


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

    The rule reads as an inequality or an interval: ``"lr must be a finite number > 0, got -1.0"``,
    ``"momentum must be a number in [0, 1), got 5.0"``.
    """
    if low is not None and high is not None:
        wanted = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        wanted = f"a finite number {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        wanted = f"a finite number {'<' if high_open else '<='} {high:g}"
    else:
        wanted = "a finite number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {wanted}, got {value!r}{_tail(hint)}")
    converted = float(value)
    bad = not math.isfinite(converted)
    if low is not None:
        bad = bad or (converted <= low if low_open else converted < low)
    if high is not None:
        bad = bad or (converted >= high if high_open else converted > high)
    if bad:
        raise ValueError(f"{name} must be {wanted}, got {value!r}{_tail(hint)}")
    return converted


def positive(name: str, value: Any, *, hint: str = "") -> float:
    """A finite ``float`` > 0 (a learning rate, a temperature)."""
    return number(name, value, low=0.0, low_open=True, hint=hint)


def pixels(name: str, value: Any, *, hint: str = PIXEL_HINT) -> float:
    """A change of pixel values in [0, 1] units (an epsilon, a step size) as a ``float`` in [0, 1]."""
    try:
        return number(name, value, low=0.0, high=1.0)
    except ValueError:
        raise ValueError(f"{name} must be in [0, 1] (pixel units), got {value!r}{_tail(hint)}") from None


def radius(name: str, value: Any, norm: str, *, strict: bool = False, hint: str = "") -> float:
    """An attack's radius or step size as a finite ``float`` >= 0 (> 0 with ``strict``); with ``norm="linf"`` also
    at most 1, since it is then a change of one pixel's value in [0, 1] (an L2 radius above 1 is a real budget)."""
    value = number(name, value, low=0.0, low_open=strict, hint=hint)
    if norm == "linf":
        pixels(name, value, hint=f"an L-inf {name} changes pixel values in [0, 1]: 8/255 ({8 / 255:.4f}), not 8")
    return value


def boolean(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def choice(name: str, value: Any, choices: Iterable[Any], *, hint: str = "") -> Any:
    """``value`` if it is one of ``choices``; ``True`` and ``False`` match only themselves (not 1 and 0)."""
    choices = tuple(choices)
    if not any(_same(value, option) for option in choices):
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}{_tail(hint)}")
    return value


def _same(value: Any, option: Any) -> bool:
    if isinstance(value, bool) or isinstance(option, bool):
        return value is option
    return value == option


def sequence(name: str, value: Any, item: Callable[[str, Any], Any], *, of: str, example: str) -> tuple:
    """``value`` as a tuple, every element checked by ``item(f"{name}[i]", element)``; ``of`` and ``example`` say
    what it holds (``"milestones must be a sequence of epochs, e.g. (15, 20), got 15"``)."""
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be a sequence of {of}, e.g. {example}, got {value!r}")
    return tuple(item(f"{name}[{i}]", element) for i, element in enumerate(value))


__all__ = [
    "MAX_SEED",
    "PIXEL_HINT",
    "boolean",
    "choice",
    "integer",
    "number",
    "optional_integer",
    "pixels",
    "positive",
    "radius",
    "seed",
    "sequence",
]
