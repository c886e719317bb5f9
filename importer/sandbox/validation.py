"""Per-item validation of contacts and events, built once from the spec fixture.

Written as tight functions over precompiled tables because they run 100 times per request:
the sandbox must never be what limits a benchmark. Every check returns an error *message*
or ``None``; an item's problems are all collected at once into ``{field: [message]}``
(the item-error shape of API.md §4), so a rejects file shows every fix a row needs.

Decisions where API.md is silent (``[ours]``):

- ``_user_id`` / ``_event_id``: a non-empty string of at most 255 characters; a JSON
  integer is accepted and stored as its decimal string.
- Contacts: ``_`` keys must be attributes of the spec; readOnly ones (``_email_verified``,
  ``_phone_mobile_verified``) are refused as system-managed; any other key is a custom
  attribute accepted as is. ``null`` is accepted for every attribute but ``_user_id`` and
  clears it. Values by dataType: ``string``/``text`` take strings or numbers; ``date`` is
  ``YYYY-MM-DD`` (a real calendar date); ``bool`` is ``"1"``, ``"0"``, true or false;
  ``payload`` anything. ``_email`` must look like an address with a dotted domain;
  ``_phone_mobile`` is ``+`` then 8-15 digits (no spaces). ``multivalue`` N > 1 takes one
  value or an array of at most N.
- Events: top-level keys are ``_user_id``, ``_event_id``, ``_event_type``, ``_event_date``,
  ``_event_parameters`` and ``_user_data`` only (custom data belongs in
  ``_event_parameters``). ``_event_type`` must be a uid of the events spec.
- ``_event_date``: ``YYYY-MM-DDTHH:MM:SS`` with optional fraction (1-9 digits) and a
  *required* zone, ``Z`` or ``+HH:MM``/``-HH:MM``; stored as UTC in the canonical form
  ``2024-11-17T10:00:00.000Z``. Naive times, dates alone and epoch numbers are refused
  because their instant is ambiguous. Absent or ``null`` means "now".
- Event parameters: checked against the event type's spec (``required``, ``maxLength`` in
  characters, ``dataType``: ``number``/``integer`` also accept numeric strings, as
  Instasent's own clients send text). Parameters not in the spec are accepted as is.
  ``null`` or ``""`` counts as absent.
- ``_user_data``: validated like a contact; errors are keyed ``_user_data.<field>``; a
  ``_user_id`` inside it must equal the event's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Final

from importer.sandbox.specs import ATTRIBUTE_SPECS, EVENT_PARAMETER_SPECS, EVENT_SPECS

Errors = dict[str, list[str]]
Check = Callable[[Any], str | None]

MAX_ID_LENGTH: Final = 255

REQUIRED: Final = "This value is required"
NOT_STRING: Final = "Must be a string"
NOT_OBJECT: Final = "Must be an object"
BAD_EMAIL: Final = "Invalid format: expected an email address such as ada@example.com"
BAD_PHONE: Final = (
    "Invalid format: expected international form, '+' then 8 to 15 digits, e.g. +34600000000"
)
BAD_DATE: Final = "Invalid format: expected a calendar date as YYYY-MM-DD"
BAD_BOOL: Final = 'Invalid value: expected "1", "0", true, false or null'
BAD_NUMBER: Final = "Must be a number, e.g. 49.90"
BAD_INTEGER: Final = "Must be an integer, e.g. 2"
BAD_EVENT_DATE: Final = (
    "Invalid format: expected ISO 8601 with a time zone, e.g. 2024-11-17T10:00:00.000Z"
)
UNKNOWN_RESERVED: Final = (
    "Unknown reserved attribute: '_' names must be listed by GET /stream/specs/attributes; "
    "name custom attributes without a leading '_'"
)
READ_ONLY: Final = "System-managed attribute: Instasent sets it, do not send it"
EMPTY_NAME: Final = "Attribute names must not be empty"
UNKNOWN_EVENT_TYPE: Final = "Unknown event type: use a uid from GET /stream/specs/events"
UNKNOWN_EVENT_FIELD: Final = "Unknown event field: put custom data in _event_parameters"
USER_ID_MISMATCH: Final = "Must equal the event's _user_id (or be left out)"
TOO_LONG_ID: Final = f"At most {MAX_ID_LENGTH} characters"

_EMAIL_CHAR = r'[^\s@"(),:;<>\[\]\\'  # no spaces, quotes or specials; unicode allowed
_EMAIL = re.compile(
    _EMAIL_CHAR + r"]+@(?:" + _EMAIL_CHAR + r".]+\.)+" + _EMAIL_CHAR + r".]{2,}\Z"
)
_PHONE = re.compile(r"\+[1-9][0-9]{7,14}\Z")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
# The canonical form, times range-checked by the pattern: only the calendar date is left.
_CANONICAL_DATE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z\Z"
)
_EVENT_DATE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:[0-9]{2})\Z"
)
_BOOLS: Final = frozenset(("1", "0"))
_SCALARS: Final = frozenset((str, int, float))  # bool is not among them: type() is exact
EVENT_FIELDS: Final = frozenset(
    ("_user_id", "_event_id", "_event_type", "_event_date", "_event_parameters", "_user_data")
)


# --- value checks by dataType ------------------------------------------------------------


def _check_string(value: Any) -> str | None:
    return None if type(value) in _SCALARS else NOT_STRING


def _check_payload(_value: Any) -> str | None:
    return None


def _skip(_value: Any) -> str | None:
    """``_user_id``: checked apart, because it is required and identifies the item."""
    return None


def _check_bool(value: Any) -> str | None:
    if value is True or value is False or (type(value) is str and value in _BOOLS):
        return None
    return BAD_BOOL


def _check_date(value: Any) -> str | None:
    if type(value) is not str or _DATE.match(value) is None:
        return BAD_DATE
    try:
        date.fromisoformat(value)
    except ValueError:
        return BAD_DATE
    return None


def _check_email(value: Any) -> str | None:
    if type(value) is not str or len(value) > 254 or _EMAIL.match(value) is None:
        return BAD_EMAIL
    return None


def _check_phone(value: Any) -> str | None:
    if type(value) is not str or _PHONE.match(value) is None:
        return BAD_PHONE
    return None


def _check_number(value: Any) -> str | None:
    kind = type(value)
    if kind is int or kind is float or (kind is str and _NUMBER.match(value)):
        return None
    return BAD_NUMBER


def _check_integer(value: Any) -> str | None:
    kind = type(value)
    if kind is int or (kind is str and _INTEGER.match(value)):
        return None
    return BAD_INTEGER


_TYPE_CHECKS: Final[dict[str, Check]] = {
    "string": _check_string,
    "text": _check_string,
    "payload": _check_payload,
    "bool": _check_bool,
    "date": _check_date,
    "number": _check_number,
    "float": _check_number,
    "integer": _check_integer,
}
# Format rules the spec's dataType cannot express (both are "string" in the spec).
_FORMAT_CHECKS: Final[dict[str, Check]] = {"_email": _check_email, "_phone_mobile": _check_phone}


def _multi(check: Check, limit: int) -> Check:
    def run(value: Any) -> str | None:
        if type(value) is not list:
            return check(value)
        if len(value) > limit:
            return f"At most {limit} values"
        for entry in value:
            problem = check(entry)
            if problem is not None:
                return problem
        return None

    return run


def _max_length(check: Check, limit: int) -> Check:
    message = f"At most {limit} characters"

    def run(value: Any) -> str | None:
        problem = check(value)
        if problem is None and type(value) is str and len(value) > limit:
            return message
        return problem

    return run


# --- tables built from the spec fixture ----------------------------------------------------


def _attribute_checks() -> dict[str, Check]:
    checks: dict[str, Check] = {"_user_id": _skip}
    for spec in ATTRIBUTE_SPECS:
        if spec["readOnly"] or spec["uid"] == "_user_id":
            continue
        check = _FORMAT_CHECKS.get(spec["uid"]) or _TYPE_CHECKS[spec["dataType"]]
        if spec["multivalue"] > 1:
            check = _multi(check, spec["multivalue"])
        checks[spec["uid"]] = check
    return checks


@dataclass(frozen=True, slots=True)
class ParameterRules:
    """One event type's parameter checks, and the names it requires."""

    checks: dict[str, Check]
    required: tuple[str, ...]


def _parameter_rules() -> dict[str, ParameterRules]:
    rules: dict[str, ParameterRules] = {}
    for event_type, params in EVENT_PARAMETER_SPECS.items():
        checks: dict[str, Check] = {}
        for spec in params:
            check = _TYPE_CHECKS[spec["dataType"]]
            if spec["maxLength"]:
                check = _max_length(check, spec["maxLength"])
            if spec["multiValue"] > 1:
                check = _multi(check, spec["multiValue"])
            checks[spec["parameter"]] = check
        required = tuple(spec["parameter"] for spec in params if spec["required"])
        rules[event_type] = ParameterRules(checks, required)
    return rules


ATTRIBUTE_CHECKS: Final = _attribute_checks()
READ_ONLY_ATTRIBUTES: Final = frozenset(s["uid"] for s in ATTRIBUTE_SPECS if s["readOnly"])
EVENT_TYPES: Final = frozenset(s["uid"] for s in EVENT_SPECS)
PARAMETER_RULES: Final = _parameter_rules()


# --- items -----------------------------------------------------------------------------------


def _add(errors: Errors | None, field: str, message: str) -> Errors:
    if errors is None:
        errors = {}
    errors.setdefault(field, []).append(message)
    return errors


def check_identifier(value: Any) -> tuple[str | None, str | None]:
    """``(normalized id, None)`` or ``(None, message)`` for ``_user_id`` / ``_event_id``."""
    kind = type(value)
    if kind is str:
        if not value:
            return None, REQUIRED
        if len(value) > MAX_ID_LENGTH:
            return None, TOO_LONG_ID
        return value, None
    if kind is int:
        return str(value), None
    return None, REQUIRED if value is None else NOT_STRING


def check_attributes(item: Mapping[str, Any], prefix: str = "") -> Errors | None:
    """Field errors of a contact's attributes other than ``_user_id`` (None when valid)."""
    errors: Errors | None = None
    checks = ATTRIBUTE_CHECKS
    scalars = _SCALARS
    for key, value in item.items():
        check = checks.get(key)
        # The common cases first, inline: this loop runs for every attribute of every item.
        if check is _check_string:
            if value is None or type(value) in scalars:
                continue
            problem = NOT_STRING
        elif check is None:
            if key and key[0] != "_":
                continue  # a custom attribute, accepted as is
            problem = _misplaced(key)
        elif check is _skip or value is None:
            continue
        else:
            found = check(value)
            if found is None:
                continue
            problem = found
        errors = _add(errors, prefix + key if key else prefix or "item", problem)
    return errors


def _misplaced(key: str) -> str:
    if not key:
        return EMPTY_NAME
    return READ_ONLY if key in READ_ONLY_ATTRIBUTES else UNKNOWN_RESERVED


def check_contact(item: Mapping[str, Any]) -> tuple[str | None, Errors | None]:
    """``(user_id, errors)`` of one contact item; ``errors`` is None when it is valid."""
    raw = item.get("_user_id")
    if type(raw) is str and 0 < len(raw) <= MAX_ID_LENGTH:
        return raw, check_attributes(item)
    user_id, problem = check_identifier(raw)
    errors = check_attributes(item)
    if problem is not None:
        errors = _add(errors, "_user_id", problem)
    return user_id, errors


def parse_event_date(value: Any) -> str | None:
    """The canonical UTC form of an ``_event_date``, or None when it is not acceptable."""
    if type(value) is not str:
        return None
    if _CANONICAL_DATE.match(value):
        try:
            date.fromisoformat(value[:10])
        except ValueError:
            return None
        return value
    match = _EVENT_DATE.match(value)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    if zone == "Z":
        tz: timezone = UTC
    else:
        sign = -1 if zone[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tz
        )
        return format_event_date(moment)
    except (ValueError, OverflowError):  # not a calendar date, or out of range once in UTC
        return None


def format_event_date(moment: datetime) -> str:
    """``2024-11-17T10:00:00.000Z``: UTC, milliseconds, the form API.md calls canonical."""
    u = moment.astimezone(UTC)
    # Spelled out rather than strftime, whose %Y does not zero-pad years before 1000.
    return (f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:"
            f"{u.second:02d}.{u.microsecond // 1000:03d}Z")


def now_event_date(unix_seconds: float) -> str:
    return format_event_date(datetime.fromtimestamp(unix_seconds, UTC))


def _check_parameters(event_type: Any, params: Any, errors: Errors | None) -> Errors | None:
    if params is not None and type(params) is not dict:
        return _add(errors, "_event_parameters", NOT_OBJECT)
    rules = PARAMETER_RULES.get(event_type) if type(event_type) is str else None
    if rules is None:
        return errors
    values: dict[str, Any] = params or {}
    checks = rules.checks
    # Walk what was sent (usually a few keys) rather than every parameter of the spec.
    for name, value in values.items():
        check = checks.get(name)
        if check is None or value is None or value == "":
            continue  # not in the spec (accepted as is), or absent
        problem = check(value)
        if problem is not None:
            errors = _add(errors, "_event_parameters." + name, problem)
    for name in rules.required:
        value = values.get(name)
        if value is None or value == "":
            errors = _add(errors, "_event_parameters." + name, REQUIRED)
    return errors


def _check_user_data(user_data: Any, user_id: str | None, errors: Errors | None) -> Errors | None:
    if user_data is None:
        return errors
    if type(user_data) is not dict:
        return _add(errors, "_user_data", NOT_OBJECT)
    found = check_attributes(user_data, "_user_data.")
    if found:
        errors = errors or {}
        errors.update(found)
    if "_user_id" in user_data:
        inner, _problem = check_identifier(user_data["_user_id"])
        if inner is None or inner != user_id:
            errors = _add(errors, "_user_data._user_id", USER_ID_MISMATCH)
    return errors


EventCheck = tuple[str | None, str | None, str | None, Errors | None]


def check_event(item: Mapping[str, Any]) -> EventCheck:
    """``(user_id, event_id, canonical_date, errors)`` of one event item.

    ``canonical_date`` is None when ``_event_date`` is absent (the caller stamps "now").
    """
    errors: Errors | None = None
    for key in item:
        if key not in EVENT_FIELDS:
            errors = _add(errors, key, UNKNOWN_EVENT_FIELD)
    user_id, problem = check_identifier(item.get("_user_id"))
    if problem is not None:
        errors = _add(errors, "_user_id", problem)
    event_id, problem = check_identifier(item.get("_event_id"))
    if problem is not None:
        errors = _add(errors, "_event_id", problem)
    event_type = item.get("_event_type")
    if event_type is None or event_type == "":
        errors = _add(errors, "_event_type", REQUIRED)
    elif type(event_type) is not str or event_type not in EVENT_TYPES:
        errors = _add(errors, "_event_type", UNKNOWN_EVENT_TYPE)
    raw_date = item.get("_event_date")
    event_date = None
    if raw_date is not None:
        event_date = parse_event_date(raw_date)
        if event_date is None:
            errors = _add(errors, "_event_date", BAD_EVENT_DATE)
    errors = _check_parameters(event_type, item.get("_event_parameters"), errors)
    errors = _check_user_data(item.get("_user_data"), user_id, errors)
    return user_id, event_id, event_date, errors
