"""Connection limits for the sandbox's server: a flood of slow clients cannot take it down.

uvicorn has a keep-alive timeout but no limit on the time or bytes a client may take to send
a request's headers, and accepts connections until the process runs out of descriptors
(20,000 connections that each sent half a request line did exactly that). Those limits live
below the ASGI app — the app is only called once the headers are in — so they are added to
uvicorn's httptools protocol:

- at most ``max_connections`` open at once: past it, the connection that has waited longest
  for its headers is dropped to make room (a flood of slow clients cannot lock out a prompt
  one), or the new one is closed at once when every other one is being served;
- a request's headers must arrive within ``header_timeout_s`` of its first byte (of the
  connection, for the first request): past it the connection gets ``408`` and is closed;
- at most :data:`MAX_HEADER_BYTES` before the headers end: past it, ``431`` and closed.

Idle keep-alive connections are uvicorn's own ``timeout_keep_alive``. The tests pin all of it
over real sockets, so a uvicorn upgrade that changes the protocol class fails loudly.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Headers larger than this are refused (the importer sends well under 1 KiB). Generous,
#: because the count includes whatever body bytes arrived in the same read as the headers.
MAX_HEADER_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int
    header_timeout_s: float
    max_header_bytes: int = MAX_HEADER_BYTES


def _refusal(status: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`ConnectionLimits` (see the module doc)."""

    limits = ConnectionLimits(max_connections=1000, header_timeout_s=10.0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_headers = True
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._since = 0.0  # when the connection was made (loop time)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._since = self.loop.time()
        if len(self.connections) > self.limits.max_connections:
            # Over the cap: make room by dropping the connection that has waited longest for
            # its headers (a slow client, not one being served); if every other connection
            # is being served, this one is closed at once. Either way a descriptor is freed.
            victim = self._slowest_other()
            if victim is None:
                transport.close()
                return
            victim._refuse(b"408 Request Timeout")
        self._arm()

    def _slowest_other(self) -> GuardedProtocol | None:
        waiting = [c for c in self.connections
                   if c is not self and isinstance(c, GuardedProtocol) and c._awaiting_headers
                   and not c.transport.is_closing()]
        return min(waiting, key=lambda c: c._since, default=None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers:
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_header_bytes:
                self._refuse(b"431 Request Header Fields Too Large")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._awaiting_headers:  # the next request on a kept-alive connection
            self._awaiting_headers = True
            self._header_bytes = 0
            self._arm()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self._awaiting_headers:
            self._refuse(b"408 Request Timeout")

    def _refuse(self, status: bytes) -> None:
        self._disarm()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # not inside another answer
            self.transport.write(_refusal(status))
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with these limits."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits})
