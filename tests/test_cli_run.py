"""``instasent-import run`` from the outside: exit codes, messages, files, and the token."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from importer.cli import cli
from importer.sandbox.server import RunningSandbox
from importer.sandbox.settings import FaultSettings

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cr3t-T0KEN-value-that-must-never-leak"
MAPPING = """\
version: 1
target: contacts
fields:
  _user_id: customer_id
  _email: {column: email, type: email}
"""


@pytest.fixture
def box(make_sandbox: Callable[..., RunningSandbox]) -> RunningSandbox:
    return make_sandbox(token=TOKEN)


def _env(box: RunningSandbox, **extra: str) -> dict[str, str]:
    return {**box.env(), **extra}


def _files(tmp_path: Path, rows: str) -> tuple[Path, Path]:
    data = tmp_path / "crm.csv"
    data.write_text("customer_id,email\n" + rows, encoding="utf-8")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    return data, mapping


def _run(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_exit_0_when_every_row_is_accepted(tmp_path: Path, box: RunningSandbox) -> None:
    data, mapping = _files(tmp_path, "U1,a@x.es\nU2,b@x.es\n")
    report = tmp_path / "report.json"
    code, out, err = _run(
        ["run", str(data), "--mapping", str(mapping), "--report", str(report), "--output",
         "json"], _env(box))
    assert code == 0, err
    printed = json.loads(out)
    assert printed["accepted"] == 2 and printed["exit_code"] == 0
    assert json.loads(report.read_text())["rows_read"] == 2
    assert "accepted" in err  # the table goes to stderr


def test_exit_3_with_permanent_rejects_beside_the_input(
    tmp_path: Path, box: RunningSandbox
) -> None:
    data, mapping = _files(tmp_path, "U1,a@x.es\nU2,nope\n")
    code, _, err = _run(["run", str(data), "--mapping", str(mapping)], _env(box))
    assert code == 3
    rejects = tmp_path / "crm.rejects.csv"
    assert f"rejects file: {rejects}" in err
    assert stat.S_IMODE(rejects.stat().st_mode) == 0o600
    assert "invalid_email" in rejects.read_text(encoding="utf-8-sig")


def test_exit_4_when_retryable_failures_are_left(tmp_path: Path, box: RunningSandbox) -> None:
    data, mapping = _files(tmp_path, "U1,a@x.es\n")
    faults = FaultSettings(fail_rate=0.5, fail_statuses=(503,))
    # Find a seed whose draws let the credential check through and fail the one POST; the
    # sandbox's draws are seeded, so the run below meets exactly that sequence.
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for seed in range(200):
        box.app.set_faults(faults, seed=seed)
        with httpx.Client(base_url=box.base_url, headers=auth) as client:
            first = client.get("/stream").status_code
            second = client.post("/stream/contacts", json=[{"_user_id": "probe"}]).status_code
        if (first, second) == (200, 503):
            break
    else:
        pytest.fail("no seed gives 200 then 503")
    box.app.reset()
    box.app.set_faults(faults, seed=seed)
    code, _, err = _run(["run", str(data), "--mapping", str(mapping), "--max-attempts", "1"],
                        _env(box))
    assert code == 4, err
    rows = (tmp_path / "crm.rejects.csv").read_text(encoding="utf-8-sig")
    assert "transport" in rows and "true" in rows


def test_exit_1_on_a_wrong_token_says_which(tmp_path: Path, box: RunningSandbox) -> None:
    data, mapping = _files(tmp_path, "U1,a@x.es\n")
    code, _out, err = _run(["run", str(data), "--mapping", str(mapping)],
                          _env(box, INSTASENT_TOKEN="wrong-token"))
    assert code == 1
    assert "refused the token (401)" in err and "INSTASENT_TOKEN" in err
    code, _, err = _run(["run", str(data), "--mapping", str(mapping)],
                        _env(box, INSTASENT_DATASOURCE="nope"))
    assert code == 1
    assert "'nope' not found" in err and "(404)" in err
    assert box.app.stats()["items_received"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.csv"], "missing.csv"),
        (["{data}", "--mapping", "nope.yaml"], "nope.yaml"),
    ],
)
def test_exit_2_for_unusable_input_before_any_request(
    tmp_path: Path, box: RunningSandbox, args: list[str], message: str
) -> None:
    data, mapping = _files(tmp_path, "U1,a@x.es\n")
    argv = ["run", *[a.format(data=data) for a in args]]
    if "--mapping" not in argv:
        argv += ["--mapping", str(mapping)]
    code, _, err = _run(argv, _env(box))
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert box.app.stats()["requests_total"] == 0


def test_exit_2_for_a_mapping_naming_a_missing_column(tmp_path: Path, box: RunningSandbox) -> None:
    data, mapping = _files(tmp_path, "U1,a@x.es\n")
    mapping.write_text(MAPPING.replace("column: email", "column: emial"))
    code, _, err = _run(["run", str(data), "--mapping", str(mapping)], _env(box))
    assert code == 2
    assert "emial" in err and "email" in err
    assert box.app.stats()["requests_total"] == 0


def test_missing_credentials_are_all_named_at_once(tmp_path: Path) -> None:
    data, mapping = _files(tmp_path, "U1,a@x.es\n")
    code, _, err = _run(["run", str(data), "--mapping", str(mapping)],
                        {"INSTASENT_PROJECT": "", "INSTASENT_DATASOURCE": "",
                         "INSTASENT_TOKEN": ""})
    assert code == 2
    assert "INSTASENT_PROJECT" in err and "INSTASENT_DATASOURCE" in err
    assert "INSTASENT_TOKEN" in err


def test_plain_http_is_refused_except_to_loopback(tmp_path: Path, box: RunningSandbox) -> None:
    data, mapping = _files(tmp_path, "U1,a@x.es\n")
    code, _, err = _run(["run", str(data), "--mapping", str(mapping)],
                        _env(box, INSTASENT_API_URL="http://api.example.com/v1"))
    assert code == 2
    assert "plain http://" in err


def test_token_file_is_read(tmp_path: Path, box: RunningSandbox) -> None:
    data, mapping = _files(tmp_path, "U1,a@x.es\n")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    env = _env(box)
    env["INSTASENT_TOKEN"] = ""
    code, _, err = _run(["run", str(data), "--mapping", str(mapping), "--token-file",
                         str(token_file)], env)
    assert code == 0, err


def test_the_token_never_appears_anywhere(tmp_path: Path, box: RunningSandbox) -> None:
    """Run with rejects, API errors, a report and a 401, then grep every output for it."""
    data, mapping = _files(tmp_path, "U1,a@x.es\nU2,bad\n")
    report = tmp_path / "report.json"
    outputs = []
    for env in (_env(box), _env(box, INSTASENT_TOKEN=TOKEN + "x")):
        _code, out, err = _run(["run", str(data), "--mapping", str(mapping), "--report",
                               str(report), "--output", "json"], env)
        outputs += [out, err]
    written = [p.read_text(encoding="utf-8-sig") for p in tmp_path.iterdir() if p.is_file()
               and p.suffix in (".csv", ".json")]
    for text in outputs + written:
        assert TOKEN not in text


def test_sandbox_flag_rehearses_in_process(tmp_path: Path) -> None:
    data, mapping = _files(tmp_path, "U1,a@x.es\nU2,b@x.es\n")
    code, out, err = _run(["run", str(data), "--mapping", str(mapping), "--sandbox",
                           "--output", "json"], {"INSTASENT_TOKEN": ""})
    assert code == 0, err
    assert "in-process sandbox at http://127.0.0.1:" in err
    assert json.loads(out)["accepted"] == 2


def test_end_to_end_through_a_subprocess(tmp_path: Path, box: RunningSandbox) -> None:
    """The installed entry point, a real process, a live server: what a cron job does."""
    data, mapping = _files(tmp_path, "".join(f"U{i},u{i}@x.es\n" for i in range(1, 451)))
    env = {**os.environ, **_env(box)}
    proc = subprocess.run(
        [sys.executable, "-m", "importer", "run", str(data), "--mapping", str(mapping),
         "--output", "json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["accepted"] == 450 and report["requests"] == 5
    assert report["mean_batch_fill"] == 90.0
    assert box.app.stats()["contacts"] == 450
    assert TOKEN not in proc.stdout + proc.stderr


def test_without_a_terminal_progress_is_a_log_line(capsys: pytest.CaptureFixture[str]) -> None:
    from importer.cli import _ProgressPrinter
    from importer.pipeline import Progress

    printer = _ProgressPrinter(quiet=False, interval=0.0)
    printer.tty = False  # as under cron
    printer(Progress("contacts", "bytes", 50, 200, 1_000, 990, 10))
    err = capsys.readouterr().err
    assert "[contacts] read 1,000 rows" in err
    assert "accepted 990 · rejected 10 · 25% of input" in err
    quiet = _ProgressPrinter(quiet=True, interval=0.0)
    quiet(Progress("contacts", "bytes", 50, 200, 1_000, 990, 10))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("given", "expected"), [(None, 1), ("2", 2)])
def test_the_command_runs_polars_on_one_thread_unless_told(given: str | None,
                                                           expected: int) -> None:
    script = (
        "import sys\n"
        "from importer import _launch\n"
        "sys.argv = ['instasent-import', '--version']\n"
        "try:\n    _launch.main()\nexcept SystemExit:\n    pass\n"
        "import polars\nprint(polars.thread_pool_size())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "POLARS_MAX_THREADS"}
    if given is not None:
        env["POLARS_MAX_THREADS"] = given
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.split()[-1] == str(expected)


def test_a_csv_run_loads_neither_pyarrow_nor_numpy(tmp_path: Path) -> None:
    """pyarrow (and numpy behind it) cost ~0.2 CPU-s of start-up; only Parquet needs them."""
    script = (
        "import sys\n"
        "from importer import _launch\n"
        f"sys.argv = ['instasent-import', 'run', {str(ROOT / 'sample_data' / 'contacts.csv')!r},"
        f" '--mapping', {str(ROOT / 'mappings' / 'contacts.yaml')!r}, '--dry-run', '--quiet',"
        f" '--rejects', {str(tmp_path / 'r.csv')!r}, '--state-dir', {str(tmp_path / 's')!r}]\n"
        "try:\n    _launch.main()\nexcept SystemExit as exc:\n    print('exit', exc.code)\n"
        "print('loaded', sorted(m for m in ('pyarrow', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "exit 3" in out, out  # the sample has rows that fail: the run itself happened
    assert out.splitlines()[-1] == "loaded []"
