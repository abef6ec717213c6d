"""Argument checks with one message format, shared by the constructors and
the run config: `"<name> must be <what>, got <value>."` plus a hint.

Keras has no public argument validators; these few lines keep every
constructor's errors in the same words (`ValueError`, naming the argument).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any


def is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    )


def check_int(name: str, value: Any, minimum: int, optional: bool = False) -> None:
    """An integer >= `minimum` (or None when `optional`)."""
    if value is None and optional:
        return
    if not is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def check_positive(name: str, value: Any, hint: str = "") -> None:
    """A finite number > 0."""
    if not is_finite_number(value) or not value > 0:
        raise ValueError(f"{name} must be a positive number (finite), got {value!r}.{hint}")


def check_non_negative(name: str, value: Any, hint: str = "") -> None:
    """A finite number >= 0."""
    if not is_finite_number(value) or not value >= 0:
        raise ValueError(f"{name} must be >= 0 (a finite number), got {value!r}.{hint}")


def check_fraction(name: str, value: Any, hint: str = "") -> None:
    """A number strictly between 0 and 1."""
    if not is_finite_number(value) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value!r}.{hint}")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """One of `choices`."""
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; choose one of {', '.join(choices)}.")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
