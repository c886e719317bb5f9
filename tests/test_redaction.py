"""The token never leaves the process (issue 18, item 11), whatever a server echoes.

A proxy's error page that reflects the request headers is served for real: the sandbox behind
an ASGI wrapper, over uvicorn on loopback. ``check`` and ``run`` must not print, report or
write the token, nor any ``Authorization`` value.
"""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner

from importer.cli import cli
from importer.redaction import hidden, redact
from importer.sandbox.app import SandboxApp, create_app
from importer.sandbox.asgi import Receive, Scope, Send, read_body
from importer.sandbox.server import _api_url, _bind, _uvicorn_config, _wait_started
from importer.sandbox.settings import SandboxSettings

TOKEN = "live-4f9a1c2e8b7d6a5f3e2d1c0b9a8f7e6d5c4b3a29"  # long: an excerpt cuts it halfway


class _Reflector:
    """The sandbox behind a proxy that answers some requests with the request's headers."""

    def __init__(self, inner: SandboxApp, mode: str) -> None:
        self.inner = inner
        self.mode = mode

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._reflects(scope):
            await self.inner(scope, receive, send)
            return
        if scope["method"] == "POST":
            await read_body(receive)
        # Authorization first, as nginx's debug pages list it: a 60-character excerpt ends
        # inside the token.
        headers = sorted(scope["headers"], key=lambda h: h[0] != b"authorization")
        dump = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        status = {"stream-200": 200, "post-400": 400}.get(self.mode, 502)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(dump)).encode())]})
        await send({"type": "http.response.body", "body": dump})

    def _reflects(self, scope: Scope) -> bool:
        if self.mode == "stream-200":
            return bool(scope["path"].endswith("/stream"))
        return scope["method"] == "POST"


@pytest.fixture
def reflecting() -> Iterator[Any]:
    servers: list[tuple[uvicorn.Server, threading.Thread, Any]] = []

    def serve(mode: str) -> dict[str, str]:
        settings = SandboxSettings(token=TOKEN)
        app = create_app(settings)
        sock = _bind("127.0.0.1", 0)
        server = uvicorn.Server(_uvicorn_config(_Reflector(app, mode), quiet_logging=True))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        _wait_started(server, thread)
        servers.append((server, thread, sock))
        return {"INSTASENT_API_URL": _api_url("127.0.0.1", sock.getsockname()[1]),
                "INSTASENT_PROJECT": settings.project,
                "INSTASENT_DATASOURCE": settings.datasource, "INSTASENT_TOKEN": TOKEN}

    yield serve
    for server, thread, sock in servers:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _leaks(text: str) -> list[str]:
    """Any 12 characters of the token, or an Authorization value, found in ``text``."""
    pieces = [TOKEN[i:i + 12] for i in range(len(TOKEN) - 11)]
    found = [p for p in pieces if p in text]
    lowered = text.lower()
    if "authorization: bearer" in lowered or '"bearer ' in lowered:
        found.append("an Authorization value")
    return found


def test_check_does_not_print_a_token_a_proxy_reflects(reflecting: Any) -> None:
    env = reflecting("stream-200")
    for output in ("table", "json"):
        result = CliRunner().invoke(cli, ["check", "--output", output], env=env,
                                    catch_exceptions=False)
        assert result.exit_code == 1, result.output
        assert "not JSON" in result.stderr
        assert _leaks(result.stdout + result.stderr) == []


@pytest.mark.parametrize(("mode", "exit_code"), [("post-400", 3), ("post-502", 4)])
def test_run_writes_no_token_into_rejects_report_or_stderr(
    reflecting: Any, tmp_path: Path, mode: str, exit_code: int
) -> None:
    env = reflecting(mode)
    data = tmp_path / "crm.csv"
    data.write_text("customer_id,email\n" + "".join(f"U{i},u{i}@x.es\n" for i in range(20)))
    mapping = tmp_path / "m.yaml"
    mapping.write_text("version: 1\ntarget: contacts\nfields:\n  _user_id: customer_id\n"
                       "  _email: {column: email, type: email}\n")
    report = tmp_path / "report.json"
    result = CliRunner().invoke(
        cli, ["run", str(data), "--mapping", str(mapping), "--max-attempts", "1",
              "--report", str(report), "--output", "json"],
        env=env, catch_exceptions=False)
    assert result.exit_code == exit_code, result.stderr
    rejects = tmp_path / "crm.rejects.csv"
    with rejects.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20
    if mode == "post-400":  # the server's words are kept, minus the credential
        assert all("authorization: ***" in r["_reject_message"] for r in rows), rows[0]
    for text in (rejects.read_text(encoding="utf-8-sig"), report.read_text(),
                 result.stdout, result.stderr):
        assert _leaks(text) == []
    assert json.loads(report.read_text())["rejected"] == 20


@pytest.mark.parametrize(("text", "expected"), [
    ("GET /x HTTP/1.1\r\nAuthorization: Bearer abc.def-ghi\r\nHost: h",
     "GET /x HTTP/1.1\r\nAuthorization: ***\r\nHost: h"),
    ('{"headers": {"authorization": "Basic dXNlcjpwYXNz", "host": "h"}}',
     '{"headers": {"authorization": "***", "host": "h"}}'),
    ("token=Bearer%20x is bearer xyz123", "token=Bearer%20x is bearer ***"),
    (f"echo {TOKEN} twice {TOKEN}", "echo *** twice ***"),
    (f"cut at 60: {TOKEN[:20]}", "cut at 60: ***"),
    ("Missing Authorization header: use the dashboard", "Missing Authorization header: "
     "use the dashboard"),
    ("the sandbox answered", "the sandbox answered"),
])
def test_redact(text: str, expected: str) -> None:
    with hidden(TOKEN):
        assert redact(text) == expected


def test_a_token_is_masked_only_while_in_use() -> None:
    with hidden(TOKEN):
        assert redact(f"x {TOKEN}") == "x ***"
    assert redact(f"x {TOKEN}") == f"x {TOKEN}"
    assert redact("short t", ("t",)) == "short t"  # a token this short would garble text
