"""Frozen settings objects, resolved once (flag > environment > default) and passed explicitly.

The token lives only in :class:`Credentials`, whose ``repr`` hides it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from importer.exceptions import ConfigError
from importer.network import Network, is_loopback, resolve_route

DEFAULT_API_URL = "https://api.instasent.com/v1"
MAX_BATCH_ITEMS = 100  # API.md §2: at most 100 items per request
DEFAULT_MAX_BATCH_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Credentials:
    """Where to send and who we are. ``repr`` never shows the token."""

    api_url: str
    project: str
    datasource: str
    token: str = field(repr=False)
    network: Network = Network()  # --proxy, --ca-bundle

    def __repr__(self) -> str:
        return (
            f"Credentials(api_url={self.api_url!r}, project={self.project!r}, "
            f"datasource={self.datasource!r}, token='***')"
        )

    @property
    def base_url(self) -> str:
        """The datasource's base URL; every Ingest path lies below ``/stream``."""
        return f"{self.api_url.rstrip('/')}/project/{self.project}/datasource/{self.datasource}"

    @classmethod
    def resolve(
        cls,
        *,
        api_url: str | None = None,
        project: str | None = None,
        datasource: str | None = None,
        token_file: Path | None = None,
        env: Mapping[str, str] | None = None,
        network: Network = Network(),
    ) -> Credentials:
        """Flags first, then ``INSTASENT_*`` variables; reports every missing piece at once."""
        env = os.environ if env is None else env
        url = api_url or env.get("INSTASENT_API_URL") or DEFAULT_API_URL
        proj = project or env.get("INSTASENT_PROJECT", "")
        ds = datasource or env.get("INSTASENT_DATASOURCE", "")
        token = _read_token(token_file) if token_file else env.get("INSTASENT_TOKEN", "")
        missing = [
            name
            for name, value in (
                ("INSTASENT_PROJECT", proj),
                ("INSTASENT_DATASOURCE", ds),
                ("INSTASENT_TOKEN (or --token-file)", token),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                "missing " + ", ".join(missing) + " — export them as in Instasent's quickstart"
            )
        _check_url(url)
        resolve_route(url, network, env)  # a bad proxy URL is a config error, before sending
        return cls(api_url=url, project=proj, datasource=ds, token=token, network=network)


def _read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror}") from None
    if not token:
        raise ConfigError(f"the token file {path} is empty")
    return token


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:  # an unclosed [IPv6 bracket, a port that is not a number
        parts, host = urlsplit(""), None
    authority = url.partition("://")[2]
    for end in "/?#":
        authority = authority.partition(end)[0]
    if "@" in authority:
        # Never echo it: the part before the @ is a password. The token is the only credential.
        raise ConfigError(
            "INSTASENT_API_URL must not contain a user name or password (user:secret@host): "
            "put the API token in INSTASENT_TOKEN (or --token-file) and give the URL without "
            "them, e.g. https://api.instasent.com/v1")
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(f"INSTASENT_API_URL {url!r} is not an http(s) URL with a host (and a "
                          "numeric port, if any)")
    # A bearer token over plain HTTP is readable by anyone on the path; only loopback is exempt,
    # and only as an IP literal or ``localhost``: a name such as 127.evil.example resolves
    # wherever its owner wants.
    if parts.scheme == "http" and not is_loopback(host):
        raise ConfigError(
            f"refusing plain http:// to {host}: use https:// "
            "(http is allowed only to loopback — 127.0.0.1, ::1 or localhost — e.g. the local "
            "sandbox)"
        )
