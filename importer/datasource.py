"""What ``check``, ``specs`` and ``delete`` share: reading the API's endpoints.

Reading endpoints (``GET /stream``, the specs) go through :func:`get_json`, which turns every
way a request can fail into one :class:`~importer.exceptions.FatalApiError` whose message
says which it was and what to do (exit code 1 for all of them, DESIGN.md)::

    FatalApiError
    ├── AuthError              401: the token                          kind "token"
    ├── NotFoundError          404: the project / datasource ids       kind "ids"
    ├── ConnectionProblem      no HTTP answer at all                   kind "dns" | "refused" |
    │                                                                  "timeout" | "tls" |
    │                                                                  "connection" | "proxy"
    └── UnexpectedResponse     an answer the Ingest API does not give  kind "unexpected" |
                               (or 5xx / 429 on every attempt)         "server" | "rate_limited"

``check`` is in check.py, ``delete`` in delete.py, the spec endpoints in speccheck.py.
"""


from __future__ import annotations

import asyncio
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from importer.client import ApiClient, RateInfo, auth_message, parse_rate
from importer.config import Credentials
from importer.exceptions import (
    AuthError,
    ConfigError,
    FatalApiError,
    ImporterError,
    NotFoundError,
    UsageError,
)
from importer.redaction import redact
from importer.upload import (
    RatePacer,
    UploadSettings,
    backoff_delay,
)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

#: Attempts of a read (``GET /stream``, specs) on 5xx, 429 and dropped connections.
READ_ATTEMPTS = 3


# ───────────────────────────── errors ─────────────────────────────


class ConnectionProblem(FatalApiError):
    """No HTTP answer: DNS, refused, timeout, TLS or a dropped connection (``kind``)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class UnexpectedResponse(FatalApiError):
    """An answer the Ingest API does not give, or 5xx/429 on every attempt (``kind``)."""

    def __init__(self, message: str, status: int | None, kind: str = "unexpected") -> None:
        super().__init__(message, status)
        self.kind = kind


def problem_kind(exc: ImporterError) -> str:
    """A short, stable name for what went wrong (``check --output json``)."""
    if isinstance(exc, AuthError):
        return "token"
    if isinstance(exc, NotFoundError):
        return "ids"
    if isinstance(exc, ConnectionProblem | UnexpectedResponse):
        return exc.kind
    if isinstance(exc, ConfigError):
        return "config"
    if isinstance(exc, UsageError):
        return "usage"
    return "error"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _endpoint(api_url: str) -> tuple[str, str]:
    """``(host, host:port)`` of the API URL, for messages."""
    parts = urlsplit(api_url)
    host = parts.hostname or api_url
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return host, f"{host}:{port}"


def connection_problem(
    exc: httpx.TransportError, api_url: str, timeout: float, *, proxy: str | None = None
) -> ConnectionProblem:
    """Say which of the ways to get no answer this was, naming the host and a remedy.
    ``proxy``: the proxy in use, as :meth:`Route.describe_proxy` shows it (no credentials)."""
    host, where = _endpoint(api_url)
    causes = list(_causes(exc))
    verify = next((c for c in causes if isinstance(c, ssl.SSLCertVerificationError)), None)
    tls = next((c for c in causes if isinstance(c, ssl.SSLError)), None)
    dns = next((c for c in causes if isinstance(c, socket.gaierror)), None)
    if verify is not None:
        return ConnectionProblem(
            f"TLS handshake with {where} failed: its certificate is not trusted "
            f"({verify.verify_message or verify.reason}) — if a proxy inspects HTTPS on this "
            "network, pass its CA certificate with --ca-bundle (or SSL_CERT_FILE); otherwise "
            f"check INSTASENT_API_URL ({api_url})", "tls")
    if proxy is not None and tls is None:
        # Every connection goes to the proxy: its refusals and failures are about it.
        if isinstance(exc, httpx.ProxyError):
            return ConnectionProblem(
                f"the proxy {proxy} would not connect to {where} ({exc}) — check the proxy "
                "setting (--proxy, HTTPS_PROXY, ALL_PROXY, NO_PROXY) and its credentials",
                "proxy")
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return ConnectionProblem(
                f"cannot reach the proxy {proxy} ({type(exc).__name__}: {exc}) — check the "
                "proxy setting (--proxy, HTTPS_PROXY, ALL_PROXY), or add the API host to "
                "NO_PROXY if it is reachable directly", "proxy")
    if tls is not None:
        reason = tls.reason or type(tls).__name__
        hint = ""
        if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST"):
            hint = ": the server there does not speak HTTPS on that port"
        return ConnectionProblem(
            f"TLS handshake with {where} failed ({reason}){hint} — check INSTASENT_API_URL "
            f"({api_url}): https:// for the Instasent API, http:// only for a local sandbox",
            "tls")
    if dns is not None:
        return ConnectionProblem(
            f"cannot resolve the host {host!r} (DNS lookup failed: {dns.strerror}) — check the "
            f"host name in INSTASENT_API_URL ({api_url}) and this machine's network and DNS",
            "dns")
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return ConnectionProblem(
            f"connection refused by {where}: nothing is listening there — check "
            f"INSTASENT_API_URL ({api_url}); for the local sandbox, start it with "
            "`instasent-import sandbox`", "refused")
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return ConnectionProblem(
            f"no connection to {where} within {timeout:g} s (connect timeout) — the host may "
            "be down or a firewall may drop the traffic; check the network, or raise --timeout",
            "timeout")
    if isinstance(exc, httpx.TimeoutException):
        return ConnectionProblem(
            f"{where} accepted the connection but sent no answer within {timeout:g} s "
            f"({type(exc).__name__}) — the API may be overloaded; try again, or raise --timeout",
            "timeout")
    if isinstance(exc, httpx.ConnectError):
        return ConnectionProblem(
            f"cannot connect to {where} ({exc}) — check INSTASENT_API_URL ({api_url}) and the "
            "network", "connection")
    return ConnectionProblem(
        f"{where} closed the connection without an answer ({type(exc).__name__}) — try again; "
        "if it persists, check INSTASENT_API_URL and any proxy in between", "connection")


def _retry_transport(exc: httpx.TransportError) -> bool:
    """Worth another attempt: a dropped connection or a slow answer, not DNS/refused/TLS."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return False
    return isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.ProtocolError)


def _server_message(response: httpx.Response, token: str) -> str:
    """The API's own words, minus the token should an error page echo the request headers:
    redacted before the excerpt is cut, so a token cut in half cannot slip through."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        text = str(body["message"])
    else:
        return _excerpt(response.content, 120, token)
    return " ".join(redact(text, (token,)).split())


def _excerpt(content: bytes, size: int, token: str) -> str:
    """The start of a body, redacted *before* it is cut: a token cut in half is no token
    to a later redaction."""
    text = redact(content[:4096].decode("utf-8", "replace"), (token,))
    return " ".join(text.split())[:size]


def not_found_message(credentials: Credentials) -> str:
    return (
        f"{auth_message(404, credentials)} (and that INSTASENT_API_URL, now "
        f"{credentials.api_url}, is the API root ending in /v1)"
    )


# ───────────────────────────── reading endpoints ─────────────────────────────


@dataclass(frozen=True, slots=True)
class Fetched:
    """A JSON answer and the rate-limit headers it came with."""

    body: Any
    status: int
    rate: RateInfo


@dataclass(frozen=True, slots=True)
class Timing:
    """Injectable clock, sleep and randomness, so retry tests never really wait."""

    clock: Clock = time.time
    sleep: Sleep = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)


async def get_json(
    client: ApiClient,
    path: str,
    *,
    attempts: int = READ_ATTEMPTS,
    settings: UploadSettings = UploadSettings(),
    pacer: RatePacer | None = None,
    timing: Timing | None = None,
    missing_ok: bool = False,
    timeout: float = 30.0,
) -> Fetched | None:
    """``GET path`` (below the datasource's base URL) and its JSON body.

    5xx, 429 and dropped connections are tried ``attempts`` times (a 429 waits for the
    window as the run does); 401/404 and DNS/refused/TLS failures are final. Returns None
    for a 404 when ``missing_ok``. Raises the errors in the module docstring.
    """
    timing = timing or Timing()
    pacer = pacer or RatePacer(clock=timing.clock, sleep=timing.sleep, rng=timing.rng,
                               jitter=settings.rate_jitter)
    creds = client.credentials
    for attempt in range(1, attempts + 1):
        last = attempt == attempts
        await pacer.acquire()
        try:
            response = await client.get(path)
        except httpx.TransportError as exc:
            pacer.failed()
            if last or not _retry_transport(exc):
                raise connection_problem(exc, creds.api_url, timeout,
                                         proxy=client.route.describe_proxy()
                                         if client.route.proxy_url else None) from None
            await timing.sleep(backoff_delay(settings, attempt, timing.rng))
            continue
        rate = parse_rate(response.headers, timing.clock(), client.server_clock)
        pacer.done(rate)
        status = response.status_code
        if 200 <= status < 300:
            return Fetched(_json_body(response, path, creds), status, rate)
        if status == 401:
            raise AuthError(auth_message(401, creds), 401)
        if status == 404:
            if missing_ok:
                return None
            raise NotFoundError(not_found_message(creds), 404)
        if status == 429 or status == 408 or status >= 500:
            if last:
                raise _unavailable(path, status, attempts)
            if status == 429:
                pacer.rate_limited(rate)
            else:
                if rate.retry_after is not None:  # a 503 saying when to come back
                    pacer.pause(rate.retry_after)
                await timing.sleep(backoff_delay(settings, attempt, timing.rng))
            continue
        raise UnexpectedResponse(
            f"GET {creds.base_url}{path} answered HTTP {status} "
            f"({_server_message(response, creds.token) or 'no message'}) — the Ingest API "
            f"does not answer that; check that INSTASENT_API_URL ({creds.api_url}) is the "
            "Instasent API", status)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _unavailable(path: str, status: int, attempts: int) -> UnexpectedResponse:
    if status == 429:
        return UnexpectedResponse(
            f"GET {path} was rate limited (429) {attempts} times in a row — another job may be "
            "using this datasource's budget; try again in a minute", status, "rate_limited")
    return UnexpectedResponse(
        f"GET {path} answered HTTP {status} {attempts} times in a row: the API is having "
        "trouble — try again in a few minutes", status, "server")


def _json_body(response: httpx.Response, path: str, creds: Credentials) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        shown = _excerpt(response.content, 60, creds.token)
        raise UnexpectedResponse(
            f"GET {creds.base_url}{path} answered {response.status_code} with a body that is "
            f"not JSON ({shown!r}) — check that INSTASENT_API_URL ({creds.api_url}) is the "
            "Instasent API, not a web page or a proxy", response.status_code) from None
