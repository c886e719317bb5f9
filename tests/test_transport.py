"""HTTP as real networks serve it: every row of issue 14's table, on loopback sockets.

The importer sends through httpx's own transport; these tests hold it to what stock httpx
does (or better) where the hand-written transport it replaced failed: proxies (a real
forward proxy, ``tests/_servers.py``), 1xx answers, compressed answers, keep-alive
connections dropped after processing or closed with a 408 while idle, a host name whose
first address is dead, large and folded response heads, TLS with a private CA, and URLs with
credentials. Each full run checks the promise from the outside: every row in the sandbox
once, and the report's request and retry counts equal to what the server saw.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import dataclasses
import datetime as dt
import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from _servers import ForwardProxy, ShapingFront, TlsFront, _Loop
from click.testing import CliRunner

from importer.chunking import Chunk
from importer.cli import cli
from importer.client import ApiClient
from importer.config import Credentials
from importer.exceptions import ConfigError
from importer.pipeline import RunOptions, run_import
from importer.sandbox.server import RunningSandbox
from importer.upload import ChunkResult, Uploader, UploadSettings

MAPPING = """\
version: 1
target: contacts
fields:
  _user_id: customer_id
  _email: {column: email, type: email}
"""
PROXY_SECRET = "pr0xy-s3cret"
TOKEN = "tok-TRANSPORT-never-print-me"
FAST = UploadSettings(backoff_base=0.01, backoff_cap=0.05, rate_jitter=0.01)


def _inputs(tmp_path: Path, n: int) -> tuple[Path, Path]:
    data = tmp_path / "contacts.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["customer_id", "email"])
        for i in range(n):
            out.writerow([f"C{i:04d}", f"c{i}@example.com"])
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING, encoding="utf-8")
    return data, mapping


_NETWORK_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
                      "https_proxy", "all_proxy", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR")


def _env(api_url: str, **extra: str) -> dict[str, str]:
    return {"INSTASENT_API_URL": api_url, "INSTASENT_PROJECT": "sandbox-project",
            "INSTASENT_DATASOURCE": "sandbox-datasource", "INSTASENT_TOKEN": TOKEN, **extra}


def _cli(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    # a proxy or CA variable of the developer's own shell must not leak into a test
    unset: dict[str, str | None] = {name: None for name in _NETWORK_VARIABLES}
    result = CliRunner().invoke(cli, args, env={**unset, **env}, catch_exceptions=False)
    out = result.stdout + result.stderr
    assert TOKEN not in out and PROXY_SECRET not in out
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def box(make_sandbox: Callable[..., RunningSandbox]) -> RunningSandbox:
    return make_sandbox(token=TOKEN)


# ───────────────────────────── the wire: 1xx, gzip, drops, 408 ─────────────────────────────


def _shaped_run(box: RunningSandbox, tmp_path: Path, shape: Callable[[int, bool], str],
                rows: int = 60, upload: UploadSettings = FAST,
                **front: Any) -> tuple[Any, ShapingFront]:
    data, mapping = _inputs(tmp_path, rows)
    with ShapingFront(upstream=box.root_url, shape=shape, **front) as proxy_front:
        creds = Credentials(f"http://127.0.0.1:{proxy_front.port}/v1", box.settings.project,
                            box.settings.datasource, TOKEN)
        options = RunOptions(upload=upload, batch_size=10, rejects_path=str(tmp_path / "r.csv"))
        report = run_import([str(data)], str(mapping), creds, options)
    return report, proxy_front


@pytest.mark.parametrize("mode", ["1xx", "gzip"])
def test_interim_answers_and_compressed_answers_are_read_as_the_final_answer(
    box: RunningSandbox, tmp_path: Path, mode: str
) -> None:
    """``100 Continue`` + ``103 Early Hints`` before every 202, or every 202 gzip-encoded
    although we asked for identity: every row accepted once, no retry."""
    report, front = _shaped_run(box, tmp_path, lambda n, reused: mode)
    assert (report.accepted, report.rejected, report.exit_code) == (60, 0, 0)
    assert box.app.stats()["contacts"] == 60
    assert report.requests == front.posts == 6
    assert report.retries == 0 and report.http_statuses == {"202": 6}
    assert set(front.encodings) == {"identity"}


def test_a_keep_alive_connection_dropped_after_processing_is_a_counted_retry(
    box: RunningSandbox, tmp_path: Path
) -> None:
    """The server processes a POST on a reused connection, then closes it without answering
    (twice): each is one failed request, one retry with backoff, one re-send through the
    pacer — and the report counts exactly the POSTs the server received."""
    drops: list[int] = []

    def shape(n: int, reused: bool) -> str:
        if reused and len(drops) < 2:
            drops.append(n)
            return "drop"
        return ""

    one_connection = dataclasses.replace(FAST, concurrency=1)
    report, front = _shaped_run(box, tmp_path, shape, upload=one_connection)
    assert front.dropped == 2
    assert (report.accepted, report.rejected, report.exit_code) == (60, 0, 0)
    assert box.app.stats()["contacts"] == 60  # the re-sent rows were upserts, not new rows
    assert report.requests == front.posts == 8
    assert report.retries == 2
    assert front.connections == 3  # kept alive: one, then a new one after each drop
    assert report.http_statuses == {"202": 6, "RemoteProtocolError": 2}


def test_a_408_on_an_idle_connection_never_answers_the_next_post(
    make_sandbox: Callable[..., RunningSandbox], tmp_path: Path
) -> None:
    """A server that times idle connections out with a 408 and a close: the stale 408 must
    not be taken as the answer of the next request sent on that connection. The rate limit
    (600/min) spaces requests ~0.1 s apart on one connection at a time, so it does sit idle
    past the server's 50 ms."""
    box = make_sandbox(token=TOKEN, rate_limit=600)
    # 8 requests, 7 idle gaps: the pacing beat may bunch a few, but never enough to leave
    # fewer than two idle timeouts (with 4 requests, a loaded machine once left only one)
    report, front = _shaped_run(box, tmp_path, lambda n, reused: "408-idle", rows=80,
                                upload=dataclasses.replace(FAST, concurrency=1))
    assert front.idle_408s >= 2  # the case did happen
    assert (report.accepted, report.rejected, report.exit_code) == (80, 0, 0)
    assert box.app.stats()["contacts"] == 80
    assert report.requests == front.posts == 8
    assert report.retries == 0 and "408" not in report.http_statuses


def test_retry_after_on_a_503_holds_the_endpoint(box: RunningSandbox) -> None:
    """A 503 with ``Retry-After: 3``: the next attempt waits the 3 s (on an injected clock),
    not just the 10 ms backoff."""
    now = [1_000_000.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    results: list[ChunkResult] = []

    async def go(port: int) -> None:
        creds = Credentials(f"http://127.0.0.1:{port}/v1", box.settings.project,
                            box.settings.datasource, TOKEN)
        client = ApiClient(creds)
        uploader = Uploader(client, FAST, on_result=results.append, on_unsent=lambda c: None,
                            clock=lambda: now[0], sleep=sleep)

        async def chunks() -> Any:
            yield Chunk("contacts", ("f.csv",), (1,), ("U1",), (b'{"_user_id": "U1"}',))

        try:
            await uploader.run(chunks())
        finally:
            await client.aclose()
        assert uploader.stats.requests == 2 and uploader.stats.retries == 1

    with ShapingFront(upstream=box.root_url, shape=lambda n, r: "503" if n == 1 else "") as f:
        asyncio.run(go(f.port))
        assert f.posts == 2
    assert results[0].outcomes[0].ok
    assert sum(slept) >= 3.0, slept


def test_an_unreadable_rate_limit_reset_is_ignored_with_one_warning(
    make_sandbox: Callable[..., RunningSandbox], tmp_path: Path
) -> None:
    box = make_sandbox(token=TOKEN, rate_limit=6000)
    report, _ = _shaped_run(box, tmp_path, lambda n, reused: "", rows=30,
                            rewrite={"x-ratelimit-reset": "soon"})
    assert (report.accepted, report.exit_code) == (30, 0)
    assert [w for w in report.warnings if "X-RateLimit-Reset" in w] == [
        "ignored an unreadable X-RateLimit-Reset header ('soon'): pacing from "
        "X-RateLimit-Remaining and 429 answers only"]


# ───────────────────────────── response heads ─────────────────────────────


def test_a_large_head_in_small_pieces_and_a_folded_header_are_parsed() -> None:
    """A 70 KiB response head arriving 512 bytes at a time, with an obs-folded header."""
    body = b'{"entity": {"items": [{"status": "success", "_user_id": "U1"}]}}'
    head = (b"HTTP/1.1 202 Accepted\r\n"
            + b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 900) for i in range(80))
            + b"X-Folded: first\r\n  second\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body))

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            answer = head + body
            for i in range(0, len(answer), 512):
                writer.write(answer[i:i + 512])
                await writer.drain()
                await asyncio.sleep(0)
            await reader.read()  # until the client closes
        finally:
            writer.close()

    async def go(port: int) -> tuple[int, str, bytes]:
        client = ApiClient(Credentials(f"http://127.0.0.1:{port}/v1", "p", "d", TOKEN))
        try:
            answer = await client.post_items("contacts", b'[{"_user_id": "U1"}]')
        finally:
            await client.aclose()
        return answer.status_code, answer.headers["x-folded"], answer.content

    assert len(head) > 64 * 1024
    with _Loop() as loop:
        port = loop.serve(serve)
        assert asyncio.run(go(port)) == (202, "first second", body)


# ───────────────────────────── happy eyeballs ─────────────────────────────


@pytest.fixture
def dead_ipv6_first(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], None]]:
    """``arm(port)``: ``[::1]:port`` accepts no connection (a full backlog: SYNs go
    unanswered, a connect hangs), and ``localhost`` resolves to ``::1`` before
    ``127.0.0.1``. On a machine whose resolver lists only 127.0.0.1 for localhost, the
    resolver's answer is arranged here (the connections themselves are real)."""
    held: list[socket.socket] = []

    def arm(port: int) -> None:
        try:
            listener = socket.socket(socket.AF_INET6)
            listener.bind(("::1", port))
        except OSError as exc:
            pytest.skip(f"cannot bind [::1]:{port} on this machine ({exc}): no dead IPv6 "
                        "address to arrange")
        listener.listen(0)
        held.append(listener)
        for _ in range(3):  # fill the accept queue
            filler = socket.socket(socket.AF_INET6)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("::1", port))
            held.append(filler)
        probe = socket.socket(socket.AF_INET6)
        probe.settimeout(0.5)
        try:
            probe.connect(("::1", port))
            pytest.skip("this machine answers connections beyond a full backlog: cannot make "
                        "a dead IPv6 address on loopback")
        except OSError:
            pass  # a timeout: the address is dead, as wanted
        finally:
            probe.close()
        real = socket.getaddrinfo
        first = real("localhost", port, type=socket.SOCK_STREAM)
        if first and first[0][0] == socket.AF_INET6:
            return  # the machine already resolves ::1 first

        def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
            found = real(host, *args, **kw)
            if host == "localhost":
                six = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0))]
                return six + [a for a in found if a[0] != socket.AF_INET6]
            return found

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    yield arm
    for s in held:
        s.close()


def test_a_dead_ipv6_address_falls_back_to_ipv4_at_once(
    box: RunningSandbox, dead_ipv6_first: Callable[[int], None]
) -> None:
    dead_ipv6_first(box.port)
    url = f"http://localhost:{box.port}/v1"
    start = time.monotonic()
    code, out, err = _cli(["check", "--timeout", "10"], _env(url))
    assert (code, err) == (0, ""), err
    assert out.startswith(f"OK: the token works for this datasource ({url})")
    assert time.monotonic() - start < 3.0  # not the 10 s connect timeout


# ───────────────────────────── TLS ─────────────────────────────


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _tls_front(box: RunningSandbox, cert: trustme.LeafCert) -> TlsFront:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return TlsFront(upstream_port=box.port, context=context)


def test_a_private_ca_through_ca_bundle(box: RunningSandbox, ca: trustme.CA,
                                        tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with _tls_front(box, ca.issue_cert("localhost")) as front:
        url = f"https://localhost:{front.port}/v1"
        code, out, err = _cli(["check", "--ca-bundle", str(bundle)], _env(url))
        assert (code, err) == (0, ""), err
        assert f"CA            --ca-bundle {bundle}" in out.splitlines()
        # the system's trust store does not know this CA: verification is on by default
        code, _, err = _cli(["check"], _env(url))
        assert code == 1
        assert err.startswith(f"error: TLS handshake with localhost:{front.port} failed: its "
                              "certificate is not trusted (unable to get local issuer "
                              "certificate) — ")
        # SSL_CERT_FILE is read as the system trust store's location, as before
        code, out, err = _cli(["check"], _env(url, SSL_CERT_FILE=str(bundle)))
        assert (code, err) == (0, ""), err
        assert f"CA            SSL_CERT_FILE={bundle}" in out.splitlines()


@pytest.mark.parametrize(("issue", "reason"), [
    ({"identities": ("other.example",)},
     "Hostname mismatch, certificate is not valid for 'localhost'."),
    ({"identities": ("localhost",),
      "not_after": dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
      "not_before": dt.datetime.now(dt.UTC) - dt.timedelta(days=30)},
     "certificate has expired"),
])
def test_wrong_host_and_expired_certificates_say_so(
    box: RunningSandbox, ca: trustme.CA, tmp_path: Path, issue: dict[str, Any], reason: str
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    identities = issue.pop("identities")
    with _tls_front(box, ca.issue_cert(*identities, **issue)) as front:
        url = f"https://localhost:{front.port}/v1"
        code, out, err = _cli(["check", "--ca-bundle", str(bundle)], _env(url))
    assert (code, out) == (1, "")
    assert err == (
        f"error: TLS handshake with localhost:{front.port} failed: its certificate is not "
        f"trusted ({reason}) — if a proxy inspects HTTPS on this network, pass its CA "
        "certificate with --ca-bundle (or SSL_CERT_FILE); otherwise check INSTASENT_API_URL "
        f"({url})\n")


# ───────────────────────────── proxies ─────────────────────────────


@pytest.fixture
def proxied_api(box: RunningSandbox, ca: trustme.CA,
                tmp_path: Path) -> Iterator[tuple[str, ForwardProxy, Path]]:
    """``https://sandbox.test:PORT/v1`` — a name only the proxy can resolve (``.test`` is
    reserved, RFC 6761) — served over TLS by the sandbox; yields (api_url, proxy, bundle)."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with _tls_front(box, ca.issue_cert("sandbox.test")) as front, \
            ForwardProxy(hosts={"sandbox.test": "127.0.0.1"}) as proxy:
        yield f"https://sandbox.test:{front.port}/v1", proxy, bundle


def _proxy_url(proxy: ForwardProxy) -> str:
    return f"http://importer:{PROXY_SECRET}@127.0.0.1:{proxy.port}"


def test_a_run_goes_through_the_proxy_of_https_proxy(
    box: RunningSandbox, proxied_api: tuple[str, ForwardProxy, Path], tmp_path: Path
) -> None:
    url, proxy, bundle = proxied_api
    data, mapping = _inputs(tmp_path, 250)
    code, out, err = _cli(
        ["run", str(data), "--mapping", str(mapping), "--ca-bundle", str(bundle), "--quiet",
         "--output", "json", "--rejects", str(tmp_path / "r.csv")],
        _env(url, HTTPS_PROXY=_proxy_url(proxy)))
    assert code == 0, err
    report = json.loads(out)
    assert report["accepted"] == 250 and report["requests"] == 3
    assert box.app.stats()["contacts"] == 250
    assert proxy.targets and set(proxy.targets) == {f"CONNECT {url[8:-3]}"}
    credentials = base64.b64encode(f"importer:{PROXY_SECRET}".encode()).decode()
    assert set(proxy.auth) == {f"Basic {credentials}"}


@pytest.mark.parametrize("how", ["https_proxy", "ALL_PROXY", "all_proxy", "--proxy"])
def test_every_way_to_name_the_proxy_is_honoured_and_check_shows_it(
    proxied_api: tuple[str, ForwardProxy, Path], how: str
) -> None:
    url, proxy, bundle = proxied_api
    args = ["check", "--ca-bundle", str(bundle)]
    env = _env(url)
    if how == "--proxy":
        args += ["--proxy", _proxy_url(proxy)]
        env["HTTPS_PROXY"] = "http://127.0.0.1:9"  # the flag wins over the environment
    else:
        env[how] = _proxy_url(proxy)
    code, out, err = _cli(args, env)
    assert (code, err) == (0, ""), err
    assert f"proxy         127.0.0.1:{proxy.port} (from {how})" in out.splitlines()
    assert len(proxy.targets) == 1
    code, out, _ = _cli([*args, "--output", "json"], env)
    assert json.loads(out)["proxy"] == f"127.0.0.1:{proxy.port} (from {how})"


@pytest.mark.parametrize("name", ["NO_PROXY", "no_proxy"])
def test_no_proxy_bypasses_the_proxy(
    proxied_api: tuple[str, ForwardProxy, Path], name: str
) -> None:
    """With the API host in NO_PROXY the importer connects itself — and, as nothing but the
    proxy knows ``sandbox.test``, it cannot resolve the name: the message says so."""
    url, proxy, bundle = proxied_api
    env = _env(url, HTTPS_PROXY=_proxy_url(proxy), **{name: "localhost,.test"})
    code, _, err = _cli(["check", "--ca-bundle", str(bundle)], env)
    assert code == 1
    assert err.startswith("error: cannot resolve the host 'sandbox.test' (DNS lookup failed")
    assert proxy.targets == []


def test_a_loopback_api_is_never_proxied(box: RunningSandbox, tmp_path: Path) -> None:
    with ForwardProxy() as proxy:
        env = _env(box.api_url, HTTP_PROXY=_proxy_url(proxy), HTTPS_PROXY=_proxy_url(proxy),
                   ALL_PROXY=_proxy_url(proxy))
        code, out, err = _cli(["check", "--proxy", _proxy_url(proxy)], env)
        assert (code, err) == (0, ""), err
        assert "proxy         none (a loopback API is never proxied)" in out.splitlines()
        assert "CA            not used (plain http to loopback)" in out.splitlines()
        data, mapping = _inputs(tmp_path, 30)
        code, _, err = _cli(["run", str(data), "--mapping", str(mapping), "--quiet",
                             "--rejects", str(tmp_path / "r.csv")], env)
        assert code == 0, err
    assert proxy.targets == []
    assert box.app.stats()["contacts"] == 30


def test_a_proxy_that_cannot_reach_the_api_is_named(
    ca: trustme.CA, tmp_path: Path
) -> None:
    with ForwardProxy() as proxy:  # knows no name: answers 502 to every CONNECT
        url = "https://api.instasent.test/v1"
        code, _, err = _cli(["check"], _env(url, HTTPS_PROXY=_proxy_url(proxy)))
    assert code == 1
    assert err.startswith(f"error: the proxy 127.0.0.1:{proxy.port} (from HTTPS_PROXY) would "
                          "not connect to api.instasent.test:443 (")
    assert proxy.targets == ["CONNECT api.instasent.test:443"]


# ───────────────────────────── URLs ─────────────────────────────


def test_a_url_with_credentials_is_refused_without_echoing_them() -> None:
    url = "https://user:hunter2@api.instasent.com/v1"
    with pytest.raises(ConfigError) as refused:
        Credentials.resolve(env=_env(url))
    assert "hunter2" not in str(refused.value)
    assert "must not contain a user name or password" in str(refused.value)
    code, _, err = _cli(["check"], _env(url))
    assert code == 2 and "hunter2" not in err and "INSTASENT_TOKEN" in err


@pytest.mark.parametrize(("url", "allowed"), [
    ("http://127.0.0.1:8790/v1", True),
    ("http://127.0.0.2:8790/v1", True),
    ("http://[::1]:8790/v1", True),
    ("http://localhost:8790/v1", True),
    ("http://LOCALHOST/v1", True),
    ("http://127.evil.example/v1", False),
    ("http://127.0.0.1.evil.example/v1", False),
    ("http://localhost.evil.example/v1", False),
    ("http://10.0.0.1/v1", False),
    ("http://api.instasent.com/v1", False),
    ("https://api.instasent.com/v1", True),
    ("https://127.evil.example/v1", True),
    ("https://api.instasent.com/v1?next=a@b", True),
])
def test_plain_http_only_to_a_loopback_ip_literal_or_localhost(url: str, allowed: bool) -> None:
    """Issue 18 item 10: the guard parses the URL; a name that starts like a loopback
    address is a name like any other, and would get the token in clear text."""
    if allowed:
        assert Credentials.resolve(env=_env(url)).api_url == url
    else:
        with pytest.raises(ConfigError, match="refusing plain http://"):
            Credentials.resolve(env=_env(url))


@pytest.mark.parametrize("url", ["http://[::1/v1", "http://127.0.0.1:99999/v1",
                                 "http://127.0.0.1:port/v1", "ftp://127.0.0.1/v1"])
def test_a_malformed_api_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"is not an http\(s\) URL with a host"):
        Credentials.resolve(env=_env(url))


@pytest.mark.parametrize(("env", "proxy", "source"), [
    ({"HTTPS_PROXY": "http://p:3128"}, "http://p:3128", "HTTPS_PROXY"),
    ({"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"}, "http://lower:2",
     "https_proxy"),
    ({"HTTP_PROXY": "http://p:3128"}, None, ""),  # an https API: HTTP_PROXY is not for it
    ({"ALL_PROXY": "p:3128"}, "http://p:3128", "ALL_PROXY"),  # curl's default scheme
    ({"HTTPS_PROXY": "http://p:1", "ALL_PROXY": "http://q:2"}, "http://p:1", "HTTPS_PROXY"),
    ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "instasent.com"}, None, "NO_PROXY"),
    ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".instasent.com"}, None, "NO_PROXY"),
    ({"HTTPS_PROXY": "http://p:1", "no_proxy": "x.org, *"}, None, "no_proxy"),
    ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "myinstasent.com,10.0.0.0/8"}, "http://p:1",
     "HTTPS_PROXY"),
])
def test_the_proxy_is_chosen_as_curl_chooses_it(env: dict[str, str], proxy: str | None,
                                                 source: str) -> None:
    from importer.network import Network, resolve_route

    route = resolve_route("https://api.instasent.com/v1", Network(), env)
    assert (route.proxy_url, route.proxy_source) == (proxy, source)
    assert "p:1" not in repr(route) and "p:3128" not in repr(route)


def test_proxy_settings_that_cannot_work_are_config_errors() -> None:
    from importer.network import Network, resolve_route

    for bad in ("socks5://u:hunter2@p:1080", "http://u:hunter2@p:port"):
        with pytest.raises(ConfigError) as refused:
            resolve_route("https://api.instasent.com/v1", Network(proxy=bad), {})
        assert "hunter2" not in str(refused.value)
    # an IP literal host is matched against NO_PROXY ranges; the CGI rule for HTTP_PROXY
    route = resolve_route("https://10.1.2.3/v1", Network(), {"ALL_PROXY": "http://p:1",
                                                             "NO_PROXY": "10.0.0.0/8"})
    assert route.proxy_url is None
    cgi = {"HTTP_PROXY": "http://p:1", "REQUEST_METHOD": "GET"}  # a request header there
    assert resolve_route("http://api.example/v1", Network(), cgi).proxy_url is None
    plain = resolve_route("http://api.example/v1", Network(), {"HTTP_PROXY": "http://p:1"})
    assert plain.proxy_url == "http://p:1"
