"""ASGI plumbing the sandbox needs and no framework: paths, headers, bodies, drops.

A dropped connection must be a transport error for the client, never an HTTP status.
Under uvicorn, :func:`drop_connection` closes the socket itself (the transport is reachable
from the ``send`` callable uvicorn hands the app) and waits for the server to notice, so
uvicorn neither answers 500 nor logs a missing response; the client sees
``RemoteProtocolError: Server disconnected without sending a response``. In-process
(``httpx.ASGITransport``) there is no socket: it raises :class:`ConnectionDropped`, an
``httpx.RemoteProtocolError`` that the transport hands to the client unchanged. The tests
pin the uvicorn path against a real server, so a uvicorn upgrade that moves the transport
fails loudly instead of silently turning drops into 500s.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

import httpx

from importer.sandbox.responses import Response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY_BYTES = 16 * 1024 * 1024  # a safety cap only; the importer's own cap is far lower


class ConnectionDropped(httpx.RemoteProtocolError):
    """Raised in-process (ASGITransport) where the sandbox has no socket to close."""


class ClientGone(Exception):
    """The client disconnected while its body was being read."""


class BodyTooLarge(Exception):
    """The request body exceeds :data:`MAX_BODY_BYTES`."""


def split_path(scope: Scope) -> list[str]:
    """Percent-decoded path segments; the raw path keeps an encoded ``/`` inside an id."""
    raw = scope.get("raw_path")
    text = raw.decode("utf-8", "replace") if raw else scope["path"]
    segments = text.split("/")[1:]
    return [unquote(s) if "%" in s else s for s in segments]


def request_headers(scope: Scope) -> tuple[bytes | None, bytes | None]:
    """``(authorization, content_type)``, or None for a header that is absent."""
    authorization = content_type = None
    for name, value in scope["headers"]:
        lowered = name.lower()
        if lowered == b"authorization":
            authorization = value
        elif lowered == b"content-type":
            content_type = value
    return authorization, content_type


async def read_body(receive: Receive) -> bytes:
    first = await receive()
    if first["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = first.get("body", b"")
    size = len(body)
    if size > MAX_BODY_BYTES:
        raise BodyTooLarge
    if not first.get("more_body"):
        return body
    chunks = [body]
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLarge
        chunks.append(chunk)
        if not msg.get("more_body"):
            return b"".join(chunks)


async def send_response(
    send: Send, response: Response, request_id: bytes, date: bytes
) -> None:
    headers = [
        (b"content-length", str(len(response.body)).encode()),
        (b"x-request-id", request_id),
        (b"date", date),
        *response.headers,
    ]
    if response.body:
        headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


async def drop_connection(receive: Receive, send: Send) -> None:
    """Close the client's connection without a response (see the module docstring)."""
    server_cycle = getattr(send, "__self__", None)
    transport = getattr(server_cycle, "transport", None)
    if transport is None or not hasattr(transport, "close"):
        raise ConnectionDropped("the sandbox dropped the connection (injected fault)")
    transport.close()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(_until_disconnect(receive), timeout=2.0)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer a server's lifespan protocol: the sandbox needs no startup work."""
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
