"""Serving the sandbox with uvicorn: in the foreground (CLI) or in a background thread.

- :func:`serve` blocks (``instasent-import sandbox``, ``make sandbox``) and first prints the
  URL and the ``export INSTASENT_*=...`` lines a user copies. The sandbox token is a
  throwaway, so printing it is fine here and only here.
- :func:`running_sandbox` binds 127.0.0.1 on a free port itself (so the port is known before
  uvicorn starts), serves from a daemon thread, yields a :class:`RunningSandbox` once the
  server accepts connections, and shuts it down on exit. ``run --sandbox``, ``make demo``
  and the tests use it in-process.

uvicorn runs its httptools protocol with the sandbox's connection limits (``guard.py``:
connection cap, header-read timeout and size), no access log and level ``warning``. The
background variant leaves the process's logging configuration alone (``log_config=None``).
"""

from __future__ import annotations

import logging
import resource
import shlex
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

import uvicorn

from importer.sandbox.app import SandboxApp, create_app
from importer.sandbox.guard import ConnectionLimits, guarded_protocol
from importer.sandbox.settings import SandboxSettings

START_TIMEOUT = 10.0  # seconds to wait for the background server to accept connections
STOP_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class RunningSandbox:
    """A sandbox serving on loopback; ``api_url`` is what ``INSTASENT_API_URL`` should be."""

    api_url: str
    settings: SandboxSettings
    app: SandboxApp
    host: str
    port: int

    @property
    def base_url(self) -> str:
        """The datasource's base URL; every Ingest path lies below ``/stream``."""
        s = self.settings
        return f"{self.api_url}/project/{s.project}/datasource/{s.datasource}"

    @property
    def root_url(self) -> str:
        """``http://HOST:PORT``: the hooks are at ``{root_url}/__sandbox/...``."""
        return self.api_url.removesuffix("/v1")

    def env(self) -> dict[str, str]:
        """The ``INSTASENT_*`` variables that point the importer at this sandbox."""
        s = self.settings
        return {
            "INSTASENT_API_URL": self.api_url,
            "INSTASENT_PROJECT": s.project,
            "INSTASENT_DATASOURCE": s.datasource,
            "INSTASENT_TOKEN": s.token,
        }


def _limits(settings: SandboxSettings) -> ConnectionLimits:
    """The settings' limits, with the connection cap kept under the descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = settings.max_connections
    if soft != resource.RLIM_INFINITY:
        cap = max(1, min(cap, soft - 64))  # descriptors left for the store, logs, the loop
    return ConnectionLimits(max_connections=cap, header_timeout_s=settings.header_timeout_s)


def _uvicorn_config(app: Any, *, quiet_logging: bool) -> uvicorn.Config:
    settings = getattr(app, "settings", None) or SandboxSettings()
    return uvicorn.Config(
        app,
        http=guarded_protocol(_limits(settings)),
        timeout_keep_alive=5,  # an idle kept-alive connection is closed after 5 s
        loop="asyncio",
        lifespan="off",
        log_level=logging.WARNING,
        access_log=False,
        log_config=None if quiet_logging else uvicorn.config.LOGGING_CONFIG,
        proxy_headers=False,
        server_header=False,
        date_header=False,  # the app sends its own, from its clock (app.py)
        timeout_graceful_shutdown=5,
    )


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _api_url(host: str, port: int) -> str:
    # A wildcard bind is reached through loopback; the importer allows plain http only there.
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/v1"


def banner(settings: SandboxSettings, api_url: str) -> str:
    """What :func:`serve` prints: the URL, the options in force, the lines to copy."""
    faults = settings.faults
    extras = [
        f"rate limit {settings.rate_limit}/min per endpoint" if settings.rate_limit else "",
        f"latency {settings.latency_ms[0]}-{settings.latency_ms[1]} ms"
        if settings.latency_ms[1] else "",
        f"fail {faults.fail_rate:g} {list(faults.fail_statuses)}" if faults.fail_rate else "",
        f"drop-before {faults.drop_before_rate:g}" if faults.drop_before_rate else "",
        f"drop-after {faults.drop_after_rate:g}" if faults.drop_after_rate else "",
        f"slow {faults.slow_rate:g} x {faults.slow_ms} ms" if faults.slow_rate else "",
        "require-known-user" if settings.require_known_user else "",
        f"{settings.response_shape} responses",
        f"db {settings.db_path}" if settings.db_path else "in memory",
        f"seed {settings.seed}",
    ]
    return "\n".join([
        f"Instasent sandbox serving {api_url} (Ctrl+C to stop)",
        "  " + ", ".join(e for e in extras if e),
        "Point the importer at it:",
        f"  export INSTASENT_API_URL={shlex.quote(api_url)}",
        f"  export INSTASENT_PROJECT={shlex.quote(settings.project)}",
        f"  export INSTASENT_DATASOURCE={shlex.quote(settings.datasource)}",
        f"  export INSTASENT_TOKEN={shlex.quote(settings.token)}",
        f"Test hooks: {api_url.removesuffix('/v1')}/__sandbox/stats",
    ])


def serve(
    settings: SandboxSettings,
    host: str = "127.0.0.1",
    port: int = 8790,
    *,
    out: TextIO | None = None,
    **app_kwargs: Any,
) -> None:
    """Serve until interrupted; ``port=0`` picks a free port (printed in the banner)."""
    sock = _bind(host, port)
    app = create_app(settings, **app_kwargs)
    try:
        bound_port = sock.getsockname()[1]
        print(banner(settings, _api_url(host, bound_port)), file=out or sys.stdout, flush=True)
        server = uvicorn.Server(_uvicorn_config(app, quiet_logging=False))
        server.run(sockets=[sock])
    finally:
        sock.close()
        app.close()


@contextmanager
def running_sandbox(settings: SandboxSettings | None = None, **app_kwargs: Any) -> Iterator[
    RunningSandbox
]:
    """Serve a fresh sandbox on ``127.0.0.1:<free port>`` in a thread for the ``with`` block.

    ``app_kwargs`` go to :func:`~importer.sandbox.app.create_app` (``clock``, ``sleep``).
    """
    settings = settings or SandboxSettings()
    app = create_app(settings, **app_kwargs)
    sock = _bind("127.0.0.1", 0)
    server = uvicorn.Server(_uvicorn_config(app, quiet_logging=True))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="instasent-sandbox", daemon=True
    )
    try:
        thread.start()
        _wait_started(server, thread)
        port = sock.getsockname()[1]
        yield RunningSandbox(_api_url("127.0.0.1", port), settings, app, "127.0.0.1", port)
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT)
        sock.close()
        app.close()


def _wait_started(server: uvicorn.Server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the sandbox server thread exited during startup")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sandbox server did not start within {START_TIMEOUT:g} s")
        time.sleep(0.005)
