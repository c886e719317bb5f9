"""Type options of a field (format, timezone, decimal, …): which type they fit and their values.

Kept apart from :mod:`spec` so the rule "an option must fit the field's type" and the checks of
each option's value read as one table.
"""

from __future__ import annotations

import difflib
import functools
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import phonenumbers

from importer.mapping import dateformat

#: option -> the field types it applies to
APPLIES: dict[str, tuple[str, ...]] = {
    "format": ("date", "datetime"),
    "timezone": ("datetime",),
    "decimal": ("int", "float"),
    "thousands": ("int", "float"),
    "true_values": ("bool",),
    "false_values": ("bool",),
    "phone_region": ("phone",),
    "separator": ("list",),
}
DEFAULTABLE = ("phone_region", "timezone", "decimal", "thousands", "true_values", "false_values")
THOUSANDS = (".", ",", " ", "'", "_")

#: The formats of a field without ``format:`` (see :mod:`importer.mapping.dateformat`).
ISO_DATETIME_FORMATS = (dateformat.ISO_DATETIME,)
ISO_DATE_FORMATS = (dateformat.ISO_DATE,)

# common spreadsheet spellings -> strftime, for the "did you mean" of a format without %
_SPREADSHEET_TOKENS = (
    ("yyyy", "%Y"), ("yy", "%y"), ("dd", "%d"), ("hh", "%H"), ("HH", "%H"),
    ("ss", "%S"), ("mm", "%m"), ("MM", "%m"),
)


class _HasOptions(Protocol):
    type: str
    format: str | list[str] | None
    timezone: str | None
    decimal: str | None
    thousands: str | None
    true_values: list[str] | None
    false_values: list[str] | None
    phone_region: str | None
    separator: str | None


@dataclass
class Options:
    """Resolved option values for :class:`FieldSpec`, and (message, yaml key) problems."""

    values: dict[str, Any] = field(default_factory=dict)
    problems: list[tuple[str, str | None]] = field(default_factory=list)

    def problem(self, message: str, key: str | None) -> None:
        self.problems.append((message, key))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or '' when nothing is close."""
    pool = list(choices)
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if not close:
        folded = {c.casefold(): c for c in pool}
        hit = folded.get(word.casefold())
        close = [hit] if hit else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_options(shape: _HasOptions, defaults: Any, what: str) -> Options:
    """Check the options given on one field, then fill the rest from ``defaults``."""
    out = Options()
    empty_options(shape, out, what)
    for key, types in APPLIES.items():
        if getattr(shape, key) is not None and shape.type not in types:
            out.problem(
                f"{what}: `{key}` applies only to type {' or '.join(types)} "
                f"(this field is type {shape.type})",
                key,
            )

    def pick(key: str) -> Any:
        mine = getattr(shape, key)
        return mine if mine is not None else getattr(defaults, key, None)

    _formats(shape, out, what)
    _timezone(pick("timezone"), out, what)
    _numbers(pick("decimal"), pick("thousands"), out, what)
    _bools(pick("true_values"), pick("false_values"), out, what)
    _phone(pick("phone_region"), out, what)
    if shape.separator is not None:
        if shape.separator == "":
            out.problem(f"{what}: separator must not be empty", "separator")
        else:
            out.values["separator"] = shape.separator
    return out


def empty_options(shape: Any, out: Options, what: str) -> None:
    """An option written with no value (``decimal:``, or ``decimal: ,`` in a flow mapping,
    which YAML reads as null) is a mistake, not a request for the default: ``decimal`` would
    silently become ``.`` and 1,5 be read as 15."""
    given: set[str] = getattr(shape, "model_fields_set", set())
    for key in dict.fromkeys((*APPLIES, *DEFAULTABLE)):
        if key in given and getattr(shape, key, None) is None:
            quote = ' (quote punctuation: decimal: ",")' if key in ("decimal",
                                                                    "thousands") else ""
            out.problem(f"{what}: `{key}:` has no value{quote}; give one or remove the key",
                        key)


def _formats(shape: _HasOptions, out: Options, what: str) -> None:
    if shape.type not in ("date", "datetime"):
        return
    given = shape.format
    if given is None:
        out.values["formats"] = ISO_DATE_FORMATS if shape.type == "date" else ISO_DATETIME_FORMATS
        return
    formats = [given] if isinstance(given, str) else list(given)
    if not formats:
        out.problem(f"{what}: format: list at least one format", "format")
    for fmt in formats:
        problem = format_problem(fmt, shape.type)
        if problem:
            out.problem(f"{what}: {problem}", "format")
    out.values["formats"] = tuple(formats)


def format_problem(fmt: str, kind: str) -> str | None:
    if "%" not in fmt and fmt not in dateformat.NAMED_FORMATS:
        guess = fmt
        for token, directive in _SPREADSHEET_TOKENS:
            guess = guess.replace(token, directive)
        hint = f" (did you mean {guess!r}?)" if "%" in guess else ""
        named = ", ".join(dateformat.NAMED_FORMATS)
        return (f"format {fmt!r} has no %-directives{hint}; formats use Python's strptime "
                f"codes, or one of {named}")
    return dateformat.format_problem(fmt, kind)


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _timezone(tz: str | None, out: Options, what: str) -> None:
    if tz is None:
        return
    if tz not in _zones() and tz != "UTC":
        out.problem(f"{what}: unknown timezone {tz!r}{did_you_mean(tz, _zones())}; use an IANA "
                    "name such as Europe/Madrid", "timezone")
        return
    out.values["timezone"] = tz


def _numbers(decimal: str | None, thousands: str | None, out: Options, what: str) -> None:
    if decimal is not None:
        if decimal not in (".", ","):
            out.problem(f"{what}: decimal must be \".\" or \",\" (got {decimal!r})", "decimal")
            return
        out.values["decimal"] = decimal
    if thousands is not None:
        if thousands not in THOUSANDS or thousands == (decimal or "."):
            out.problem(f"{what}: thousands must be one of {' '.join(map(repr, THOUSANDS))} and "
                        f"differ from the decimal mark (got {thousands!r})", "thousands")
            return
        out.values["thousands"] = thousands


def _bools(true: list[str] | None, false: list[str] | None, out: Options, what: str) -> None:
    words: dict[str, tuple[str, ...]] = {}
    for key, given in (("true_values", true), ("false_values", false)):
        if given is None:
            continue
        cleaned = tuple(dict.fromkeys(w.strip().casefold() for w in given))
        if not cleaned or "" in cleaned:
            out.problem(f"{what}: {key} needs one or more non-empty words", key)
            return
        words[key] = cleaned
    both = set(words.get("true_values", ())) & set(words.get("false_values", ()))
    if both:
        out.problem(f"{what}: {', '.join(sorted(both))} is both a true and a false word",
                    "false_values")
        return
    out.values.update(words)


def _phone(region: str | None, out: Options, what: str) -> None:
    if region is None:
        return
    code = region.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        out.problem(f"{what}: phone_region {region!r} is not a region code"
                    f"{did_you_mean(code, phonenumbers.SUPPORTED_REGIONS)}; use ISO 3166 "
                    "alpha-2 such as ES", "phone_region")
        return
    out.values["phone_region"] = code
