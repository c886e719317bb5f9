"""How requests reach the API: through which proxy, trusting which certificates.

Resolved once per command (flag > environment > default) into a frozen :class:`Route`, so
``check`` can say exactly what a run will do ("why can't it connect?"):

- Proxy: ``--proxy URL``, else the environment as curl and httpx read it — ``HTTPS_PROXY`` /
  ``HTTP_PROXY`` by the API's scheme, then ``ALL_PROXY``, lower case winning over upper case,
  ``NO_PROXY`` (host names and their subdomains, IP ranges, ``*``) exempting hosts. A
  loopback API (the sandbox) is never proxied. Proxy credentials
  (``http://user:pass@proxy:3128``) are used, never shown: :attr:`Route.proxy_shown` is
  ``host:port``.
- TLS: verification is always on. ``--ca-bundle FILE`` replaces the trust store (as curl's
  ``--cacert`` does: a TLS-inspecting proxy's CA); otherwise the system's, which OpenSSL
  reads from ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when they are set.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from importer.exceptions import ConfigError


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP literal (127.0.0.0/8, ::1) — never a name that merely
    starts like one (``127.evil.example`` resolves wherever its owner wants)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Network:
    """The user's network settings: ``--proxy`` and ``--ca-bundle`` (None: not given)."""

    proxy: str | None = None
    ca_bundle: Path | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """What the requests to one API URL go through."""

    proxy_url: str | None = field(repr=False)  # with its credentials: for the client only
    proxy_source: str  # "--proxy", "HTTPS_PROXY", …; why none ("loopback", "NO_PROXY", "")
    ca_source: str  # where the trusted certificates come from, for ``check``

    @property
    def proxy_shown(self) -> str | None:
        """The proxy's ``host:port``, without scheme or credentials."""
        return proxy_host(self.proxy_url) if self.proxy_url else None

    def describe_proxy(self) -> str:
        if self.proxy_url:
            return f"{self.proxy_shown} (from {self.proxy_source})"
        if self.proxy_source == "loopback":
            return "none (a loopback API is never proxied)"
        if self.proxy_source:
            return f"none (the API host is in {self.proxy_source})"
        return "none (direct)"


def proxy_host(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{host}:{port}"


def _env_proxies(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """``{"https": (url, variable), "all": …, "no": …}``: lower case wins over upper case, and
    ``HTTP_PROXY`` is ignored inside a CGI request (it is a request header there), as curl,
    urllib and httpx read them."""
    found: dict[str, tuple[str, str]] = {}
    for key in ("http", "https", "all", "no"):
        for name in (f"{key}_proxy", f"{key.upper()}_PROXY"):
            if name == "HTTP_PROXY" and "REQUEST_METHOD" in env:
                continue
            if env.get(name, "").strip():
                found[key] = (env[name].strip(), name)
                break
    return found


def _no_proxy(host: str, no_proxy: str) -> bool:
    """curl's ``NO_PROXY`` rules: ``*`` is every host; ``example.com`` (or ``.example.com``)
    is that host and its subdomains, not ``myexample.com``; an IP address or a CIDR range
    (``10.0.0.0/8``) matches an IP literal host. Ports are ignored."""
    host = host.strip("[]").lower().rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = (
            ipaddress.ip_address(host))
    except ValueError:
        address = None
    for entry in no_proxy.split(","):
        entry = entry.strip().lower()
        if entry == "*":
            return True
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry.strip("[]"), strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = entry.split(":")[0].lstrip(".").rstrip(".") if entry.count(":") == 1 else (
            entry.lstrip(".").rstrip("."))
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _proxy_from_env(scheme: str, host: str, env: Mapping[str, str]) -> tuple[str | None, str]:
    proxies = _env_proxies(env)
    for key in (scheme, "all"):
        if key in proxies:
            if "no" in proxies and _no_proxy(host, proxies["no"][0]):
                return None, proxies["no"][1]
            return proxies[key]
    return None, ""


def check_proxy_url(url: str, source: str) -> str:
    """A proxy URL httpx can use; ``host:3128`` means ``http://host:3128``, as for curl."""
    if "://" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = f"{parts.scheme}://{parts.hostname or '?'}"
        raise ConfigError(
            f"the proxy from {source} ({shown}…) is not an http:// or https:// proxy URL — "
            "give one like http://proxy.example:3128 (SOCKS proxies are not supported)")
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise ConfigError(
            f"the proxy from {source} ({parts.hostname}) has an invalid port") from None
    return url


def ssl_context(ca_bundle: Path | None, api_url: str = "https:") -> ssl.SSLContext:
    """Certificate and host name verification on, always; the trust store as in the module
    docstring. For a plain-http API (loopback, never proxied) no TLS is ever made: a context
    that trusts nothing, instead of loading the trust store (~20 ms) for nothing."""
    if urlsplit(api_url).scheme == "http":
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifying, with no CA to trust
    try:
        if ca_bundle is not None:
            return ssl.create_default_context(cafile=str(ca_bundle))
        return ssl.create_default_context()
    except (OSError, ssl.SSLError) as exc:
        where = f"--ca-bundle {ca_bundle}" if ca_bundle else "SSL_CERT_FILE / SSL_CERT_DIR"
        raise ConfigError(
            f"cannot load the CA certificates of {where}: {exc} — it must be a PEM file of "
            "CA certificates") from None


def ca_source(ca_bundle: Path | None, env: Mapping[str, str]) -> str:
    if ca_bundle is not None:
        return f"--ca-bundle {ca_bundle}"
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        if env.get(name):
            return f"{name}={env[name]}"
    paths = ssl.get_default_verify_paths()
    return f"system trust store ({paths.cafile or paths.capath or 'OpenSSL default'})"


def resolve_route(api_url: str, network: Network, env: Mapping[str, str] | None = None) -> Route:
    """The proxy and trust store for requests to ``api_url`` (raises ConfigError)."""
    env = os.environ if env is None else env
    parts = urlsplit(api_url)
    host = parts.hostname or ""
    ca = ca_source(network.ca_bundle, env) if parts.scheme == "https" else (
        "not used (plain http to loopback)")
    if is_loopback(host):
        return Route(None, "loopback", ca)
    if network.proxy:
        return Route(check_proxy_url(network.proxy, "--proxy"), "--proxy", ca)
    url, source = _proxy_from_env(parts.scheme, host, env)
    if url is None:
        return Route(None, source, ca)
    return Route(check_proxy_url(url, source), source, ca)
