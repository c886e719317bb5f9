"""The datasource workflow around a run: ``check`` (whose token is this, and does it work?)
and ``delete`` (remove contacts by ``_user_id``). The spec endpoints are in speccheck.py.

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

``delete`` sends one ``DELETE /stream/contacts/{id}`` per distinct id, concurrently and paced
with the run's machinery (:class:`~importer.upload.RatePacer`,
:class:`~importer.upload.AdaptiveLimit`, :func:`~importer.upload.backoff_delay`); HTTP
meaning comes from :func:`~importer.client.interpret`. The 404 rule: the datasource is
verified with ``GET /stream`` before the first DELETE, so a 404 on a DELETE whose message
names a contact means "no such contact" (``already_absent``, not a failure); one whose message
names the project or datasource stops the run; a 404 that names neither is settled by asking
``GET /stream`` once more.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random
import socket
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson
import polars as pl

from importer import __version__
from importer.client import ApiClient, RateInfo, Verdict, auth_message, interpret, parse_rate
from importer.config import Credentials
from importer.exceptions import (
    AuthError,
    ConfigError,
    FatalApiError,
    ImporterError,
    InputError,
    InternalError,
    NotFoundError,
    UsageError,
)
from importer.mapping.casts import as_text
from importer.mapping.options import did_you_mean
from importer.records import RESERVED_SOURCE_COLUMNS, SOURCE_FILE, SOURCE_ROW, Reject
from importer.redaction import hidden, redact
from importer.rejects import RejectsFormat, default_rejects_path, open_rejects
from importer.report import EXIT_ABORTED, EXIT_OK, EXIT_REJECTS, EXIT_RETRYABLE
from importer.sources import ReadOptions, SourceFile, iter_batches, resolve_inputs
from importer.storage import check_file
from importer.upload import (
    MAX_RATE_LIMITED_WAITS,
    AdaptiveLimit,
    RatePacer,
    UploadSettings,
    UploadStats,
    backoff_delay,
)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

#: Attempts of a read (``GET /stream``, specs) on 5xx, 429 and dropped connections.
READ_ATTEMPTS = 3
#: The column name of ids given with ``--ids`` (in their rejects file).
IDS_COLUMN = "_user_id"
IDS_SOURCE = "--ids"
DEFAULT_IDS_REJECTS = "instasent-delete.rejects.csv"


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
        rate = parse_rate(response.headers, timing.clock())
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


# ───────────────────────────── check ─────────────────────────────


@dataclass(frozen=True, slots=True)
class DatasourceInfo:
    """What ``GET /stream`` says about the token's datasource."""

    api_url: str
    organization: str
    project: str
    datasource: str
    usage: Mapping[str, Any]  # the ``stream`` object: recent usage, as the API gives it
    rate: RateInfo = RateInfo()
    raw: Mapping[str, Any] = field(default_factory=dict)
    proxy: str = ""  # the proxy requests go through (host:port and why), never credentials
    ca: str = ""  # where the trusted CA certificates come from

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "api_url": self.api_url,
            "organization": self.raw.get("organization"),
            "project": self.raw.get("project"),
            "datasource": self.raw.get("datasource"),
            "stream": self.raw.get("stream"),
            "rate_limit": {k: v for k, v in asdict(self.rate).items()
                           if v is not None and k != "problem"},
            "proxy": self.proxy,
            "ca": self.ca,
        }


def _name(value: Any, fallback: str = "") -> str:
    """``{"id": "o1", "name": "Acme"}`` → ``Acme (o1)``; a plain value as text."""
    if isinstance(value, Mapping):
        name = value.get("name") or value.get("displayName") or value.get("title")
        ident = value.get("uid") or value.get("id")
        kind = value.get("type")
        text = str(name or ident or fallback)
        if ident is not None and name and str(ident) != str(name):
            text += f" ({ident})"
        if kind:
            text += f" [{kind}]"
        return text
    return str(value) if value not in (None, "") else fallback


def parse_stream(body: Any, fetched: Fetched, credentials: Credentials) -> DatasourceInfo:
    keys = ("organization", "project", "datasource", "stream")
    if not isinstance(body, dict) or not any(k in body for k in keys):
        raise UnexpectedResponse(
            f"GET {credentials.base_url}/stream answered {fetched.status} but not with the "
            "Ingest API's metadata (organization, project, datasource, stream) — check that "
            f"INSTASENT_API_URL ({credentials.api_url}) is the Instasent API", fetched.status)
    stream = body.get("stream")
    return DatasourceInfo(
        api_url=credentials.api_url,
        organization=_name(body.get("organization"), "?"),
        project=_name(body.get("project"), credentials.project),
        datasource=_name(body.get("datasource"), credentials.datasource),
        usage=stream if isinstance(stream, Mapping) else {},
        rate=fetched.rate,
        raw=body,
    )


async def fetch_stream(
    client: ApiClient,
    *,
    timeout: float = 30.0,
    settings: UploadSettings = UploadSettings(),
    timing: Timing | None = None,
) -> DatasourceInfo:
    fetched = await get_json(client, "/stream", settings=settings, timing=timing,
                             timeout=timeout)
    assert fetched is not None  # not missing_ok: a 404 raised
    return parse_stream(fetched.body, fetched, client.credentials)


async def acheck_datasource(
    credentials: Credentials,
    *,
    timeout: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
    timing: Timing | None = None,
) -> DatasourceInfo:
    """``GET /stream``: who the token belongs to, or exactly what is wrong (raises)."""
    client = ApiClient(credentials, timeout=timeout, max_connections=1, transport=transport)
    try:
        info = await fetch_stream(client, timeout=timeout, timing=timing)
        return dataclasses.replace(info, proxy=client.route.describe_proxy(),
                                   ca=client.route.ca_source)
    finally:
        await client.aclose()


def check_datasource(
    credentials: Credentials,
    *,
    timeout: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> DatasourceInfo:
    """Synchronous :func:`acheck_datasource`."""
    return asyncio.run(acheck_datasource(credentials, timeout=timeout, transport=transport))


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out += _flatten(value, name + ".")
        else:
            out.append((name, value))
    return out


def _show(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return orjson.dumps(value).decode()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return str(value)


def render_info(info: DatasourceInfo, *, now: float | None = None) -> str:
    """The table ``instasent-import check`` prints."""
    lines = [
        f"OK: the token works for this datasource ({info.api_url})",
        f"{'organization':<14}{info.organization}",
        f"{'project':<14}{info.project}",
        f"{'datasource':<14}{info.datasource}",
    ]
    rate = info.rate
    if rate.limit is not None:
        text = f"{rate.limit:,} requests per window per endpoint"
        if rate.remaining is not None:
            text += f", {rate.remaining:,} left"
        if rate.reset is not None:
            left = rate.reset - (time.time() if now is None else now)
            text += f", window resets in {max(left, 0):.0f} s"
        lines.append(f"{'rate limit':<14}{text}")
    if info.proxy:
        lines.append(f"{'proxy':<14}{info.proxy}")
    if info.ca:
        lines.append(f"{'CA':<14}{info.ca}")
    usage = _flatten(info.usage)
    if usage:
        width = max(len(k) for k, _ in usage) + 4
        lines.append("recent usage")
        lines += [f"  {k:<{width}}{_show(v)}" for k, v in usage]
    return "\n".join(lines)


# ───────────────────────────── delete: the ids ─────────────────────────────


@dataclass(frozen=True, slots=True)
class DeletePlan:
    """The ids to delete, distinct and in input order, with where each came from.

    ``requested`` counts every id row read (blank and repeated ones too); ``local_rejects``
    are rows that cannot be sent: unreadable lines and blank ids.
    """

    ids: tuple[str, ...]
    origins: tuple[tuple[str, int], ...]  # (source file, source row) of each id's first row
    column: str
    requested: int
    duplicates: int = 0
    local_rejects: tuple[Reject, ...] = ()
    sources: tuple[SourceFile, ...] = ()  # () for --ids
    read: ReadOptions = ReadOptions()

    @property
    def described(self) -> str:
        if not self.sources:
            return "given with --ids"
        files = ", ".join(s.path for s in self.sources)
        return f"from column {self.column!r} of {files}"


def plan_from_ids(ids: Sequence[str]) -> DeletePlan:
    """Ids given on the command line (``--ids A,B,C``); blanks are ignored, repeats counted."""
    given = [i for i in ids if i.strip()]
    if not given:
        raise UsageError("--ids lists no id — give at least one, e.g. --ids C001,C002")
    distinct = list(dict.fromkeys(given))
    first = {v: n for n, v in reversed(list(enumerate(given, start=1)))}
    return DeletePlan(
        ids=tuple(distinct),
        origins=tuple((IDS_SOURCE, first[v]) for v in distinct),
        column=IDS_COLUMN,
        requested=len(given),
        duplicates=len(given) - len(distinct),
    )


def plan_from_files(
    inputs: Sequence[str], column: str, read: ReadOptions = ReadOptions()
) -> DeletePlan:
    """Ids from ``column`` of the input files (any format the sources read).

    Ids are sent verbatim, as a run would send them as ``_user_id`` (a Parquet integer as its
    decimal text); a blank cell becomes a ``required_missing`` reject.
    """
    sources = tuple(resolve_inputs(inputs, read))
    for source in sources:
        if column not in source.columns:
            usable = [c for c in source.columns if c not in RESERVED_SOURCE_COLUMNS]
            raise InputError(
                source.path, f"has no column {column!r}{did_you_mean(column, usable)}",
                f"pass --column with one of: {', '.join(usable[:12])}")
    collector = _IdCollector(column)
    for source in sources:
        for batch in iter_batches(source, read):
            collector.add(batch.frame, batch.rejects)
    return DeletePlan(
        ids=tuple(collector.ids),
        origins=tuple(collector.origins),
        column=column,
        requested=collector.requested,
        duplicates=collector.duplicates,
        local_rejects=tuple(collector.rejects),
        sources=sources,
        read=read,
    )


class _IdCollector:
    def __init__(self, column: str) -> None:
        self.column = column
        self.ids: list[str] = []
        self.origins: list[tuple[str, int]] = []
        self.seen: set[str] = set()
        self.requested = 0
        self.duplicates = 0
        self.rejects: list[Reject] = []

    def add(self, frame: pl.DataFrame, unreadable: Sequence[Reject]) -> None:
        self.requested += frame.height + len(unreadable)
        self.rejects += unreadable
        text = as_text(pl.col(self.column), frame.schema[self.column])
        blank = text.is_null() | text.str.contains(r"^\s*$")
        picked = frame.select(SOURCE_FILE, SOURCE_ROW, text.alias("id"), blank.alias("blank"))
        blanks = picked["blank"]
        if blanks.any():
            self.rejects += _blank_rejects(frame.filter(blanks), self.column)
        for file, row, user_id in picked.filter(~blanks).select(
            SOURCE_FILE, SOURCE_ROW, "id"
        ).iter_rows():
            if user_id in self.seen:
                self.duplicates += 1
                continue
            self.seen.add(user_id)
            self.ids.append(user_id)
            self.origins.append((file, row))


def _blank_rejects(rows: pl.DataFrame, column: str) -> list[Reject]:
    keep = [c for c in rows.columns if c not in RESERVED_SOURCE_COLUMNS]
    return [
        Reject(
            source_file=rec[SOURCE_FILE],
            source_row=rec[SOURCE_ROW],
            stage="map",
            code="required_missing",
            field=column,
            message=f"column {column!r} is empty: there is no _user_id to delete — fill it "
                    "in, or drop the row",
            values={c: rec[c] for c in keep},
        )
        for rec in rows.iter_rows(named=True)
    ]


# ───────────────────────────── delete: sending ─────────────────────────────


@dataclass(frozen=True, slots=True)
class _Outcome:
    kind: Literal["deleted", "absent", "failed"]
    status: int | None
    attempts: int
    code: str = ""
    message: str = ""
    retryable: bool = False


def _classify_404(message: str) -> str:
    """``contact`` (already absent), ``datasource`` (fatal) or ``unknown``."""
    low = message.lower()
    if "contact" in low:
        return "contact"
    if "datasource" in low or "project" in low:
        return "datasource"
    return "unknown"


ProgressCallback = Callable[[int, int], None]  # (ids answered, ids to send)


class _Deleter:
    """Sends one DELETE per id: paced, concurrent, retried; stops on 401 / datasource 404."""

    def __init__(
        self,
        client: ApiClient,
        settings: UploadSettings,
        timing: Timing,
        timeout: float,
        progress: ProgressCallback | None,
    ) -> None:
        self._client = client
        self.settings = settings
        self._timing = timing
        self._timeout = timeout
        self._progress = progress
        self.limit = AdaptiveLimit(settings)
        self.pacer = RatePacer(clock=timing.clock, sleep=timing.sleep, rng=timing.rng,
                               jitter=settings.rate_jitter)
        self.stats = UploadStats()
        self.fatal: FatalApiError | None = None
        self._unknown_404: str | None = None  # how a 404 naming nothing was settled
        self._verify_lock = asyncio.Lock()
        self._answered = 0
        # ids the datasource no longer has (deleted or already absent), told as they come
        self.on_done: Callable[[Sequence[str]], None] | None = None

    async def run(self, ids: Sequence[str]) -> list[_Outcome | None]:
        """One outcome per id, None for an id never answered (the run stopped)."""
        results: list[_Outcome | None] = [None] * len(ids)
        positions = iter(range(len(ids)))  # shared: each index is taken by one worker

        async def worker() -> None:
            for i in positions:
                if self.fatal is not None:
                    return
                outcome = results[i] = await self._one(ids[i])
                if self.on_done is not None and outcome is not None and outcome.kind != "failed":
                    self.on_done((ids[i],))
                self._answered += 1
                if self._progress is not None:
                    self._progress(self._answered, len(ids))

        await asyncio.gather(*(worker() for _ in range(min(self.limit.cap, len(ids)))))
        return results

    def _stop(self, exc: FatalApiError) -> None:
        if self.fatal is None:
            self.fatal = exc

    async def _one(self, user_id: str) -> _Outcome | None:
        attempts = waits = 0
        while True:
            if self.fatal is not None:
                return None
            await self.limit.acquire()
            await self.pacer.acquire()
            attempts += 1
            self.stats.requests += 1
            try:
                response = await self._client.delete_contact(user_id)
            except httpx.TransportError as exc:
                self.pacer.failed()
                self.limit.release("fault")
                self.stats.statuses[type(exc).__name__] += 1
                if attempts >= self.settings.max_attempts:
                    return _gave_up(None, attempts, f"{type(exc).__name__} (no response)")
                await self._backoff(attempts)
                continue
            status = response.status_code
            self.stats.statuses[str(status)] += 1
            now = self._timing.clock()
            if 200 <= status < 300:
                self.pacer.done(parse_rate(response.headers, now))
                self.limit.release("ok")
                return _Outcome("deleted", status, attempts)
            answer = interpret(status, response.headers, response.content, (user_id,), now=now)
            self.pacer.done(answer.rate)
            if answer.verdict is Verdict.RATE:
                self.pacer.rate_limited(answer.rate)
                self.limit.release("throttled")
                self.stats.rate_limited += 1
                attempts -= 1  # a 429 does not consume the attempt budget (API.md §6)
                waits += 1
                if waits > MAX_RATE_LIMITED_WAITS:
                    return _gave_up(429, attempts, "still rate limited (429)")
                continue
            if answer.verdict is Verdict.RETRY:
                self.limit.release("fault")
                if attempts >= self.settings.max_attempts:
                    return _gave_up(status, attempts, answer.message or f"HTTP {status}")
                if answer.rate.retry_after is not None:  # a 503 saying when to come back
                    self.pacer.pause(answer.rate.retry_after)
                await self._backoff(attempts)
                continue
            self.limit.release("ok")
            message = redact(answer.message, (self._client.credentials.token,))
            return await self._settle(answer.verdict, status, message, attempts)

    async def _settle(
        self, verdict: Verdict, status: int, message: str, attempts: int
    ) -> _Outcome | None:
        creds = self._client.credentials
        if verdict is Verdict.AUTH:
            self._stop(AuthError(auth_message(401, creds), 401))
            return None
        if verdict is Verdict.NOT_FOUND:
            kind = _classify_404(message)
            if kind == "unknown":
                kind = await self._settle_unknown_404()
            if kind == "datasource":
                self._stop(NotFoundError(not_found_message(creds), 404))
                return None
            return _Outcome("absent", status, attempts)
        if verdict is Verdict.SPLIT:
            return _Outcome("failed", status, attempts, "bad_request", f"HTTP {status}: "
                            f"{message or 'bad request'}")
        return _Outcome("failed", status, attempts, f"http_{status}",
                        message or f"HTTP {status}")

    async def _settle_unknown_404(self) -> str:
        """A 404 naming neither contact nor datasource: ask ``GET /stream`` once per run."""
        async with self._verify_lock:
            if self._unknown_404 is None:
                try:
                    await fetch_stream(self._client, timeout=self._timeout,
                                       settings=self.settings, timing=self._timing)
                    self._unknown_404 = "contact"
                except FatalApiError as exc:
                    self._unknown_404 = "datasource"
                    self._stop(exc)
            return self._unknown_404

    async def _backoff(self, attempts: int) -> None:
        self.stats.retries += 1
        await self._timing.sleep(backoff_delay(self.settings, attempts, self._timing.rng))


def _gave_up(status: int | None, attempts: int, why: str) -> _Outcome:
    return _Outcome(
        "failed", status, attempts,
        "rate_limited" if status == 429 else "transport",
        f"gave up after {attempts} attempt(s): {why}", retryable=True,
    )


# ───────────────────────────── delete: report ─────────────────────────────


@dataclass(frozen=True, slots=True)
class DeleteReport:
    """``requested == deleted + already_absent + failed + duplicates + not_attempted``."""

    requested: int
    deleted: int
    already_absent: int
    failed: int
    retryable: int
    duplicates: int
    not_attempted: int
    requests: int
    retries: int
    rate_limited: int
    http_statuses: Mapping[str, int]
    failed_by_code: Mapping[str, int]
    duration_s: float
    datasource: str = ""
    rejects_path: str | None = None
    rerun: str | None = None  # the command that re-runs the failures
    aborted: str | None = None
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        """As for ``run``: 0 clean · 1 aborted · 3 permanent failures · 4 retryable left."""
        if self.aborted:
            return EXIT_ABORTED
        if self.retryable:
            return EXIT_RETRYABLE
        if self.failed:
            return EXIT_REJECTS
        return EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["http_statuses"] = dict(self.http_statuses)
        data["failed_by_code"] = dict(self.failed_by_code)
        data.update(duration_s=round(self.duration_s, 3), exit_code=self.exit_code)
        return data


def render_delete(report: DeleteReport) -> str:
    """The table on stderr after ``delete``."""
    rows = [
        ("ids requested", report.requested),
        ("  deleted", report.deleted),
        ("  already absent", report.already_absent),
        ("  failed", report.failed),
        ("  duplicates (sent once)", report.duplicates),
        ("  not attempted", report.not_attempted),
    ]
    lines = [f"{name:<26}{n:>10,}" for name, n in rows]
    for code, n in sorted(report.failed_by_code.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"{'    ' + code:<26}{n:>10,}")
    lines += [
        f"{'requests':<26}{report.requests:>10,}",
        f"{'  retries':<26}{report.retries:>10,}",
        f"{'  429 (rate limited)':<26}{report.rate_limited:>10,}",
        f"{'http statuses':<26}"
        + (", ".join(f"{k}: {v}" for k, v in sorted(report.http_statuses.items())) or "none"),
        f"{'duration':<26}{report.duration_s:>9.2f}s",
    ]
    if report.dry_run:
        lines.append("dry run: nothing was deleted")
    if report.rejects_path:
        lines.append(f"rejects file: {report.rejects_path}")
    if report.rerun:
        lines.append(f"re-run the failures: {report.rerun}")
    if report.aborted:
        lines.append(f"ABORTED: {report.aborted}")
    return "\n".join(lines)


# ───────────────────────────── delete: the job ─────────────────────────────


Confirm = Callable[[DatasourceInfo, int], bool]


@dataclass(frozen=True, slots=True)
class DeleteOptions:
    upload: UploadSettings = UploadSettings()
    timeout: float = 30.0
    rejects_path: str | None = None  # default: beside the first input (<name>.rejects.<ext>)
    dry_run: bool = False


async def adelete_contacts(
    plan: DeletePlan,
    credentials: Credentials,
    options: DeleteOptions = DeleteOptions(),
    *,
    confirm: Confirm | None = None,
    on_verified: Callable[[DatasourceInfo], None] | None = None,
    progress: ProgressCallback | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    timing: Timing | None = None,
    on_done: Callable[[Sequence[str]], None] | None = None,
) -> DeleteReport:
    """Verify the datasource (``GET /stream``; raises FatalApiError, nothing deleted), ask
    ``confirm(info, count)`` when given, then delete every id of ``plan``.

    A 401 or a datasource 404 *during* the deletes does not raise: the report says
    ``aborted`` and counts the ids never answered as ``not_attempted``. ``on_done`` hears
    each id the datasource no longer has (deleted or already absent) as its answer comes.
    """
    timing = timing or Timing()
    started = time.monotonic()
    settings = options.upload
    if not options.dry_run:  # failures are written at the end: check the path first
        check_file(_rejects_target(plan, options.rejects_path), "rejects file")
    client = ApiClient(
        credentials, timeout=options.timeout,
        max_connections=max(settings.concurrency or settings.max_concurrency, 1),
        transport=transport,
    )
    try:
        info = await fetch_stream(client, timeout=options.timeout, settings=settings,
                                  timing=timing)
        if on_verified is not None:
            on_verified(info)
        tally = _DeleteTally(plan)
        stats, fatal = UploadStats(), None
        if options.dry_run:
            tally.unsent(len(plan.ids))
        elif plan.ids and confirm is not None and not confirm(info, len(plan.ids)):
            tally.unsent(len(plan.ids))
            return tally.report(stats, started, info, None,
                                aborted="not confirmed: nothing was deleted")
        else:
            deleter = _Deleter(client, settings, timing, options.timeout, progress)
            deleter.on_done = on_done
            tally.outcomes(await deleter.run(plan.ids))
            stats, fatal = deleter.stats, deleter.fatal
    finally:
        await client.aclose()
    with hidden(credentials.token):  # a server's message in a reject may quote the token
        rejects_path = _write_rejects(plan, tally.rejects, options.rejects_path, credentials)
    return tally.report(stats, started, info, rejects_path,
                        aborted=str(fatal) if fatal is not None else None,
                        dry_run=options.dry_run)


def delete_contacts(
    plan: DeletePlan,
    credentials: Credentials,
    options: DeleteOptions = DeleteOptions(),
    *,
    confirm: Confirm | None = None,
    on_verified: Callable[[DatasourceInfo], None] | None = None,
    progress: ProgressCallback | None = None,
) -> DeleteReport:
    """Synchronous :func:`adelete_contacts`."""
    return asyncio.run(adelete_contacts(plan, credentials, options, confirm=confirm,
                                        on_verified=on_verified, progress=progress))


class _DeleteTally:
    def __init__(self, plan: DeletePlan) -> None:
        self.plan = plan
        self.counts: Counter[str] = Counter()
        self.by_code: Counter[str] = Counter()
        self.retryable = 0
        self.rejects: list[Reject] = list(plan.local_rejects)
        for reject in plan.local_rejects:
            self.by_code[reject.code] += 1
        self.counts["failed"] = len(plan.local_rejects)

    def unsent(self, n: int) -> None:
        self.counts["not_attempted"] += n

    def outcomes(self, outcomes: Sequence[_Outcome | None]) -> None:
        for i, outcome in enumerate(outcomes):
            if outcome is None:
                self.counts["not_attempted"] += 1
                continue
            self.counts[outcome.kind] += 1
            if outcome.kind == "failed":
                self.by_code[outcome.code] += 1
                self.retryable += outcome.retryable
                self.rejects.append(self._reject(i, outcome))

    def _reject(self, i: int, outcome: _Outcome) -> Reject:
        user_id = self.plan.ids[i]
        file, row = self.plan.origins[i]
        remedy = ("run the same delete on the rejects file later" if outcome.retryable else
                  "check the id, then run the same delete on the rejects file")
        return Reject(
            source_file=file,
            source_row=row,
            stage="transport" if outcome.code in ("transport", "rate_limited") else "api",
            code=outcome.code,
            field=self.plan.column,
            message=f"delete contact {user_id!r}: {outcome.message} — {remedy}",
            http_status=outcome.status,
            attempts=outcome.attempts,
            retryable=outcome.retryable,
            values={self.plan.column: user_id},  # the full row is looked up when written
        )

    def report(
        self,
        stats: UploadStats,
        started: float,
        info: DatasourceInfo,
        rejects_path: str | None,
        *,
        aborted: str | None = None,
        dry_run: bool = False,
    ) -> DeleteReport:
        c = self.counts
        report = DeleteReport(
            requested=self.plan.requested,
            deleted=c["deleted"],
            already_absent=c["absent"],
            failed=c["failed"],
            retryable=self.retryable,
            duplicates=self.plan.duplicates,
            not_attempted=c["not_attempted"],
            requests=stats.requests,
            retries=stats.retries,
            rate_limited=stats.rate_limited,
            http_statuses=dict(stats.statuses),
            failed_by_code=dict(self.by_code),
            duration_s=time.monotonic() - started,
            datasource=info.datasource,
            rejects_path=rejects_path,
            rerun=_rerun_command(self.plan, rejects_path),
            aborted=aborted,
            dry_run=dry_run,
        )
        accounted = (report.deleted + report.already_absent + report.failed
                     + report.duplicates + report.not_attempted)
        if accounted != report.requested:
            raise InternalError(
                "delete accounting broken (a bug — please report it): requested="
                f"{report.requested} but deleted + already_absent + failed + duplicates + "
                f"not_attempted = {accounted}")
        return report


def _rerun_command(plan: DeletePlan, rejects_path: str | None) -> str | None:
    if rejects_path is None:
        return None
    return f"instasent-import delete {rejects_path} --column {plan.column}"


# ───────────────────────────── delete: rejects file ─────────────────────────────


def _rejects_target(plan: DeletePlan, path: str | None) -> str:
    if path:
        return path
    if plan.sources:
        first = plan.sources[0]
        return str(default_rejects_path(first.path, first.format))
    return DEFAULT_IDS_REJECTS


def _write_rejects(
    plan: DeletePlan, rejects: list[Reject], path: str | None, credentials: Credentials
) -> str | None:
    """The run's rejects format: the source row verbatim, then the ``_reject_*`` columns."""
    if not rejects:
        return None
    target = _rejects_target(plan, path)
    if plan.sources:
        first = plan.sources[0]
        fmt: RejectsFormat = first.format
        columns: list[str] = []
        for s in plan.sources:
            columns += [c for c in s.columns if c not in columns]
        delimiter = first.delimiter or ","
        rejects = _with_source_values(plan, rejects)
    else:
        fmt, columns, delimiter = "csv", [IDS_COLUMN], ","
    meta = {
        "command": "delete",
        "column": plan.column,
        "inputs": [s.path for s in plan.sources] or [IDS_SOURCE],
        "datasource": f"{credentials.project}/{credentials.datasource}",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "tool": f"instasent-import {__version__} delete",
    }
    with open_rejects(target, source_columns=columns, fmt=fmt, delimiter=delimiter,
                      meta=meta) as writer:
        writer.write(sorted(rejects, key=lambda r: (r.source_file, r.source_row)))
    return target


def _with_source_values(plan: DeletePlan, rejects: list[Reject]) -> list[Reject]:
    """Fill API failures with their whole source row, read again (only rows that failed are
    kept, so a million-id delete never holds its file in memory)."""
    wanted: dict[str, set[int]] = {}
    for r in rejects:
        if r.stage in ("api", "transport"):
            wanted.setdefault(r.source_file, set()).add(r.source_row)
    if not wanted:
        return rejects
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for source in plan.sources:
        for batch in iter_batches(source, plan.read):
            frame = batch.frame
            hits = frame.filter(pl.any_horizontal(
                (pl.col(SOURCE_FILE) == f) & pl.col(SOURCE_ROW).is_in(sorted(rows))
                for f, rows in wanted.items()
            ))
            for rec in hits.iter_rows(named=True):
                key = (rec.pop(SOURCE_FILE), rec.pop(SOURCE_ROW))
                found.setdefault(key, {k: v for k, v in rec.items()
                                       if k not in RESERVED_SOURCE_COLUMNS})
    return [
        _replace_values(r, found.get((r.source_file, r.source_row)))
        if r.stage in ("api", "transport") else r
        for r in rejects
    ]


def _replace_values(reject: Reject, values: dict[str, Any] | None) -> Reject:
    if values is None:
        return reject
    return Reject(
        source_file=reject.source_file, source_row=reject.source_row, stage=reject.stage,
        code=reject.code, message=reject.message, field=reject.field,
        http_status=reject.http_status, attempts=reject.attempts, retryable=reject.retryable,
        values=values, raw_line=reject.raw_line,
    )


def read_ids_file_or_list(
    files: Sequence[str], column: str | None, ids: Sequence[str], read: ReadOptions
) -> DeletePlan:
    """The CLI's two ways to name ids; every usage problem is a UsageError (exit 2)."""
    if files and ids:
        raise UsageError("give ids either in FILE (with --column) or with --ids, not both")
    if ids:
        if column:
            raise UsageError("--column applies to FILE; --ids takes the ids themselves")
        return plan_from_ids([part.strip() for group in ids for part in group.split(",")])
    if not files:
        raise UsageError("name the contacts to delete: `delete FILE --column COLUMN` or "
                         "`delete --ids ID1,ID2`")
    if not column:
        raise UsageError(f"--column is required with FILE: the column of {files[0]} that "
                         "holds the _user_id values")
    return plan_from_files(files, column, read)
