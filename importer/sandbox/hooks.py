"""Test and benchmark hooks under ``/__sandbox`` (no token; they exist only on the sandbox).

====== ============================== ==================================================
GET    /__sandbox/stats               the counters of :mod:`importer.sandbox.stats`
GET    /__sandbox/contacts/{id}       the stored contact, or 404
GET    /__sandbox/events?user_id=U    ``{"events": [...]}`` in arrival order (all without U)
POST   /__sandbox/reset               forget data, counters, rate windows; re-seed draws
GET    /__sandbox/faults              the current fault settings
POST   /__sandbox/faults              change some fault settings, e.g.
                                      ``{"fail_rate": 0.2, "fail_statuses": [503]}``;
                                      an optional ``"seed"`` restarts the fault draws;
                                      ``"down_s": 20`` starts an outage of 20 s from now
                                      (every API request's connection closed unprocessed;
                                      with ``"down_status": 503`` that answer instead)
====== ============================== ==================================================

Hooks are not rate limited, delayed, faulted nor counted in the stats.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from importer.sandbox.asgi import Receive, Scope, read_body
from importer.sandbox.faults import down_problems, update_faults
from importer.sandbox.responses import Response, json_response, message

if TYPE_CHECKING:
    from importer.sandbox.app import SandboxApp


class Hooks:
    def __init__(self, app: SandboxApp) -> None:
        self._app = app

    async def handle(self, scope: Scope, receive: Receive, rest: list[str]) -> Response:
        method = scope["method"]
        app = self._app
        if method == "GET" and rest == ["stats"]:
            return json_response(200, app.stats())
        if method == "GET" and len(rest) == 2 and rest[0] == "contacts":
            contact = app.get_contact(rest[1])
            if contact is None:
                return message(404, f"No contact with _user_id {rest[1]!r}")
            return json_response(200, contact)
        if method == "GET" and rest == ["events"]:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            user_id = query.get("user_id", [None])[0]
            return json_response(200, {"events": app.events(user_id)})
        if method == "POST" and rest == ["reset"]:
            app.reset()
            return json_response(200, {"reset": True})
        if rest == ["faults"] and method in ("GET", "POST"):
            if method == "POST":
                refused = self._set_faults(await read_body(receive))
                if refused is not None:
                    return refused
            return json_response(200, {"faults": asdict(app.faults)})
        return message(404, "Unknown sandbox hook: see importer/sandbox/hooks.py for the list")

    def _set_faults(self, body: bytes) -> Response | None:
        try:
            changes: Any = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError as exc:
            return message(400, f"Malformed JSON ({exc}): send an object of fault settings")
        if type(changes) is not dict:
            return message(400, "Body should be an object of fault settings")
        seed = changes.pop("seed", None)
        if seed is not None and type(seed) is not int:
            return message(400, f"seed={seed!r}: expected an integer")
        down = "down_s" in changes
        down_s, down_status = changes.pop("down_s", 0), changes.pop("down_status", None)
        problems = down_problems(down_s, down_status) if down else []
        try:
            faults = update_faults(self._app.faults, changes)
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            return message(400, f"Invalid fault settings: {'; '.join(problems)}")
        self._app.set_faults(faults, seed=seed)
        if down:
            self._app.go_down(down_s, down_status)
        return None
