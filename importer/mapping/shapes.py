"""The YAML shape of a mapping file, as pydantic models: keys, and the kind of each value.

Unknown keys are refused (``extra="forbid"``) so a typo such as ``colum:`` is an error with a
"did you mean", never silently ignored. Meaning (one source per field, options that fit the
type, Instasent's rules) is checked in :mod:`importer.mapping.load`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DefaultsShape(Shape):
    phone_region: str | None = None
    timezone: str | None = None
    decimal: str | None = None
    thousands: str | None = None
    true_values: list[str] | None = None
    false_values: list[str] | None = None


class FieldShape(Shape):
    column: str | None = None
    value: str | bool | None = None
    template: str | None = None
    hash: str | list[str] | None = None
    coalesce: str | list[str] | None = None
    type: str = "string"
    required: bool = False
    transform: str | list[str | dict[str, Any]] | dict[str, Any] | None = None
    format: str | list[str] | None = None
    timezone: str | None = None
    decimal: str | None = None
    thousands: str | None = None
    true_values: list[str] | None = None
    false_values: list[str] | None = None
    phone_region: str | None = None
    separator: str | None = None


class SkipShape(Shape):
    column: str
    empty: bool | None = None
    equals: str | None = None
    in_: list[str] | None = Field(default=None, alias="in")


class CustomShape(Shape):
    all_other_columns: bool = True
    exclude: list[str] = []


class TargetShape(Shape):
    target: str
    fields: dict[str, Any] | None = None
    custom_attributes: str | list[str] | dict[str, Any] | None = None


class MappingShape(Shape):
    version: int = 1
    target: str | None = None
    targets: list[dict[str, Any]] | None = None
    fields: dict[str, Any] | None = None
    custom_attributes: str | list[str] | dict[str, Any] | None = None
    skip_if: list[dict[str, Any]] | dict[str, Any] | None = None
    send_nulls: bool = False
    defaults: dict[str, Any] | None = None
