"""Runs that meet trouble end cleanly (issue 18): a worker that raises ends the run instead
of hanging it; an API outage is waited out instead of turning rows into rejects.

Every invocation is a subprocess with a timeout: a hang fails the test instead of hanging it.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from importer.sandbox.server import RunningSandbox

MAPPING = """\
version: 1
target: contacts
fields:
  _user_id: customer_id
  _email: {column: email, type: email}
  _birthdate: birth
"""

# Runs the command with the rejects writer failing on every API reject: an error in the
# path that handles the API's answers, as a full disk or a bug would raise there.
BROKEN_WRITER = """\
import sys
import importer.rejects as rejects
from importer.records import RejectFrame

write = rejects.RejectsWriter.write

def broken(self, found):
    found = found if isinstance(found, RejectFrame) else list(found)
    if not isinstance(found, RejectFrame) and any(r.stage == "api" for r in found):
        raise RuntimeError("injected: the rejects writer failed")
    write(self, found)

rejects.RejectsWriter.write = broken
from importer.cli import main
sys.argv[0] = "instasent-import"
main()
"""


def _data(tmp_path: Path, n: int, api_bad: set[int]) -> tuple[Path, Path]:
    data = tmp_path / "crm.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["customer_id", "email", "birth"])
        for i in range(1, n + 1):
            out.writerow([f"U{i}", f"u{i}@x.es", "31/12/1990" if i in api_bad else "1990-12-31"])
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    return data, mapping


def _env(box: RunningSandbox, state: Path) -> dict[str, str]:
    return {**os.environ, **box.env(), "INSTASENT_STATE_DIR": str(state)}


def _run(args: list[str], box: RunningSandbox, state: Path, *, timeout: float = 60,
         script: str | None = None) -> subprocess.CompletedProcess[str]:
    head = ["-c", script] if script else ["-m", "importer"]
    return subprocess.run([sys.executable, *head, *args], env=_env(box, state),
                          capture_output=True, text=True, timeout=timeout, check=False)


def _landed(box: RunningSandbox, n: int) -> set[int]:
    return {i for i in range(1, n + 1) if box.app.get_contact(f"U{i}") is not None}


def test_a_worker_that_raises_ends_the_run_and_it_resumes(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    n, bad = 300, {15, 55, 95, 135, 175}
    data, mapping = _data(tmp_path, n, bad)
    state = tmp_path / "state"
    rejects = tmp_path / "crm.rejects.csv"
    box = make_sandbox(latency_ms=(2, 4))
    args = ["run", str(data), "--mapping", str(mapping), "--rejects", str(rejects),
            "--batch-size", "10", "--concurrency", "2", "--quiet"]

    started = time.monotonic()
    crashed = _run(args, box, state, script=BROKEN_WRITER)
    assert time.monotonic() - started < 30
    assert crashed.returncode == 1, crashed.stderr
    lines = crashed.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in crashed.stderr, crashed.stderr
    assert "RuntimeError: injected: the rejects writer failed" in lines[0]
    assert "--resume" in lines[0]
    (log,) = state.glob("crash-*.log")
    assert str(log) in lines[0]
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    text = log.read_text()
    assert "Traceback" in text and "injected: the rejects writer failed" in text
    assert box.settings.token not in text

    # The journal is consistent: --resume finishes the job, each row landed or rejected once.
    resumed = _run([*args, "--resume", "--output", "json"], box, state)
    assert resumed.returncode == 3, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["resumed"] is True
    assert report["rows_read"] == n
    assert _landed(box, n) == set(range(1, n + 1)) - bad
    with rejects.open(encoding="utf-8-sig", newline="") as fh:
        rows = [int(r["_source_row"]) for r in csv.DictReader(fh)]
    assert sorted(rows) == sorted(bad)


def _wait_for(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_an_outage_is_waited_out_without_spending_attempts(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    n = 600
    data, mapping = _data(tmp_path, n, set())
    state = tmp_path / "state"
    box = make_sandbox(latency_ms=(3, 5))
    args = ["run", str(data), "--mapping", str(mapping), "--batch-size", "10",
            "--max-attempts", "2", "--outage-wait", "30s", "--output", "json"]
    proc = subprocess.Popen([sys.executable, "-m", "importer", *args], env=_env(box, state),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: box.app.stats()["contacts"] >= 100, 30)
        box.app.go_down(3.0)  # connections closed, every one, for 3 s
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["accepted"] == n and report["rejected"] == 0
    assert _landed(box, n) == set(range(1, n + 1))
    # The progress line said so, at once, and that sending went on.
    assert "the API is down" in err and "--outage-wait 30s" in err
    assert "sending resumed" in err
    assert box.app.stats()["faults"].get("down", 0) >= 5


def test_an_outage_longer_than_outage_wait_stops_the_run_resumably(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    n = 400
    data, mapping = _data(tmp_path, n, set())
    state = tmp_path / "state"
    box = make_sandbox(latency_ms=(3, 5))
    args = ["run", str(data), "--mapping", str(mapping), "--batch-size", "10",
            "--outage-wait", "2", "--output", "json", "--quiet"]

    def outage() -> None:
        _wait_for(lambda: box.app.stats()["contacts"] >= 50, 30)
        box.app.go_down(600.0, 503)  # a proxy answering 503 to everything

    threading.Thread(target=outage, daemon=True).start()
    started = time.monotonic()
    stopped = _run(args, box, state, timeout=60)
    assert time.monotonic() - started < 30
    assert stopped.returncode == 1, stopped.stderr
    assert "Traceback" not in stopped.stderr
    report = json.loads(stopped.stdout)
    assert "--outage-wait 2 s" in report["aborted"] and "--resume" in report["aborted"]
    # No row was turned into a reject by the outage: they are all still to send.
    assert report["rejected"] == 0 and report["retryable_rejects"] == 0
    assert report["accepted"] + report["not_attempted"] == n

    box.app.go_down(0)
    resumed = _run([*args, "--resume"], box, state)
    assert resumed.returncode == 0, resumed.stderr
    assert _landed(box, n) == set(range(1, n + 1))
