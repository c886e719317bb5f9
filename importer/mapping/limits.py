"""Per-row limits a datasource's specs put on mapped values (``validate --specs``, ``run --specs``).

The mapping language knows nothing of a datasource: :mod:`importer.speccheck` turns the
datasource's spec endpoints into :class:`Limits`, and the engine enforces them vectorised,
as ``map`` rejects, before anything is sent:

    too_long            a value (or one entry of a list) has more than ``maxLength`` characters
    too_many_values     a list has more entries than the attribute/parameter's multi-value cap
    required_missing    a parameter the row's event type requires is empty, or not mapped at all
    unknown_event_type  the row's ``_event_type`` is not one of the datasource's event types

A limit may hold for some event types only (``event_types``): the events of one file can be of
several types, each with its own parameter specs.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from importer.mapping.casts import as_text, raw_text, split_list
from importer.mapping.messages import describe_source
from importer.mapping.spec import FieldSpec, TargetName

_QUOTE_CHARS = 60


@dataclass(frozen=True, slots=True)
class FieldLimit:
    """What the datasource allows for one output key (``path``: ``_tags``,
    ``_event_parameters.currency``, ``_user_data._tags``)."""

    target: TargetName
    path: str
    max_length: int | None = None  # characters of the value, or of each entry of a list
    max_values: int | None = None  # entries of a list
    required: bool = False  # a missing value rejects the row
    event_types: frozenset[str] | None = None  # rows of these event types only; None: all rows
    origin: str = "the datasource"  # who sets the limit, for messages ("attribute '_tags'")


@dataclass(frozen=True, slots=True)
class Limits:
    fields: tuple[FieldLimit, ...] = ()
    event_types: frozenset[str] | None = None  # the known _event_type values; None: unchecked
    source: str = "the datasource"  # for messages: "datasource 'shop' of project 'p'"

    def for_path(self, target: str, path: str) -> list[FieldLimit]:
        return [f for f in self.fields if f.target == target and f.path == path]


@dataclass(frozen=True, slots=True)
class RowCheck:
    """One rule on every row: ``code`` where it is broken (else null), and why."""

    path: str
    code: pl.Expr
    message: pl.Expr


@dataclass(frozen=True, slots=True)
class LeafValue:
    """One mapped field as the engine holds it during ``map_batch``."""

    field: FieldSpec
    path: str
    prepared: pl.Expr  # the input after transforms
    dtype: pl.DataType  # of ``prepared``
    member: pl.Expr  # ``"name":value``; null when missing, "" when present but invalid
    key: str  # the member's ``"name":`` prefix
    schema: pl.Schema  # the source batch's, for quoting raw values


def leaf_checks(
    limits: Limits, target: str, leaf: LeafValue, event_type: pl.Expr | None
) -> list[RowCheck]:
    """The checks of one mapped field, in the order their codes take precedence."""
    checks: list[RowCheck] = []
    present = leaf.member.is_not_null() & (leaf.member != "")
    for limit in limits.for_path(target, leaf.path):
        applies = _applies(limit, event_type)
        by = _origin(limit, event_type)
        if limit.required and not leaf.field.required:
            missing = applies & leaf.member.is_null()
            text = pl.concat_str([pl.lit(f"{leaf.path} is required by "), by,
                                  pl.lit(f" but {describe_source(leaf.field)} is empty")])
            checks.append(_check(leaf.path, missing, "required_missing", text))
        if limit.max_values is not None:
            checks += _count_check(leaf, limit.max_values, applies & present, by)
        if limit.max_length is not None:
            checks += _length_check(leaf, limit.max_length, applies & present, by)
    return checks


def unmapped_checks(
    limits: Limits, target: str, mapped: set[str], event_type: pl.Expr | None
) -> list[RowCheck]:
    """Required parameters the mapping does not fill at all: every row they apply to fails."""
    checks = []
    for limit in limits.fields:
        if limit.target != target or not limit.required or limit.path in mapped:
            continue
        text = pl.concat_str([pl.lit(f"{limit.path} is required by "),
                              _origin(limit, event_type),
                              pl.lit(" and the mapping does not fill it")])
        checks.append(_check(limit.path, _applies(limit, event_type), "required_missing", text))
    return checks


def event_type_check(limits: Limits, leaf: LeafValue) -> RowCheck | None:
    """Rows whose ``_event_type`` the datasource does not define."""
    if limits.event_types is None:
        return None
    known = sorted(limits.event_types)
    value = as_text(leaf.prepared, leaf.dtype)
    unknown = value.is_not_null() & ~value.is_in(known)
    shown = ", ".join(known[:12]) + (", …" if len(known) > 12 else "")
    text = pl.concat_str([
        pl.lit(f"{leaf.path}: "), _quoted(raw_text(leaf.field.source, leaf.schema)),
        pl.lit(f" from {describe_source(leaf.field)} is not an event type of {limits.source} "
               f"(it has: {shown or 'none'})"),
    ])
    return _check(leaf.path, unknown, "unknown_event_type", text)


# ---------------------------------------------------------------- the pieces


def _check(path: str, broken: pl.Expr, code: str, message: pl.Expr) -> RowCheck:
    return RowCheck(path, pl.when(broken).then(pl.lit(code)),
                    pl.when(broken).then(message))


def _applies(limit: FieldLimit, event_type: pl.Expr | None) -> pl.Expr:
    if limit.event_types is None or event_type is None:
        return pl.lit(True)
    return event_type.is_in(sorted(limit.event_types)).fill_null(False)


def _origin(limit: FieldLimit, event_type: pl.Expr | None) -> pl.Expr:
    """Who sets the limit; with per-type limits, the row's own event type."""
    if limit.event_types is None or event_type is None:
        return pl.lit(limit.origin)
    return pl.concat_str([pl.lit("event type '"), event_type, pl.lit("'")])


def _quoted(raw: pl.Expr) -> pl.Expr:
    cut = pl.when(raw.str.len_chars() > _QUOTE_CHARS).then(pl.lit("…")).otherwise(pl.lit(""))
    return pl.concat_str([pl.lit("'"), raw.str.slice(0, _QUOTE_CHARS), cut, pl.lit("'")])


def _length_check(leaf: LeafValue, limit: int, where: pl.Expr, by: pl.Expr) -> list[RowCheck]:
    kind = leaf.field.type
    if kind == "json":
        return []  # a payload: the spec's maxLength is about text
    if kind == "list":
        entries = _entries(leaf)
        if entries is None:
            return []
        length = entries.list.eval(pl.element().str.len_chars()).list.max()
        what = "its longest entry has "
    else:
        length = _sent_length(leaf)
        what = "it has "
    broken = where & (length > limit).fill_null(False)
    text = pl.concat_str([
        pl.lit(f"{leaf.path}: "), _quoted(raw_text(leaf.field.source, leaf.schema)),
        pl.lit(f" from {describe_source(leaf.field)} is too long: {what}"),
        length.cast(pl.String), pl.lit(" characters and "), by,
        pl.lit(f" allows at most {limit}"),
    ])
    return [_check(leaf.path, broken, "too_long", text)]


def _count_check(leaf: LeafValue, limit: int, where: pl.Expr, by: pl.Expr) -> list[RowCheck]:
    entries = _entries(leaf) if leaf.field.type == "list" else None
    if entries is None:
        return []  # one value: within any multi-value cap
    count = entries.list.len()
    broken = where & (count > limit).fill_null(False)
    text = pl.concat_str([
        pl.lit(f"{leaf.path}: {describe_source(leaf.field)} gives "), count.cast(pl.String),
        pl.lit(" values and "), by, pl.lit(f" allows at most {limit}"),
    ])
    return [_check(leaf.path, broken, "too_many_values", text)]


def _sent_length(leaf: LeafValue) -> pl.Expr:
    """Characters of the value as sent (what the API measures)."""
    if leaf.field.type == "string":
        return as_text(leaf.prepared, leaf.dtype).str.len_chars()
    # Other types are sent as JSON text that needs no escaping: the member minus its key and
    # the quotes of a string (a date, an E.164 number, an e-mail address, "1").
    value = leaf.member.str.strip_prefix(leaf.key)
    return value.str.strip_prefix('"').str.strip_suffix('"').str.len_chars()


def _entries(leaf: LeafValue) -> pl.Expr | None:
    """The entries of a list field as a List of text (None for lists of non-text values)."""
    dtype = leaf.dtype
    if isinstance(dtype, pl.List | pl.Array):
        inner = dtype.inner
        listed = leaf.prepared.cast(pl.List(inner)) if isinstance(dtype, pl.Array) else (
            leaf.prepared)
        if inner == pl.String:
            return listed
        if inner is not None and inner.is_numeric():
            return listed.list.eval(pl.element().cast(pl.String))
        return None
    return split_list(leaf.field, as_text(leaf.prepared, dtype))

