"""Serving: running_sandbox's lifecycle, the CLI command in a subprocess, --db persistence."""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from importer.sandbox.app import create_app
from importer.sandbox.server import banner, running_sandbox
from importer.sandbox.settings import FaultSettings, SandboxSettings

TOKEN = "sandbox-token"


def post(client: httpx.Client, path: str, items: list[dict[str, Any]]) -> httpx.Response:
    return client.post(path, json=items)


def test_running_sandbox_serves_then_frees_its_port() -> None:
    with running_sandbox(SandboxSettings(token="t-1")) as box:
        assert box.api_url == f"http://127.0.0.1:{box.port}/v1"
        assert box.base_url.endswith("/v1/project/sandbox-project/datasource/sandbox-datasource")
        r = httpx.get(f"{box.base_url}/stream", headers={"Authorization": "Bearer t-1"})
        assert r.status_code == 200
    with pytest.raises(ConnectionRefusedError), socket.create_connection(
        ("127.0.0.1", box.port), timeout=2
    ):
        pass


def test_two_sandboxes_are_independent() -> None:
    with running_sandbox() as one, running_sandbox() as two:
        assert one.port != two.port
        headers = {"Authorization": f"Bearer {TOKEN}"}
        httpx.post(f"{one.base_url}/stream/contacts", json=[{"_user_id": "U1"}], headers=headers)
        assert (one.app.stats()["contacts"], two.app.stats()["contacts"]) == (1, 0)


def test_banner_has_the_lines_to_copy() -> None:
    settings = SandboxSettings(project="p 1", rate_limit=60,
                               faults=FaultSettings(fail_rate=0.1))
    text = banner(settings, "http://127.0.0.1:8790/v1")
    assert "export INSTASENT_API_URL=http://127.0.0.1:8790/v1" in text
    assert "export INSTASENT_PROJECT='p 1'" in text  # shell-quoted
    assert "export INSTASENT_DATASOURCE=sandbox-datasource" in text
    assert "export INSTASENT_TOKEN=sandbox-token" in text
    assert "rate limit 60/min" in text and "fail 0.1" in text


def banner_lines(proc: subprocess.Popen[str], until: str, timeout: float) -> list[str]:
    """stdout lines up to the one containing ``until``; bounded in time even if it never comes."""
    found: queue.Queue[list[str]] = queue.Queue()

    def read() -> None:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if until in line:
                break
        found.put(lines)

    threading.Thread(target=read, daemon=True).start()
    try:
        return found.get(timeout=timeout)
    except queue.Empty:
        return []


def test_cli_sandbox_command_serves(tmp_path: Path) -> None:
    """``instasent-import sandbox`` in a subprocess: banner, live API, clean termination."""
    db = tmp_path / "sandbox.db"
    command = [sys.executable, "-m", "importer", "sandbox", "--port", "0", "--rate-limit", "50",
               "--token", "cli-token", "--db", str(db)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            lines = banner_lines(proc, until="INSTASENT_TOKEN=", timeout=20)
            url_line = next((line for line in lines if "INSTASENT_API_URL=" in line), "")
            assert url_line, "".join(lines)
            api_url = url_line.split("=", 1)[1].strip()
            assert any("INSTASENT_TOKEN=cli-token" in line for line in lines)
            base = f"{api_url}/project/sandbox-project/datasource/sandbox-datasource"
            headers = {"Authorization": "Bearer cli-token"}
            response = None
            deadline = time.monotonic() + 15
            while response is None and time.monotonic() < deadline:
                try:
                    response = httpx.get(f"{base}/stream", timeout=2, headers=headers)
                except httpx.TransportError:
                    time.sleep(0.05)
            assert response is not None and response.status_code == 200
            assert response.headers["x-ratelimit-limit"] == "50"
            r = httpx.post(f"{base}/stream/contacts", json=[{"_user_id": "U1"}], headers=headers)
            assert r.status_code == 202
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stderr = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in stderr
    app = create_app(SandboxSettings(db_path=str(db)))
    try:
        assert app.get_contact("U1") == {"_user_id": "U1"}  # written through --db
    finally:
        app.close()


def test_db_persists_across_app_instances(tmp_path: Path) -> None:
    settings = SandboxSettings(db_path=str(tmp_path / "s.db"))
    event = {"_user_id": "U1", "_event_id": "ORDER-1", "_event_type": "purchase",
             "_event_date": "2024-11-17T10:00:00.000Z",
             "_event_parameters": {"amount": 10, "currency": "EUR"}}
    with running_sandbox(settings) as box, httpx.Client(
        base_url=box.base_url, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        assert post(client, "/stream/contacts", [{"_user_id": "U1", "plan": "pro",
                                                  "_first_name": "Ada"}]).status_code == 202
        assert post(client, "/stream/contacts", [{"_user_id": "U2"}]).status_code == 202
        assert post(client, "/stream/events", [event]).status_code == 202

    second = create_app(settings)
    try:
        assert second.get_contact("U1") == {"_user_id": "U1", "plan": "pro", "_first_name": "Ada"}
        assert second.events("U1") == [event]
        assert (second.stats()["contacts"], second.stats()["events"]) == (2, 1)
    finally:
        second.close()

    with running_sandbox(settings) as box, httpx.Client(
        base_url=box.base_url, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        # Deduplication survives the restart; upserts merge into what was stored.
        r = post(client, "/stream/events", [event])
        assert r.json()["entity"]["items"][0]["duplicate"] is True
        post(client, "/stream/contacts", [{"_user_id": "U1", "plan": None, "_last_name": "L"}])
        assert box.app.get_contact("U1") == {"_user_id": "U1", "_first_name": "Ada",
                                             "_last_name": "L"}
        assert client.delete("/stream/contacts/U1").status_code == 200
        assert box.app.events() == []  # erased with its contact
        box.app.reset()
        assert box.app.stats()["contacts"] == 0
