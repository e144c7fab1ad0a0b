"""Options as plain records: one table per stage entry (a probe, an analysis)
from which the command line's flags, the Python keywords' checks and a study
plan's checks are all built, so that an option is declared in one place.

`resolve` is the one check: an unknown name is refused with the known ones
listed, each value is cast to its type and checked against its range or
choices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import UsageError, VitregError
from .numbers import Range, check_grid


@dataclass(frozen=True)
class Option:
    """One option: `--kebab-name` on the command line, `snake_name` in Python."""

    name: str
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] | None = None
    type: type | None = None  # when the default (None, or a list) does not say it
    #: allowed values of a number (NaN and infinities never are); with `grid`, of
    #: every number of a comma-separated list
    range: Range | None = None
    grid: bool = False
    #: a list of values (a repeatable flag on the command line)
    multiple: bool = False
    #: the flag's own name when it differs (`--key` for `keys`)
    flag_name: str | None = None

    @property
    def flag(self) -> str:
        return "--" + (self.flag_name or self.name).replace("_", "-")

    @property
    def value_type(self) -> type:
        if self.type is not None:
            return self.type
        if self.multiple or self.default is None:
            return str
        return type(self.default)


def defaults(options: Sequence[Option]) -> dict[str, Any]:
    return {opt.name: opt.default for opt in options}


def resolve(options: Sequence[Option], given: Mapping[str, Any], *, what: str,
            error: type[VitregError] = UsageError) -> dict[str, Any]:
    """The defaults of `options` overlaid with `given`, each checked and cast;
    a name `options` does not declare is refused with `error`, naming them."""
    known = {opt.name: opt for opt in options}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise error(f"unknown option(s) {unknown}; {what} takes {sorted(known)}")
    resolved = defaults(options)
    for name, value in given.items():
        resolved[name] = None if value is None else check_value(known[name], value, error)
    return resolved


def check_value(opt: Option, value: Any, error: type[VitregError] = UsageError) -> Any:
    """`value` cast to the option's type and checked against its range or choices
    (every item of a list for a `multiple` option)."""
    if not opt.multiple:
        return _checked(opt, value, error)
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise error(f"option {opt.name}={value!r}: give a list")
    return tuple(_checked(opt, item, error) for item in value)


def _checked(opt: Option, value: Any, error: type[VitregError]) -> Any:
    try:
        if opt.range is not None and opt.grid:
            return check_grid(opt.flag, value, opt.range)
        if opt.range is not None:
            return opt.range.check(opt.flag, value)
    except UsageError as exc:
        raise error(str(exc)) from exc
    kind = opt.value_type
    try:
        value = kind(value) if kind is not bool else _as_bool(value)
    except (TypeError, ValueError) as exc:
        raise error(f"option {opt.name}={value!r}: expected {kind.__name__}") from exc
    if opt.choices is not None and value not in opt.choices:
        raise error(f"option {opt.name}={value!r}: one of {list(opt.choices)}")
    return value


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(value)
    return bool(value)
