"""Allowed values of command-line options, declared once and checked the same way everywhere.

`Allowed` describes what an option may hold; `typed` turns one into an argparse `type=` function;
`ArgumentParser` reports a bad option as a UserError (one `error:` line, exit 2 through `@cli`)
instead of argparse's usage text.
"""
import argparse
import math
from dataclasses import dataclass
from typing import Any, Callable, Tuple

from src.errors import UserError


@dataclass(frozen=True)
class Allowed:
    """The values an option may take: those for which `test` is true, described by `text`.

    `rejected` lists command-line spellings of values it refuses (used by the bad-input tests)."""
    text: str
    test: Callable[[Any], bool]
    rejected: Tuple[str, ...] = ()


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool); an int too large for a float (10**4000) is not."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def at_least(low: float, integer: bool = True) -> Allowed:
    kind = "an integer" if integer else "a finite number"
    return Allowed(f"{kind} >= {low}", lambda v: is_number(v) and v >= low and (not integer or v == int(v)),
                   (str(low - 1),) if integer else (str(low - 1), "nan", "inf"))


def above(low: float) -> Allowed:
    return Allowed(f"a finite number > {low}", lambda v: is_number(v) and v > low, (str(low), "nan", "inf"))


def between(low: float, high: float, integer: bool = False, high_open: bool = False) -> Allowed:
    kind = "an integer" if integer else "a number"
    bracket = ")" if high_open else "]"
    return Allowed(f"{kind} in [{low}, {high}{bracket}",
                   lambda v: is_number(v) and low <= v and (v < high if high_open else v <= high),
                   (str(low - 1), str(high + 1)) if integer else (str(low - 1), str(high + 1), "nan"))


def one_of(*choices: str) -> Allowed:
    return Allowed(f"one of {', '.join(choices)}", lambda v: v in choices, ("bogus",))


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
