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

Formats that cannot work are refused at load time with the directive named, by
:mod:`importer.mapping.dateformat` (the format language). Besides formats, ``format:`` takes
``iso8601`` (the default of a datetime field, :func:`_iso`), ``epoch_s``, ``epoch_ms`` and
``excel``.

The casts use :func:`moment_expr` / :func:`day_expr`; reject messages :func:`reason_expr`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl

from importer.mapping.dateformat import (
    EPOCH_MS,
    EPOCH_S,
    EXCEL,
    ISO_DATE,
    ISO_DATETIME,
    NAMED_FORMATS,
    NAMES,
    Token,
    chrono_format,
    directives,
    path_of,
    tokenize,
)

# ---------------------------------------------------------------- parsing
#
# Parsing runs on whole columns (``map_batches``) in materialised steps: polars evaluates a
# shared sub-expression again at each use within one expression, and a format's regex match
# feeds a dozen uses (year, month, day, validity …). Nothing here is per row in Python except
# the "python" path (per distinct value).

# A format's *reading* of a text column is a frame of three columns: ``wall`` (Datetime) the
# naive date and time written, null when the text does not match or names no real moment;
# ``offset`` (Int64) microseconds east of UTC the text states, null for a wall-clock time of
# the field's timezone; ``matched`` (Boolean) the text has the format's shape (false: not the
# shape; true with a null wall: an impossible date such as 31/02).


def moment_expr(text: pl.Expr, formats: Sequence[str], timezone: str) -> pl.Expr:
    """The UTC instant a trimmed text gives with the first of ``formats`` that reads it."""
    # a closure, not functools.partial: polars calls a partial twice per batch (polars 2.1)
    def run(column: pl.Series) -> pl.Series:
        return moments(column, formats, timezone)

    return text.map_batches(run, return_dtype=pl.Datetime("us", "UTC"), is_elementwise=True)


def day_expr(text: pl.Expr, formats: Sequence[str], timezone: str) -> pl.Expr:
    """The calendar date a trimmed text gives (see :func:`days`)."""
    def run(column: pl.Series) -> pl.Series:
        return days(column, formats, timezone)

    return text.map_batches(run, return_dtype=pl.Date, is_elementwise=True)


def reason_expr(text: pl.Expr, formats: Sequence[str], kind: str, timezone: str) -> pl.Expr:
    """Per row, why the value was refused (evaluated for rejected rows only)."""
    def run(column: pl.Series) -> pl.Series:
        return reasons(column, formats, kind, timezone)

    return text.map_batches(run, return_dtype=pl.String, is_elementwise=True)


def moments(text: pl.Series, formats: Sequence[str], timezone: str) -> pl.Series:
    out: pl.Series | None = None
    for fmt in formats:
        found = to_utc(read(text, fmt), timezone)
        out = found if out is None else out.fill_null(found)
    assert out is not None
    return out.rename(text.name)


def days(text: pl.Series, formats: Sequence[str], timezone: str) -> pl.Series:
    """As written for a wall-clock value (a birthdate is not an instant); the date in
    ``timezone`` of a value with its own offset."""
    out: pl.Series | None = None
    for fmt in formats:
        found = _chrono_day(text, fmt)
        if found is None:
            found = to_day(read(text, fmt), timezone)
        out = found if out is None else out.fill_null(found)
    assert out is not None
    return out.rename(text.name)


def _chrono_day(text: pl.Series, fmt: str) -> pl.Series | None:
    """The common case in one step: a date-only format polars reads as Python does
    (``%Y-%m-%d``, ``%d/%m/%Y``), straight to a Date; None for any other format."""
    if fmt in NAMED_FORMATS or path_of(fmt) != "chrono":
        return None
    tokens = tokenize(fmt)
    chrono = chrono_format(tokens)
    if chrono is None or _names_utc(tokens) or {"H", "M", "S"} & set(directives(fmt)):
        return None
    column = pl.col("t")
    day = column.str.strptime(pl.Date, chrono, strict=False)
    return pl.DataFrame({"t": text}).select(
        pl.when(column.str.contains(_guard_pattern(tokens))).then(day)
    ).to_series()


def reasons(text: pl.Series, formats: Sequence[str], kind: str, timezone: str) -> pl.Series:
    """Not the format's shape, not a real date, or a wall-clock time the zone skips."""
    readings = [read(text, fmt) for fmt in formats]
    shape = "is not " + describe(formats, kind)
    impossible = ("is not a real calendar date or time of day (expected "
                  + describe(formats, kind) + ")")
    gap = f"is a time that does not exist in {timezone} (the clocks skip it)"
    matched = pl.DataFrame([r["matched"].rename(f"m{i}") for i, r in enumerate(readings)])
    walls = pl.DataFrame([r["wall"].is_not_null().rename(f"w{i}")
                          for i, r in enumerate(readings)])
    frame = pl.concat([matched, walls], how="horizontal")
    return frame.select(
        pl.when(~pl.any_horizontal(pl.col("^m[0-9]+$"))).then(pl.lit(shape))
        .when(~pl.any_horizontal(pl.col("^w[0-9]+$"))).then(pl.lit(impossible))
        .otherwise(pl.lit(gap))
    ).to_series().rename(text.name)


def read(text: pl.Series, fmt: str) -> pl.DataFrame:
    """One format's reading of a trimmed String column (wall, offset, matched: above)."""
    if fmt == ISO_DATETIME:
        return _iso(text)
    if fmt in (EPOCH_S, EPOCH_MS):
        return _epoch(text, 1_000_000 if fmt == EPOCH_S else 1_000)
    if fmt == EXCEL:
        return _excel(text)
    tokens = tokenize(fmt)
    path = path_of(fmt)
    if path == "python":
        return _python(text, fmt)
    utc = _names_utc(tokens)
    chrono = chrono_format(tokens) if path == "chrono" else None
    if chrono is None:
        return _exact(text, tokens, utc)
    frame = pl.DataFrame({"t": text}).with_columns(
        pl.col("t").str.contains(_guard_pattern(tokens)).fill_null(False).alias("matched")
    )
    if {"H", "M"} & set(directives(fmt)):
        wall = pl.col("t").str.strptime(pl.Datetime("us"), chrono, strict=False)
    else:
        wall = pl.col("t").str.strptime(pl.Date, chrono, strict=False).cast(pl.Datetime("us"))
    return frame.select(
        pl.when(pl.col("matched")).then(wall).alias("wall"),
        pl.lit(0 if utc else None, pl.Int64).alias("offset"),
        pl.col("matched"),
    )


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


def _groups(text: pl.Series, pattern: str) -> pl.DataFrame:
    """The regex's named groups as columns, plus the text as ``__text``: one match per row."""
    found = text.str.extract_groups(pattern).struct.unnest()
    return found.with_columns(text.alias("__text"))


def _exact(text: pl.Series, tokens: Sequence[Token], utc: bool) -> pl.DataFrame:
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
    found = _groups(text, "(?i)^(?P<whole>" + "".join(parts) + ")")

    def field(letter: str) -> pl.Expr:
        return pl.col(groups[letter])

    def number(letter: str) -> pl.Expr:
        return field(letter).str.strip_chars(" ").cast(pl.Int32, strict=False)

    # the later of two directives for the same part wins (Python walks its groups in order)
    parts_of: dict[str, pl.Expr] = {
        "year": pl.lit(1900, pl.Int32), "month": pl.lit(1, pl.Int32),
        "day": pl.lit(1, pl.Int32), "hour": pl.lit(0, pl.Int32), "minute": pl.lit(0, pl.Int32),
        "second": pl.lit(0, pl.Int32), "micro": pl.lit(0, pl.Int32),
        "julian": pl.lit(None, pl.Int32),
        "offset": pl.lit(0 if utc else None, pl.Int64),
    }
    for token in tokens:
        letter = token.text if token.kind == "directive" else ""
        if letter == "Y":
            parts_of["year"] = number("Y")
        elif letter == "y":
            two = number("y")
            parts_of["year"] = pl.when(two <= 68).then(two + 2000).otherwise(two + 1900)
        elif letter == "m":
            parts_of["month"] = number("m")
        elif letter in ("b", "B"):
            parts_of["month"] = _name_number(field(letter), letter)
        elif letter == "d":
            parts_of["day"] = number("d")
        elif letter == "j":
            parts_of["julian"] = number("j")
        elif letter == "H":
            parts_of["hour"] = number("H")
        elif letter == "I":
            twelve = number("I") % 12
            if "p" in groups:
                twelve = twelve + 12 * _name_number(field("p"), "p")
            parts_of["hour"] = twelve
        elif letter == "M":
            parts_of["minute"] = number("M")
        elif letter == "S":
            parts_of["second"] = number("S")
        elif letter == "f":
            parts_of["micro"] = field("f").str.pad_end(6, "0").cast(pl.Int32, strict=False)
        elif letter == "z":
            parts_of["offset"] = _offset_us(field("z"))
    matched = (pl.col("whole").str.len_bytes() == pl.col("__text").str.len_bytes()).fill_null(
        False)
    values = found.select(matched.alias("matched"),
                          *(expr.alias(name) for name, expr in parts_of.items()))
    year, month, day = pl.col("year"), pl.col("month"), pl.col("day")
    hour, minute, second, micro = (pl.col(n) for n in ("hour", "minute", "second", "micro"))
    valid = pl.col("matched") & year.is_between(1, 9999) & (second <= 59)
    if "z" in groups:
        valid = valid & pl.col("offset").is_not_null()
    if "j" not in groups:
        valid = valid & (day <= _days_in_month(year, month))
        wall = pl.datetime(pl.when(valid).then(year), month, day, hour, minute, second, micro)
    else:
        # Python counts %j days from 1 January, whatever %m and %d say
        start = pl.datetime(pl.when(valid).then(year), 1, 1, hour, minute, second, micro)
        counted = start + pl.duration(days=pl.col("julian") - 1)
        wall = pl.when(counted.dt.year() <= 9999).then(counted)
    return values.select(wall.alias("wall"), pl.col("offset"), pl.col("matched"))


def _name_number(word: pl.Expr, letter: str) -> pl.Expr:
    table = NAMES[letter]
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


def _python(text: pl.Series, fmt: str) -> pl.DataFrame:
    """Python's own strptime, once per distinct value (week and locale directives)."""
    utc = _names_utc(tokenize(fmt))
    table: dict[str, tuple[dt.datetime | None, int | None]] = {}
    for value in text.drop_nulls().unique().to_list():
        try:
            moment = dt.datetime.strptime(value, fmt)
        except ValueError:
            table[value] = (None, None)
            continue
        shift = moment.utcoffset()
        offset = 0 if utc else None
        if shift is not None:
            offset = shift // dt.timedelta(microseconds=1)
        table[value] = (moment.replace(tzinfo=None), offset)
    rows = [table.get(v, (None, None)) if v is not None else (None, None)
            for v in text.to_list()]
    walls = pl.Series("wall", [w for w, _ in rows], dtype=pl.Datetime("us"))
    return pl.DataFrame({
        "wall": walls,
        "offset": pl.Series([o for _, o in rows], dtype=pl.Int64),
        "matched": walls.is_not_null(),
    })


# ---------------------------------------------------------------- ISO 8601, epoch, Excel


_ISO = (
    r"^(?P<Y>[0-9]{4})-(?P<m>[0-9]{1,2})-(?P<d>[0-9]{1,2})"
    r"(?:[Tt ](?P<H>[0-9]{1,2}):(?P<M>[0-9]{2})(?::(?P<S>[0-9]{2})(?:[.,](?P<f>[0-9]{1,9}))?)?"
    r"(?: ?(?P<z>[Zz]|(?i:UTC|GMT))|(?P<sign> ?[+-])(?P<oh>[0-9]{2})(?::?(?P<om>[0-9]{2}))?)?)?$"
)


def _iso(text: pl.Series) -> pl.DataFrame:
    """ISO 8601 and its everyday spellings, in one pass.

    ``2024-11-14``, ``2024-11-14T19:21``, ``…T19:21:00``, ``….123`` (up to 9 digits, read to
    the microsecond; a comma works too), ``t`` or a space for ``T``; then nothing (the field's
    timezone), ``Z``/``z``, ``UTC``/``GMT`` (HubSpot writes ``2024-11-14 19:21:00.123 UTC``),
    or an offset ``+01``, ``+0100``, ``+01:00`` (a space before it is allowed).
    """
    found = _groups(text, _ISO)

    def number(name: str) -> pl.Expr:
        return pl.col(name).cast(pl.Int32, strict=False)

    sign = pl.when(pl.col("sign").str.contains("-", literal=True)).then(-1).otherwise(1)
    oh = pl.col("oh").cast(pl.Int64, strict=False)
    om = pl.col("om").cast(pl.Int64, strict=False).fill_null(0)
    values = found.select(
        number("Y").alias("year"), number("m").alias("month"), number("d").alias("day"),
        *(number(n).fill_null(0).alias(n) for n in ("H", "M", "S")),
        pl.col("f").str.slice(0, 6).str.pad_end(6, "0").cast(pl.Int32, strict=False)
        .fill_null(0).alias("micro"),
        pl.when(pl.col("z").is_not_null()).then(pl.lit(0, pl.Int64))
        .when((oh < 24) & (om < 60)).then(sign * (oh * 60 + om) * 60_000_000)
        .alias("offset"),
        (oh.is_not_null() & ((oh >= 24) | (om >= 60))).alias("bad_offset"),
    )
    year, month, day = pl.col("year"), pl.col("month"), pl.col("day")
    matched = year.is_not_null()
    valid = (matched & year.is_between(1, 9999) & month.is_between(1, 12) & (day >= 1)
             & (day <= _days_in_month(year, month)) & (pl.col("H") <= 23)
             & (pl.col("M") <= 59) & (pl.col("S") <= 59) & ~pl.col("bad_offset"))
    wall = pl.datetime(pl.when(valid).then(year), month, day, pl.col("H"), pl.col("M"),
                       pl.col("S"), pl.col("micro"))
    return values.select(wall.alias("wall"), pl.col("offset"), matched.alias("matched"))


_MIN_US = -62135596800 * 1_000_000  # 0001-01-01T00:00:00Z
_MAX_US = 253402300799999999  # 9999-12-31T23:59:59.999999Z


def _epoch(text: pl.Series, unit_us: int) -> pl.DataFrame:
    """Unix time: whole (or decimal) seconds or milliseconds since 1970-01-01T00:00:00Z."""
    found = _groups(text, r"^(?P<sign>[+-]?)(?P<whole>[0-9]{1,15})(?:\.(?P<frac>[0-9]+))?$")
    digits = 6 if unit_us == 1_000_000 else 3
    frac = pl.col("frac").fill_null("").str.slice(0, digits).str.pad_end(digits, "0")
    micro = pl.col("whole").cast(pl.Int64, strict=False) * unit_us + frac.cast(
        pl.Int64, strict=False)
    signed = pl.when(pl.col("sign") == "-").then(-micro).otherwise(micro)
    values = found.select(signed.alias("micro"), pl.col("whole").is_not_null().alias("matched"))
    in_range = pl.col("micro").is_between(_MIN_US, _MAX_US)
    return values.select(
        pl.when(pl.col("matched") & in_range).then(pl.col("micro")).cast(pl.Datetime("us"))
        .alias("wall"),
        pl.lit(0, pl.Int64).alias("offset"),
        pl.col("matched"),
    )


#: Excel's day 0 for serials from 61 on (its calendar has a 29 February 1900, serial 60,
#: which never existed; serials 1-59 are one day later than this count gives)
_EXCEL_EPOCH = dt.datetime(1899, 12, 30)


def _excel(text: pl.Series) -> pl.DataFrame:
    """Excel's serial dates (1900 system): 45612 is 2024-11-16, 45612.5 its noon.

    Serial 60 (Excel's 29 February 1900, a day that never was) and serials below 1 are
    refused. The fraction of a day is rounded to the millisecond, Excel's own precision (a
    time stored as 0.6041666666 is 14:30:00.000, not 14:29:59.999).
    """
    found = _groups(text, r"^(?P<days>[0-9]{1,7})(?P<frac>\.[0-9]+)?$")
    days = pl.col("days").cast(pl.Int64, strict=False)
    frac = pl.col("frac").fill_null("0").cast(pl.Float64, strict=False)
    millis = (frac * 86_400_000).round(0).cast(pl.Int64)
    shift = pl.when(days < 60).then(days + 1).otherwise(days)
    valid = (days >= 1) & (days != 60) & (days <= 2958465)  # 9999-12-31
    wall = pl.lit(_EXCEL_EPOCH, pl.Datetime("us")) + pl.duration(
        days=pl.when(valid).then(shift), milliseconds=millis
    )
    return found.select(wall.alias("wall"), pl.lit(None, pl.Int64).alias("offset"),
                        days.is_not_null().alias("matched"))


# ---------------------------------------------------------------- to UTC, to a date


def to_utc(reading: pl.DataFrame, timezone: str) -> pl.Series:
    """The instant, as a UTC datetime (null when the text names none, or a wall-clock time
    that does not exist in ``timezone``: the spring-forward gap)."""
    offsets = reading["offset"]
    wall = pl.col("wall")
    stated = (wall - pl.duration(microseconds=pl.col("offset"))).dt.replace_time_zone("UTC")
    if offsets.null_count() == 0:
        moment = stated
    elif offsets.null_count() == len(offsets):
        moment = local_to_utc(wall, timezone)
    else:
        moment = pl.when(pl.col("offset").is_not_null()).then(stated).otherwise(
            local_to_utc(wall, timezone))
    return reading.select(moment).to_series()


def local_to_utc(wall: pl.Expr, timezone: str) -> pl.Expr:
    # in the repeated autumn hour the first occurrence is taken
    local = wall.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
    return local.dt.convert_time_zone("UTC")


def to_day(reading: pl.DataFrame, timezone: str) -> pl.Series:
    """The calendar date: as written for a wall-clock value, the date in ``timezone`` of a
    value with its own offset."""
    offsets = reading["offset"]
    if offsets.null_count() == len(offsets):
        return reading["wall"].dt.date()
    seen = to_utc(reading, timezone).dt.convert_time_zone(timezone).dt.date()
    return reading.with_columns(seen.alias("seen")).select(
        pl.when(pl.col("offset").is_not_null()).then(pl.col("seen"))
        .otherwise(pl.col("wall").dt.date())
    ).to_series()


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
