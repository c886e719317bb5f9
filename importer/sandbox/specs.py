"""The datasource's spec fixture: what the three ``/stream/specs/...`` endpoints serve.

The shapes follow API.md §2 (field names as Instasent's own clients read them); the content
is ours: the reserved attributes API.md names plus a few sensible ones, and a handful of
event types with parameter specs. Validation (``validation.py``) is built from these same
tables, so the specs a client reads are exactly the rules the sandbox enforces.

Attribute ``multivalue``: 1 is a single value, N > 1 allows an array of at most N values.
Event parameter ``maxLength`` 0 means no limit; ``multiValue`` works like ``multivalue``.
"""

from __future__ import annotations

from typing import Any, Final


def _attribute(
    uid: str,
    label: str,
    data_type: str,
    description: str,
    *,
    multivalue: int = 1,
    read_only: bool = False,
    important: bool = False,
    required: bool = False,
) -> dict[str, Any]:
    return {
        "uid": uid,
        "displayLabel": label,
        "description": description,
        "dataType": data_type,
        "multivalue": multivalue,
        "readOnly": read_only,
        "requiredInWebhook": required,
        "important": important,
        "visible": True,
        "custom": False,
    }


ATTRIBUTE_SPECS: Final[tuple[dict[str, Any], ...]] = (
    _attribute("_user_id", "User ID", "string", "Unique id of the contact in this datasource",
               important=True, required=True),
    _attribute("_first_name", "First name", "string", "Given name", important=True),
    _attribute("_last_name", "Last name", "string", "Family name", important=True),
    _attribute("_email", "Email", "string", "Email address", important=True),
    _attribute("_phone_mobile", "Mobile phone", "string",
               "Mobile number in international form, e.g. +34600000000", important=True),
    _attribute("_email_verified", "Email verified", "bool", "Set by Instasent", read_only=True),
    _attribute("_phone_mobile_verified", "Mobile verified", "bool", "Set by Instasent",
               read_only=True),
    _attribute("_country", "Country", "string", "ISO 3166-1 alpha-2 code, e.g. ES"),
    _attribute("_city", "City", "string", "City"),
    _attribute("_zip_code", "Postal code", "string", "Postal code"),
    _attribute("_gender", "Gender", "string", "Gender"),
    _attribute("_birthdate", "Birth date", "date", "Date of birth, YYYY-MM-DD"),
    _attribute("_language", "Language", "string", "ISO 639-1 code, e.g. es"),
    _attribute("_subscribed_email", "Email subscription", "bool",
               "Consent to email marketing: 1, 0 or null (unknown)"),
    _attribute("_subscribed_sms", "SMS subscription", "bool",
               "Consent to SMS marketing: 1, 0 or null (unknown)"),
    _attribute("_tags", "Tags", "string", "Free tags", multivalue=20),
    _attribute("_notes", "Notes", "text", "Free text"),
)


def _event(uid: str, name: str, category: str, emoji: str, description: str) -> dict[str, Any]:
    return {
        "uid": uid,
        "name": name,
        "description": description,
        "category": category,
        "attribution": category == "ecommerce",
        "automation": True,
        "icon": uid,
        "emoji": emoji,
        "important": category == "ecommerce",
    }


EVENT_SPECS: Final[tuple[dict[str, Any], ...]] = (
    _event("purchase", "Purchase", "ecommerce", "🛒", "An order was paid"),
    _event("refund", "Refund", "ecommerce", "↩️", "An order was refunded"),
    _event("cart_abandoned", "Cart abandoned", "ecommerce", "🧺", "A cart was left unpaid"),
    _event("product_view", "Product view", "browsing", "👀", "A product page was viewed"),
    _event("page_view", "Page view", "browsing", "📄", "A page was viewed"),
    _event("signup", "Sign-up", "lifecycle", "✍️", "The contact registered"),
)


def _param(
    name: str,
    title: str,
    data_type: str,
    *,
    max_length: int = 0,
    required: bool = False,
    multi_value: int = 1,
) -> dict[str, Any]:
    return {
        "parameter": name,
        "title": title,
        "description": title,
        "icon": "",
        "dataType": data_type,
        "visualType": data_type,
        "maxLength": max_length,
        "required": required,
        "multiValue": multi_value,
    }


_MONEY = (
    _param("amount", "Amount", "number", required=True),
    _param("currency", "Currency (ISO 4217)", "string", max_length=3, required=True),
)

EVENT_PARAMETER_SPECS: Final[dict[str, tuple[dict[str, Any], ...]]] = {
    "purchase": (
        *_MONEY,
        _param("sku", "Product SKU", "string", max_length=64),
        _param("product_name", "Product name", "string", max_length=255),
        _param("quantity", "Quantity", "integer"),
        _param("coupon", "Coupon code", "string", max_length=64),
        _param("categories", "Categories", "string", max_length=64, multi_value=10),
        _param("items", "Line items", "payload"),
    ),
    "refund": (
        *_MONEY,
        _param("original_order_id", "Refunded order", "string", max_length=64),
    ),
    "cart_abandoned": (
        _param("amount", "Amount", "number"),
        _param("currency", "Currency (ISO 4217)", "string", max_length=3),
        _param("cart_url", "Cart URL", "string", max_length=2048),
        _param("items_count", "Items in cart", "integer"),
    ),
    "product_view": (
        _param("sku", "Product SKU", "string", max_length=64, required=True),
        _param("product_name", "Product name", "string", max_length=255),
        _param("price", "Price", "number"),
        _param("currency", "Currency (ISO 4217)", "string", max_length=3),
    ),
    "page_view": (
        _param("url", "URL", "string", max_length=2048, required=True),
        _param("title", "Page title", "string", max_length=255),
        _param("referrer", "Referrer", "string", max_length=2048),
    ),
    "signup": (
        _param("source", "Source", "string", max_length=64),
        _param("plan", "Plan", "string", max_length=64),
        _param("newsletter", "Newsletter opt-in", "bool"),
    ),
}
