"""The lean HTTP/1.1 transport under httpx, against real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

import httpx
import pytest

from importer.sandbox.server import RunningSandbox
from importer.sandbox.settings import FaultSettings
from importer.transport import LeanTransport


def _client(box: RunningSandbox, **kw: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=LeanTransport(),
        base_url=box.base_url,
        headers={"Authorization": f"Bearer {box.settings.token}"},
        **kw,  # type: ignore[arg-type]
    )


def test_keeps_connections_alive_and_answers_like_httpx(sandbox_server: RunningSandbox) -> None:
    async def go() -> list[int]:
        async with _client(sandbox_server) as client:
            statuses = []
            for i in range(50):
                r = await client.post("/stream/contacts", json=[{"_user_id": f"U{i}"}])
                statuses.append(r.status_code)
                assert r.json()["entity"]["successful"] == 1
                assert r.headers["x-request-id"]
            transport = client._transport
            assert isinstance(transport, LeanTransport)
            assert sum(len(c) for c in transport._idle.values()) == 1  # one connection reused
            r = await client.get("/stream/nope")
            assert r.status_code == 404
            return statuses

    assert asyncio.run(go()) == [202] * 50
    assert sandbox_server.app.stats()["contacts"] == 50


def test_a_connection_dropped_without_answer_is_a_transport_error(
    make_sandbox: Callable[..., RunningSandbox],
) -> None:
    box = make_sandbox(faults=FaultSettings(drop_after_rate=1.0))

    async def go() -> None:
        async with _client(box) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post("/stream/contacts", json=[{"_user_id": "U1"}])

    asyncio.run(go())
    assert box.app.stats()["contacts"] == 1  # processed, then dropped: the ambiguous case


def test_timeouts_refusals_and_tls_failures_are_httpx_errors_with_their_cause(
    make_sandbox: Callable[..., RunningSandbox],
) -> None:
    slow = make_sandbox(latency_ms=(500, 500))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]

    async def go() -> None:
        async with _client(slow, timeout=0.1) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/stream")
        async with httpx.AsyncClient(transport=LeanTransport()) as client:
            with pytest.raises(httpx.ConnectError) as refused:
                await client.get(f"http://127.0.0.1:{closed_port}/v1")
            assert isinstance(refused.value.__cause__, ConnectionRefusedError)
            with pytest.raises(httpx.ConnectError) as tls:
                await client.get(f"https://127.0.0.1:{slow.port}/v1", timeout=5)
            assert isinstance(tls.value.__cause__, ssl.SSLError)

    asyncio.run(go())


def test_chunked_and_close_delimited_responses() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nabcd\r\n3;x=1\r\nefg\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-eof",
    ]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            if b"close" in answer:
                break
        writer.close()

    async def go() -> list[bytes]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, httpx.AsyncClient(transport=LeanTransport()) as client:
            first = await client.get(f"http://127.0.0.1:{port}/")
            second = await client.get(f"http://127.0.0.1:{port}/")
            return [first.content, second.content]

    assert asyncio.run(go()) == [b"abcdefg", b"until-eof"]
