"""How an option's text becomes a value: one small type per kind of value, called by argparse.

Each reads one command-line string, returns the value or raises `argparse.ArgumentTypeError`
with what is wrong (argparse names the option), and knows the regex the Flex Template
metadata gives the same value, if any. Pure: no Beam, no I/O.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
import urllib.parse
from typing import Any, Protocol

# The longest duration any option takes: a century. Longer ones overflow the timers and
# thread waits they become.
MAX_SECONDS = 100 * 365 * 86400


class OptionValue(Protocol):
    """Reads one option's text (argparse's `type=`)."""

    regex: str | None  # what the Flex Template accepts; None: any text

    def __call__(self, text: str) -> Any: ...


def _invalid(expected: str, text: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclasses.dataclass(frozen=True)
class Text:
    """Any non-empty printable text (a newline in a model name or a path would make every
    request or file fail later)."""

    regex: str | None = None

    def __call__(self, text: str) -> str:
        if not text.isprintable() or not text.strip():
            raise _invalid("non-empty printable text", text)
        return text


@dataclasses.dataclass(frozen=True)
class Integer:
    """A whole number from `minimum` to `maximum`."""

    minimum: int
    maximum: int
    regex: str | None = r"^[0-9]+$"

    def __call__(self, text: str) -> int:
        expected = f"a whole number from {self.minimum} to {self.maximum}"
        if not re.fullmatch(r"\s*[-+]?[0-9]+\s*", text):
            raise _invalid(expected, text)
        value = int(text)
        if not self.minimum <= value <= self.maximum:
            raise _invalid(expected, text)
        return value


@dataclasses.dataclass(frozen=True)
class Number:
    """A finite number from `minimum` (excluded when `above`) to `maximum`: nan and inf are
    never values of ours."""

    minimum: float
    maximum: float
    above: bool = False  # the minimum itself is excluded (e.g. a timeout above 0)
    regex: str | None = r"^[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"

    def __call__(self, text: str) -> float:
        low, high = _number_text(self.minimum), _number_text(self.maximum)
        expected = (f"a number above {low}, at most {high}" if self.above
                    else f"a number from {low} to {high}")
        try:
            value = float(text)
        except ValueError:
            raise _invalid(expected, text) from None
        too_low = value <= self.minimum if self.above else value < self.minimum
        if not math.isfinite(value) or too_low or value > self.maximum:
            raise _invalid(expected, text)
        return value


def Seconds(minimum: float = 0.0, above: bool = False) -> Number:  # noqa: N802 - a value type
    """A duration in seconds, at most a century."""
    return Number(minimum, MAX_SECONDS, above)


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of a few names."""

    choices: tuple[str, ...]

    @property
    def regex(self) -> str:
        return "^(" + "|".join(map(re.escape, self.choices)) + ")$"

    def __call__(self, text: str) -> str:
        if text not in self.choices:
            raise _invalid("one of " + ", ".join(self.choices), text)
        return text


@dataclasses.dataclass(frozen=True)
class TrueOrFalse:
    """`true` or `false`, for a setting that is on by default (a bare flag could not turn it
    off)."""

    regex: str | None = "^(true|false)$"

    def __call__(self, text: str) -> bool:
        if text not in ("true", "false"):
            raise _invalid("true or false", text)
        return text == "true"


@dataclasses.dataclass(frozen=True)
class Url:
    """An absolute URL with one of `schemes`, a host and, if any, a valid port."""

    schemes: tuple[str, ...]
    form: str  # what one looks like, for the message

    @property
    def regex(self) -> str:
        return "^(" + "|".join(self.schemes) + r")://[^\s/?#]+([/?#]\S*)?$"

    def __call__(self, text: str) -> str:
        expected = f"a URL {self.form}"
        if not text.isprintable() or re.search(r"\s", text):
            raise _invalid(expected, text)
        try:
            parts = urllib.parse.urlsplit(text)
            port_ok = parts.port is None or parts.port > 0
        except ValueError:  # a port that is not a number from 0 to 65535, a bad IPv6 host
            raise _invalid(expected, text) from None
        if parts.scheme not in self.schemes or not parts.hostname or not port_ok:
            raise _invalid(expected, text)
        return text


@dataclasses.dataclass(frozen=True)
class UrlList:
    """One URL or several separated by commas, each a `url`."""

    url: Url

    @property
    def regex(self) -> str:
        one = self.url.regex.removeprefix("^").removesuffix("$")
        return f"^{one}(,{one})*$".replace(r"\S*", r"[^\s,]*")

    def __call__(self, text: str) -> str:
        parts = [part.strip() for part in text.split(",")]
        if not text.isprintable() or not all(parts):
            raise _invalid(f"{self.url.form} URLs separated by commas", text)
        for part in parts:
            try:
                self.url(part)
            except argparse.ArgumentTypeError:
                raise _invalid(f"{self.url.form} URLs separated by commas", text) from None
        return text


@dataclasses.dataclass(frozen=True)
class Matching:
    """Text matching `regex` in full, e.g. a Pub/Sub topic path."""

    regex: str
    form: str  # what one looks like, for the message

    def __call__(self, text: str) -> str:
        if not re.fullmatch(self.regex, text):
            raise _invalid(self.form, text)
        return text
