"""Rejects, report and state in object storage (issue 17, outputs): a real S3 server on
127.0.0.1 (moto, tests/_s3.py) and the sandbox API; inputs are local files."""

from __future__ import annotations

import csv
import io
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from importer.cli import cli
from importer.sandbox.server import RunningSandbox
from tests._s3 import S3
from tests.test_resume import EVENTS_MAPPING, write_events

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


@pytest.mark.slow
def test_kill_9_while_journaling_to_the_bucket_then_resume_lands_every_row_once(
    tmp_path: Path, s3: S3, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    n = 60_000
    data = tmp_path / "events.csv"
    bad = write_events(data, n)
    source = s3.put("in/events.csv", data.read_bytes())  # read from the bucket too
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
        assert {"state/lock", "state/lock.beat", "state/journal.sqlite"} <= set(s3.keys("state"))

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
    # The bucket's journal held a good part of the work: more than the first kill's 30% (the
    # checkpoints' uploads trail the sending by a second or two on a loaded machine: 29,462
    # of 60,000 rows with 39,000 landed was seen, so "most of it" was too tight a bound).
    assert report["skipped_done"] > 0.3 * n
    assert not {"state/lock", "state/lock.beat"} & set(s3.keys("state"))  # released
    resent = stats["items_received"] - stats["events"] - stats["items_failed"]
    print(f"rows={n} bad={len(bad)} kills={kills} resent={resent} "
          f"skipped_done={report['skipped_done']} accepted_by_final_run={report['accepted']}")


@pytest.fixture
def read_only(s3: S3) -> Iterator[dict[str, str]]:
    """Credentials of an IAM user that may read the bucket but not write it, with the S3
    server checking every request's credentials and policy for the length of the test."""
    import boto3
    import httpx

    iam = boto3.client("iam", endpoint_url=s3.endpoint, region_name="us-east-1")
    user = f"reader-{s3.bucket}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
                       "Resource": "*"}],
    }))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    httpx.post(f"{s3.endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()
    try:
        yield {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_SESSION_TOKEN": ""}
    finally:
        httpx.post(f"{s3.endpoint}/moto-api/reset-auth", content=b"inf").raise_for_status()


@pytest.mark.parametrize("option", ["--rejects", "--report", "--state-dir"])
def test_an_output_the_credentials_may_not_write_is_exit_2_before_anything_is_sent(
    tmp_path: Path, s3: S3, sandbox_server: RunningSandbox, read_only: dict[str, str],
    option: str,
) -> None:
    data, mapping = _setup(tmp_path, ROWS)
    url = s3.url("out/x.csv" if option != "--state-dir" else "state")
    code, _, err = _cli(["run", str(data), "--mapping", str(mapping), "--quiet", option, url],
                        sandbox_server, **read_only)
    assert code == 2, err
    assert f"cannot write the {_WHAT[option]} {url}: access denied — check the credentials" in err
    assert "nothing was sent" in err and "Traceback" not in err
    assert read_only["AWS_SECRET_ACCESS_KEY"] not in err
    assert sandbox_server.app.stats()["requests_total"] == 0


_WHAT = {"--rejects": "rejects file", "--report": "report", "--state-dir": "state directory"}


@pytest.mark.parametrize("option", ["--rejects", "--report", "--state-dir"])
def test_an_output_in_a_missing_bucket_is_exit_2_before_anything_is_sent(
    tmp_path: Path, s3: S3, sandbox_server: RunningSandbox, option: str
) -> None:
    data, mapping = _setup(tmp_path, ROWS)
    url = f"s3://no-such-bucket-{s3.bucket}/out/x.csv"
    code, _, err = _cli(["run", str(data), "--mapping", str(mapping), "--quiet", option, url],
                        sandbox_server)
    assert code == 2, err
    assert f"cannot write the {_WHAT[option]} {url}: no such object or bucket — check " in err
    assert sandbox_server.app.stats()["requests_total"] == 0


def test_a_state_in_use_is_refused_with_who_holds_it_and_how_to_clear_it(
    tmp_path: Path, s3: S3, sandbox_server: RunningSandbox
) -> None:
    data, mapping = _setup(tmp_path, ROWS)
    holder = {"pid": 4242, "host": "cronjob-7f9c-x2", "started": "2026-12-03T01:00:00+00:00",
              "heartbeat": time.time() - 20, "command": "instasent-import run crm.csv",
              "id": "abc"}
    s3.put("state/lock", json.dumps(holder).encode())
    code, _, err = _cli(["run", str(data), "--mapping", str(mapping), "--quiet",
                         "--state-dir", s3.url("state")], sandbox_server)
    assert code == 2, err
    assert (f"another instasent-import is running over the state {s3.url('state')} (pid 4242 "
            "on cronjob-7f9c-x2, started 2026-12-03T01:00:00+00:00, last heartbeat 2") in err
    assert f"delete {s3.url('state/lock')}" in err
    assert sandbox_server.app.stats()["requests_total"] == 0
    assert json.loads(s3.get("state/lock")) == holder  # left alone


@pytest.mark.parametrize("holder", [
    {"host": "cronjob-elsewhere", "pid": 1, "heartbeat": time.time() - 3600},  # silent an hour
    {"host": socket.gethostname(), "pid": 2**22 + 12345, "heartbeat": time.time()},  # dead
], ids=["old-heartbeat", "dead-pid-on-this-host"])
def test_a_stale_lock_is_taken_over(
    tmp_path: Path, s3: S3, sandbox_server: RunningSandbox, holder: dict[str, object]
) -> None:
    data, mapping = _setup(tmp_path, ROWS)
    s3.put("state/lock", json.dumps({**holder, "id": "old"}).encode())
    code, _, err = _cli(["run", str(data), "--mapping", str(mapping), "--quiet",
                         "--state-dir", s3.url("state")], sandbox_server)
    assert code == 3, err
    assert "state/lock" not in s3.keys("state")  # taken, then released at the end


def test_retry_of_a_rejects_file_in_the_bucket(
    tmp_path: Path, s3: S3, sandbox_server: RunningSandbox
) -> None:
    data, mapping = _setup(tmp_path, ROWS)
    rejects = s3.url("out/crm.rejects.csv")
    code, _, err = _cli(["run", str(data), "--mapping", str(mapping), "--quiet",
                         "--rejects", rejects, "--state-dir", s3.url("state")], sandbox_server)
    assert code == 3, err
    # The analyst fixes one email in the bucket's file (downloaded, edited, uploaded).
    rows = _rows(s3.get("out/crm.rejects.csv"))
    rows[0]["email"] = "inigo@x.es"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    s3.put("out/crm.rejects.csv", out.getvalue().encode())

    code, _, err = _cli(["retry", rejects, "--all", "--quiet", "--state-dir", s3.url("state")],
                        sandbox_server)
    assert code == 3, err
    assert sandbox_server.app.get_contact("U2") is not None
    assert sandbox_server.app.get_contact("U4") is None
    # What failed again is beside it in the bucket, with its sidecar; the rows to retry were
    # kept in the bucket's state directory, named after their content.
    again = _rows(s3.get("out/crm.rejects.retry1.csv"))
    assert [(r["customer_id"], r["_source_file"]) for r in again] == [("U4", str(data))]
    assert json.loads(s3.get("out/crm.rejects.retry1.csv.meta.json"))["mapping"] == str(
        mapping.resolve())
    assert any(k.startswith("state/retry-") for k in s3.keys("state"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contacts.yaml", "crm.csv"]


def test_retry_of_a_missing_object_names_it(
    tmp_path: Path, s3: S3, sandbox_server: RunningSandbox
) -> None:
    code, _, err = _cli(["retry", s3.url("out/none.rejects.csv"), "--quiet"], sandbox_server)
    assert code == 2, err
    assert f"{s3.url('out/none.rejects.csv')}: no such object" in err


def test_changed_only_state_kept_in_the_bucket_between_containers(
    tmp_path: Path, s3: S3, sandbox_server: RunningSandbox
) -> None:
    data, mapping = _setup(tmp_path, "U1,Ana,ana@x.es\nU2,Bea,bea@x.es\nU3,Eva,eva@x.es\n")
    args = ["run", str(data), "--mapping", str(mapping), "--quiet", "--changed-only",
            "--state-dir", s3.url("state"), "--output", "json"]
    code, out, err = _cli(args, sandbox_server)
    assert code == 0, err
    assert any(k.endswith("/state.json") for k in s3.keys("state/changed"))
    # The next night, a new container (nothing local) and one contact changed.
    data.write_text("customer_id,name,email\nU1,Ana,ana@x.es\nU2,Bea,bea@y.es\n"
                    "U3,Eva,eva@x.es\n", encoding="utf-8")
    code, out, err = _cli(args, sandbox_server)
    assert code == 0, err
    report = json.loads(out)
    assert (report["accepted"], report["unchanged"]) == (1, 2)
    assert not [k for k in s3.keys("state") if k.endswith((".log", "/lock")) or k == "lock"]


def test_a_lock_taken_over_mid_run_stops_the_run(
    tmp_path: Path, s3: S3, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    """Another process broke this run's lock (it thought it stale): the run stops at the
    next heartbeat, exit 1, and leaves the state to the new holder."""
    n = 20_000
    data = tmp_path / "events.csv"
    write_events(data, n)
    mapping = tmp_path / "events.yaml"
    mapping.write_text(EVENTS_MAPPING)
    box = make_sandbox(latency_ms=(10, 20))
    env = {**s3.env, **box.env(), "INSTASENT_CHECKPOINT_SECONDS": "0.3"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "importer", "run", str(data), "--mapping", str(mapping),
         "--rejects", str(tmp_path / "r.csv"), "--state-dir", s3.url("state"),
         "--concurrency", "1", "--quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while box.app.stats()["events"] < 1000:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    other = {"pid": 999, "host": "elsewhere", "started": "now", "heartbeat": time.time(),
             "id": "other"}
    s3.put("state/lock", json.dumps(other).encode())
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert f"cannot write {s3.url('state')}: its lock is now held by pid 999 on elsewhere" in err
    assert "make sure one job at a time uses this state" in err and "Traceback" not in err
    assert box.app.stats()["events"] < n - 300  # stopped early
    assert json.loads(s3.get("state/lock")) == other


def test_a_checkpoint_uploads_whole_rejects_records_only(tmp_path: Path, s3: S3) -> None:
    """A rejects file caught halfway through a record (a quoted field with a newline) is
    uploaded up to its last whole record: a resumed run appends to a valid file."""
    from importer.mirror import Outputs

    with Outputs() as outputs:
        local = Path(outputs.local(s3.url("out/r.csv")))
        whole = '\ufeffid,_reject_message\r\n1,"two\r\nlines"\r\n'
        local.write_text(whole + '2,"half\r\nway', encoding="utf-8")
        outputs.sync(final=False)
        assert s3.get("out/r.csv").decode("utf-8") == whole
        local.write_text(whole + '2,"done"\r\n', encoding="utf-8")
    assert s3.get("out/r.csv").decode("utf-8") == whole + '2,"done"\r\n'  # at the end


def test_validate_changed_only_reads_the_state_in_the_bucket(
    tmp_path: Path, s3: S3, sandbox_server: RunningSandbox
) -> None:
    data, mapping = _setup(tmp_path, "U1,Ana,ana@x.es\nU2,Bea,bea@x.es\n")
    state = s3.url("state")  # from the environment, as a CronJob's spec would set it
    code, _, err = _cli(["run", str(data), "--mapping", str(mapping), "--quiet",
                         "--changed-only"], sandbox_server, INSTASENT_STATE_DIR=state)
    assert code == 0, err
    before = s3.keys("state")
    code, out, err = _cli(["validate", str(data), "--mapping", str(mapping), "--changed-only",
                           "--output", "json"], sandbox_server, INSTASENT_STATE_DIR=state)
    assert code == 0, err
    assert json.loads(out)["changed_only"]["contacts"]["unchanged"] == 2
    assert s3.keys("state") == before  # read only


@pytest.mark.slow
def test_credentials_refused_mid_run_stop_it_resumably(
    tmp_path: Path, s3: S3, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    """The bucket stops accepting the run's credentials halfway (an expired session): the
    run stops after a few failed checkpoints, exit 1 with the --resume command, which — once
    the credentials work — lands every valid row once and every invalid row once in the
    bucket's rejects file."""
    import httpx

    n = 40_000
    data = tmp_path / "events.csv"
    bad = write_events(data, n)
    mapping = tmp_path / "events.yaml"
    mapping.write_text(EVENTS_MAPPING)
    box = make_sandbox(latency_ms=(10, 20))
    env = {**s3.env, **box.env(), "INSTASENT_CHECKPOINT_SECONDS": "0.3"}
    cmd = [sys.executable, "-m", "importer", "run", str(data), "--mapping", str(mapping),
           "--rejects", s3.url("out/r.csv"), "--state-dir", s3.url("state"),
           "--concurrency", "1", "--quiet", "--output", "json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while box.app.stats()["events"] < n / 3 or "state/journal.sqlite" not in s3.keys("state"):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    httpx.post(f"{s3.endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        httpx.post(f"{s3.endpoint}/moto-api/reset-auth", content=b"inf").raise_for_status()
    assert proc.returncode == 1, err
    assert f"cannot write {s3.url('state/')}" in err and ": access denied — the run stopped;" in err
    assert err.rstrip().endswith("--resume") and "Traceback" not in err
    assert box.app.stats()["events"] < 0.9 * n  # stopped, not run to the end

    final = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True,
                           timeout=120, check=False)
    assert final.returncode == 3, final.stderr
    assert box.app.stats()["events"] == n - len(bad)
    rejected = [int(r["_source_row"]) for r in _rows(s3.get("out/r.csv"))]
    assert sorted(rejected) == sorted(bad)


def test_parquet_rejects_in_the_bucket_are_uploaded_whole_at_the_end(
    tmp_path: Path, s3: S3, sandbox_server: RunningSandbox
) -> None:
    import polars as pl

    data = tmp_path / "crm.parquet"
    pl.DataFrame({"customer_id": ["U1", "U2", "U3"], "name": ["Ana", "Íñigo", "Eva"],
                  "email": ["ana@x.es", "inigo-at-x.es", "eva@x.es"]}).write_parquet(data)
    mapping = tmp_path / "contacts.yaml"
    mapping.write_text(MAPPING)
    code, _, err = _cli(["run", str(data), "--mapping", str(mapping), "--quiet",
                         "--rejects", s3.url("out/crm.rejects.parquet")], sandbox_server)
    assert code == 3, err
    rejects = pl.read_parquet(io.BytesIO(s3.get("out/crm.rejects.parquet")))
    assert rejects["customer_id"].to_list() == ["U2"]
    assert rejects["_reject_code"].to_list() == ["invalid_email"]


def test_resume_with_nothing_in_the_bucket_names_the_bucket(
    tmp_path: Path, s3: S3, sandbox_server: RunningSandbox
) -> None:
    data, mapping = _setup(tmp_path, ROWS)
    code, _, err = _cli(["run", str(data), "--mapping", str(mapping), "--quiet", "--resume",
                         "--state-dir", s3.url("state")], sandbox_server)
    assert code == 2, err
    assert ("no earlier run of these inputs with this mapping is recorded in "
            f"{s3.url('state')}; nothing to resume") in err
    assert sandbox_server.app.stats()["requests_total"] == 0
    assert s3.keys("state") == ["state/journal.sqlite"]  # the lock released; nothing else


def test_a_crash_log_goes_to_the_bucket_and_the_run_resumes_from_it(
    tmp_path: Path, s3: S3, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    from tests.test_run_failures import BROKEN_WRITER, _data

    n, bad = 300, {15, 55, 95, 135, 175}
    data, mapping = _data(tmp_path, n, bad)
    box = make_sandbox(latency_ms=(2, 4))
    env = {**s3.env, **box.env()}
    args = ["run", str(data), "--mapping", str(mapping), "--rejects", s3.url("out/r.csv"),
            "--state-dir", s3.url("state"), "--batch-size", "10", "--concurrency", "2",
            "--quiet"]
    crashed = subprocess.run([sys.executable, "-c", BROKEN_WRITER, *args], env=env,
                             capture_output=True, text=True, timeout=60, check=False)
    assert crashed.returncode == 1, crashed.stderr
    (log,) = [k for k in s3.keys("state") if k.startswith("state/crash-")]
    assert f"the traceback is in {s3.url(log)}" in crashed.stderr
    text = s3.get(log).decode()
    assert "injected: the rejects writer failed" in text and box.settings.token not in text

    resumed = subprocess.run([sys.executable, "-m", "importer", *args, "--resume"], env=env,
                             capture_output=True, text=True, timeout=60, check=False)
    assert resumed.returncode == 3, resumed.stderr
    landed = {i for i in range(1, n + 1) if box.app.get_contact(f"U{i}") is not None}
    assert landed == set(range(1, n + 1)) - bad
    assert sorted(int(r["_source_row"]) for r in _rows(s3.get("out/r.csv"))) == sorted(bad)


def test_the_default_rejects_file_of_a_bucket_input_is_beside_it(tmp_path: Path) -> None:
    import dataclasses

    from importer.pipeline import RunOptions, plan_import
    from importer.runstate import run_rejects_path

    data, mapping = _setup(tmp_path, ROWS)
    plan = plan_import([str(data)], mapping)
    url = "s3://exports/crm/2026-12-01.csv.gz?X-Amz-Signature=secret"
    plan = dataclasses.replace(plan, sources=(dataclasses.replace(plan.sources[0], path=url),))
    assert run_rejects_path(plan, RunOptions()) == "s3://exports/crm/2026-12-01.rejects.csv"
    assert run_rejects_path(plan, RunOptions(rejects_path="r.csv")) == "r.csv"


def test_the_local_working_copy_is_private_and_removed_at_the_end(s3: S3) -> None:
    import stat

    from importer.mirror import Outputs

    s3.put("state/changed/p.d.x/contacts/m/h/state.json", b"{}")
    with Outputs() as outputs:
        local = Path(outputs.state_dir(s3.url("state")))
        pulled = local / "changed/p.d.x/contacts/m/h/state.json"
        assert pulled.read_bytes() == b"{}"
        assert stat.S_IMODE(pulled.stat().st_mode) == 0o600
        assert stat.S_IMODE(local.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(pulled.parent.stat().st_mode) == 0o700
        assert "state/lock" in s3.keys("state")
    assert not local.exists()
    assert s3.keys("state") == ["state/changed/p.d.x/contacts/m/h/state.json"]
