"""Each per-item validation rule of the sandbox (API.md §3), one at a time, plus properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importer.sandbox.validation import (
    check_contact,
    check_event,
    format_event_date,
    parse_event_date,
)


def contact_errors(**attributes: Any) -> dict[str, list[str]]:
    _, errors = check_contact({"_user_id": "U1", **attributes})
    return errors or {}


def event_errors(**fields: Any) -> dict[str, list[str]]:
    item = {"_user_id": "U1", "_event_id": "E1", "_event_type": "purchase",
            "_event_parameters": {"amount": 49.9, "currency": "EUR"}}
    item.update(fields)
    return check_event(item)[3] or {}


# --- contacts -----------------------------------------------------------------------------


@pytest.mark.parametrize(("item", "message"), [
    ({}, "This value is required"),
    ({"_user_id": ""}, "This value is required"),
    ({"_user_id": None}, "This value is required"),
    ({"_user_id": {"id": 1}}, "Must be a string"),
    ({"_user_id": True}, "Must be a string"),
    ({"_user_id": "x" * 256}, "At most 255 characters"),
])
def test_user_id_is_required(item: dict[str, Any], message: str) -> None:
    user_id, errors = check_contact(item)
    assert user_id is None
    assert errors == {"_user_id": [message]}


@pytest.mark.parametrize("email", ["ada", "ada@", "@example.com", "ada@example", "ada@@x.com",
                                   "a b@example.com", "ada@example.c", 42, ["a@b.co"]])
def test_invalid_email(email: Any) -> None:
    assert list(contact_errors(_email=email)) == ["_email"]


@pytest.mark.parametrize("email", ["ada@example.com", "ada.lovelace+tag@sub.example.co.uk",
                                   "josé.núñez@correo.es"])
def test_valid_email(email: str) -> None:
    assert contact_errors(_email=email) == {}


@pytest.mark.parametrize("phone", ["600000000", "+34 600 000 000", "+3460000", "+0346000000",
                                   "+34600000000123456", "0034600000000", 34600000000])
def test_phone_must_be_international_form(phone: Any) -> None:
    errors = contact_errors(_phone_mobile=phone)
    assert list(errors) == ["_phone_mobile"]
    assert "+34600000000" in errors["_phone_mobile"][0]  # the message shows the fix


@pytest.mark.parametrize("phone", ["+34600000000", "+14155550123", "+447911123456"])
def test_valid_phone(phone: str) -> None:
    assert contact_errors(_phone_mobile=phone) == {}


@pytest.mark.parametrize("name", ["_email_verified", "_phone_mobile_verified"])
def test_system_managed_attributes_are_refused(name: str) -> None:
    assert contact_errors(**{name: "1"}) == {
        name: ["System-managed attribute: Instasent sets it, do not send it"]}


def test_unknown_reserved_attribute_is_refused_custom_ones_accepted() -> None:
    errors = contact_errors(_loyalty_tier="gold", loyalty_tier="gold", nested={"a": [1]})
    assert list(errors) == ["_loyalty_tier"]
    assert "custom attributes without a leading '_'" in errors["_loyalty_tier"][0]


@pytest.mark.parametrize(("name", "good", "bad"), [
    ("_birthdate", "1990-05-17", "17/05/1990"),
    ("_birthdate", "2024-02-29", "2023-02-29"),
    ("_subscribed_sms", "1", "yes"),
    ("_subscribed_email", False, 1),
    ("_first_name", "Ada", {"given": "Ada"}),
    ("_first_name", 7, True),
    ("_tags", ["vip", "newsletter"], ["t"] * 21),
    ("_tags", "vip", [["nested"]]),
])
def test_values_checked_by_data_type(name: str, good: Any, bad: Any) -> None:
    assert contact_errors(**{name: good}) == {}
    assert list(contact_errors(**{name: bad})) == [name]


def test_null_is_accepted_for_any_attribute_but_user_id() -> None:
    assert contact_errors(_email=None, _birthdate=None, _subscribed_sms=None) == {}


def test_every_problem_of_an_item_is_reported_at_once() -> None:
    _, errors = check_contact({"_email": "x", "_phone_mobile": "1", "_email_verified": "1",
                               "_nope": 1, "": "empty name"})
    assert set(errors or {}) == {"_user_id", "_email", "_phone_mobile", "_email_verified",
                                 "_nope", "item"}


# --- events -------------------------------------------------------------------------------


def test_a_valid_event() -> None:
    user_id, event_id, date, errors = check_event({
        "_user_id": "U1", "_event_id": 987, "_event_type": "purchase",
        "_event_date": "2024-11-17T10:00:00.000Z",
        "_event_parameters": {"amount": "49.90", "currency": "EUR", "sku": "SKU-42",
                              "not_in_spec": {"kept": True}}})
    assert (user_id, event_id, date, errors) == ("U1", "987", "2024-11-17T10:00:00.000Z", None)


@pytest.mark.parametrize(("fields", "field"), [
    ({"_event_id": None}, "_event_id"),
    ({"_event_id": ""}, "_event_id"),
    ({"_user_id": None}, "_user_id"),
    ({"_event_type": None}, "_event_type"),
    ({"_event_type": "teleport"}, "_event_type"),
    ({"_event_type": ["purchase"]}, "_event_type"),
    ({"_event_parameters": "amount=1"}, "_event_parameters"),
    ({"_event_parameters": {"currency": "EUR"}}, "_event_parameters.amount"),
    ({"_event_parameters": {"amount": "", "currency": "EUR"}}, "_event_parameters.amount"),
    ({"_event_parameters": {"amount": "cheap", "currency": "EUR"}}, "_event_parameters.amount"),
    ({"_event_parameters": {"amount": 1, "currency": "EURO"}}, "_event_parameters.currency"),
    ({"_event_parameters": {"amount": 1, "currency": "EUR", "quantity": "2.5"}},
     "_event_parameters.quantity"),
    ({"_event_parameters": {"amount": 1, "currency": "EUR", "categories": ["c"] * 11}},
     "_event_parameters.categories"),
    ({"order_total": 49.9}, "order_total"),
    ({"_user_data": "ada@example.com"}, "_user_data"),
    ({"_user_data": {"_phone_mobile": "600"}}, "_user_data._phone_mobile"),
    ({"_user_data": {"_email_verified": "1"}}, "_user_data._email_verified"),
    ({"_user_data": {"_user_id": "U2"}}, "_user_data._user_id"),
])
def test_invalid_events(fields: dict[str, Any], field: str) -> None:
    assert list(event_errors(**fields)) == [field]


def test_max_length_message_names_the_limit() -> None:
    errors = event_errors(_event_type="page_view", _event_parameters={"url": "u" * 2049})
    assert errors == {"_event_parameters.url": ["At most 2048 characters"]}


def test_user_data_with_the_same_user_id_is_fine() -> None:
    assert event_errors(_user_data={"_user_id": "U1", "_first_name": "Ada"}) == {}


@pytest.mark.parametrize("value", [
    "2024-11-17", "2024-11-17T10:00:00", "2024-11-17 10:00:00Z", "2024-11-17T10:00Z",
    "2024-13-01T00:00:00.000Z", "2023-02-29T00:00:00.000Z", "2024-11-17T24:00:00.000Z",
    "2024-11-17T10:00:00.000+0100", "17/11/2024 10:00", 1731837600, "",
    "0001-01-01T00:00:00+01:00",  # before year 1 once in UTC
])
def test_refused_event_dates(value: Any) -> None:
    assert parse_event_date(value) is None
    assert list(event_errors(_event_date=value)) == ["_event_date"]


@pytest.mark.parametrize(("value", "canonical"), [
    ("2024-11-17T10:00:00.000Z", "2024-11-17T10:00:00.000Z"),
    ("2024-11-17T10:00:00Z", "2024-11-17T10:00:00.000Z"),
    ("2024-11-17T10:00:00.5Z", "2024-11-17T10:00:00.500Z"),
    ("2024-11-17T10:00:00.123456789Z", "2024-11-17T10:00:00.123Z"),
    ("2024-11-17T11:00:00.000+01:00", "2024-11-17T10:00:00.000Z"),
    ("2024-11-16T23:30:00-10:30", "2024-11-17T10:00:00.000Z"),
])
def test_accepted_event_dates_are_stored_canonical(value: str, canonical: str) -> None:
    assert parse_event_date(value) == canonical


@given(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31),
                    timezones=st.just(UTC)),
       st.integers(min_value=-14 * 60, max_value=14 * 60))
def test_any_instant_in_any_offset_canonicalises_to_its_utc_millis(
    moment: datetime, offset_minutes: int
) -> None:
    local = moment.astimezone(timezone_of(offset_minutes))
    text = local.isoformat(timespec="microseconds")
    expected = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    parsed = parse_event_date(text)
    assert parsed == format_event_date(expected)
    assert parse_event_date(parsed) == parsed  # the canonical form is a fixed point


def timezone_of(minutes: int) -> Any:
    from datetime import timezone

    return timezone(timedelta(minutes=minutes))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=10,
)
_keys = st.sampled_from(["_user_id", "_event_id", "_event_type", "_event_date",
                         "_event_parameters", "_user_data", "_email", "_phone_mobile",
                         "_birthdate", "_tags", "_email_verified", "_x", "plan", ""])


@settings(max_examples=300)
@given(st.dictionaries(_keys | st.text(max_size=6), _json, max_size=8))
def test_validators_are_total_and_consistent(item: dict[str, Any]) -> None:
    """Any JSON object gets an answer, never an exception; no errors means usable ids."""
    user_id, errors = check_contact(item)
    assert (errors is None) == (user_id is not None and not errors)
    assert errors is None or all(isinstance(m, str) for ms in errors.values() for m in ms)
    user_id, event_id, _date, event_errors_ = check_event(item)
    if event_errors_ is None:
        assert isinstance(user_id, str) and isinstance(event_id, str)
