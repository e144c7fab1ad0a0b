"""Numeric options checked against their allowed range, in Python
(`Range.check`, for run_* keywords and plan files) and on the command line
(`vitreg.boundary.Number`, the click type built on `Range.problem`): NaN and
infinities are never accepted, and a refusal says the range in words."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import UsageError

#: Seeds: what numpy's legacy RandomState and every library in between accept.
SEED_MAX = 2**32 - 1


@dataclass(frozen=True)
class Range:
    """[low, high] (either end open or absent) of an int or float option."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        low = None if self.low is None else _text(self.low)
        high = None if self.high is None else _text(self.high)
        if low is not None and high is not None:
            if not (self.low_open or self.high_open):
                return f"{kind} from {low} to {high}"
            if self.low_open and self.high_open:
                return f"{kind} between {low} and {high} (both excluded)"
            if self.low_open:
                return f"{kind} above {low}, up to {high}"
            return f"{kind} from {low} up to {high} ({high} excluded)"
        if low is not None:
            return f"{kind} above {low}" if self.low_open else f"{kind}, {low} or more"
        if high is not None:
            return f"{kind} below {high}" if self.high_open else f"{kind}, {high} or less"
        return kind

    def problem(self, value: Any) -> str | None:
        """Why `value` is not allowed, or None; `value` may be a string."""
        if isinstance(value, bool):
            return f"give {self.describe()}, not a yes/no"
        try:
            number = float(value) if not self.integer else _as_int(value)
        except (TypeError, ValueError, OverflowError):
            return f"give {self.describe()}"
        if not math.isfinite(number):
            return f"give {self.describe()}"
        below = self.low is not None and (number <= self.low if self.low_open
                                          else number < self.low)
        above = self.high is not None and (number >= self.high if self.high_open
                                           else number > self.high)
        return f"give {self.describe()}" if below or above else None

    def check(self, name: str, value: Any) -> int | float:
        """`value` converted, or a `UsageError` naming `name` and the range."""
        why = self.problem(value)
        if why is not None:
            raise UsageError(f"{name} {value!r}: {why}")
        return as_number(value, self)


def _text(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def _as_int(value: Any) -> int:
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(value)
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        return int(text) if not text.lower().startswith(("nan", "inf", "-inf")) else \
            int(float(text))
    return int(value)


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
FRACTION_OPEN = Range(0, 1, low_open=True, high_open=True)
PERCENTILE_OPEN = Range(0, 100, low_open=True, high_open=True)
COUNT = Range(1, integer=True)
COUNT_OR_ZERO = Range(0, integer=True)
SEED = Range(0, SEED_MAX, integer=True)


def as_number(value: Any, range: Range) -> int | float:  # noqa: A002
    """`value`, already allowed by `range`, as an int or a float."""
    return _as_int(value) if range.integer else float(value)


def check_grid(name: str, value: Any, range: Range = POSITIVE) -> str:  # noqa: A002
    """A comma-separated list of numbers (a grid a search tries), each in `range`."""
    parts = [p.strip() for p in str(value).split(",") if p.strip()]
    if not parts:
        raise UsageError(f"{name} {value!r}: give one or more comma-separated numbers, each "
                         f"{range.describe()}")
    for part in parts:
        why = range.problem(part)
        if why is not None:
            raise UsageError(f"{name} {value!r}: {part!r} is not allowed: give comma-separated "
                             f"numbers, each {range.describe()}")
    return str(value)
