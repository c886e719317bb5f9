"""Shared fixtures: the sandbox over real loopback HTTP, or in-process over ASGI.

Live server (uvicorn in a thread on ``127.0.0.1:<free port>``; sync or async tests)::

    def test_x(sandbox_server):                   # default SandboxSettings
        sandbox_server.api_url                    # http://127.0.0.1:PORT/v1 (INSTASENT_API_URL)
        sandbox_server.base_url                   # .../project/P/datasource/D
        sandbox_server.root_url                   # http://127.0.0.1:PORT (hooks: /__sandbox/...)
        sandbox_server.settings, sandbox_server.app.stats()

    def test_y(make_sandbox):                     # any SandboxSettings field, plus clock/sleep
        box = make_sandbox(rate_limit=5, faults=FaultSettings(fail_rate=0.5), seed=3)

In-process (no socket; mark the test ``@pytest.mark.anyio``)::

    async def test_z(asgi_client, asgi_app):
        response = await asgi_client.post("/stream/contacts", json=[{"_user_id": "U1"}])
        asgi_app.stats()["contacts"]

``asgi_client`` is an ``httpx.AsyncClient`` whose ``base_url`` is the datasource base URL
``http://127.0.0.1/v1/project/sandbox-project/datasource/sandbox-datasource`` and which
sends the sandbox token; ``asgi_app`` is the very :class:`SandboxApp` behind it (build your
own client with ``httpx.ASGITransport(app=asgi_app)``). Hooks answer on absolute URLs such
as ``http://127.0.0.1/__sandbox/stats``. ``make_asgi_client(**overrides)`` returns
``(client, app)`` for other settings. Every sandbox here is fresh and in memory unless
``db_path`` is given.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

import httpx
import pytest

from importer.sandbox.app import SandboxApp, create_app
from importer.sandbox.server import RunningSandbox, running_sandbox
from importer.sandbox.settings import SandboxSettings

# the object-storage fixtures (a moto S3 server on 127.0.0.1): tests/_s3.py
pytest_plugins = ["tests._s3"]

ASGI_API_URL = "http://127.0.0.1/v1"


def sandbox_settings(**overrides: Any) -> SandboxSettings:
    """Default :class:`SandboxSettings` with some fields replaced."""
    return replace(SandboxSettings(), **overrides)


def _app_kwargs(overrides: dict[str, Any]) -> dict[str, Any]:
    return {key: overrides.pop(key) for key in ("clock", "sleep") if key in overrides}


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own journal directory instead of ./.instasent-import."""
    monkeypatch.setenv("INSTASENT_STATE_DIR", str(tmp_path_factory.mktemp("state")))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., RunningSandbox]]:
    """Factory: ``make_sandbox(**settings_overrides, clock=..., sleep=...)`` serves one more
    sandbox on a free loopback port; all of them stop when the test ends."""
    with ExitStack() as stack:

        def make(**overrides: Any) -> RunningSandbox:
            app_kwargs = _app_kwargs(overrides)
            return stack.enter_context(running_sandbox(sandbox_settings(**overrides), **app_kwargs))

        yield make


@pytest.fixture
def sandbox_server(make_sandbox: Callable[..., RunningSandbox]) -> RunningSandbox:
    """A live sandbox with default settings, on its own free port, for this test only."""
    return make_sandbox()


def _asgi_client(app: SandboxApp) -> httpx.AsyncClient:
    s = app.settings
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=f"{ASGI_API_URL}/project/{s.project}/datasource/{s.datasource}",
        headers={"Authorization": f"Bearer {s.token}"},
    )


@pytest.fixture
def asgi_app() -> Iterator[SandboxApp]:
    """The in-memory :class:`SandboxApp` behind ``asgi_client`` (default settings)."""
    app = create_app(SandboxSettings())
    yield app
    app.close()


@pytest.fixture
async def asgi_client(asgi_app: SandboxApp) -> AsyncIterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` over ``httpx.ASGITransport(app=asgi_app)``; see the module doc."""
    async with _asgi_client(asgi_app) as client:
        yield client


@pytest.fixture
async def make_asgi_client() -> AsyncIterator[
    Callable[..., tuple[httpx.AsyncClient, SandboxApp]]
]:
    """Factory: ``client, app = make_asgi_client(**settings_overrides, clock=, sleep=)``."""
    made: list[tuple[httpx.AsyncClient, SandboxApp]] = []

    def make(**overrides: Any) -> tuple[httpx.AsyncClient, SandboxApp]:
        app_kwargs = _app_kwargs(overrides)
        app = create_app(sandbox_settings(**overrides), **app_kwargs)
        made.append((_asgi_client(app), app))
        return made[-1]

    yield make
    for client, app in made:
        await client.aclose()
        app.close()
