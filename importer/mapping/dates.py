"""Date and time formats as polars expressions: Python's strptime, ISO 8601, epoch, Excel.

A ``format:`` is read with the meaning of Python's :func:`datetime.datetime.strptime`, the
directives its users know (``%d %m %Y %H %M %S %f %z %Z %p %I %b %B %a %A %j %y %%`` …). Three
ways to read one, all giving Python's result:

* **chrono** (fastest): a format of ``%Y %m %d %H %M %S`` and ``.%f``, each directive ended by
  punctuation or a space, is handed to polars' own parser, which reads such text as Python
  does once the text is known to match Python's pattern (a cheap regex test: the parser alone
  would take ``10:00:60``, ``0000`` years or no space where the format has one);
* **exact** (vectorised, ~3x slower): every other format of the directives above. The text is
  matched against the regular expression Python's ``_strptime`` builds (same alternatives in the
  same order, case-insensitive, first match then "nothing left over"), and the captured numbers
  are turned into a datetime with Python's rules (``%y`` pivot 68/69, ``%I`` with ``%p``, ``%j``
  over ``%m %d``, the later of two directives for the same part wins, ``%f`` right-padded);
* **python** (per distinct value): week-based and locale directives (``%U %W %V %G %u %w %c %x
  %X``) call :func:`datetime.datetime.strptime` itself.

Time zones follow the mapping: ``%z`` is the value's own offset; ``%Z`` (``UTC``/``GMT``) and a
literal ``Z`` ending the format mean UTC; anything else is a wall-clock time in the field's
``timezone``. Python itself drops the ``%Z`` name (a naive result); taking the time the value
says is the one reading that cannot shift it.

Formats that cannot work are refused at load time with the directive named
(:func:`format_problem`). Besides formats, ``format:`` takes ``epoch_s``, ``epoch_ms`` and
``excel``; without one, datetimes read ISO 8601 (:func:`iso_datetime`).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import polars as pl

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
_NAMES: dict[str, dict[str, int]] = {
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
_KNOWN = frozenset(_NUMERIC) | frozenset(_NAMES) | _PYTHON_ONLY | {"%"}
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
    words = sorted(_NAMES[letter], key=len, reverse=True)  # longest first, as Python does
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
    return "chrono" if _chrono_format(tokens) is not None else "exact"


def _chrono_format(tokens: Sequence[Token]) -> str | None:
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


# ---------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class Parsed:
    """One format's reading of a text column.

    ``wall``: the naive date and time written (null when the text does not match or names no
    real moment); ``offset_us``: per row, microseconds east of UTC the text states (null: a
    wall-clock time of the field's timezone); ``matched``: the text has the format's shape (a
    failure with ``matched`` true is an impossible date such as 31/02).
    """

    wall: pl.Expr
    offset_us: pl.Expr | None
    matched: pl.Expr


def parse(text: pl.Expr, fmt: str) -> Parsed:
    """Read ``text`` (trimmed String) with one format, ``format:`` name or ISO 8601."""
    if fmt == ISO_DATETIME:
        return iso_datetime(text)
    if fmt in (EPOCH_S, EPOCH_MS):
        return _epoch(text, 1_000_000 if fmt == EPOCH_S else 1_000)
    if fmt == EXCEL:
        return _excel(text)
    tokens = tokenize(fmt)
    path = path_of(fmt)
    if path == "python":
        return _python(text, fmt)
    utc = _names_utc(tokens)
    chrono = _chrono_format(tokens) if path == "chrono" else None
    if chrono is not None:
        matched = text.str.contains(_guard_pattern(tokens))
        if {"H", "M"} & set(directives(fmt)):
            wall = text.str.strptime(pl.Datetime("us"), chrono, strict=False)
        else:
            wall = text.str.strptime(pl.Date, chrono, strict=False).cast(pl.Datetime("us"))
        wall = pl.when(matched).then(wall)
        return Parsed(wall, pl.lit(0, pl.Int64) if utc else None, matched)
    return _exact(text, tokens, utc)


def _names_utc(tokens: Sequence[Token]) -> bool:
    """%Z, or a literal Z ending the format: the time is UTC."""
    if any(t.kind == "directive" and t.text == "Z" for t in tokens):
        return True
    last = tokens[-1] if tokens else None
    return last is not None and last.kind == "literal" and last.text.endswith("Z")


def _guard_pattern(tokens: Sequence[Token]) -> str:
    """Python's pattern for a chrono-read format, with the values Python refuses after
    matching (second 60/61, year 0) left out: polars would take them."""
    parts: list[str] = []
    for token in tokens:
        if token.kind == "directive" and token.text == "S":
            parts.append("(?:[0-5][0-9]|[0-9])")
        elif token.kind == "directive" and token.text == "Y":
            parts.append("(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)")
        else:
            parts.append(token.pattern())
    # every directive ends at punctuation or whitespace, so "some full match exists" ($) and
    # Python's "the first match leaves nothing over" agree
    return "(?i)^" + "".join(parts) + "$"


def _exact(text: pl.Expr, tokens: Sequence[Token], utc: bool) -> Parsed:
    """Python's regex and Python's arithmetic, vectorised (see the module docstring)."""
    groups: dict[str, str] = {}
    parts: list[str] = []
    for index, token in enumerate(tokens):
        if token.kind == "directive" and token.text != "%":
            name = f"g{index}"
            groups[token.text] = name
            parts.append(token.pattern(name))
        else:
            parts.append(token.pattern())
    # Python takes the first match and then refuses leftovers: capture the match, compare
    pattern = "(?i)^(?P<whole>" + "".join(parts) + ")"
    found = text.str.extract_groups(pattern)

    def field(letter: str) -> pl.Expr:
        return found.struct.field(groups[letter])

    def number(letter: str) -> pl.Expr:
        return field(letter).str.strip_chars(" ").cast(pl.Int32, strict=False)

    matched = (found.struct.field("whole").str.len_bytes() == text.str.len_bytes()).fill_null(
        False
    )
    # the later of two directives for the same part wins (Python walks its groups in order)
    order = [t.text for t in tokens if t.kind == "directive"]
    year: pl.Expr = pl.lit(1900, pl.Int32)
    month: pl.Expr = pl.lit(1, pl.Int32)
    day: pl.Expr = pl.lit(1, pl.Int32)
    hour: pl.Expr = pl.lit(0, pl.Int32)
    minute: pl.Expr = pl.lit(0, pl.Int32)
    second: pl.Expr = pl.lit(0, pl.Int32)
    micro: pl.Expr = pl.lit(0, pl.Int32)
    julian: pl.Expr | None = None
    offset: pl.Expr | None = pl.lit(0, pl.Int64) if utc else None
    valid: pl.Expr = matched
    for letter in order:
        if letter == "Y":
            year = number("Y")
        elif letter == "y":
            two = number("y")
            year = pl.when(two <= 68).then(two + 2000).otherwise(two + 1900)
        elif letter == "m":
            month = number("m")
        elif letter in ("b", "B"):
            month = _name_number(field(letter), letter)
        elif letter == "d":
            day = number("d")
        elif letter == "j":
            julian = number("j")
        elif letter == "H":
            hour = number("H")
        elif letter == "I":
            twelve = number("I") % 12
            if "p" in groups:
                twelve = twelve + 12 * _name_number(field("p"), "p")
            hour = twelve
        elif letter == "M":
            minute = number("M")
        elif letter == "S":
            second = number("S")
        elif letter == "f":
            micro = field("f").str.pad_end(6, "0").cast(pl.Int32, strict=False)
        elif letter == "z":
            zone = _offset_us(field("z"))
            valid = valid & zone.is_not_null()
            offset = zone
    valid = valid & year.is_between(1, 9999) & (second <= 59)
    if julian is None:
        valid = valid & (day <= _days_in_month(year, month))
        wall = pl.datetime(pl.when(valid).then(year), month, day, hour, minute, second, micro)
    else:
        start = pl.datetime(pl.when(valid).then(year), 1, 1, hour, minute, second, micro)
        wall = start + pl.duration(days=julian - 1)
        wall = pl.when(wall.dt.year() <= 9999).then(wall)
    return Parsed(wall, offset, matched)


def _name_number(word: pl.Expr, letter: str) -> pl.Expr:
    table = _NAMES[letter]
    return word.str.to_lowercase().replace_strict(
        list(table), list(table.values()), default=None, return_dtype=pl.Int32
    )


def _days_in_month(year: pl.Expr, month: pl.Expr) -> pl.Expr:
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    return (
        pl.when(month == 2).then(pl.when(leap).then(29).otherwise(28))
        .when(month.is_in([4, 6, 9, 11])).then(30)
        .otherwise(31)
    )


_OFFSET_SHAPE = (  # Python refuses a colon after the hours but not after the minutes, and back
    r"^[+-][0-9]{2}(?::[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?"
    r"|[0-9]{2}(?:[0-9]{2}(?:\.[0-9]{1,6})?)?)$"
)


def _offset_us(zone: pl.Expr) -> pl.Expr:
    """A ``%z`` text (``Z``, ``+01:00``, ``-0530``, ``+01:00:30.5``) in microseconds east."""
    digits = zone.str.replace_all(":", "", literal=True)
    hours = digits.str.slice(1, 2).cast(pl.Int64, strict=False)
    minutes = digits.str.slice(3, 2).cast(pl.Int64, strict=False)
    seconds = digits.str.slice(5, 2).cast(pl.Int64, strict=False).fill_null(0)
    fraction = digits.str.slice(8).str.pad_end(6, "0").cast(pl.Int64, strict=False).fill_null(0)
    size = ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + fraction
    sign = pl.when(zone.str.starts_with("-")).then(-1).otherwise(1)
    # Python's timezone() takes offsets strictly within ±24 h
    ok = zone.str.contains(_OFFSET_SHAPE) & (hours < 24)
    return pl.when(zone == "Z").then(pl.lit(0, pl.Int64)).when(ok).then(sign * size)


def _python(text: pl.Expr, fmt: str) -> Parsed:
    """Python's own strptime, once per distinct value (week and locale directives)."""
    aware = "z" in directives(fmt)

    def read(values: pl.Series) -> pl.Series:
        walls: dict[str, tuple[dt.datetime | None, int | None]] = {}
        for value in values.drop_nulls().unique().to_list():
            try:
                moment = dt.datetime.strptime(value, fmt)
            except ValueError:
                walls[value] = (None, None)
                continue
            shift = moment.utcoffset()
            offset = None if shift is None else shift // dt.timedelta(microseconds=1)
            walls[value] = (moment.replace(tzinfo=None), offset)
        rows = [walls.get(v, (None, None)) if v is not None else (None, None)
                for v in values.to_list()]
        return pl.DataFrame(
            {"wall": [w for w, _ in rows], "offset": [o for _, o in rows]},
            schema={"wall": pl.Datetime("us"), "offset": pl.Int64},
        ).to_struct(values.name)

    dtype = pl.Struct({"wall": pl.Datetime("us"), "offset": pl.Int64})
    both = text.map_batches(read, return_dtype=dtype)
    wall = both.struct.field("wall")
    offset = both.struct.field("offset") if aware else (
        pl.lit(0, pl.Int64) if _names_utc(tokenize(fmt)) else None
    )
    return Parsed(wall, offset, wall.is_not_null())


# ---------------------------------------------------------------- ISO 8601, epoch, Excel


_ISO = (
    r"^(?P<Y>[0-9]{4})-(?P<m>[0-9]{1,2})-(?P<d>[0-9]{1,2})"
    r"(?:[Tt ](?P<H>[0-9]{1,2}):(?P<M>[0-9]{2})(?::(?P<S>[0-9]{2})(?:[.,](?P<f>[0-9]{1,9}))?)?"
    r"(?: ?(?P<z>[Zz]|(?i:UTC|GMT))|(?P<sign> ?[+-])(?P<oh>[0-9]{2})(?::?(?P<om>[0-9]{2}))?)?)?$"
)


def iso_datetime(text: pl.Expr) -> Parsed:
    """ISO 8601 and its everyday spellings, in one pass.

    ``2024-11-14``, ``2024-11-14T19:21``, ``…T19:21:00``, ``….123`` (up to 9 digits, read to
    the microsecond; a comma works too), ``t`` or a space for ``T``; then nothing (the field's
    timezone), ``Z``/``z``, ``UTC``/``GMT`` (HubSpot writes ``2024-11-14 19:21:00.123 UTC``),
    or an offset ``+01``, ``+0100``, ``+01:00`` (a space before it is allowed).
    """
    found = text.str.extract_groups(_ISO)

    def number(name: str) -> pl.Expr:
        return found.struct.field(name).cast(pl.Int32, strict=False)

    year, month, day = number("Y"), number("m"), number("d")
    hour, minute, second = (number(n).fill_null(0) for n in ("H", "M", "S"))
    micro = found.struct.field("f").str.slice(0, 6).str.pad_end(6, "0").cast(
        pl.Int32, strict=False
    ).fill_null(0)
    matched = year.is_not_null()
    valid = (matched & year.is_between(1, 9999) & month.is_between(1, 12) & (day >= 1)
             & (day <= _days_in_month(year, month)) & (hour <= 23) & (minute <= 59)
             & (second <= 59))
    wall = pl.datetime(pl.when(valid).then(year), month, day, hour, minute, second, micro)
    oh = found.struct.field("oh").cast(pl.Int64, strict=False)
    om = found.struct.field("om").cast(pl.Int64, strict=False).fill_null(0)
    sign = pl.when(found.struct.field("sign").str.contains("-")).then(-1).otherwise(1)
    offset = (
        pl.when(found.struct.field("z").is_not_null()).then(pl.lit(0, pl.Int64))
        .when((oh < 24) & (om < 60)).then(sign * (oh * 60 + om) * 60_000_000)
    )
    bad_offset = oh.is_not_null() & offset.is_null()
    return Parsed(pl.when(~bad_offset).then(wall), offset, matched)


_MIN_US = -62135596800 * 1_000_000  # 0001-01-01T00:00:00Z
_MAX_US = 253402300799999999  # 9999-12-31T23:59:59.999999Z


def _epoch(text: pl.Expr, unit_us: int) -> Parsed:
    """Unix time: whole (or decimal) seconds or milliseconds since 1970-01-01T00:00:00Z."""
    found = text.str.extract_groups(
        r"^(?P<sign>[+-]?)(?P<whole>[0-9]{1,15})(?:\.(?P<frac>[0-9]+))?$"
    )
    whole = found.struct.field("whole").cast(pl.Int64, strict=False)
    digits = 6 if unit_us == 1_000_000 else 3
    frac = found.struct.field("frac").fill_null("").str.slice(0, digits).str.pad_end(digits, "0")
    micro = whole * unit_us + frac.cast(pl.Int64, strict=False)
    micro = pl.when(found.struct.field("sign") == "-").then(-micro).otherwise(micro)
    matched = whole.is_not_null()
    in_range = micro.is_between(_MIN_US, _MAX_US)
    wall = pl.when(matched & in_range).then(micro).cast(pl.Datetime("us"))
    return Parsed(wall, pl.lit(0, pl.Int64), matched)


#: Excel's day 0 for serials from 61 on (its calendar has a 29 February 1900, serial 60,
#: which never existed; serials 1-59 are one day later than this count gives)
_EXCEL_EPOCH = dt.datetime(1899, 12, 30)


def _excel(text: pl.Expr) -> Parsed:
    """Excel's serial dates (1900 system): 45612 is 2024-11-16, 45612.5 its noon.

    Serial 60 (Excel's 29 February 1900, a day that never was) and serials below 1 are
    refused. The fraction of a day is rounded to the millisecond, Excel's own precision (a
    time stored as 0.6041666666 is 14:30:00.000, not 14:29:59.999).
    """
    found = text.str.extract_groups(r"^(?P<days>[0-9]{1,7})(?P<frac>\.[0-9]+)?$")
    days = found.struct.field("days").cast(pl.Int64, strict=False)
    frac = found.struct.field("frac").fill_null("0").cast(pl.Float64, strict=False)
    millis = (frac * 86_400_000).round(0).cast(pl.Int64)
    shift = pl.when(days < 60).then(days + 1).otherwise(days)
    valid = (days >= 1) & (days != 60) & (days <= 2958465)  # 9999-12-31
    wall = pl.lit(_EXCEL_EPOCH, pl.Datetime("us")) + pl.duration(
        days=pl.when(valid).then(shift), milliseconds=millis
    )
    return Parsed(wall, None, days.is_not_null())


# ---------------------------------------------------------------- to UTC, to a date


def to_utc(parsed: Parsed, timezone: str) -> pl.Expr:
    """The instant, as a UTC datetime (null when the text names none, or a wall-clock time
    that does not exist in ``timezone``: the spring-forward gap)."""
    shifted = parsed.wall
    if parsed.offset_us is not None:
        shifted = parsed.wall - pl.duration(microseconds=parsed.offset_us)
        stated = shifted.dt.replace_time_zone("UTC")
        if parsed.offset_us.meta.is_literal():
            return stated
        return pl.when(parsed.offset_us.is_not_null()).then(stated).otherwise(
            local_to_utc(parsed.wall, timezone)
        )
    return local_to_utc(parsed.wall, timezone)


def local_to_utc(wall: pl.Expr, timezone: str) -> pl.Expr:
    # in the repeated autumn hour the first occurrence is taken
    local = wall.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
    return local.dt.convert_time_zone("UTC")


def to_day(parsed: Parsed, timezone: str) -> pl.Expr:
    """The calendar date: as written for a wall-clock value (a birthdate is not an instant),
    the date in ``timezone`` of a value with its own offset."""
    if parsed.offset_us is None:
        return parsed.wall.dt.date()
    moment = to_utc(parsed, timezone).dt.convert_time_zone(timezone).dt.date()
    if parsed.offset_us.meta.is_literal():
        return moment
    return pl.when(parsed.offset_us.is_not_null()).then(moment).otherwise(parsed.wall.dt.date())


# ---------------------------------------------------------------- reasons (rejected rows)


def describe(formats: Sequence[str], kind: str) -> str:
    """What the field reads, for messages: ``a date matching %d/%m/%Y or %Y%m%d``."""
    shapes = [_shape(f, kind) for f in formats]
    return " or ".join(shapes)


def _shape(fmt: str, kind: str) -> str:
    if fmt == ISO_DATETIME:
        return "an ISO 8601 date/time (such as 2024-11-17T10:00:00Z or 2024-11-17 10:00)"
    if fmt == ISO_DATE and kind == "date":
        return "an ISO 8601 date (YYYY-MM-DD)"
    if fmt == EPOCH_S:
        return "a Unix time in seconds"
    if fmt == EPOCH_MS:
        return "a Unix time in milliseconds"
    if fmt == EXCEL:
        return "an Excel serial date (such as 45612 or 45612.5)"
    return f"a {'date' if kind == 'date' else 'date/time'} matching {fmt}"


def reason(
    text: pl.Expr, formats: Sequence[str], kind: str, timezone: str,
    parse_one: Callable[[pl.Expr, str], Parsed] = parse,
) -> pl.Expr:
    """Per row, why the value was refused (for rejected rows only): not the format's shape,
    not a real date, or a wall-clock time the field's timezone skips."""
    readings = [parse_one(text, f) for f in formats]
    matched = [r.matched for r in readings]
    shape = pl.lit("is not " + describe(formats, kind))
    impossible = pl.lit("is not a real calendar date or time of day (expected "
                        + describe(formats, kind) + ")")
    gap = pl.lit(f"is a time that does not exist in {timezone} (the clocks skip it)")
    walls = [r.wall.is_not_null() for r in readings]
    return (
        pl.when(~pl.any_horizontal(matched)).then(shape)
        .when(~pl.any_horizontal(walls)).then(impossible)
        .otherwise(gap)
    )
