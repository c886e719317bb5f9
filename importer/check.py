"""``check``: whose token is this, and does it work? (``GET /stream``)

Public entry point: :func:`check_datasource` (``importer.check_datasource``). Failures raise
the :class:`~importer.exceptions.FatalApiError` family described in
:mod:`importer.datasource`; a :class:`DatasourceInfo` is only returned when the token works.
"""


from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import orjson

from importer.client import ApiClient, RateInfo
from importer.config import Credentials
from importer.datasource import Fetched, Timing, UnexpectedResponse, get_json
from importer.upload import (
    UploadSettings,
)

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

    @property
    def exit_code(self) -> int:
        """0: the token works (a check that fails raises instead)."""
        return 0

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
    credentials: Credentials | None = None,
    *,
    timeout: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> DatasourceInfo:
    """``GET /stream``: who the token belongs to (``credentials``, default the ``INSTASENT_*``
    environment), or exactly what is wrong.

    Returns a :class:`DatasourceInfo` (``exit_code`` 0). Raises
    :class:`~importer.exceptions.ConfigError` (exit 2) when settings are missing, and a
    :class:`~importer.exceptions.FatalApiError` (exit 1: ``AuthError``, ``NotFoundError``,
    ``ConnectionProblem``, ``UnexpectedResponse``) whose message says what to fix.
    """
    return asyncio.run(acheck_datasource(credentials or Credentials.resolve(), timeout=timeout,
                                         transport=transport))


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
