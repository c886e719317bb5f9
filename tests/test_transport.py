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


def _serve(answers: list[bytes], *, trickle: bool = False, close_after_each: bool = False,
           seen: list[int] | None = None) -> Callable[..., object]:
    """A raw HTTP server: reads each request (headers and Content-Length body), answers the
    next canned response, optionally one byte at a time, optionally closing the connection
    after each answer (a keep-alive timeout on the server side)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while answers:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if seen is not None:
                seen.append(length)
            answer = answers.pop(0)
            if trickle:
                for i in range(len(answer)):
                    writer.write(answer[i:i + 1])
                    await writer.drain()
                    await asyncio.sleep(0)
            else:
                writer.write(answer)
                await writer.drain()
            if close_after_each:
                break
        writer.close()

    return serve


def test_answers_arriving_byte_by_byte_are_put_together() -> None:
    answers = [
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 5\r\nX-Request-Id: r1\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nab\r\n1\r\nc\r\n0\r\nX-Trailer: t\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ]

    async def go() -> list[tuple[int, bytes]]:
        server = await asyncio.start_server(_serve(answers, trickle=True), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, httpx.AsyncClient(transport=LeanTransport()) as client:
            out = []
            for _ in range(3):
                r = await client.post(f"http://127.0.0.1:{port}/", content=b"{}")
                out.append((r.status_code, r.content))
            assert r.request.method == "POST"
            return out

    assert asyncio.run(go()) == [(202, b"hello"), (200, b"abc"), (204, b"")]


def test_a_kept_alive_connection_the_server_closed_is_replaced_not_reported() -> None:
    ok = b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok"

    async def go() -> list[int]:
        serve = _serve([ok, ok, ok], close_after_each=True)
        server = await asyncio.start_server(serve, "127.0.0.1", 0)  # type: ignore[arg-type]
        port = server.sockets[0].getsockname()[1]
        async with server, httpx.AsyncClient(transport=LeanTransport()) as client:
            statuses = []
            for _ in range(3):
                r = await client.post(f"http://127.0.0.1:{port}/", content=b"[]")
                statuses.append(r.status_code)
                await asyncio.sleep(0.05)  # the server has closed the connection by now
            return statuses

    assert asyncio.run(go()) == [202, 202, 202]


def test_a_body_larger_than_the_socket_buffer_is_sent_whole() -> None:
    body = b"x" * (8 * 1024 * 1024)
    seen: list[int] = []
    ok = b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok"

    async def go() -> int:
        server = await asyncio.start_server(_serve([ok], seen=seen), "127.0.0.1", 0)  # type: ignore[arg-type]
        port = server.sockets[0].getsockname()[1]
        async with server, httpx.AsyncClient(transport=LeanTransport()) as client:
            r = await client.post(f"http://127.0.0.1:{port}/", content=body)
            return r.status_code

    assert asyncio.run(go()) == 202
    assert seen == [len(body)]


def test_a_cancelled_request_does_not_leave_its_connection_for_reuse() -> None:
    closed_by_client = asyncio.Event()

    async def go() -> int:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            assert await reader.read() == b""  # no answer; the client gives up and closes
            closed_by_client.set()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = LeanTransport()
        async with server, httpx.AsyncClient(transport=transport) as client:
            task = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/"))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(closed_by_client.wait(), 5)
            return sum(len(c) for c in transport._idle.values())

    assert asyncio.run(go()) == 0
