"""HTTP semantics of the Ingest API: one thin client, and one function that turns a response
into per-item outcomes (:func:`interpret`). Scheduling (pacing, retries) lives in upload.py.

Status → verdict (API.md §4, §6):

    202/200  ITEMS      per-item outcomes (both success envelopes: docs and activepieces)
    422      ITEMS      every item failed validation, with its field errors
    400/413  SPLIT      the whole batch was refused: split it to isolate the offending items
    401      AUTH       fatal: token missing, malformed or revoked
    404      NOT_FOUND  fatal: unknown project/datasource, or token not allowed there
    429      RATE       wait until X-RateLimit-Reset (or Retry-After); not an attempt
    5xx      RETRY      exponential backoff; so are timeouts and dropped connections
    other    FAILED     the batch's rows become permanent rejects with the status
"""

from __future__ import annotations

import asyncio
import collections
import enum
import functools
import math
import operator
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from importer import __version__
from importer.config import Credentials
from importer.network import resolve_route, ssl_context

USER_AGENT = f"instasent-import/{__version__}"


class Verdict(enum.Enum):
    ITEMS = "items"
    SPLIT = "split"
    AUTH = "auth"
    NOT_FOUND = "not_found"
    RATE = "rate"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """What the API said of one item. ``retryable`` failures may succeed when sent again."""

    ok: bool
    duplicate: bool = False
    code: str = ""
    field: str | None = None
    message: str = ""
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class RateInfo:
    """The rate-limit headers of one response (None when absent)."""

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None  # Unix seconds, on this machine's clock
    retry_after: float | None = None  # seconds
    problem: str = ""  # a rate-limit header that could not be read (and was ignored)


@dataclass(frozen=True, slots=True)
class BatchResponse:
    verdict: Verdict
    status: int | None
    items: tuple[ItemOutcome, ...] = ()
    rate: RateInfo = RateInfo()
    request_id: str | None = None
    message: str = ""


#: The outcome of an accepted item (one shared object: counting them is cheap).
ACCEPTED = ItemOutcome(ok=True)
_DUPLICATE = ItemOutcome(ok=True, duplicate=True)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def _retry_after(headers: Mapping[str, str], now: float | None) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:  # an HTTP date
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(when - now, 0.0) if now is not None else None


#: An ``X-RateLimit-Reset`` below this is a number of seconds from now, not a Unix time
#: (10^9 s is September 2001): some APIs send the delta. The Ingest API sends the Unix time.
_UNIX_TIME_FLOOR = 1e9
#: How far the server's clock (its ``Date`` header, whole seconds) may be from ours before
#: the reset is read against the server's clock instead: a window reset at 12:00:00 by the
#: server's clock is ``reset - date`` seconds after the answer, whatever our clock says.
CLOCK_SKEW_TOLERANCE = 2.0
#: How far *behind* the server's clock its ``Date`` may read with no skew at all, on top of
#: the tolerance: the header is cut to the whole second, servers refresh it about once a
#: second (uvicorn, nginx) and it travels before it is read. Such a lag is not our clock
#: running ahead: uvicorn's Date lagged 2.05 s under load, the reset was then read 2 s late
#: and the rate-limited run paced against it — 1.04 of the ideal time instead of 1.01
#: (bench/results/transport.md).
DATE_LAG = 3.0


@functools.lru_cache(maxsize=8)
def _http_date(value: str) -> float | None:
    """A ``Date`` header as Unix seconds (cached: consecutive answers share the second)."""
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class ServerClock:
    """How far the server's clock is ahead of ours, from its ``Date`` headers: the largest
    ``Date − now`` of the last :attr:`WINDOW` seconds.

    One answer's ``Date`` is cut to the whole second and lags by however long the server
    took to refresh it (uvicorn: once a second, 2 s and more under load), so one answer's
    ``Date − now`` is up to ~2 s below the true offset and moves by as much from answer to
    answer. A reset read against each answer's own ``Date`` moved with it, by more than
    ``upload.RESET_SLACK``, and the pacer took the later ones for new windows. The largest
    difference is the least lagging one: within a second of the truth after a few answers,
    and steady. The window forgets a clock that has been set since.
    """

    WINDOW = 60.0

    def __init__(self) -> None:
        # (when, offset), offsets decreasing: the window's largest first
        self._seen: collections.deque[tuple[float, float]] = collections.deque()

    def offset(self, date: float, now: float) -> float:
        """Take one answer's ``Date`` (Unix seconds) read at ``now``; the offset to use."""
        seen = self._seen
        offset = date - now
        while seen and seen[-1][1] <= offset:
            seen.pop()
        seen.append((now, offset))
        while seen[0][0] < now - self.WINDOW:
            seen.popleft()
        return seen[0][1]


def _reset(
    headers: Mapping[str, str], now: float | None, server: ServerClock | None = None
) -> tuple[float | None, str]:
    """``X-RateLimit-Reset`` as a Unix time on our clock, and a problem to report, if any."""
    value = headers.get("x-ratelimit-reset")
    if value is None:
        return None, ""
    try:
        reset = float(value)
    except ValueError:
        reset = math.nan
    if not math.isfinite(reset) or reset < 0:
        return None, (
            f"ignored an unreadable X-RateLimit-Reset header ({value[:40]!r}): pacing from "
            "X-RateLimit-Remaining and 429 answers only")
    now = time.time() if now is None else now
    if reset < _UNIX_TIME_FLOOR:
        return now + reset, ""
    date = headers.get("date")
    server_now = _http_date(date) if date else None
    if server_now is None:
        return reset, ""
    offset = server.offset(server_now, now) if server is not None else server_now - now
    if not -(CLOCK_SKEW_TOLERANCE + DATE_LAG) <= offset <= CLOCK_SKEW_TOLERANCE:
        return reset - offset, ""
    return reset, ""


def parse_rate(
    headers: Mapping[str, str], now: float | None = None, server: ServerClock | None = None
) -> RateInfo:
    """The rate-limit headers of an answer; ``now`` is this machine's clock (default: time);
    ``server`` the connection's :class:`ServerClock` (without it, each answer's own ``Date``
    is taken at its word)."""
    reset, problem = _reset(headers, now, server)
    return RateInfo(
        limit=_int_header(headers, "x-ratelimit-limit"),
        remaining=_int_header(headers, "x-ratelimit-remaining"),
        reset=reset,
        retry_after=_retry_after(headers, now),
        problem=problem,
    )


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug[:40] or "rejected"


def _item_error(errors: Any, fallback: str = "rejected by the API") -> ItemOutcome:
    """``{"_email": ["Invalid format"]}`` → code ``invalid_format``, field ``_email``."""
    if isinstance(errors, Mapping) and errors:
        parts = []
        for name, messages in errors.items():
            msgs = messages if isinstance(messages, list) else [messages]
            parts.append(f"{name}: {'; '.join(str(m) for m in msgs)}")
        field, first = next(iter(errors.items()))
        first_msg = first[0] if isinstance(first, list) and first else first
        return ItemOutcome(
            ok=False, code=_slug(str(first_msg)), field=str(field), message=" | ".join(parts)
        )
    if isinstance(errors, str) and errors:
        return ItemOutcome(ok=False, code=_slug(errors), message=errors)
    return ItemOutcome(ok=False, code="rejected", message=fallback)


_STATUS = operator.itemgetter("status")
_EVENT_ID = operator.itemgetter("_event_id")
_USER_ID = operator.itemgetter("_user_id")


def _all_accepted(items: list[Any], keys: Sequence[str], content: bytes) -> bool:
    """True when every item says ``success``, none is flagged a duplicate, and each echoes its
    own id at its own position — nearly every answer of a run, checked without a Python loop
    per item (``map`` with ``itemgetter`` runs in C). Anything else: the careful path decides.
    """
    # No item can carry a "duplicate" flag if the word is nowhere in the body (\u escapes
    # could spell it otherwise: then look item by item).
    if b"duplicate" in content or b"\\u" in content:
        return False
    try:
        if list(map(_STATUS, items)).count("success") != len(items):
            return False
        try:
            echoed = list(map(_EVENT_ID, items))
        except KeyError:
            echoed = list(map(_USER_ID, items))
    except (TypeError, KeyError):  # an item that is not an object, or without an id
        return False
    return echoed == list(keys)


def _docs_items(
    entity: Mapping[str, Any], keys: Sequence[str], content: bytes = b"\\u"
) -> tuple[ItemOutcome, ...] | None:
    items = entity.get("items")
    if not isinstance(items, list) or len(items) != len(keys):
        return None
    if _all_accepted(items, keys, content):
        return (ACCEPTED,) * len(items)
    # Item by item: some failed, some are duplicates, or the ids need a closer look.
    out: list[ItemOutcome] = []
    for item, key in zip(items, keys, strict=True):
        if type(item) is not dict:
            return None
        echoed = item.get("_event_id", item.get("_user_id"))
        if echoed is not None and echoed != key and str(echoed) != key:
            return _items_by_id(items, keys)
        if item.get("status") == "success":
            out.append(_DUPLICATE if item.get("duplicate") else ACCEPTED)
        else:
            out.append(_item_error(item.get("errors") or item.get("message")))
    return tuple(out)


def _echoed_id(item: Any) -> str | None:
    if type(item) is not dict:
        return None
    value = item.get("_event_id", item.get("_user_id"))
    return str(value) if value is not None else None


def _items_by_id(items: list[Any], keys: Sequence[str]) -> tuple[ItemOutcome, ...] | None:
    """Position and echoed id disagree: trust the ids if they identify every item once."""
    echoed = [_echoed_id(it) for it in items]
    if len(set(keys)) != len(keys) or sorted(e or "" for e in echoed) != sorted(keys):
        return None
    where = {e: item for e, item in zip(echoed, items, strict=True)}
    reordered = [dict(where[k]) for k in keys]
    return _docs_items({"items": reordered}, keys)


def _activepieces_items(body: Mapping[str, Any], n: int) -> tuple[ItemOutcome, ...] | None:
    """``{success, entitiesSuccess, errors[{position, …}], accepted[{position, item}]}``."""
    accepted = body.get("accepted")
    errors = body.get("errors")
    if not isinstance(accepted, list) or not isinstance(errors, list):
        return None
    outcomes: list[ItemOutcome | None] = [None] * n
    for entry in accepted:
        pos = entry.get("position") if isinstance(entry, Mapping) else None
        if isinstance(pos, int) and 0 <= pos < n:
            dup = isinstance(entry, Mapping) and bool(entry.get("duplicate"))
            outcomes[pos] = _DUPLICATE if dup else ACCEPTED
    for entry in errors:
        pos = entry.get("position") if isinstance(entry, Mapping) else None
        if isinstance(pos, int) and 0 <= pos < n and isinstance(entry, Mapping):
            outcomes[pos] = _item_error(entry.get("errors") or entry.get("message"))
    missing = ItemOutcome(
        ok=False, code="no_outcome", message="the API answered without this item", retryable=True
    )
    return tuple(o if o is not None else missing for o in outcomes)


def _parse_items(content: bytes, keys: Sequence[str]) -> tuple[ItemOutcome, ...] | None:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, Mapping):
        return None
    entity = body.get("entity")
    if isinstance(entity, Mapping):
        return _docs_items(entity, keys, content)
    return _activepieces_items(body, len(keys))


def _message(content: bytes) -> str:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content[:200].decode("utf-8", "replace")
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return str(body["message"])
    return content[:200].decode("utf-8", "replace")


def interpret(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    keys: Sequence[str],
    *,
    now: float | None = None,
    server: ServerClock | None = None,
) -> BatchResponse:
    """The one place that knows what a batch response means."""
    rate = parse_rate(headers, now, server)
    request_id = headers.get("x-request-id")

    def verdict(
        v: Verdict, message: str = "", items: tuple[ItemOutcome, ...] = ()
    ) -> BatchResponse:
        return BatchResponse(v, status, items, rate, request_id, message)

    if status in (200, 201, 202, 422):
        items = _parse_items(content, keys)
        if items is None:
            return verdict(Verdict.RETRY, f"unreadable {status} response body")
        return verdict(Verdict.ITEMS, items=items)
    if status in (400, 413):
        return verdict(Verdict.SPLIT, _message(content))
    if status == 401:
        return verdict(Verdict.AUTH, _message(content))
    if status == 404:
        return verdict(Verdict.NOT_FOUND, _message(content))
    if status == 429:
        return verdict(Verdict.RATE)
    if status >= 500 or status == 408:
        return verdict(Verdict.RETRY, f"HTTP {status}")
    return verdict(Verdict.FAILED, f"HTTP {status}: {_message(content)}")


@dataclass(frozen=True, slots=True)
class RawResponse:
    """A batch's answer: what :func:`interpret` needs (header names lower-case)."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes


class ApiClient:
    """Requests to one datasource, on keep-alive connections. The token is only a header.

    Requests go through httpx's own transport (httpcore): 1xx answers skipped, compressed
    answers decoded, happy eyeballs, proxies (HTTP, and HTTPS through CONNECT). It never
    re-sends a request that left the machine, so every attempt the uploader counts is one
    request the server may have seen, and every re-send is the uploader's, paced and backed
    off. The proxy and the trust store are decided once (:mod:`importer.network`); httpx does
    not read the environment again (``trust_env``). Tests pass ``transport`` (an
    ``httpx.ASGITransport``) to talk to an in-process sandbox.

    One transport (one connection) per request in flight, each lent to one request at a
    time, rather than one pool holding them all: httpcore's pool re-checks every connection it
    holds on every request (a poll of each socket), which at 32 requests in flight cost ~4×
    the CPU per request of a pool that holds one (bench/results/transport.md).

    Requests go to the transport as ``httpx.Request`` objects, not through an
    ``httpx.AsyncClient``: what the client adds on top of the transport — merging a path with
    its base URL, cookie jars, auth flows, redirects, event hooks, the proxy mount — is either
    unused here or decided once above (the proxy: :func:`importer.network.resolve_route`, as
    the client's own ``proxy=`` did), and cost ~0.3 ms of the event loop's thread a request,
    a fifth to a quarter of what a request cost it (bench/results/transport.md). The
    transport is the one an ``AsyncClient`` builds (``httpx.AsyncHTTPTransport``), with the
    same settings.
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        timeout: float = 30.0,
        max_connections: int = 64,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.credentials = credentials
        self.route = resolve_route(credentials.api_url, credentials.network)
        self._headers = httpx.Headers({
            "Authorization": f"Bearer {credentials.token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            # Small JSON answers: compressing them costs more than it saves (an answer
            # compressed all the same is decoded by httpx).
            "Accept-Encoding": "identity",
            "Connection": "keep-alive",
            "User-Agent": USER_AGENT,
        })
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0)).as_dict()
        self._base = credentials.base_url
        # Tests pass one in-process transport (``httpx.ASGITransport``) for every request.
        self._given = transport
        self._new_transport = functools.partial(
            httpx.AsyncHTTPTransport,
            verify=ssl_context(credentials.network.ca_bundle, credentials.api_url),
            proxy=self.route.proxy_url,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            trust_env=False,
        )
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[httpx.AsyncBaseTransport] = []  # the most recently used last
        self._transports: list[httpx.AsyncBaseTransport] = []
        self._urls: dict[str, httpx.URL] = {}  # the batch endpoints, parsed once
        self.server_clock = ServerClock()  # read X-RateLimit-Reset against (parse_rate)

    async def _request(self, method: str, url: httpx.URL | str,
                       content: bytes | None = None) -> httpx.Response:
        """One request, its answer read in full; a ``str`` is a path below the base URL."""
        if isinstance(url, str):
            url = httpx.URL(self._base + url)
        request = httpx.Request(method, url, headers=self._headers, content=content,
                                extensions={"timeout": self._timeout})
        async with self._slots:
            transport = self._given or (self._idle.pop() if self._idle else self._open())
            try:
                response = await transport.handle_async_request(request)
                response.request = request
                try:
                    await response.aread()
                finally:
                    await response.aclose()
                return response
            finally:
                if self._given is None:
                    self._idle.append(transport)

    def _open(self) -> httpx.AsyncBaseTransport:
        transport = self._new_transport()
        self._transports.append(transport)
        return transport

    async def post_items(self, target: str, body: bytes) -> RawResponse:
        """POST one batch to ``/stream/{target}``."""
        response = await self._request("POST", self._batch_url(target), body)
        return RawResponse(response.status_code, response.headers, response.content)

    def _batch_url(self, target: str) -> httpx.URL:
        """The URL of a batch endpoint, parsed once (~20 µs a parse)."""
        url = self._urls.get(target)
        if url is None:
            url = self._urls[target] = httpx.URL(f"{self._base}/stream/{target}")
        return url

    async def delete_contact(self, user_id: str) -> httpx.Response:
        return await self._request("DELETE",
                                   f"/stream/contacts/{contact_path_segment(user_id)}")

    async def get(self, path: str) -> httpx.Response:
        return await self._request("GET", path)

    async def aclose(self) -> None:
        for transport in self._transports:
            await transport.aclose()
        self._transports.clear()
        self._idle.clear()


def contact_path_segment(user_id: str) -> str:
    """``user_id`` as one URL path segment: every reserved byte percent-encoded.

    The ids ``.`` and ``..`` need more: httpx (like any RFC 3986 client) resolves such dot
    segments, so ``DELETE /stream/contacts/..`` would go out as ``DELETE /stream``. Encoded as
    ``%2E`` they stay an id.
    """
    if user_id in (".", ".."):
        return "%2E" * len(user_id)
    return quote(user_id, safe="")


def auth_message(status: int, credentials: Credentials) -> str:
    """Say which of the two fatal refusals it was, and what to check (never the token)."""
    if status == 401:
        return (
            "the API refused the token (401): it is missing, malformed or revoked — "
            "check INSTASENT_TOKEN (or --token-file); tokens are shown once in the dashboard"
        )
    return (
        f"project {credentials.project!r} / datasource {credentials.datasource!r} not found "
        "for this token (404) — check INSTASENT_PROJECT and INSTASENT_DATASOURCE"
    )
