"""``instasent-import check``: the first thing a user runs, so every failure has its own message.

Everything targets 127.0.0.1 or a ``.invalid`` host (RFC 6761: resolution fails locally).
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from importer.cli import cli
from importer.sandbox.server import RunningSandbox
from importer.sandbox.settings import FaultSettings

TOKEN = "tok-CHECK-2f6b9a-never-print-me"


@pytest.fixture
def box(make_sandbox: Callable[..., RunningSandbox]) -> RunningSandbox:
    return make_sandbox(token=TOKEN, rate_limit=600)


def _env(api_url: str, project: str = "sandbox-project",
         datasource: str = "sandbox-datasource", token: str = TOKEN) -> dict[str, str]:
    return {"INSTASENT_API_URL": api_url, "INSTASENT_PROJECT": project,
            "INSTASENT_DATASOURCE": datasource, "INSTASENT_TOKEN": token}


def _check(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["check", *args], env=env, catch_exceptions=False)
    assert TOKEN not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_ok_prints_who_the_token_belongs_to(box: RunningSandbox) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    posted = httpx.post(f"{box.base_url}/stream/contacts", headers=headers,
                        json=[{"_user_id": "U1"}, {"_user_id": "U2"}])
    assert posted.status_code == 202
    code, out, err = _check(_env(box.api_url))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"OK: the token works for this datasource ({box.api_url})"
    assert lines[1] == "organization  Instasent sandbox (sandbox-organization)"
    assert lines[2] == "project       sandbox-project"
    assert lines[3] == "datasource    sandbox-datasource [api]"
    # the POST used one request of the contacts budget; GET /stream is the first of its own
    assert lines[4].startswith("rate limit    600 requests per window per endpoint, 599 left")
    assert "recent usage" in lines
    assert "  contacts                   2" in lines
    assert "  usage.itemsSucceeded       2" in lines


def test_ok_as_json(box: RunningSandbox) -> None:
    code, out, _ = _check(_env(box.api_url), "--output", "json")
    assert code == 0
    data = json.loads(out)
    assert data["ok"] is True and data["api_url"] == box.api_url
    assert data["organization"] == {"id": "sandbox-organization", "name": "Instasent sandbox"}
    assert data["datasource"]["uid"] == "sandbox-datasource"
    assert data["stream"]["contacts"] == 0
    assert data["rate_limit"]["limit"] == 600 and data["rate_limit"]["remaining"] == 599


def test_wrong_token_says_token(box: RunningSandbox) -> None:
    code, out, err = _check(_env(box.api_url, token="not-the-token"))
    assert (code, out) == (1, "")
    assert err == (
        "error: the API refused the token (401): it is missing, malformed or revoked — check "
        "INSTASENT_TOKEN (or --token-file); tokens are shown once in the dashboard\n"
    )


def test_wrong_ids_say_ids(box: RunningSandbox) -> None:
    code, _, err = _check(_env(box.api_url, datasource="shop-typo"))
    assert code == 1
    assert err == (
        "error: project 'sandbox-project' / datasource 'shop-typo' not found for this token "
        "(404) — check INSTASENT_PROJECT and INSTASENT_DATASOURCE (and that INSTASENT_API_URL, "
        f"now {box.api_url}, is the API root ending in /v1)\n"
    )


def test_json_output_names_the_problem(box: RunningSandbox) -> None:
    code, out, err = _check(_env(box.api_url, token="nope"), "--output", "json")
    assert code == 1
    data = json.loads(out)
    assert (data["ok"], data["problem"], data["exit_code"]) == (False, "token", 1)
    assert err.startswith("error: the API refused the token (401)")


def test_dns_failure_names_the_host() -> None:
    url = "https://api.instasent.invalid/v1"
    code, _, err = _check(_env(url))
    assert code == 1
    assert err.startswith("error: cannot resolve the host 'api.instasent.invalid' (DNS lookup "
                          "failed: ")
    assert err.endswith(f") — check the host name in INSTASENT_API_URL ({url}) and this "
                        "machine's network and DNS\n")


def test_refused_names_host_and_port() -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    code, _, err = _check(_env(url))
    assert code == 1
    assert err == (
        f"error: connection refused by 127.0.0.1:{port}: nothing is listening there — check "
        f"INSTASENT_API_URL ({url}); for the local sandbox, start it with "
        "`instasent-import sandbox`\n"
    )


def test_tls_failure_against_a_plain_http_port(box: RunningSandbox) -> None:
    url = box.api_url.replace("http://", "https://")
    code, _, err = _check(_env(url))
    assert code == 1
    assert err == (
        f"error: TLS handshake with 127.0.0.1:{box.port} failed (WRONG_VERSION_NUMBER): the "
        f"server there does not speak HTTPS on that port — check INSTASENT_API_URL ({url}): "
        "https:// for the Instasent API, http:// only for a local sandbox\n"
    )


def test_timeout_says_how_long_it_waited(make_sandbox: Callable[..., RunningSandbox]) -> None:
    slow = make_sandbox(token=TOKEN, latency_ms=(700, 700))
    code, _, err = _check(_env(slow.api_url), "--timeout", "0.2")
    assert code == 1
    assert err == (
        f"error: 127.0.0.1:{slow.port} accepted the connection but sent no answer within "
        "0.2 s (ReadTimeout) — the API may be overloaded; try again, or raise --timeout\n"
    )


def test_server_errors_on_every_attempt(make_sandbox: Callable[..., RunningSandbox]) -> None:
    broken = make_sandbox(token=TOKEN, faults=FaultSettings(fail_rate=1.0, fail_statuses=(503,)))
    code, _, err = _check(_env(broken.api_url))
    assert code == 1
    assert err == ("error: GET /stream answered HTTP 503 3 times in a row: the API is having "
                   "trouble — try again in a few minutes\n")
    assert broken.app.stats()["requests"]["GET /stream"] == {"503": 3}


class _Portal(http.server.BaseHTTPRequestHandler):
    """Not the Ingest API: a captive portal answering HTML, or a teapot."""

    def do_GET(self) -> None:
        status = 418 if "teapot" in self.path else 200
        body = b"<html><body>Please log in to the Wi-Fi</body></html>"
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def portal() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Portal)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_unexpected_answer_is_not_mistaken_for_the_api(portal: str) -> None:
    url = f"{portal}/v1"
    code, _, err = _check(_env(url))
    assert code == 1
    assert err == (
        f"error: GET {url}/project/sandbox-project/datasource/sandbox-datasource/stream "
        "answered 200 with a body that is not JSON ('<html><body>Please log in to the Wi-Fi"
        "</body></html>') — check that INSTASENT_API_URL "
        f"({url}) is the Instasent API, not a web page or a proxy\n"
    )


def test_unexpected_status(portal: str) -> None:
    url = f"{portal}/teapot"
    code, out, err = _check(_env(url), "--output", "json")
    assert code == 1
    assert json.loads(out)["problem"] == "unexpected"
    assert err == (
        f"error: GET {url}/project/sandbox-project/datasource/sandbox-datasource/stream "
        "answered HTTP 418 (<html><body>Please log in to the Wi-Fi</body></html>) — the Ingest "
        f"API does not answer that; check that INSTASENT_API_URL ({url}) is the Instasent API\n"
    )


def test_missing_settings_are_exit_2_before_any_request() -> None:
    result = CliRunner().invoke(cli, ["check"], env={"INSTASENT_PROJECT": "",
                                                     "INSTASENT_DATASOURCE": "",
                                                     "INSTASENT_TOKEN": ""})
    assert result.exit_code == 2
    assert result.stderr == (
        "error: missing INSTASENT_PROJECT, INSTASENT_DATASOURCE, INSTASENT_TOKEN (or "
        "--token-file) — export them as in Instasent's quickstart\n"
    )


def test_token_file(tmp_path: Path, box: RunningSandbox) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    env = _env(box.api_url, token="wrong")
    code, out, _ = _check(env, "--token-file", str(token_file))
    assert code == 0 and out.startswith("OK: the token works")
