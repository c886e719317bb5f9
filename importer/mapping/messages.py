"""The words of a map reject: which field, what value, what was expected, what to do.

Messages quote the raw value as it stands in the file (shortened past 120 characters) and end
with a remedy, e.g. ``_email: 'ana@@x.com' from column 'email' is not a valid email address —
fix the value in the source (a rejects file can be corrected and re-imported) or adjust the
mapping``.
"""

from __future__ import annotations

import polars as pl

from importer.mapping import dates
from importer.mapping.casts import raw_text
from importer.mapping.spec import (
    ColumnSource,
    FieldSpec,
    HashSource,
    TemplateSource,
    ValueSource,
)

REMEDY = (
    "fix the value in the source (a rejects file can be corrected and re-imported) "
    "or adjust the mapping"
)


def problem_text(
    field: FieldSpec, path: str, code: pl.Expr, schema: pl.Schema,
    prepared: pl.Expr | None = None,
) -> pl.Expr:
    """The sentence for one field of a rejected row (null when that field is fine);
    ``prepared``: the text the type read (after transforms), for reasons that depend on it."""
    origin = describe_source(field)
    required = f"{path} is required but {origin} is empty"
    raw = raw_text(field.source, schema)
    quoted = pl.concat_str(
        [pl.lit("'"), raw.str.slice(0, 120),
         pl.when(raw.str.len_chars() > 120).then(pl.lit("…")).otherwise(pl.lit("")),
         pl.lit("'")]
    )
    why = pl.lit(expectation(field))
    if field.type in ("date", "datetime") and field.formats:
        # the value's own reason: not the format's shape, not a real date, or a DST gap
        read = raw if prepared is None else prepared
        why = dates.reason_expr(read.str.strip_chars(), field.formats, field.type,
                                field.timezone)
    invalid = pl.concat_str(
        [pl.lit(f"{path}: "), quoted, pl.lit(f" from {origin} "), why]
    )
    return (
        pl.when(code == "required_missing").then(pl.lit(required))
        .when(code.is_not_null()).then(invalid)
    )


def describe_source(field: FieldSpec) -> str:
    source = field.source
    if isinstance(source, ColumnSource):
        return f"column {source.column!r}"
    if isinstance(source, TemplateSource):
        return f"template {source.template!r}"
    if isinstance(source, ValueSource):
        return "the constant value"
    kind = "hash of" if isinstance(source, HashSource) else "first non-empty of"
    return f"{kind} columns {', '.join(map(repr, source.columns))}"


def expectation(field: FieldSpec) -> str:
    kind = field.type
    if kind in ("int", "float"):
        what = "a whole number" if kind == "int" else "a number"
        marks = f"decimal mark {field.decimal!r}"
        if field.thousands:
            marks += f", thousands separator {field.thousands!r}"
        return f"is not {what} ({marks})"
    if kind == "bool":
        return (f"is not one of the true words ({', '.join(field.true_values)}) or false words "
                f"({', '.join(field.false_values)})")
    if kind in ("date", "datetime"):
        return _date_expectation(field)
    if kind == "phone":
        if field.phone_region:
            return f"is not a valid phone number for region {field.phone_region} or +country form"
        return "is not a valid phone number in +country form (set phone_region for local numbers)"
    if kind == "email":
        return "is not a valid email address"
    if kind == "json":
        return "is not a JSON object or array"
    return "is not valid"


def _date_expectation(field: FieldSpec) -> str:
    return "is not " + dates.describe(field.formats, field.type)
