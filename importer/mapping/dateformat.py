"""The ``format:`` language of date and datetime fields: Python's strptime directives.

A format is read with the meaning of Python's :func:`datetime.datetime.strptime`. This module
reads a format into tokens (:func:`tokenize`), refuses at load time the formats that cannot
work, naming the directive and what to write instead (:func:`format_problem`), and decides how
a valid format is parsed (:func:`path_of`: ``chrono``, ``exact`` or ``python``, described in
:mod:`importer.mapping.dates`, which parses the values). Besides strptime patterns,
``format:`` takes ``iso8601``, ``epoch_s``, ``epoch_ms`` and ``excel`` (:data:`NAMED_FORMATS`).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

#: ``format:`` values that are not strftime patterns.
#: The default of a datetime field (no ``format:``) and of a date field.
ISO_DATETIME, ISO_DATE = "iso8601", "%Y-%m-%d"
EPOCH_S, EPOCH_MS, EXCEL = "epoch_s", "epoch_ms", "excel"
NAMED_FORMATS = (ISO_DATETIME, EPOCH_S, EPOCH_MS, EXCEL)

Path = Literal["chrono", "exact", "python"]

# Python's directives (Lib/_strptime.py, TimeRE), as Rust-regex alternatives in Python's order:
# the order decides which alternative a leftmost-first match takes, so it must not change.
# Digits are ASCII ([0-9]): Python's \d also takes other scripts' digits, which are refused.
_NUMERIC = {
    "d": "3[01]|[12][0-9]|0[1-9]|[1-9]| [1-9]",
    "f": "[0-9]{1,6}",
    "H": "2[0-3]|[01][0-9]|[0-9]",
    "I": "1[0-2]|0[1-9]|[1-9]",
    "j": "36[0-6]|3[0-5][0-9]|[12][0-9][0-9]|0[1-9][0-9]|00[1-9]|[1-9][0-9]|0[1-9]|[1-9]",
    "m": "1[0-2]|0[1-9]|[1-9]",
    "M": "[0-5][0-9]|[0-9]",
    "S": "6[01]|[0-5][0-9]|[0-9]",
    "y": "[0-9][0-9]",
    "Y": "[0-9][0-9][0-9][0-9]",
    "z": r"[+-][0-9][0-9]:?[0-5][0-9](?::?[0-5][0-9](?:\.[0-9]{1,6})?)?|(?-i:Z)",
}
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
#: name directives: the words (Python's C-locale names, lower case) and the number each gives
NAMES: dict[str, dict[str, int]] = {
    "B": {m: i + 1 for i, m in enumerate(_MONTHS)},
    "b": {m[:3]: i + 1 for i, m in enumerate(_MONTHS)},
    "A": {d: i for i, d in enumerate(_DAYS)},
    "a": {d[:3]: i for i, d in enumerate(_DAYS)},
    "p": {"am": 0, "pm": 1},
    # Python also takes the machine's own zone names (time.tzname), which would make a
    # mapping mean different things on different machines
    "Z": {"utc": 0, "gmt": 0},
}
#: read by calling Python's strptime per distinct value (week numbers, weekdays, locale forms)
_PYTHON_ONLY = frozenset("GUWVuwcxX")
#: what polars' parser reads exactly as Python does, given text matching Python's pattern
_CHRONO = frozenset("YmdHMS")
_KNOWN = frozenset(_NUMERIC) | frozenset(NAMES) | _PYTHON_ONLY | {"%"}
#: chrono/C strftime codes Python's strptime does not know, and what to write instead
_NOT_PYTHON = {
    "e": "%d (it reads 1-digit days too)", "-": "%d, %m, %H … (they read 1-digit values too)",
    ".": ".%f (a dot, then %f)", ":": "%z (it reads +01:00 too)", "#": "%z",
    "T": "%H:%M:%S", "F": "%Y-%m-%d", "D": "%m/%d/%y", "R": "%H:%M", "k": "%H", "l": "%I",
    "P": "%p", "h": "%b", "s": "format: epoch_s", "n": "a space", "t": "a space",
    "C": "%Y", "_": "%d, %H … (they read space-padded values too)", "0": "%d, %m …",
    "3": ".%f", "6": ".%f", "9": ".%f", "E": "the plain directive", "O": "the plain directive",
}
_WHITESPACE = r"[\s\x1c-\x1f]+"  # Python's \s in a str pattern: str.isspace()
_RUST_META = set("\\.+*?()|[]{}^$#&-~")


class FormatError(ValueError):
    """A format that cannot be used, with the sentence saying why."""


@dataclass(frozen=True, slots=True)
class Token:
    kind: Literal["literal", "space", "directive"]
    text: str  # the literal text, or the directive letter

    def pattern(self, group: str | None = None) -> str:
        if self.kind == "space":
            return _WHITESPACE
        if self.kind == "literal":
            return "".join("\\" + c if c in _RUST_META else c for c in self.text)
        inner = _directive_regex(self.text)
        return f"(?P<{group}>{inner})" if group else f"(?:{inner})"


def _directive_regex(letter: str) -> str:
    if letter == "%":
        return "%"
    if letter in _NUMERIC:
        return _NUMERIC[letter]
    words = sorted(NAMES[letter], key=len, reverse=True)  # longest first, as Python does
    return "|".join(words)


# ---------------------------------------------------------------- reading a format


@functools.cache
def tokenize(fmt: str) -> tuple[Token, ...]:
    """The format's literals, whitespace runs and directives; :class:`FormatError` when
    Python's strptime would refuse it (or read it differently from what it seems to say)."""
    tokens: list[Token] = []
    literal = ""
    i = 0
    while i < len(fmt):
        char = fmt[i]
        if char == "%":
            if i + 1 == len(fmt):
                raise FormatError(f"format {fmt!r} ends with a lone %; write %% for a percent "
                                  "sign")
            letter = fmt[i + 1]
            if letter not in _KNOWN:
                raise FormatError(_unknown(fmt, i))
            if literal:
                tokens.append(Token("literal", literal))
                literal = ""
            if letter == "%":
                literal += "%"
            else:
                tokens.append(Token("directive", letter))
            i += 2
            continue
        if char.isspace():
            if literal:
                tokens.append(Token("literal", literal))
                literal = ""
            if not tokens or tokens[-1].kind != "space":
                tokens.append(Token("space", " "))
            i += 1
            continue
        literal += char
        i += 1
    if literal:
        tokens.append(Token("literal", literal))
    return tuple(tokens)


def _unknown(fmt: str, at: int) -> str:
    letter = fmt[at + 1]
    shown = fmt[at:at + 3] if letter in "-_0#:.3EO" and at + 2 < len(fmt) else fmt[at:at + 2]
    if letter.isspace():
        return f"format {fmt!r} has a % followed by a space; write %% for a percent sign"
    hint = _NOT_PYTHON.get(letter)
    instead = f"; use {hint}" if hint else ""
    return (f"format {fmt!r} uses {shown}, which Python's strptime does not know{instead} "
            "(formats use Python's strptime directives: docs/mapping.md)")


def directives(fmt: str) -> list[str]:
    return [t.text for t in tokenize(fmt) if t.kind == "directive"]


def path_of(fmt: str) -> Path:
    """How a (valid) format is read: see the module docstring."""
    tokens = tokenize(fmt)
    letters = [t.text for t in tokens if t.kind == "directive"]
    if any(letter in _PYTHON_ONLY for letter in letters):
        return "python"
    return "chrono" if chrono_format(tokens) is not None else "exact"


def chrono_format(tokens: Sequence[Token]) -> str | None:
    """The polars format reading these tokens as Python does, or None when there is none:
    only %Y %m %d %H %M %S and ``.%f``, each followed by punctuation, whitespace or the end
    (so no directive's width depends on its neighbour), literals with no letter or digit."""
    out: list[str] = []
    letters = {t.text for t in tokens if t.kind == "directive"}
    if ("H" in letters) != ("M" in letters) or ("S" in letters and "M" not in letters):
        return None  # polars needs the hour and minute together
    for index, token in enumerate(tokens):
        after = tokens[index + 1] if index + 1 < len(tokens) else None
        if token.kind == "space":
            out.append(" ")
        elif token.kind == "literal":
            if any(c.isalnum() or c == "%" for c in token.text):
                return None
            if after is not None and after.kind == "directive" and after.text == "f":
                if not token.text.endswith("."):
                    return None
                out.append(token.text[:-1])  # the dot belongs to polars' %.f
            else:
                out.append(token.text)
        elif token.text == "f":
            before = tokens[index - 1] if index else None
            if before is None or before.kind != "literal" or "S" not in letters:
                return None
            if after is not None and after.kind == "directive":
                return None
            out.append("%.f")
        elif token.text in _CHRONO:
            if after is not None and after.kind == "directive":
                return None
            out.append("%" + token.text)
        else:
            return None
    return "".join(out)


def format_problem(fmt: str, kind: str) -> str | None:
    """Why ``fmt`` cannot read a ``kind`` (date/datetime) field, or None when it can."""
    if fmt in NAMED_FORMATS:
        return None
    if "%" not in fmt:
        return None  # options.py explains formats without directives (spreadsheet spellings)
    try:
        letters = directives(fmt)
    except FormatError as exc:
        return str(exc)
    seen: set[str] = set()
    for letter in letters:
        if letter in seen:
            return (f"format {fmt!r} uses %{letter} twice (Python's strptime refuses that); "
                    "keep one")
        seen.add(letter)
    present = set(letters)
    if "c" in present or "x" in present:
        present |= {"Y", "m", "d"}
    if not present & {"Y", "y", "G"}:
        return (f"format {fmt!r} has no year (%Y, or %y for two digits); Python would read "
                "the year 1900")
    weekday = bool(present & {"a", "A", "w", "u"})
    has_day = (("d" in present and present & {"m", "b", "B"}) or "j" in present
               or (weekday and present & {"U", "W", "V"}))
    if not has_day:
        return (f"format {fmt!r} has no day: name the day with %d and the month with %m, %b "
                "or %B (or the day of the year with %j); Python would read the 1st")
    if kind == "datetime" and "I" in present and "p" not in present:
        return (f"format {fmt!r} uses %I (12-hour clock) without %p (AM/PM): an afternoon "
                "time would be read as the morning; add %p or use %H")
    if "Z" in present and present & _PYTHON_ONLY:
        others = " ".join(f"%{x}" for x in sorted(present & _PYTHON_ONLY))
        return f"format {fmt!r} combines %Z with {others}, which is not supported; use %z"
    return _round_trip(fmt)


_REFERENCES = (
    dt.datetime(2001, 2, 3, 4, 5, 6, 789000, tzinfo=dt.UTC),
    dt.datetime(2024, 11, 14, 19, 21, 0, 123000, tzinfo=dt.UTC),
)


def _round_trip(fmt: str) -> str | None:
    """Python must read back the day it writes with ``fmt`` (a last check on directive
    combinations it rejects, such as %V without %G)."""
    for ref in _REFERENCES:
        try:
            back = dt.datetime.strptime(ref.strftime(fmt), fmt)
        except (ValueError, re.error) as exc:
            return f"format {fmt!r} is refused by Python's strptime: {exc}"
        if back.date() != ref.date():
            return (f"format {fmt!r} does not give back the date it writes "
                    f"({ref.date()} → {back.date()}); name the year, month and day")
    return None
