"""Resuming never strands, repeats or silently restarts (issue 18 §3-5): a killed ``retry``
resumes into the same rejects file; ``--resume`` with nothing to resume says what it found and
sends nothing; two runs over one state directory never overlap."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path

import pytest

from importer.sandbox.server import RunningSandbox
from importer.sandbox.settings import FaultSettings

MAPPING = """\
version: 1
target: contacts
fields:
  _user_id: customer_id
  _email: {column: email, type: email}
  _birthdate: birth
"""
HEADER = ["customer_id", "email", "birth"]


def _row(i: int, api_bad: Collection[int]) -> list[str]:
    return [f"U{i}", f"u{i}@x.es", "31/12/1990" if i in api_bad else "1990-12-31"]


def _data(tmp_path: Path, n: int, api_bad: Collection[int] = ()) -> tuple[Path, Path]:
    data = tmp_path / "crm.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(HEADER)
        out.writerows(_row(i, api_bad) for i in range(1, n + 1))
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    return data, mapping


def _env(box: RunningSandbox, state: Path) -> dict[str, str]:
    return {**os.environ, **box.env(), "INSTASENT_STATE_DIR": str(state)}


def _cli(args: list[str], box: RunningSandbox, state: Path, *, cwd: Path | None = None,
         timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "importer", *args], env=_env(box, state),
                          cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def _popen(args: list[str], box: RunningSandbox, state: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "importer", *args], env=_env(box, state),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _landed(box: RunningSandbox, n: int) -> set[int]:
    return {i for i in range(1, n + 1) if box.app.get_contact(f"U{i}") is not None}


# ── §3 a killed retry resumes into the file it began ──────────────────────────────────────


def test_a_killed_retry_resumed_continues_its_rejects_file_and_strands_nothing(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    n, api_bad = 3000, {7, 1500, 2900}
    _, mapping = _data(tmp_path, 0)
    # A run's rejects file whose every row failed in transport (retryable), as a long outage
    # leaves it; its sidecar names the mapping.
    rejects = tmp_path / "crm.rejects.csv"
    with rejects.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow([*HEADER, "_source_file", "_source_row", "_reject_stage", "_reject_code",
                      "_reject_retryable"])
        out.writerows([*_row(i, api_bad), "crm.csv", i, "transport", "transport", "true"]
                      for i in range(1, n + 1))
    Path(f"{rejects}.meta.json").write_text(json.dumps({"mapping": str(mapping)}))
    state = tmp_path / "state"
    box = make_sandbox(latency_ms=(2, 4))
    box.app.set_faults(FaultSettings(fail_rate=0.1, fail_statuses=(500,)), seed=1)
    args = ["--quiet", "--max-attempts", "1", "--concurrency", "2", "--batch-size", "10"]

    killed = _popen(["retry", str(rejects), *args], box, state)
    try:
        _wait_for(lambda: box.app.stats()["contacts"] >= n // 3 or killed.poll() is not None)
        assert killed.poll() is None, killed.communicate()
        first = tmp_path / "crm.rejects.retry1.csv"
        _wait_for(lambda: first.exists())
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.communicate(timeout=30)

    resumed = _cli(["retry", str(rejects), *args, "--resume", "--output", "json"], box, state)
    assert resumed.returncode in (3, 4), resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["resumed"] is True
    assert report["rejects_path"] == str(first)
    assert not (tmp_path / "crm.rejects.retry2.csv").exists()

    # Following the tool's own advice (retry the file the report names) lands every row.
    box.app.set_faults(FaultSettings())
    latest = report["rejects_path"]
    for _ in range(5):
        again = _cli(["retry", latest, "--quiet", "--output", "json"], box, state)
        if again.returncode in (0, 3) and "no rows to retry" not in again.stderr:
            break
        assert again.returncode == 4, again.stderr
        latest = json.loads(again.stdout)["rejects_path"]
    assert _landed(box, n) == set(range(1, n + 1)) - api_bad
    refused = []
    for path in sorted(tmp_path.glob("crm.rejects.retry*.csv")):
        with path.open(encoding="utf-8-sig", newline="") as fh:
            refused += [int(r["_source_row"]) for r in csv.DictReader(fh)
                        if r["_reject_stage"] == "api"]
    assert sorted(refused) == sorted(api_bad)  # each refused once, in one file


# ── §4 --resume with nothing to resume ────────────────────────────────────────────────────


def test_resume_after_a_finished_run_sends_nothing_and_keeps_the_rejects(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    data, mapping = _data(tmp_path, 30, {4})
    state = tmp_path / "state"
    box = make_sandbox()
    args = ["run", str(data), "--mapping", str(mapping), "--quiet"]
    assert _cli(args, box, state).returncode == 3
    rejects = tmp_path / "crm.rejects.csv"
    before, requests = rejects.read_bytes(), box.app.stats()["requests_total"]

    again = _cli([*args, "--resume"], box, state)
    assert again.returncode == 2
    assert "finished at" in again.stderr and "nothing to resume" in again.stderr
    assert box.app.stats()["requests_total"] == requests  # not even the credential check
    assert rejects.read_bytes() == before


def test_resume_with_no_earlier_run_says_so(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    data, mapping = _data(tmp_path, 5)
    box = make_sandbox()
    refused = _cli(["run", str(data), "--mapping", str(mapping), "--resume"], box,
                   tmp_path / "state")
    assert refused.returncode == 2
    assert "no earlier run of these inputs" in refused.stderr
    assert box.app.stats()["requests_total"] == 0


def test_resume_of_a_changed_input_says_so_and_sends_nothing(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    data, mapping = _data(tmp_path, 40, {10})
    state = tmp_path / "state"
    box = make_sandbox()
    args = ["run", str(data), "--mapping", str(mapping), "--quiet", "--concurrency", "1",
            "--batch-size", "1", "--max-rejects", "1"]
    assert _cli(args, box, state).returncode == 1  # stopped at the first reject: unfinished
    rejects = tmp_path / "crm.rejects.csv"
    before, requests = rejects.read_bytes(), box.app.stats()["requests_total"]
    with data.open("a", encoding="utf-8") as fh:
        fh.write("U41,u41@x.es,1990-12-31\n")

    refused = _cli([*args, "--resume"], box, state)
    assert refused.returncode == 2
    assert "the input changed" in refused.stderr and "nothing was sent" in refused.stderr
    assert box.app.stats()["requests_total"] == requests
    assert rejects.read_bytes() == before


def test_a_path_spelt_another_way_is_the_same_run(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    n = 40
    data, _ = _data(tmp_path, n, {20})
    state = tmp_path / "state"
    box = make_sandbox()
    opts = ["--mapping", "m.yaml", "--quiet", "--concurrency", "1", "--batch-size", "1",
            "--output", "json"]
    stopped = _cli(["run", "./crm.csv", *opts, "--max-rejects", "1"], box, state,
                   cwd=tmp_path)
    assert stopped.returncode == 1, stopped.stderr
    sent = box.app.stats()["items_received"]
    assert sent >= 20

    resumed = _cli(["run", str(data), *opts, "--resume"], box, state, cwd=tmp_path)
    assert resumed.returncode == 3, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["resumed"] is True and report["skipped_done"] >= 20
    # Nothing the first invocation finished was sent again.
    assert box.app.stats()["items_received"] == sent + report["accepted"]
    assert _landed(box, n) == set(range(1, n + 1)) - {20}


# ── §5 two runs over one state directory ──────────────────────────────────────────────────


@pytest.mark.parametrize("second_flags", [[], ["--resume"]])
def test_a_second_run_over_the_same_state_is_refused_while_the_first_runs(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox], second_flags: list[str]
) -> None:
    n = 2000
    data, mapping = _data(tmp_path, n)
    state = tmp_path / "state"
    box = make_sandbox(latency_ms=(8, 10))
    args = ["run", str(data), "--mapping", str(mapping), "--quiet", "--concurrency", "1",
            "--batch-size", "10"]
    first = _popen(args, box, state)
    try:
        _wait_for(lambda: box.app.stats()["contacts"] > 0 or first.poll() is not None)
        assert first.poll() is None, first.communicate()
        second = _cli([*args, *second_flags], box, state)
        assert first.poll() is None, "the first run ended too soon for this test"
        assert second.returncode == 2, second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert socket.gethostname() in second.stderr
        assert "--resume" not in second.stderr
        # The second one sent nothing, not even its credential check.
        assert box.app.stats()["requests"]["GET /stream"] == {"200": 1}
        # The first one dies: the kernel releases its lock, and --resume takes over.
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        first.kill()
        first.communicate(timeout=30)
    box.app.set_faults(FaultSettings())
    final = _cli([*args, "--resume", "--concurrency", "8"], box, state)
    assert final.returncode == 0, final.stderr
    assert _landed(box, n) == set(range(1, n + 1))
