"""A lean HTTP/1.1 transport for httpx: keep-alive connections on asyncio streams.

Why: the importer's whole job is a few thousand small POSTs a minute, and httpcore's generic
machinery (a pool that re-scans every connection on every request, anyio wrappers, the h11
state machine) cost about a millisecond of CPU per request here — more than reading, mapping
and serialising the 100 rows in it. This transport does only what the Ingest API needs:
one request at a time per connection, ``Content-Length`` or chunked responses, TLS via
``ssl``, timeouts from the request's extensions, and errors raised as httpx's own
exceptions (with the original error chained as ``__cause__``), so the client above it and
everything catching ``httpx.TransportError`` are unchanged.

It plugs in through httpx's documented seam (``AsyncClient(transport=...)``); tests can
still swap in ``httpx.ASGITransport``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

_MAX_HEAD = 64 * 1024
Origin = tuple[str, str, int]


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()


class _StaleConnection(Exception):
    """A kept-alive connection the server had closed before we wrote to it."""


Timeouts = tuple[float | None, float | None, float | None]  # connect, read, write


def _timeouts(request: httpx.Request) -> Timeouts:
    t = request.extensions.get("timeout") or {}
    return t.get("connect"), t.get("read"), t.get("write")


def _origin(url: httpx.URL) -> Origin:
    return url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80)


class LeanTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 on asyncio streams; see the module docstring."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True) -> None:
        self._ssl = ssl.create_default_context() if verify is True else verify
        self._idle: defaultdict[Origin, list[_Connection]] = defaultdict(list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        body = await request.aread()
        status, headers, content = await self._roundtrip(
            _origin(url), self._head(request, body), body, _timeouts(request), lambda: request
        )
        return httpx.Response(status, headers=headers, content=content, request=request,
                              extensions={"http_version": b"HTTP/1.1"})

    async def post(
        self, url: httpx.URL, headers: Sequence[tuple[bytes, bytes]], body: bytes,
        timeouts: Timeouts,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The hot path: POST ``body`` without building httpx Request/Response objects
        (about a third of the CPU of a request went into them). ``headers`` exclude Host and
        Content-Length. Raises the same httpx exceptions as a request through the client."""
        lines = [b"POST %s HTTP/1.1" % url.raw_path, b"Host: %s" % url.netloc]
        lines += [name + b": " + value for name, value in headers]
        lines.append(b"Content-Length: %d" % len(body))
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        return await self._roundtrip(
            _origin(url), head, body, timeouts, lambda: httpx.Request("POST", url)
        )

    async def _roundtrip(
        self, origin: Origin, head: bytes, body: bytes, timeouts: Timeouts,
        request: Callable[[], httpx.Request],
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        idle = self._idle[origin]
        while idle:  # a reused connection may have been closed by the server meanwhile
            conn = idle.pop()
            try:
                return await self._exchange(conn, origin, request, head, body, timeouts,
                                            reused=True)
            except _StaleConnection:
                continue
        conn = await self._connect(origin, request, timeouts[0])
        try:
            return await self._exchange(conn, origin, request, head, body, timeouts,
                                        reused=False)
        except _StaleConnection as exc:  # pragma: no cover - only on a reused connection
            raise httpx.RemoteProtocolError(str(exc), request=request()) from exc

    @staticmethod
    def _head(request: httpx.Request, body: bytes) -> bytes:
        lines = [b"%s %s HTTP/1.1" % (request.method.encode(), request.url.raw_path)]
        has_length = False
        for name, value in request.headers.raw:
            lower = name.lower()
            if lower == b"content-length":
                has_length = True
            if lower == b"transfer-encoding":
                continue  # the body is always sent whole, with a Content-Length
            lines.append(name + b": " + value)
        if not has_length and (body or request.method in ("POST", "PUT", "PATCH")):
            lines.append(b"Content-Length: %d" % len(body))
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def _connect(
        self, origin: Origin, request: Callable[[], httpx.Request], connect_timeout: float | None
    ) -> _Connection:
        scheme, host, port = origin
        context = self._ssl if scheme == "https" else None
        try:
            async with asyncio.timeout(connect_timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, limit=_MAX_HEAD,
                    server_hostname=host if context else None)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out",
                                       request=request()) from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}",
                                     request=request()) from exc
        return _Connection(reader, writer)

    async def _exchange(
        self,
        conn: _Connection,
        origin: Origin,
        request: Callable[[], httpx.Request],
        head: bytes,
        body: bytes,
        timeouts: Timeouts,
        *,
        reused: bool,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        _, read_timeout, write_timeout = timeouts
        try:
            conn.writer.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                conn.writer.write(body)
            # asyncio.timeout, not wait_for: wait_for wraps its awaitable in a new task,
            # which costs two extra turns of the event loop per call — on every request.
            async with asyncio.timeout(write_timeout):
                await conn.writer.drain()
        except TimeoutError as exc:
            conn.close()
            raise httpx.WriteTimeout("sending the request timed out", request=request()) from exc
        except OSError as exc:
            conn.close()
            if reused:
                raise _StaleConnection(str(exc)) from exc
            raise httpx.WriteError(f"sending the request failed: {exc}",
                                   request=request()) from exc
        try:
            async with asyncio.timeout(read_timeout):
                status, headers, content, keep = await self._read_response(
                    conn.reader, head.startswith(b"HEAD "))
        except TimeoutError as exc:
            conn.close()
            raise httpx.ReadTimeout("waiting for the response timed out",
                                    request=request()) from exc
        except _Disconnected as exc:
            conn.close()
            if reused and not exc.partial:
                raise _StaleConnection(str(exc)) from exc
            raise httpx.RemoteProtocolError(str(exc), request=request()) from exc
        except (OSError, ValueError) as exc:
            conn.close()
            raise httpx.ReadError(f"reading the response failed: {exc}",
                                  request=request()) from exc
        if keep:
            self._idle[origin].append(conn)
        else:
            conn.close()
        return status, headers, content

    @staticmethod
    async def _read_response(
        reader: asyncio.StreamReader, head_request: bool
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        try:
            raw_head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise _Disconnected(
                "Server disconnected without sending a response.", partial=bool(exc.partial)
            ) from exc
        except asyncio.LimitOverrunError as exc:
            raise ValueError("response headers too large") from exc
        status_line, *header_lines = raw_head[:-4].split(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ValueError(f"not an HTTP/1.x response: {status_line[:80]!r}")
        status = int(parts[1])
        headers = []
        length: int | None = None
        chunked = False
        keep = parts[0] == b"HTTP/1.1"
        for line in header_lines:
            name, _, value = line.partition(b":")
            value = value.strip()
            headers.append((name, value))
            lower = name.strip().lower()
            if lower == b"content-length":
                length = int(value)
            elif lower == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif lower == b"connection":
                keep = value.lower() != b"close"
        try:
            if head_request or status in (204, 304) or 100 <= status < 200:
                content = b""
            elif chunked:
                content = await _read_chunked(reader)
            elif length is not None:
                content = await reader.readexactly(length)
            else:
                content = await reader.read()
                keep = False
        except asyncio.IncompleteReadError as exc:
            raise _Disconnected("Server disconnected in the middle of the response.",
                                partial=True) from exc
        return status, headers, content, keep

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


class _Disconnected(Exception):
    def __init__(self, message: str, *, partial: bool) -> None:
        super().__init__(message)
        self.partial = partial


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
