"""The mapping's meaning as frozen records: what :func:`load_mapping` returns and compile uses.

A :class:`MappingSpec` holds its targets (contacts first), each a tuple of :class:`FieldSpec`
(or :class:`NestedSpec` for ``_event_parameters``/``_user_data``), with the YAML line of every
field so that later checks against a file's header can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from importer.exceptions import MappingProblem

FieldType = Literal[
    "string", "int", "float", "bool", "date", "datetime", "phone", "email", "json", "list"
]
TargetName = Literal["contacts", "events"]
FIELD_TYPES: tuple[FieldType, ...] = get_args(FieldType)
TARGETS: tuple[str, ...] = get_args(TargetName)
SIMPLE_TRANSFORMS = ("strip", "lower", "upper", "title", "collapse_spaces", "digits_only")
TRANSFORMS = (*SIMPLE_TRANSFORMS, "map", "default")

#: Reserved contact attributes documented by Instasent (API.md §3); the authoritative list is
#: the datasource's ``GET /stream/specs/attributes``.
CONTACT_RESERVED = frozenset({"_user_id", "_first_name", "_last_name", "_email", "_phone_mobile"})
#: Set by Instasent itself; sending them is refused (API.md §3).
SYSTEM_MANAGED = frozenset({"_email_verified", "_phone_mobile_verified"})
EVENT_KEYS = ("_user_id", "_event_id", "_event_type", "_event_date")
NESTED_KEYS = ("_event_parameters", "_user_data")
ID_FIELDS = frozenset({"_user_id", "_event_id", "_event_type"})
ALL_OTHER_COLUMNS = "all_other_columns"

DEFAULT_TRUE = ("true", "1", "yes", "y", "t")
DEFAULT_FALSE = ("false", "0", "no", "n", "f")

# ---------------------------------------------------------------- the spec (what compile uses)


@dataclass(frozen=True, slots=True)
class ColumnSource:
    column: str
    line: int


@dataclass(frozen=True, slots=True)
class ValueSource:
    value: str | bool


@dataclass(frozen=True, slots=True)
class TemplateSource:
    template: str
    #: (literal text, column or None), in order
    parts: tuple[tuple[str, str | None], ...]
    line: int

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c for _, c in self.parts if c is not None)


@dataclass(frozen=True, slots=True)
class HashSource:
    columns: tuple[str, ...]
    lines: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CoalesceSource:
    columns: tuple[str, ...]
    lines: tuple[int, ...]


Source = ColumnSource | ValueSource | TemplateSource | HashSource | CoalesceSource


@dataclass(frozen=True, slots=True)
class Transform:
    name: str
    table: tuple[tuple[str, str | None], ...] = ()  # for ``map``
    default: str | None = None  # for ``default``


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One output key. ``line`` is the YAML line of its name."""

    name: str
    line: int
    source: Source
    type: FieldType = "string"
    required: bool = False
    transforms: tuple[Transform, ...] = ()
    formats: tuple[str, ...] = ()
    timezone: str = "UTC"
    decimal: str = "."
    thousands: str | None = None
    true_values: tuple[str, ...] = DEFAULT_TRUE
    false_values: tuple[str, ...] = DEFAULT_FALSE
    phone_region: str | None = None
    separator: str = ","

    @property
    def columns(self) -> tuple[str, ...]:
        return source_columns(self.source)


@dataclass(frozen=True, slots=True)
class NestedSpec:
    """``_event_parameters`` or ``_user_data``: an object built from its own fields."""

    name: str
    line: int
    fields: tuple[FieldSpec, ...]


@dataclass(frozen=True, slots=True)
class PassThrough:
    """``custom_attributes: all_other_columns``: unmapped columns go out under their own name."""

    line: int
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TargetSpec:
    target: TargetName
    line: int
    fields: tuple[FieldSpec | NestedSpec, ...]
    pass_through: PassThrough | None = None

    def leaves(self) -> tuple[FieldSpec, ...]:
        """Every FieldSpec, nested ones included, in mapping order."""
        out: list[FieldSpec] = []
        for item in self.fields:
            out.extend(item.fields if isinstance(item, NestedSpec) else (item,))
        return tuple(out)


@dataclass(frozen=True, slots=True)
class SkipRule:
    """Drop (count, do not reject) rows whose ``column`` is empty / equals / is in ``values``."""

    column: str
    line: int
    kind: Literal["empty", "equals", "in"]
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MappingSpec:
    path: str
    sha256: str
    targets: tuple[TargetSpec, ...]  # contacts first
    skip_if: tuple[SkipRule, ...] = ()
    send_nulls: bool = False
    warnings: tuple[MappingProblem, ...] = ()


def source_columns(source: Source) -> tuple[str, ...]:
    if isinstance(source, ColumnSource):
        return (source.column,)
    if isinstance(source, TemplateSource):
        return source.columns
    if isinstance(source, HashSource | CoalesceSource):
        return source.columns
    return ()


def source_references(source: Source, line: int) -> list[tuple[str, int]]:
    """The columns a source reads, each with the YAML line naming it (``line``: the field's,
    for a source without its own)."""
    if isinstance(source, ColumnSource):
        return [(source.column, source.line or line)]
    if isinstance(source, TemplateSource):
        return [(c, source.line) for c in source.columns]
    if isinstance(source, HashSource | CoalesceSource):
        return list(zip(source.columns, source.lines, strict=True))
    return []
