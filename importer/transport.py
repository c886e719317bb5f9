"""A lean HTTP/1.1 transport for httpx: keep-alive connections as asyncio protocols.

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

import httpx

_MAX_HEAD = 64 * 1024
Origin = tuple[str, str, int]


class _Connection(asyncio.Protocol):
    """One keep-alive connection: parses each response as its bytes arrive.

    A protocol rather than asyncio streams: an answer costs one wake-up of the waiting request
    (the one that completes it) instead of a reader's, a drain's and two timeout scopes' —
    ~40 µs less CPU per request, on every request of a run.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = bytearray()
        self._waiter: asyncio.Future[_Answer] | None = None
        self._head_request = False
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is not None:
            self._settle(eof=False)

    def eof_received(self) -> bool:
        return False  # close our side too: an HTTP/1.1 server that half-closes is done

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None:
            self._settle(eof=True, error=exc)
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(exc or ConnectionResetError("connection closed"))

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- one exchange
    def send(self, data: bytes, head_request: bool) -> asyncio.Future[_Answer]:
        """Write a request; the future completes with its answer (or the failure)."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise _StaleConnection("the connection was closed while idle")
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._head_request = head_request
        self.transport.write(data)
        return waiter

    @property
    def paused(self) -> bool:
        return self._paused

    async def drain(self) -> None:
        """Wait while the socket's send buffer is full (a large body)."""
        if self._paused:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _settle(self, *, eof: bool, error: Exception | None = None) -> None:
        waiter = self._waiter
        assert waiter is not None
        try:
            answer = _parse_response(self._buffer, self._head_request, eof)
        except (_Disconnected, ValueError) as exc:
            if isinstance(exc, _Disconnected) and error is not None:
                exc.__cause__ = error
            self._waiter = None
            if not waiter.done():
                waiter.set_exception(exc)
            return
        if answer is None:  # more to come (at EOF _parse_response answers or raises)
            return
        used, status, headers, content, keep = answer
        del self._buffer[:used]
        self._waiter = None
        if not waiter.done():
            waiter.set_result((status, headers, content, keep))


_Answer = tuple[int, list[tuple[bytes, bytes]], bytes, bool]


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
        # The default context (loading the system's CA certificates: ~20 ms of CPU) is made
        # on the first https connection; a loopback sandbox run never needs it.
        self._verify = verify
        self._ssl_context: ssl.SSLContext | None = None
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

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            verify = self._verify
            if isinstance(verify, ssl.SSLContext):
                self._ssl_context = verify
            else:
                self._ssl_context = ssl.create_default_context()
                if not verify:  # httpx's verify=False: encrypted, certificate not checked
                    self._ssl_context.check_hostname = False
                    self._ssl_context.verify_mode = ssl.CERT_NONE
        return self._ssl_context

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
        context = self._tls() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(
                    _Connection, host, port, ssl=context,
                    server_hostname=host if context else None)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out",
                                       request=request()) from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}",
                                     request=request()) from exc
        return conn

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
        answer = conn.send(head + body, head.startswith(b"HEAD "))
        try:
            if conn.paused:  # a body larger than the socket's buffer
                async with asyncio.timeout(write_timeout):
                    await conn.drain()
        except TimeoutError as exc:
            conn.close()
            raise httpx.WriteTimeout("sending the request timed out", request=request()) from exc
        except OSError as exc:
            conn.close()
            if reused:
                raise _StaleConnection(str(exc)) from exc
            raise httpx.WriteError(f"sending the request failed: {exc}",
                                   request=request()) from exc
        # One timer, not a timeout scope: it fails the answer with a ReadTimeout of our own,
        # so a cancellation of the caller's task stays a cancellation.
        expiry = None
        if read_timeout is not None:
            expiry = asyncio.get_running_loop().call_later(read_timeout, _expire, answer)
        try:
            status, headers, content, keep = await answer
        except _TimedOut as exc:
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
        except BaseException:  # cancelled mid-exchange: the connection's state is unknown
            conn.close()
            raise
        finally:
            if expiry is not None:
                expiry.cancel()
        if keep and not conn.closed:
            self._idle[origin].append(conn)
        else:
            conn.close()
        return status, headers, content

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


class _Disconnected(Exception):
    def __init__(self, message: str, *, partial: bool) -> None:
        super().__init__(message)
        self.partial = partial


class _TimedOut(Exception):
    """The read timeout of one exchange expired."""


def _expire(answer: asyncio.Future[_Answer]) -> None:
    if not answer.done():
        answer.set_exception(_TimedOut())


def _parse_response(buffer: bytearray, head_request: bool, eof: bool) -> _Parsed | None:
    """One whole response from the front of ``buffer``: (bytes used, status, headers, content,
    keep-alive); None while incomplete. At ``eof`` an incomplete response is an error."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > _MAX_HEAD:
            raise ValueError("response headers too large")
        if eof:
            raise _Disconnected("Server disconnected without sending a response.",
                                partial=bool(buffer))
        return None
    status_line, *header_lines = bytes(buffer[:end]).split(b"\r\n")
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
    start = end + 4
    if head_request or status in (204, 304) or 100 <= status < 200:
        return start, status, headers, b"", keep
    if chunked:
        found = _dechunk(buffer, start)
        if found is None:
            _fail_if(eof)
            return None
        used, content = found
        return used, status, headers, content, keep
    if length is not None:
        if len(buffer) - start < length:
            _fail_if(eof)
            return None
        return start + length, status, headers, bytes(buffer[start:start + length]), keep
    if not eof:  # delimited by the end of the connection
        return None
    return len(buffer), status, headers, bytes(buffer[start:]), False


_Parsed = tuple[int, int, list[tuple[bytes, bytes]], bytes, bool]


def _fail_if(eof: bool) -> None:
    """A response still incomplete when the connection ended."""
    if eof:
        raise _Disconnected("Server disconnected in the middle of the response.", partial=True)


def _dechunk(buffer: bytearray, pos: int) -> tuple[int, bytes] | None:
    """A chunked body from ``pos``: (end of the message, content); None while incomplete."""
    parts: list[bytes] = []
    while True:
        eol = buffer.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buffer[pos:eol]).split(b";", 1)[0].strip(), 16)
        pos = eol + 2
        if size == 0:
            while True:  # trailers, up to an empty line
                eol = buffer.find(b"\r\n", pos)
                if eol < 0:
                    return None
                blank = eol == pos
                pos = eol + 2
                if blank:
                    return pos, b"".join(parts)
        if len(buffer) < pos + size + 2:
            return None
        parts.append(bytes(buffer[pos:pos + size]))
        pos += size + 2
