"""Rejects, report and state in object storage (issue 17, outputs): a real S3 server on
127.0.0.1 (moto, tests/_s3.py) and the sandbox API; inputs are local files."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from importer.cli import cli
from importer.sandbox.server import RunningSandbox
from tests._s3 import S3

MAPPING = """\
version: 1
target: contacts
fields:
  _user_id: customer_id
  _email: {column: email, type: email}
  _first_name: name
"""


def _cli(args: list[str], box: RunningSandbox, **env: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, env={**box.env(), **env}, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _rows(data: bytes, delimiter: str = ",") -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig")), delimiter=delimiter))


def _setup(tmp_path: Path, rows: str) -> tuple[Path, Path]:
    data = tmp_path / "crm.csv"
    data.write_text("customer_id,name,email\n" + rows, encoding="utf-8")
    mapping = tmp_path / "contacts.yaml"
    mapping.write_text(MAPPING)
    return data, mapping


ROWS = "U1,Ana,ana@x.es\nU2,Íñigo,inigo-at-x.es\nU3,Zoë,zoe@x.es\nU4,Bea,bea@@x.es\n"


def test_rejects_report_and_state_go_to_the_bucket(
    tmp_path: Path, s3: S3, sandbox_server: RunningSandbox
) -> None:
    data, mapping = _setup(tmp_path, ROWS)
    code, _, err = _cli(["run", str(data), "--mapping", str(mapping), "--quiet",
                         "--rejects", s3.url("out/crm.rejects.csv"),
                         "--report", s3.url("out/report.json"),
                         "--state-dir", s3.url("state")], sandbox_server)
    assert code == 3, err
    assert [r["customer_id"] for r in _rows(s3.get("out/crm.rejects.csv"))] == ["U2", "U4"]
    sidecar = json.loads(s3.get("out/crm.rejects.csv.meta.json"))
    assert sidecar["mapping"] == str(mapping.resolve())
    report = json.loads(s3.get("out/report.json"))
    assert report["rejects_path"] == s3.url("out/crm.rejects.csv")
    assert report["accepted"] == 2 and report["rejected"] == 2
    # The state: the journal (finished), no lock left, no local file written beside the input.
    assert s3.keys("state") == ["state/journal.sqlite"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contacts.yaml", "crm.csv"]
    # Nothing to resume: the bucket's journal says the run finished.
    code, _, err = _cli(["run", str(data), "--mapping", str(mapping), "--quiet", "--resume",
                         "--rejects", s3.url("out/crm.rejects.csv"),
                         "--state-dir", s3.url("state")], sandbox_server)
    assert code == 2 and "finished" in err, err


EVENTS_MAPPING = """\
version: 1
target: events
fields:
  _event_id: order_id
  _user_id: customer_id
  _event_type: {value: purchase}
  _event_date: {column: ordered_at, type: datetime, format: "%Y-%m-%d %H:%M:%S"}
  _event_parameters:
    amount: {column: amount, type: float}
    currency: {value: EUR}
"""


def _write_events(path: Path, n: int) -> set[int]:
    """Every 97th row has an impossible date (a map reject); returns their row numbers."""
    bad = set()
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["order_id", "customer_id", "ordered_at", "amount"])
        for i in range(1, n + 1):
            date = f"2024-10-{1 + i % 28:02d} 12:{i % 60:02d}:00"
            if i % 97 == 0:
                date, _ = "2024-02-31 25:00:00", bad.add(i)
            out.writerow([f"ORD-{i:07d}", f"C{i % 5000:05d}", date, f"{i % 500}.{i % 100:02d}"])
    return bad


@pytest.mark.slow
def test_kill_9_while_journaling_to_the_bucket_then_resume_lands_every_row_once(
    tmp_path: Path, s3: S3, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    n = 60_000
    data = tmp_path / "events.csv"
    bad = _write_events(data, n)
    source = str(data)  # the input in the bucket once it can be read there: s3.put(...)
    mapping = tmp_path / "events.yaml"
    mapping.write_text(EVENTS_MAPPING)
    box = make_sandbox(latency_ms=(10, 20))
    env = {**s3.env, **box.env(), "INSTASENT_CHECKPOINT_SECONDS": "0.5"}
    cmd = [sys.executable, "-m", "importer", "run", source, "--mapping", str(mapping),
           "--rejects", s3.url("out/events.rejects.csv"), "--state-dir", s3.url("state"),
           "--concurrency", "2", "--quiet", "--output", "json"]  # ~10k rows/s: killable
    deadline = time.monotonic() + 180

    kills = 0
    for fraction in (0.3, 0.65):
        proc = subprocess.Popen([*cmd, *(["--resume"] if kills else [])], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while box.app.stats()["events"] < fraction * n and proc.poll() is None:
            assert time.monotonic() < deadline, "the import is too slow for this test"
            time.sleep(0.02)
        time.sleep(0.6)  # past a checkpoint: the bucket holds some of this invocation's work
        assert proc.poll() is None, f"run {kills + 1} ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
        # The killed run's lock is left behind, with the state a resume continues.
        assert {"state/lock", "state/journal.sqlite"} <= set(s3.keys("state"))

    # The same command without --resume refuses to guess (the lock of the dead process is
    # taken over: it ran on this host and is gone).
    refused = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60,
                             check=False)
    assert refused.returncode == 2, refused.stderr
    assert "--resume" in refused.stderr and "--restart" in refused.stderr
    final = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True,
                           timeout=max(deadline - time.monotonic(), 10), check=False)
    assert final.returncode == 3, final.stderr
    report = json.loads(final.stdout)
    stats = box.app.stats()

    assert stats["events"] == n - len(bad)  # every valid row once (keyed by _event_id)
    rejected = [int(r["_source_row"]) for r in _rows(s3.get("out/events.rejects.csv"))]
    assert sorted(rejected) == sorted(bad)  # every invalid row once
    assert report["rows_read"] == n
    assert report["skipped_done"] + report["accepted"] + report["rejected"] == n
    assert report["skipped_done"] > 0.5 * n  # the bucket's journal held most of the work
    assert "state/lock" not in s3.keys("state")  # released at the end
    resent = stats["items_received"] - stats["events"] - stats["items_failed"]
    print(f"rows={n} bad={len(bad)} kills={kills} resent={resent} "
          f"skipped_done={report['skipped_done']} accepted_by_final_run={report['accepted']}")
