"""Instasent's rules for what a target may contain (API.md §3), checked on the loaded spec.

Contacts need ``_user_id`` and must not send system-managed attributes; events need
``_user_id``, ``_event_type`` and a *stable* ``_event_id`` (from a column or a hash of columns:
re-runs and retries must send the same id, or events would be duplicated), and a
``_event_date`` that is a datetime. Unknown reserved ``_`` names are warnings.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from importer.mapping._yaml import Path as Path_
from importer.mapping.options import did_you_mean
from importer.mapping.spec import (
    CONTACT_RESERVED,
    EVENT_KEYS,
    ID_FIELDS,
    NESTED_KEYS,
    SYSTEM_MANAGED,
    ColumnSource,
    FieldSpec,
    HashSource,
    NestedSpec,
    TargetSpec,
    ValueSource,
)


class Reporter(Protocol):
    def error(self, message: str, path: Path_) -> None: ...

    def warn(self, message: str, path: Path_) -> None: ...


def check_target(
    checker: Reporter, spec: TargetSpec, path: Path_, declared: Collection[str]
) -> None:
    """``declared``: every field name written in the YAML, including ones that had errors
    (so a misspelt option on ``_user_id`` does not also report "_user_id is missing")."""
    rules = contact_rules if spec.target == "contacts" else event_rules
    rules(checker, spec, path, declared)


def contact_rules(
    checker: Reporter, spec: TargetSpec, path: Path_, declared: Collection[str]
) -> None:
    if "_user_id" not in declared:
        checker.error("contacts need `_user_id` (the contact's unique id in the datasource); "
                      "map it from your customer id column", path)
    for field in spec.fields:
        where = (*path, field.name)
        if isinstance(field, NestedSpec) or field.name.startswith("_event"):
            checker.error(f"{field.name} belongs to events, not contacts", where)
            continue
        if field.name == "_user_id" and field.type != "string":
            checker.error(f"_user_id is an id and is sent as text; remove `type: {field.type}`",
                          (*where, "type"))
        _attribute_rules(checker, field, where)


def _attribute_rules(checker: Reporter, field: FieldSpec, path: Path_) -> None:
    """Rules shared by contact fields and an event's ``_user_data``."""
    name = field.name
    if name in SYSTEM_MANAGED:
        checker.error(f"{name} is managed by Instasent and must not be sent; remove it", path)
    elif name.startswith("_") and name not in CONTACT_RESERVED:
        checker.warn(f"{name} starts with '_' but is not a reserved attribute we know"
                     f"{did_you_mean(name, CONTACT_RESERVED)}; check GET /stream/specs/"
                     "attributes, or drop the '_' to make it a custom attribute", path)
    _type_hints(checker, field, path)


def _type_hints(checker: Reporter, field: FieldSpec, path: Path_) -> None:
    hints = {"_email": "email", "_phone_mobile": "phone"}
    wanted = hints.get(field.name)
    if wanted and field.type != wanted and not isinstance(field.source, ValueSource):
        checker.warn(f"{field.name} is sent as given; add `type: {wanted}` to normalise and "
                     "check it before sending", path)


def event_rules(
    checker: Reporter, spec: TargetSpec, path: Path_, declared: Collection[str]
) -> None:
    by_name = {f.name: f for f in spec.fields}
    for key in ("_user_id", "_event_id", "_event_type"):
        if key not in declared:
            why = {"_event_id": " (a stable id: re-runs would otherwise duplicate events; use "
                                "column: or hash: [columns…])"}.get(key, "")
            checker.error(f"events need `{key}`{why}", path)
    event_id = by_name.get("_event_id")
    if isinstance(event_id, FieldSpec) and not isinstance(
        event_id.source, ColumnSource | HashSource
    ):
        checker.error("_event_id must come from column: or hash: [columns…] so that every run "
                      "gives a row the same id; anything else would duplicate events on re-run",
                      (*path, "_event_id"))
    date = by_name.get("_event_date")
    if "_event_date" not in declared:
        checker.warn("no _event_date: Instasent will stamp events with the upload time; map "
                     "the event's own time with type: datetime", path)
    elif isinstance(date, FieldSpec) and date.type != "datetime":
        checker.error(f"_event_date must have `type: datetime` (it is {date.type}); Instasent "
                      "expects ISO 8601 UTC", (*path, "_event_date"))
    for field in spec.fields:
        _event_field_rules(checker, field, (*path, field.name))


def _event_field_rules(checker: Reporter, field: FieldSpec | NestedSpec, path: Path_) -> None:
    if isinstance(field, NestedSpec):
        if field.name == "_user_data":
            for inner in field.fields:
                _attribute_rules(checker, inner, (*path, inner.name))
        return
    if field.name in ID_FIELDS and field.type != "string":
        checker.error(f"{field.name} is an id and is sent as text; remove `type: "
                      f"{field.type}`", (*path, "type"))
    if not field.name.startswith("_"):
        checker.error(f"events accept only {', '.join(EVENT_KEYS + NESTED_KEYS)}; put "
                      f"{field.name!r} under _event_parameters", path)
    elif field.name not in EVENT_KEYS:
        checker.warn(f"{field.name} is not an event key Instasent defines"
                     f"{did_you_mean(field.name, EVENT_KEYS + NESTED_KEYS)}", path)
