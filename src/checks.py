"""Allowed values of command-line options (and of log records' fields), declared once and checked the
same way everywhere.

`Allowed` describes what an option may hold (`Number` and `Choice` keep their bounds and choices);
`option` declares a dataclass field that is an option; `typed` turns one into an argparse `type=` function;
`ArgumentParser` reports a bad option as a UserError (one `error:` line, exit 2 through `@cli`)
instead of argparse's usage text.
"""
import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

from src.errors import UserError


@dataclass(frozen=True)
class Allowed:
    """The values an option (or a field of a log record) may take: those for which `test` is true,
    described by `text`."""
    text: str
    test: Callable[[Any], bool]


@dataclass(frozen=True)
class Local(Allowed):
    """Allowed values that this machine decides (a file that exists here, a GPU), not the value alone: a log
    record, written elsewhere, is held to the field's type only."""


@dataclass(frozen=True)
class Number(Allowed):
    """Numbers between `low` and `high` (None: unbounded; `*_open`: the bound itself excluded), integers
    only or finite numbers (`at_least`, `above`, `between` make one)."""
    low: Optional[float] = None
    high: Optional[float] = None
    integer: bool = False
    low_open: bool = False
    high_open: bool = False


@dataclass(frozen=True)
class Choice(Allowed):
    """One of a few strings (`one_of`)."""
    choices: Tuple[str, ...] = ()


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool); an int too large for a float (10**4000) is not."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def is_integer(value: Any) -> bool:
    """An int (not a bool): what a JSON integer reads as."""
    return isinstance(value, int) and not isinstance(value, bool)


def number(low: Optional[float] = None, high: Optional[float] = None, integer: bool = False,
           low_open: bool = False, high_open: bool = False) -> Number:
    """The numbers between `low` and `high` (see `Number`), with their description."""
    kind = "an integer" if integer else "a number" if high is not None else "a finite number"
    if high is None:
        text = f"{kind} {'>' if low_open else '>='} {low}" if low is not None else kind
    else:
        text = f"{kind} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def test(v):
        return (is_number(v) and (not integer or v == int(v))
                and (low is None or (v > low if low_open else v >= low))
                and (high is None or (v < high if high_open else v <= high)))
    return Number(text, test, low, high, integer, low_open, high_open)


def at_least(low: float, integer: bool = True) -> Number:
    return number(low, integer=integer)


def above(low: float) -> Number:
    return number(low, low_open=True)


def between(low: float, high: float, integer: bool = False, low_open: bool = False, high_open: bool = False) -> Number:
    return number(low, high, integer, low_open, high_open)


def one_of(*choices: str) -> Choice:
    return Choice(f"one of {', '.join(choices)}", lambda v: v in choices, choices)


def optional(allowed: Allowed) -> Allowed:
    """`allowed`, or None."""
    return Allowed(f"{allowed.text} or null", lambda v: v is None or allowed.test(v))


def of_type(kind: type, text: str) -> Allowed:
    """Any value of type `kind` (an int is not a bool here)."""
    return Allowed(text, lambda v: isinstance(v, kind) and not (kind is int and isinstance(v, bool)))


def option(default: Any = dataclasses.MISSING, help: str = "", group: Optional[str] = None,
           allowed: Optional[Allowed] = None, default_factory: Any = dataclasses.MISSING, identity: bool = True) -> Any:
    """A dataclass field that is a command-line option: its default, help text, help group, allowed values and
    whether it is part of a run's identity (False: it changes no result; src/identity.py)."""
    metadata = {"help": help, "group": group, "identity": identity,
                **({"allowed": allowed} if allowed is not None else {})}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def typed(kind: type, allowed: Allowed) -> Callable[[str], Any]:
    """An argparse `type=` function: convert to `kind`, then check `allowed`."""
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed.text}, got {text!r}") from None
        if not allowed.test(value):
            raise argparse.ArgumentTypeError(f"must be {allowed.text}, got {text!r}")
        return value
    convert.__name__ = kind.__name__  # argparse names the type in its own messages
    return convert


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: a bad or unknown option raises UserError."""

    def error(self, message):
        raise UserError(message)
