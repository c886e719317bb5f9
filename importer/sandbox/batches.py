"""The two batched writes: parse the body, then one outcome per item, in request order.

Callers hold the app's lock and a store transaction around :func:`process_contacts` and
:class:`EventBatch`, so a request's writes are atomic with respect to the hooks.

Decisions [ours]: an event item is all or nothing. It is checked whole first (its own
fields and its ``_user_data``); only a valid item upserts its ``_user_data`` (before the
event, API.md §3), then passes the ``require_known_user`` check, then is stored unless its
``_event_id`` is already stored or appeared earlier in the batch (a success with
``"duplicate": true``). So an invalid ``_user_data`` skips the event and touches nothing.
``dry`` (``?_dryRun``) computes the same outcomes and stores nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from importer.config import MAX_BATCH_ITEMS
from importer.sandbox.responses import Response, message
from importer.sandbox.store import Store
from importer.sandbox.validation import check_contact, check_event

UNKNOWN_CONTACT = "Unknown contact: upsert it (POST /stream/contacts) before its events"
Outcome = dict[str, Any]


def parse_batch(content_type: bytes | None, body: bytes) -> list[dict[str, Any]] | Response:
    """The request's items, or the whole-batch 400 of API.md §4."""
    if content_type is None or not content_type.lower().startswith(b"application/json"):
        return message(400, "Content-Type must be application/json")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return message(400, f"Malformed JSON ({exc}): send a JSON array of objects")
    if type(data) is not list:
        return message(400, "Body should be an array")
    if not data:
        return message(400, f"Body should not be empty: send 1 to {MAX_BATCH_ITEMS} items")
    if len(data) > MAX_BATCH_ITEMS:
        return message(400, f"Too many items ({len(data)}): send at most {MAX_BATCH_ITEMS} "
                            "per request")
    for position, item in enumerate(data):
        if type(item) is not dict:
            return message(400, f"Item at position {position} should be an object")
    return data


def process_contacts(
    store: Store, items: list[dict[str, Any]], *, dry: bool
) -> tuple[list[Outcome], int]:
    """``(outcomes, successful)``: each valid contact is upserted as it comes."""
    outcomes: list[Outcome] = []
    successful = 0
    upsert = store.upsert_contact
    for item in items:
        user_id, errors = check_contact(item)
        if errors is None and user_id is not None:
            if not dry:
                upsert(user_id, item)
            outcomes.append({"status": "success", "_user_id": user_id})
            successful += 1
        else:
            outcomes.append({"status": "error", "_user_id": item.get("_user_id"),
                             "errors": errors})
    return outcomes, successful


@dataclass
class EventBatch:
    """One events request; ``now`` stamps events sent without ``_event_date``."""

    store: Store
    now: str
    require_known_user: bool
    dry: bool
    outcomes: list[Outcome] = field(default_factory=list)
    successful: int = 0
    duplicates: int = 0
    seen_events: set[str] = field(default_factory=set)
    upserted_users: set[str] = field(default_factory=set)  # for dry runs' known-user check

    def process(self, item: dict[str, Any]) -> None:
        user_id, event_id, event_date, errors = check_event(item)
        if errors is None and user_id is not None and event_id is not None:
            errors = self._upsert_and_check_user(item, user_id)
            if errors is None:
                self._accept(item, user_id, event_id, event_date)
                return
        self.outcomes.append({"status": "error", "_user_id": item.get("_user_id"),
                              "_event_id": item.get("_event_id"), "errors": errors})

    def _upsert_and_check_user(
        self, item: dict[str, Any], user_id: str
    ) -> dict[str, list[str]] | None:
        user_data = item.get("_user_data")
        if user_data is not None:
            if not self.dry:
                self.store.upsert_contact(user_id, user_data)
            self.upserted_users.add(user_id)
        if self.require_known_user and not (
            user_id in self.upserted_users or self.store.has_contact(user_id)
        ):
            return {"_user_id": [UNKNOWN_CONTACT]}
        return None

    def _accept(
        self, item: dict[str, Any], user_id: str, event_id: str, event_date: str | None
    ) -> None:
        outcome: Outcome = {"status": "success", "_user_id": user_id, "_event_id": event_id}
        self.successful += 1
        if event_id in self.seen_events or self.store.has_event(event_id):
            outcome["duplicate"] = True
            self.duplicates += 1
        else:
            self.seen_events.add(event_id)
            if not self.dry:
                self.store.add_event({
                    "_event_id": event_id,
                    "_user_id": user_id,
                    "_event_type": item["_event_type"],
                    "_event_date": event_date or self.now,
                    "_event_parameters": item.get("_event_parameters") or {},
                })
        self.outcomes.append(outcome)
