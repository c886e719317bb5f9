"""Small loopback servers for the HTTP tests (tests/test_transport.py): each runs on an event
loop of its own in a daemon thread, so the importer under test keeps its own loop.

- :class:`ShapingFront`: an HTTP/1.1 server that hands every request to an upstream (the
  sandbox) and shapes the answer on the wire the way real servers and middleboxes do —
  ``100 Continue`` and ``103 Early Hints`` first, a gzip-encoded body, the connection dropped
  after the request was processed, a ``408`` sent on an idle connection before closing it.
  It counts the POSTs it received: what "the server saw".
- :class:`ForwardProxy`: a forward proxy (``CONNECT host:port`` tunnels and absolute-form
  plain-http requests), with its own name table (``sandbox.test`` → 127.0.0.1), so a name
  nothing else can resolve is reachable only through it; it logs every target and the
  ``Proxy-Authorization`` it was given.
- :class:`TlsFront`: TLS termination in front of a plain upstream port.

Everything binds 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


class _Loop:
    """An event loop in a daemon thread, serving one asyncio server."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    def serve(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> int:
        async def start() -> int:
            self._server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)
            port: int = self._server.sockets[0].getsockname()[1]
            return port

        self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return self.port

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def __enter__(self) -> _Loop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                  b: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]))


async def _read_request(
    reader: asyncio.StreamReader, idle_timeout: float | None = None
) -> tuple[str, str, dict[str, str], bytes]:
    """One request; TimeoutError when no request begins within ``idle_timeout``."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), idle_timeout)
    line, *rest = head.decode("latin-1").split("\r\n")
    method, target, _ = line.split(" ", 2)
    headers = {}
    for h in rest:
        if ":" in h:
            name, _, value = h.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, target, headers, body


@dataclass
class ShapingFront(_Loop):
    """See the module docstring. ``shape(n, reused)`` names what to do with the ``n``-th
    POST (1-based, over all connections), ``reused`` when it is not the first request of its
    connection: "" (answer as is), "1xx", "gzip", "drop" (processed, then closed without an
    answer), "408-idle" (answered; then, if the connection stays idle for ``idle_s``, a
    408, and a close ``linger_s`` later) or "503" (not processed: 503 with
    ``Retry-After: 3``). ``rewrite``: answer headers replaced on every answer."""

    upstream: str = ""  # http://127.0.0.1:PORT
    shape: Callable[[int, bool], str] = lambda n, reused: ""
    idle_s: float = 0.05
    linger_s: float = 0.3
    rewrite: dict[str, str] = field(default_factory=dict)  # answer headers to replace
    posts: int = 0
    dropped: int = 0
    idle_408s: int = 0
    connections: int = 0
    encodings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _Loop.__init__(self)
        self._client = httpx.AsyncClient(base_url=self.upstream)
        self.serve(self._handle)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        idle_timeout: float | None = None
        try:
            while True:
                try:
                    method, target, headers, body = await _read_request(reader, idle_timeout)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except TimeoutError:  # idle too long after a "408-idle" answer
                    self.idle_408s += 1
                    writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                    await writer.drain()
                    # Closing takes a while: a request written meanwhile is never read.
                    await asyncio.sleep(self.linger_s)
                    return
                idle_timeout = None
                served += 1
                mode = ""
                if method == "POST":
                    self.posts += 1
                    self.encodings.append(headers.get("accept-encoding", ""))
                    mode = self.shape(self.posts, served > 1)
                if mode == "503":  # not processed: come back in 3 s
                    writer.write(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3\r\n"
                                 b"Content-Length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                forwarded = {k: v for k, v in headers.items()
                             if k in ("authorization", "content-type", "accept")}
                answer = await self._client.request(method, target, headers=forwarded,
                                                    content=body)
                if mode == "drop":
                    self.dropped += 1
                    return  # processed upstream; the connection closes with no answer
                content = answer.content
                extra = ""
                if mode == "gzip":
                    content = gzip.compress(content)
                    extra = "Content-Encoding: gzip\r\n"
                keep = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset",
                        "retry-after", "content-type", "x-request-id")
                shown = {**{k: answer.headers[k] for k in keep if k in answer.headers},
                         **self.rewrite}
                extra += "".join(f"{k}: {v}\r\n" for k, v in shown.items())
                head = (f"HTTP/1.1 {answer.status_code} {answer.reason_phrase}\r\n{extra}"
                        f"Content-Length: {len(content)}\r\n\r\n").encode()
                if mode == "1xx":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await writer.drain()
                    writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
                    await writer.drain()
                writer.write(head + content)
                await writer.drain()
                if mode == "408-idle":
                    idle_timeout = self.idle_s
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._client.aclose(), self.loop).result(10)
        super().close()


@dataclass
class ForwardProxy(_Loop):
    """See the module docstring. ``hosts`` maps names to loopback addresses; any other name
    is refused (the proxy never goes past loopback)."""

    hosts: dict[str, str] = field(default_factory=dict)
    targets: list[str] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _Loop.__init__(self)
        self.serve(self._handle)

    def _resolve(self, host: str) -> str | None:
        host = self.hosts.get(host, host)
        return host if host in ("127.0.0.1", "localhost") else None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        line, *rest = head.decode("latin-1").split("\r\n")
        method, target, version = line.split(" ", 2)
        for h in rest:
            if h.lower().startswith("proxy-authorization:"):
                self.auth.append(h.split(":", 1)[1].strip())
        self.targets.append(f"{method} {target}")
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            address = self._resolve(host)
            if address is None:
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                writer.close()
                return
            upstream = await asyncio.open_connection(address, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await _splice((reader, writer), upstream)
            return
        # absolute-form: GET http://host:port/path HTTP/1.1 — one request per connection here
        url = httpx.URL(target)
        address = self._resolve(url.host)
        if address is None:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(address, url.port or 80)
        kept = [h for h in rest if h and not h.lower().startswith(("proxy-", "connection:"))]
        request = "\r\n".join([f"{method} {url.raw_path.decode()} {version}", *kept,
                               "Connection: close", "", ""])
        up_writer.write(request.encode("latin-1"))
        await _splice((reader, writer), (up_reader, up_writer))


@dataclass
class TlsFront(_Loop):
    """TLS on a loopback port, piped to the plain upstream port."""

    upstream_port: int = 0
    context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        _Loop.__init__(self)
        self.serve(self._handle, self.context)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        await _splice((reader, writer), upstream)
