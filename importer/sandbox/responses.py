"""Response bodies: the two success envelopes of batched writes, and error messages.

``docs`` (API.md §4, the default)::

    {"entity": {"successful": 2, "failed": 1, "items": [
        {"status": "success", "_user_id": "U1"},
        {"status": "success", "_user_id": "U2", "_event_id": "E2", "duplicate": true},
        {"status": "error", "_user_id": "U3", "errors": {"_email": ["Invalid format: ..."]}}]}}

``items[i]`` is the outcome of request element ``i``; event items echo ``_event_id``;
``duplicate`` appears only on a resent event. An error item echoes the ids as they were
sent (``null`` when missing).

``activepieces`` (the envelope Instasent's Activepieces piece parses; its details are ours)::

    {"success": true, "entitiesSuccess": 2, "entitiesFailed": 1,
     "streamId": DATASOURCE, "projectId": PROJECT, "datasourceId": DATASOURCE,
     "accepted": [{"position": 0, "item": {...as sent...}},
                  {"position": 1, "item": {...}, "duplicate": true}],
     "errors": [{"position": 2, "_user_id": "U3", "errors": {"_email": ["..."]}}]}

``position`` is the 0-based index in the request array; ``success`` is true when at least
one item was accepted, i.e. exactly when the status is 202 (422 otherwise).

Every non-2xx body but 429's is ``{"message": "..."}``; 429's body is empty (API.md §5).
Messages never contain the token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from importer.sandbox.settings import ResponseShape

Header = tuple[bytes, bytes]


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[Header] = field(default_factory=list)


def json_response(status: int, payload: Any) -> Response:
    return Response(status, orjson.dumps(payload))


def message(status: int, text: str) -> Response:
    return Response(status, orjson.dumps({"message": text}))


def batch_response(
    shape: ResponseShape,
    items: Sequence[dict[str, Any]],
    outcomes: list[dict[str, Any]],
    successful: int,
    identity: tuple[str, str],
) -> Response:
    """202 when at least one item succeeded, 422 when every item failed (API.md §4)."""
    status = 202 if successful else 422
    failed = len(outcomes) - successful
    if shape == "activepieces":
        return json_response(status, _activepieces(items, outcomes, successful, failed, identity))
    body = {"entity": {"successful": successful, "failed": failed, "items": outcomes}}
    return Response(status, orjson.dumps(body))


def _activepieces(
    items: Sequence[dict[str, Any]],
    outcomes: list[dict[str, Any]],
    successful: int,
    failed: int,
    identity: tuple[str, str],
) -> dict[str, Any]:
    accepted: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for position, outcome in enumerate(outcomes):
        if outcome["status"] == "success":
            entry: dict[str, Any] = {"position": position, "item": items[position]}
            if outcome.get("duplicate"):
                entry["duplicate"] = True
            accepted.append(entry)
        else:
            error = {k: v for k, v in outcome.items() if k != "status"}
            errors.append({"position": position, **error})
    project, datasource = identity
    return {
        "success": successful > 0,
        "entitiesSuccess": successful,
        "entitiesFailed": failed,
        "streamId": datasource,
        "projectId": project,
        "datasourceId": datasource,
        "accepted": accepted,
        "errors": errors,
    }
