"""The sandbox survives slow and greedy clients (issue 18, the sandbox section), over real
loopback sockets: a header-read timeout, a connection cap, a header size cap, 413 for a body
over the limit, and fault settings bounded. Every loop here is bounded in count and time.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from importer.sandbox.app import create_app
from importer.sandbox.asgi import MAX_BODY_BYTES
from importer.sandbox.server import RunningSandbox
from importer.sandbox.settings import FaultSettings, SandboxSettings


def _connect(box: RunningSandbox) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", box.port), timeout=5)
    return sock


def _answer(sock: socket.socket, wait: float) -> tuple[bytes, bool]:
    """What the server sent within ``wait`` seconds, and whether it closed the connection."""
    sock.settimeout(wait)
    data = b""
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                return data, True
            data += chunk
    except TimeoutError:
        return data, False
    except ConnectionResetError:
        return data, True
    return data, False


def test_headers_sent_too_slowly_get_408_and_the_connection_closes(
    make_sandbox: Callable[..., RunningSandbox],
) -> None:
    box = make_sandbox(header_timeout_s=0.5)
    started = time.monotonic()
    half = _connect(box)
    half.sendall(b"POST /v1/project/p/datasource/d/stream/contacts HTTP/1.1\r\nHost: x\r\n")
    silent = _connect(box)  # connects and never sends a byte
    data, closed = _answer(half, 3.0)
    assert closed and data.startswith(b"HTTP/1.1 408"), data
    _, closed = _answer(silent, 3.0)
    assert closed
    assert time.monotonic() - started < 3.0
    half.close()
    silent.close()
    # A client that sends its request promptly is not affected.
    assert httpx.get(f"{box.root_url}/__sandbox/stats").status_code == 200


def test_connections_over_the_cap_are_closed_and_a_prompt_client_is_still_served(
    make_sandbox: Callable[..., RunningSandbox],
) -> None:
    box = make_sandbox(max_connections=10, header_timeout_s=30)
    held = [_connect(box) for _ in range(40)]  # slow clients: not a byte sent
    try:
        closed = 0
        for sock in held:
            _, gone = _answer(sock, 0.05)
            closed += gone
        assert 30 - 2 <= closed <= 30, closed  # the cap holds: about 30 of 40 dropped
        # The ten left wait for their headers; a prompt client takes the place of the one
        # that has waited longest, instead of being locked out until they time out.
        response = httpx.get(f"{box.root_url}/__sandbox/stats", timeout=5)
        assert response.status_code == 200
    finally:
        for sock in held:
            sock.close()


def test_headers_over_the_size_limit_are_refused(sandbox_server: RunningSandbox) -> None:
    sock = _connect(sandbox_server)
    sock.sendall(b"GET /v1 HTTP/1.1\r\nHost: x\r\n")
    try:
        for _ in range(40):  # 40 x 64 KiB: past the 1 MiB limit, bounded
            sock.sendall(b"X-Filler: " + b"a" * 65_536 + b"\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    data, closed = _answer(sock, 3.0)
    sock.close()
    assert closed
    assert data == b"" or data.startswith(b"HTTP/1.1 431"), data[:80]


def test_a_body_over_the_limit_gets_413(sandbox_server: RunningSandbox) -> None:
    response = httpx.post(
        f"{sandbox_server.base_url}/stream/contacts", content=b"[" + b" " * MAX_BODY_BYTES + b"]",
        headers={"Authorization": f"Bearer {sandbox_server.settings.token}",
                 "Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 413
    assert "at most 100 items" in response.json()["message"]


@pytest.mark.parametrize("faults", [FaultSettings(slow_ms=10**12), FaultSettings(slow_ms=-1)])
def test_fault_settings_are_bounded(faults: FaultSettings) -> None:
    with pytest.raises(ValueError, match="slow_ms"):
        create_app(SandboxSettings(faults=faults))


@pytest.mark.parametrize("overrides", [{"latency_ms": (0, 10**12)}, {"max_connections": 0},
                                       {"header_timeout_s": 0}, {"rate_window_s": 1e12}])
def test_server_settings_are_bounded(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="invalid sandbox settings"):
        create_app(SandboxSettings(**overrides))


def test_the_faults_hook_refuses_an_unbounded_delay(sandbox_server: RunningSandbox) -> None:
    response = httpx.post(f"{sandbox_server.root_url}/__sandbox/faults",
                          json={"slow_ms": 10**12, "slow_rate": 1.0})
    assert response.status_code == 400
    assert "slow_ms" in response.text and "10 minutes" in response.text
    assert sandbox_server.app.faults.slow_ms == 0


@pytest.mark.parametrize("option", [["--slow-ms", str(10**12)], ["--latency-ms", "0:1e12"],
                                    ["--latency-ms", f"0:{10**12}"]])
def test_the_sandbox_command_refuses_an_unbounded_delay(option: list[str]) -> None:
    # A child process, so a sandbox that (wrongly) starts serving is killed, not waited for.
    try:
        done = subprocess.run([sys.executable, "-m", "importer", "sandbox", "--port", "0",
                               *option], capture_output=True, text=True, timeout=20,
                              check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the sandbox started with {option}")
    assert done.returncode == 2
    assert "Invalid value" in done.stderr
