"""Polars expressions for one field: source → transforms → type → JSON text.

Every value is turned into the exact JSON text it will be sent as (``"abc"``, ``49.90``,
``"1"``, ``{"a":1}``), so serialising a row is string concatenation in polars and numbers keep
their decimal text: a price of 49.90 can never come out as 49.900000000000006.
A value that cannot be converted comes out null although its input was present; the engine
turns that into the type's error code (:data:`ERROR_CODES`) and the row into a reject.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Sequence

import orjson
import polars as pl
import polars.selectors as cs

from importer.mapping import dates
from importer.mapping.spec import (
    CoalesceSource,
    ColumnSource,
    FieldSpec,
    Source,
    TemplateSource,
    Transform,
    ValueSource,
)

# JSON string escapes (RFC 8259 §7): quote, backslash and the C0 controls; UTF-8 stays as is.
_SHORT = {8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}
_ESCAPE_FROM = ["\\", '"', *(chr(i) for i in range(32))]
_ESCAPE_TO = ["\\\\", '\\"', *(_SHORT.get(i, f"\\u{i:04x}") for i in range(32))]

EMAIL_PATTERN = (  # local part: no empty dot-atoms, specials, quotes or control characters
    r"^[^\s\x00-\x1f@\"(),:;<>\[\]\\.]+(\.[^\s\x00-\x1f@\"(),:;<>\[\]\\.]+)*"
    r"@([a-z0-9](-*[a-z0-9])*\.)+[a-z]{2,63}$"  # host names and a letters-only TLD
)
DATETIME_OUT = "%Y-%m-%dT%H:%M:%S%.3fZ"  # API.md §3: ISO 8601 UTC with milliseconds
DATE_OUT = "%Y-%m-%d"
TRUE_TEXT, FALSE_TEXT = '"1"', '"0"'  # API.md §3: clients send "1" / "0"


#: The error code of a field whose input is present but cannot be converted; string and list
#: fields cannot fail.
ERROR_CODES: dict[str, str] = {
    "int": "invalid_number",
    "float": "invalid_number",
    "bool": "invalid_bool",
    "date": "invalid_date",
    "datetime": "invalid_date",
    "phone": "invalid_phone",
    "email": "invalid_email",
    "json": "invalid_json",
}


# ---------------------------------------------------------------- text helpers


def json_string(expr: pl.Expr, prefix: str = "", *, plain: bool = False) -> pl.Expr:
    """A String expression as a JSON string literal (quoted, escaped), after ``prefix``.

    ``plain``: no value holds a character JSON escapes (see :func:`needs_escaping`), so the
    escaping pass is skipped.
    """
    if plain:
        return quoted(expr, prefix)
    return quoted(expr.str.replace_many(_ESCAPE_FROM, _ESCAPE_TO), prefix)


def needs_escaping(columns: Sequence[str]) -> pl.Expr:
    """Per String column (named as it), True when some value holds a quote, backslash or
    control character.

    Checked once per batch and column: a column without any (nearly all of them) is sent with
    quotes around it, skipping the escaping pass over every value. One expression for all the
    columns: one per column held ~55 MB for 20,000 columns (each with its own pattern list).
    """
    return cs.by_name(*columns).str.contains_any(_ESCAPE_FROM).any().fill_null(False)


def quoted(expr: pl.Expr, prefix: str = "") -> pl.Expr:
    """Quotes around text that cannot need escaping (dates, E.164, checked e-mails, hex).

    ``prefix`` (a member's ``"key":``) is joined in the same pass: one string per value.
    """
    return pl.concat_str([pl.lit(prefix + '"'), expr, pl.lit('"')])


def prefixed(expr: pl.Expr, prefix: str) -> pl.Expr:
    return pl.concat_str([pl.lit(prefix), expr]) if prefix else expr


def normalise_text(field: FieldSpec, expr: pl.Expr) -> pl.Expr:
    """Text inputs of the parsed types are read without surrounding spaces; e-mail addresses
    and true/false words are compared in lower case."""
    if field.type in ("email", "bool"):
        return expr.str.strip_chars().str.to_lowercase()
    if field.type in ("int", "float", "date", "datetime"):
        return expr.str.strip_chars()
    return expr


def blank_to_null(expr: pl.Expr) -> pl.Expr:
    """Empty and whitespace-only text counts as missing (a blank cell must not wipe data)."""
    return pl.when(expr.str.contains(r"^\s*$")).then(pl.lit(None, pl.String)).otherwise(expr)


def as_text(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Any column as text, for messages, hashing and string-only steps."""
    if dtype == pl.String:
        return expr
    if isinstance(dtype, pl.Struct):
        return expr.struct.json_encode()
    if isinstance(dtype, pl.List | pl.Array):
        return _nested_json(expr)
    return expr.cast(pl.String)


def _nested_json(expr: pl.Expr) -> pl.Expr:
    """JSON for a native list/array column (polars encodes structs only, so wrap it)."""
    wrapped = pl.struct(expr.alias("v")).struct.json_encode()
    return wrapped.str.strip_prefix('{"v":').str.strip_suffix("}")


def native_json(
    expr: pl.Expr, dtype: pl.DataType, prefix: str = "", *, plain: bool = False
) -> pl.Expr:
    """JSON text for a column passed through as is (``all_other_columns``), never an error;
    ``prefix`` (a member's ``"key":``) is joined in the same pass where the type allows."""
    if dtype == pl.String:
        return json_string(blank_to_null(expr), prefix, plain=plain)
    if dtype == pl.Date:
        return quoted(expr.dt.strftime(DATE_OUT), prefix)
    if isinstance(dtype, pl.Datetime):
        return quoted(_to_utc(expr, dtype, "UTC").dt.strftime(DATETIME_OUT), prefix)
    return prefixed(_native_json(expr, dtype), prefix)


def _native_json(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.Boolean:
        return pl.when(expr).then(pl.lit(TRUE_TEXT)).when(~expr).then(pl.lit(FALSE_TEXT))
    if dtype.is_integer() or isinstance(dtype, pl.Decimal):
        return expr.cast(pl.String)
    if dtype.is_float():
        return pl.when(expr.is_finite()).then(expr.cast(pl.String))
    if isinstance(dtype, pl.Struct):
        return expr.struct.json_encode()
    if isinstance(dtype, pl.List | pl.Array):
        return pl.when(expr.list.len() > 0).then(_nested_json(expr))
    return json_string(expr.cast(pl.String))


# ---------------------------------------------------------------- sources and transforms


def source_expr(source: Source, schema: pl.Schema) -> pl.Expr:
    """The field's input before transforms: a column as is, or text built from columns."""
    if isinstance(source, ColumnSource):
        col = pl.col(source.column)
        return blank_to_null(col) if schema[source.column] == pl.String else col
    if isinstance(source, ValueSource):
        return pl.lit(_constant_text(source.value), pl.String)
    if isinstance(source, CoalesceSource):
        return pl.coalesce([_clean_text(c, schema) for c in source.columns])
    if isinstance(source, TemplateSource):
        return _template(source, schema)
    # ids hash the exact text: "" and a missing value are different inputs
    return hash_ids([as_text(pl.col(c), schema[c]) for c in source.columns])


def raw_text(source: Source, schema: pl.Schema) -> pl.Expr:
    """The value quoted in a reject message: what the user sees in the file."""
    if isinstance(source, ColumnSource):
        return as_text(pl.col(source.column), schema[source.column])
    return source_expr(source, schema).cast(pl.String)


def _clean_text(column: str, schema: pl.Schema) -> pl.Expr:
    return blank_to_null(as_text(pl.col(column), schema[column]))


def _constant_text(value: str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _template(source: TemplateSource, schema: pl.Schema) -> pl.Expr:
    pieces: list[pl.Expr] = []
    for literal, column in source.parts:
        if literal:
            pieces.append(pl.lit(literal))
        if column is not None:
            pieces.append(_clean_text(column, schema).fill_null(""))
    columns = [_clean_text(c, schema) for c in source.columns]
    # a template whose columns are all empty is empty, not just its literal text
    return pl.when(pl.any_horizontal([c.is_not_null() for c in columns])).then(
        pl.concat_str(pieces)
    )


def hash_ids(texts: list[pl.Expr]) -> pl.Expr:
    """Stable ids: the same values give the same id in every process, run and machine.

    Each value is length-prefixed (``<utf-8 bytes>:<text>``) and a missing one is ``~``, joined
    with ``|``; so ``("a|b", "c")`` and ``("a", "b|c")`` differ and null differs from "".
    The digest is BLAKE2b-128 as 32 hex digits. Python's ``hash()`` and polars' ``hash`` are
    salted or version-dependent and never used. When every value is missing or blank there
    is no id (null): such rows would otherwise all share one id.
    """
    encoded = pl.concat_str(
        [
            pl.when(t.is_null()).then(pl.lit("~")).otherwise(
                pl.concat_str([t.str.len_bytes().cast(pl.String), pl.lit(":"), t])
            )
            for t in texts
        ],
        separator="|",
    )
    present = pl.any_horizontal([blank_to_null(t).is_not_null() for t in texts])
    return pl.when(present).then(encoded).map_batches(_digest_series, return_dtype=pl.String)


def hash_text(encoded: str) -> str:
    return hashlib.blake2b(encoded.encode("utf-8"), digest_size=16).hexdigest()


def _digest_series(encoded: pl.Series) -> pl.Series:
    digests = [None if v is None else hash_text(v) for v in encoded.to_list()]
    return pl.Series(encoded.name, digests, dtype=pl.String)


#: Transforms that cannot add a character JSON escapes to a text (``map`` and ``default``
#: bring text of their own).
PLAIN_TRANSFORMS = frozenset({"strip", "lower", "upper", "title", "collapse_spaces",
                              "digits_only"})


def apply_transforms(expr: pl.Expr, transforms: Iterable[Transform]) -> pl.Expr:
    for transform in transforms:
        expr = _transform(expr, transform)
    return blank_to_null(expr)


def _transform(expr: pl.Expr, transform: Transform) -> pl.Expr:
    name = transform.name
    if name == "strip":
        return expr.str.strip_chars()
    if name == "lower":
        return expr.str.to_lowercase()
    if name == "upper":
        return expr.str.to_uppercase()
    if name == "title":
        return expr.str.to_titlecase()
    if name == "collapse_spaces":
        return expr.str.replace_all(r"\s+", " ")
    if name == "digits_only":
        return expr.str.replace_all(r"[^0-9]", "")
    if name == "map":
        old = [k for k, _ in transform.table]
        new = [v for _, v in transform.table]
        return expr.replace(old, pl.Series(new, dtype=pl.String))
    if name == "default":
        return expr.fill_null(pl.lit(transform.default, pl.String))
    raise AssertionError(f"unknown transform {name}")  # the spec check makes this unreachable


# ---------------------------------------------------------------- types


def typed(
    field: FieldSpec,
    prepared: pl.Expr,
    dtype: pl.DataType,
    lookup: pl.Expr,
    prefix: str = "",
    *,
    plain: bool = False,
) -> pl.Expr:
    """The field's JSON text after ``prefix``: null when the input is missing *or* cannot be
    converted (the engine tells the two apart by whether the input was present); ``lookup``
    holds phone/JSON results computed per distinct value; ``plain``: a text input known to
    need no JSON escaping."""
    kind = field.type
    if kind == "string":
        if dtype != pl.String:
            return json_string(as_text(prepared, dtype), prefix)
        return json_string(prepared, prefix, plain=plain)
    if kind in ("int", "float"):
        return prefixed(_number(field, prepared, dtype), prefix)
    if kind == "bool":
        return _bool(field, prepared, dtype, prefix)
    if kind == "date":
        return quoted(_date(field, prepared, dtype), prefix)
    if kind == "datetime":
        return quoted(_datetime(field, prepared, dtype), prefix)
    if kind == "email":
        # the pattern admits no quote, backslash or control character: nothing to escape
        return pl.when(prepared.str.contains(EMAIL_PATTERN)).then(quoted(prepared, prefix))
    if kind == "list":
        return prefixed(_list(field, prepared, dtype), prefix)
    if kind == "phone":
        return quoted(lookup, prefix)
    if kind == "json":
        if isinstance(dtype, pl.Struct | pl.List | pl.Array):
            return prefixed(native_json(prepared, dtype), prefix)
        return prefixed(lookup, prefix)
    raise AssertionError(f"unknown type {kind}")


def needs_text(field: FieldSpec, dtype: pl.DataType) -> bool:
    """Whether the prepared input must be text (transforms and text-only types)."""
    if field.transforms:
        return True
    if field.type in ("phone", "email"):
        return True
    if field.type in ("json", "list"):
        return not isinstance(dtype, pl.Struct | pl.List | pl.Array)
    return False


def _number(field: FieldSpec, prepared: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if dtype.is_integer():
        return prepared.cast(pl.String)
    if dtype.is_float():
        finite = prepared.is_finite()
        if field.type == "int":
            whole = finite & (prepared == prepared.floor())
            value: pl.Expr = pl.when(whole).then(
                prepared.cast(pl.Int64, strict=False).cast(pl.String)
            )
        else:
            # polars prints the shortest text that reads back to the same double (49.9)
            value = pl.when(finite).then(prepared.cast(pl.String))
        return value
    text = as_text(prepared, dtype) if dtype != pl.String else prepared
    if isinstance(dtype, pl.Decimal):
        field = _with_decimal_point(field)
    return _int_text(field, text) if field.type == "int" else _float_text(field, text)


def _with_decimal_point(field: FieldSpec) -> FieldSpec:
    return dataclasses.replace(field, decimal=".", thousands=None)


def _integer_part(field: FieldSpec) -> str:
    if field.thousands is None:
        return r"\d+"
    sep = re.escape(field.thousands)
    return rf"(?:\d{{1,3}}(?:{sep}\d{{3}})+|\d+)"


def _int_text(field: FieldSpec, text: pl.Expr) -> pl.Expr:
    point = re.escape(field.decimal)
    # spreadsheets write whole numbers as 12.0; anything after the point must be zeros
    digits = text.str.replace(rf"{point}0*$", "")
    if field.thousands is None:
        # the integer cast itself refuses anything but [+-]digits (and overflow)
        return digits.cast(pl.Int64, strict=False).cast(pl.String)
    pattern = rf"^[+-]?{_integer_part(field)}(?:{point}0*)?$"
    digits = digits.str.replace_all(re.escape(field.thousands), "")
    number = digits.cast(pl.Int64, strict=False)
    return pl.when(text.str.contains(pattern)).then(number.cast(pl.String))


def _float_text(field: FieldSpec, text: pl.Expr) -> pl.Expr:
    point = re.escape(field.decimal)
    pattern = (
        rf"^[+-]?(?:{_integer_part(field)}(?:{point}\d*)?|{point}\d+)(?:[eE][+-]?\d+)?$"
    )
    plain = text
    if field.thousands is not None:
        plain = plain.str.replace_all(re.escape(field.thousands), "")
    if field.decimal != ".":
        plain = plain.str.replace(point, ".")
    # the source's own digits, in JSON number grammar: no '+', no leading zeros, no bare '.'
    json_number = (
        plain.str.replace(r"^\+", "")
        .str.replace(r"^(-?)\.", "${1}0.")
        .str.replace(r"\.([eE]|$)", "${1}")
        .str.replace(r"^(-?)0+(\d)", "${1}${2}")
    )
    finite = json_number.cast(pl.Float64, strict=False).is_finite()
    return pl.when(text.str.contains(pattern) & finite).then(json_number)


def _bool(field: FieldSpec, prepared: pl.Expr, dtype: pl.DataType, prefix: str) -> pl.Expr:
    true, false = pl.lit(prefix + TRUE_TEXT), pl.lit(prefix + FALSE_TEXT)
    if dtype == pl.Boolean:
        return pl.when(prepared).then(true).when(~prepared).then(false)
    if dtype.is_numeric():
        return pl.when(prepared == 1).then(true).when(prepared == 0).then(false)
    words = [*field.true_values, *field.false_values]
    texts = [prefix + TRUE_TEXT] * len(field.true_values) + [prefix + FALSE_TEXT] * len(
        field.false_values
    )
    word = as_text(prepared, dtype).str.strip_chars().str.to_lowercase() if (
        dtype != pl.String
    ) else prepared
    return word.replace_strict(words, texts, default=None, return_dtype=pl.String)


def _date(field: FieldSpec, prepared: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.Date:
        day = prepared
    elif isinstance(dtype, pl.Datetime):
        local = prepared.dt.convert_time_zone(field.timezone) if dtype.time_zone else prepared
        day = local.dt.date()
    else:
        # a date, or a wall-clock time, is taken as written: "19/07/1995" is 1995-07-19
        # whatever the field's timezone; a time with its own offset is seen in it first
        text = as_text(prepared, dtype)
        day = dates.day_expr(text, field.formats, field.timezone)
    return day.dt.strftime(DATE_OUT)


def _datetime(field: FieldSpec, prepared: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.Datetime):
        moment = _to_utc(prepared, dtype, field.timezone)
    elif dtype == pl.Date:
        moment = _to_utc(prepared.cast(pl.Datetime("us")), pl.Datetime("us"), field.timezone)
    else:
        text = as_text(prepared, dtype)
        moment = dates.moment_expr(text, field.formats, field.timezone)
    return moment.dt.strftime(DATETIME_OUT)


def _to_utc(expr: pl.Expr, dtype: pl.DataType, timezone: str) -> pl.Expr:
    if isinstance(dtype, pl.Datetime) and dtype.time_zone:
        return expr.dt.convert_time_zone("UTC")
    # a wall-clock time in a DST gap does not exist (null → invalid_date); in the repeated
    # autumn hour the first occurrence is taken
    return dates.local_to_utc(expr, timezone)


def _list(field: FieldSpec, prepared: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.List | pl.Array):
        return native_json(prepared, dtype)
    items = split_list(field, prepared)
    text = items.list.eval(json_string(pl.element())).list.join(",")
    return pl.when(items.list.len() > 0).then(pl.concat_str([pl.lit("["), text, pl.lit("]")]))


def split_list(field: FieldSpec, text: pl.Expr) -> pl.Expr:
    """The entries a ``list`` field sends for a text cell: split, trimmed, empties dropped."""
    return (
        text.str.split(field.separator)
        .list.eval(pl.element().str.strip_chars())
        .list.eval(pl.element().filter(pl.element() != ""))
    )


# ---------------------------------------------------------------- per-value (Python) lookups


def json_lookup(values: Iterable[str]) -> dict[str, str | None]:
    """Compact JSON text for each JSON object/array cell; None when it is not one."""
    return {v: _json_text(v) for v in values}


_LONG_DIGITS = re.compile(r"\d{19,}")


def _json_text(raw: str) -> str | None:
    try:
        # orjson reads integers beyond 64 bits as floats (losing digits); the standard
        # library keeps them exact, so any 19+ digit run takes the slow, exact path
        value = json.loads(raw, parse_constant=_no_constant) if _LONG_DIGITS.search(raw) else (
            orjson.loads(raw)
        )
    except ValueError:  # orjson.JSONDecodeError is a ValueError too
        return None
    if not isinstance(value, dict | list):
        return None
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")
