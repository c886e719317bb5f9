"""The Ingest endpoints below ``/v1/project/{project}/datasource/{datasource}/stream``.

``bucket`` is the rate-limit budget an endpoint draws from: API.md §5 counts per
(datasource, endpoint), and the brief lists the limiter's endpoints as contacts POST,
events POST, contacts DELETE, ``GET /stream`` and the specs (one budget for the three).
"""

from __future__ import annotations

from dataclasses import dataclass

OTHER = "other"  # stats key of requests that match no endpoint


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str  # stats key, e.g. "POST /stream/contacts"
    method: str
    bucket: str
    handler: str  # name of the SandboxApp method that answers it


STREAM = Endpoint("GET /stream", "GET", "stream", "get_stream")
CONTACTS = Endpoint("POST /stream/contacts", "POST", "contacts", "post_contacts")
EVENTS = Endpoint("POST /stream/events", "POST", "events", "post_events")
DELETE = Endpoint("DELETE /stream/contacts/{_user_id}", "DELETE", "delete", "delete_contact")
SPEC_ATTRIBUTES = Endpoint("GET /stream/specs/attributes", "GET", "specs", "spec_attributes")
SPEC_EVENTS = Endpoint("GET /stream/specs/events", "GET", "specs", "spec_events")
SPEC_PARAMETERS = Endpoint(
    "GET /stream/specs/event-parameters/{eventType}", "GET", "specs", "spec_parameters"
)


def is_ingest_path(segments: list[str]) -> bool:
    """``v1/project/P/datasource/D/stream[/...]``, whatever P and D."""
    return (
        len(segments) >= 6
        and segments[0] == "v1"
        and segments[1] == "project"
        and segments[3] == "datasource"
        and segments[5] == "stream"
    )


def resolve(rest: list[str]) -> tuple[Endpoint, str | None] | None:
    """The endpoint of a path below ``/stream`` (split on ``/``) and its path argument."""
    size = len(rest)
    if size == 0:
        return STREAM, None
    head = rest[0]
    if head == "contacts":
        if size == 1:
            return CONTACTS, None
        if size == 2 and rest[1]:
            return DELETE, rest[1]
    elif head == "events" and size == 1:
        return EVENTS, None
    elif head == "specs":
        if size == 2 and rest[1] == "attributes":
            return SPEC_ATTRIBUTES, None
        if size == 2 and rest[1] == "events":
            return SPEC_EVENTS, None
        if size == 3 and rest[1] == "event-parameters" and rest[2]:
            return SPEC_PARAMETERS, rest[2]
    return None


def endpoint_name(segments: list[str]) -> str:
    """The stats key of a path, known endpoint or not."""
    found = resolve(segments[6:]) if is_ingest_path(segments) else None
    return found[0].name if found else OTHER
