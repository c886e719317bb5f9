"""``run --changed-only``: only new and changed items go out; ``--delete-missing`` and its
guards; crash safety (kill -9, resume) and the lock. Against the sandbox over loopback HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import pytest
from click.testing import CliRunner

from importer.changes import (
    KEY,
    KEY_HASH,
    PAYLOAD_HASH,
    AckLog,
    MaxDelete,
    StateKey,
    acquire_lock,
    key_hashes,
    load_state,
    payload_hashes,
    read_log,
    read_manifest,
)
from importer.cli import cli
from importer.exceptions import UsageError
from importer.sandbox.server import RunningSandbox

ROOT = Path(__file__).resolve().parent.parent
MAPPING = """\
version: 1
target: contacts
fields:
  _user_id: customer_id
  _email: {column: email, type: email}
  _first_name: first_name
"""
# No local email check: the sandbox refuses bad addresses (an API reject, not a map reject).
MAPPING_API_CHECKS = """\
version: 1
target: contacts
fields:
  _user_id: customer_id
  _email: email
"""
ORDERS = """\
version: 1
targets:
  - target: contacts
    fields:
      _user_id: customer_id
      _email: {column: email, type: email}
  - target: events
    fields:
      _event_id: {hash: [order_id]}
      _user_id: customer_id
      _event_type: {value: purchase}
      _event_parameters:
        amount: {column: amount, type: float}
        currency: {value: EUR}
"""


def _rows(n: int, start: int = 1, name: str = "Ana") -> list[tuple[str, str, str]]:
    return [(f"C{i:05d}", f"user{i}@example.com", name) for i in range(start, start + n)]


def _csv(path: Path, rows: list[tuple[str, ...]], header: str = "customer_id,email,first_name"
         ) -> Path:
    path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _mapping(tmp_path: Path, text: str = MAPPING, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _run(args: list[str], box: RunningSandbox, state: Path, stdin: str | None = None
         ) -> tuple[int, dict[str, Any], str]:
    env = {**box.env(), "INSTASENT_STATE_DIR": str(state)}
    result = CliRunner().invoke(cli, ["run", *args, "--output", "json", "-q"], env=env,
                                input=stdin, catch_exceptions=False)
    try:
        report = json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    except json.JSONDecodeError:
        report = {}
    return result.exit_code, report, result.stderr


def _received(box: RunningSandbox) -> int:
    return int(box.app.stats()["items_received"])


@pytest.fixture
def box(make_sandbox: Callable[..., RunningSandbox]) -> RunningSandbox:
    return make_sandbox()


def _state_key(box: RunningSandbox, mapping: Path, target: str = "contacts") -> StateKey:
    from importer.mapping import load_mapping

    s = box.settings
    return StateKey(box.api_url, s.project, s.datasource, target, load_mapping(mapping).sha256,
                    mapping.stem)


def _recorded(box: RunningSandbox, mapping: Path, state: Path, target: str = "contacts"
              ) -> pl.DataFrame:
    directory = _state_key(box, mapping, target).dir(state)
    manifest = read_manifest(directory)
    assert manifest is not None
    return pl.read_parquet(directory / manifest["snapshot"])


# ───────────────────────────── sending only what changed ─────────────────────────────


def test_unchanged_rows_are_not_sent_and_count_as_unchanged(tmp_path: Path,
                                                            box: RunningSandbox) -> None:
    data, mapping = _csv(tmp_path / "crm.csv", _rows(250)), _mapping(tmp_path)
    state = tmp_path / "s"
    code, first, err = _run([str(data), "-m", str(mapping), "--changed-only"], box, state)
    assert code == 0, err
    assert first["accepted"] == 250 and first["unchanged"] == 0
    assert first["changed_only"]["contacts"]["status"] == "first"
    assert "sending everything and recording it" in err
    assert _received(box) == 250

    code, second, err = _run([str(data), "-m", str(mapping), "--changed-only"], box, state)
    assert code == 0, err
    assert _received(box) == 250  # nothing more reached the API
    assert second["requests"] == 0
    assert second["unchanged"] == 250 and second["accepted"] == 0
    assert second["rows_read"] == 250


def test_changed_and_new_rows_are_sent_in_full_batches(tmp_path: Path,
                                                       box: RunningSandbox) -> None:
    mapping, state = _mapping(tmp_path), tmp_path / "s"
    rows = _rows(1000)
    _run([str(_csv(tmp_path / "d1.csv", rows)), "-m", str(mapping), "--changed-only"], box, state)
    before = _received(box)
    # every 5th row changes (200), 50 new ones at the end: spread over several source batches
    night2 = [(r[0], r[1], "Changed") if i % 5 == 0 else r for i, r in enumerate(rows)]
    night2 += _rows(50, start=5000)
    data2 = _csv(tmp_path / "d2.csv", night2)
    code, report, err = _run([str(data2), "-m", str(mapping), "--changed-only",
                              "--batch-size", "100"], box, state)
    assert code == 0, err
    assert _received(box) - before == 250
    assert report["accepted"] == 250 and report["unchanged"] == 800
    assert report["requests"] == 3  # 250 items packed across source batches: 100+100+50
    assert box.app.store.get_contact("C00001")["_first_name"] == "Changed"  # type: ignore[index]
    assert box.app.store.get_contact("C05049") is not None


def test_small_source_batches_still_give_full_requests(tmp_path: Path,
                                                       box: RunningSandbox) -> None:
    """Skipped rows leave holes in every source batch; the chunker packs across them."""
    from importer.changed_run import ChangeOptions
    from importer.config import Credentials
    from importer.pipeline import RunOptions, run_import
    from importer.sources import ReadOptions

    mapping, state = _mapping(tmp_path), tmp_path / "s"
    rows = _rows(2000)
    options = RunOptions(read=ReadOptions(batch_rows=250), state_dir=str(state),
                         changes=ChangeOptions())
    s = box.settings
    creds = Credentials(box.api_url, s.project, s.datasource, s.token)
    run_import([str(_csv(tmp_path / "a.csv", rows))], mapping, creds, options)
    night2 = [(r[0], r[1], "X") if i % 10 == 3 else r for i, r in enumerate(rows)]  # 200
    report = run_import([str(_csv(tmp_path / "b.csv", night2))], mapping, creds, options)
    assert report.accepted == 200 and report.unchanged == 1800
    assert report.requests == 2 and report.mean_batch_fill == 100.0


def test_rows_rejected_by_the_api_are_sent_again(tmp_path: Path, box: RunningSandbox) -> None:
    mapping, state = _mapping(tmp_path, MAPPING_API_CHECKS), tmp_path / "s"
    rows = [("C1", "a@example.com"), ("C2", "not-an-email"), ("C3", "c@example.com")]
    data = _csv(tmp_path / "d.csv", rows, header="customer_id,email")
    code, first, _ = _run([str(data), "-m", str(mapping), "--changed-only"], box, state)
    assert code == 3 and first["accepted"] == 2 and first["rejected"] == 1
    before = _received(box)
    code, second, _ = _run([str(data), "-m", str(mapping), "--changed-only"], box, state)
    assert code == 3
    assert _received(box) - before == 1  # only the row the API refused last time
    assert second["unchanged"] == 2 and second["rejected"] == 1
    recorded = _recorded(box, mapping, state)
    assert sorted(recorded[KEY].to_list()) == ["C1", "C3"]


def test_a_changed_mapping_sends_everything_and_says_so(tmp_path: Path,
                                                        box: RunningSandbox) -> None:
    data, state = _csv(tmp_path / "d.csv", _rows(120)), tmp_path / "s"
    mapping = _mapping(tmp_path)
    _run([str(data), "-m", str(mapping), "--changed-only"], box, state)
    old_dir = _state_key(box, mapping).dir(state)
    mapping.write_text(MAPPING.replace("_first_name: first_name",
                                       "_first_name: {column: first_name, transform: upper}"))
    before = _received(box)
    code, report, err = _run([str(data), "-m", str(mapping), "--changed-only"], box, state)
    assert code == 0, err
    assert "mapping changed since the last run: sending everything" in err
    assert report["changed_only"]["contacts"]["status"] == "mapping_changed"
    assert _received(box) - before == 120 and report["unchanged"] == 0
    assert not old_dir.exists()  # the old mapping's state is obsolete once the run is complete
    code, again, _ = _run([str(data), "-m", str(mapping), "--changed-only"], box, state)
    assert again["unchanged"] == 120 and _received(box) - before == 120


def test_another_mapping_file_on_the_same_datasource_keeps_its_own_state(
    tmp_path: Path, box: RunningSandbox
) -> None:
    data, state = _csv(tmp_path / "d.csv", _rows(40)), tmp_path / "s"
    crm = _mapping(tmp_path, name="crm.yaml")
    shop = _mapping(tmp_path, MAPPING.replace("_first_name: first_name", ""), name="shop.yaml")
    _run([str(data), "-m", str(crm), "--changed-only"], box, state)
    code, report, err = _run([str(data), "-m", str(shop), "--changed-only"], box, state)
    assert code == 0 and report["changed_only"]["contacts"]["status"] == "first"
    assert "mapping changed" not in err
    _, again, _ = _run([str(data), "-m", str(crm), "--changed-only"], box, state)
    assert again["unchanged"] == 40  # the other job did not wipe this one's state


def test_a_run_refused_before_sending_records_nothing(tmp_path: Path,
                                                      box: RunningSandbox) -> None:
    mapping, state = _mapping(tmp_path), tmp_path / "s"
    data = _csv(tmp_path / "d.csv", _rows(10))
    env = {**box.env(), "INSTASENT_STATE_DIR": str(state), "INSTASENT_TOKEN": "wrong"}
    result = CliRunner().invoke(cli, ["run", str(data), "-m", str(mapping), "--changed-only",
                                      "-q"], env=env)
    assert result.exit_code == 1  # 401 at GET /stream
    directory = _state_key(box, mapping).dir(state)
    assert read_manifest(directory) is None and not list(directory.glob("acks-*"))
    _, report, _ = _run([str(data), "-m", str(mapping), "--changed-only"], box, state)
    assert report["changed_only"]["contacts"]["status"] == "first"


def test_full_sends_everything_and_rebuilds_the_state(tmp_path: Path,
                                                      box: RunningSandbox) -> None:
    mapping, state = _mapping(tmp_path), tmp_path / "s"
    _run([str(_csv(tmp_path / "a.csv", _rows(100))), "-m", str(mapping), "--changed-only"],
         box, state)
    smaller = _csv(tmp_path / "b.csv", _rows(60))
    before = _received(box)
    code, report, err = _run([str(smaller), "-m", str(mapping), "--changed-only", "--full"],
                             box, state)
    assert report["changed_only"]["contacts"]["status"] == "full"
    assert code == 0 and "--full: sending everything and rebuilding the state" in err
    assert _received(box) - before == 60
    assert _recorded(box, mapping, state).height == 60  # rebuilt from what was acknowledged


def test_without_the_flag_no_state_is_read_or_written(tmp_path: Path,
                                                      box: RunningSandbox) -> None:
    mapping, state = _mapping(tmp_path), tmp_path / "s"
    data = _csv(tmp_path / "a.csv", _rows(30))
    _run([str(data), "-m", str(mapping)], box, state)
    assert not (state / "changed").exists()
    _run([str(data), "-m", str(mapping), "--changed-only"], box, state)
    directory = _state_key(box, mapping).dir(state)
    snapshot_before = sorted(p.name for p in directory.iterdir())
    before = _received(box)
    _run([str(data), "-m", str(mapping)], box, state)
    assert _received(box) - before == 30  # everything sent: the state was not read
    assert sorted(p.name for p in directory.iterdir()) == snapshot_before


def test_two_targets_count_a_row_unchanged_only_when_nothing_of_it_is_sent(
    tmp_path: Path, box: RunningSandbox
) -> None:
    mapping, state = _mapping(tmp_path, ORDERS), tmp_path / "s"
    header = "order_id,customer_id,email,amount"
    rows = [(f"O{i}", f"C{i % 20}", f"u{i % 20}@example.com", "10.5") for i in range(60)]
    _run([str(_csv(tmp_path / "a.csv", rows, header)), "-m", str(mapping), "--changed-only"],
         box, state)
    # one new order for a known customer (its contact unchanged), one for a new customer
    more = [*rows, ("O100", "C1", "u1@example.com", "3"), ("O101", "C99", "n@example.com", "4")]
    code, report, err = _run([str(_csv(tmp_path / "b.csv", more, header)), "-m", str(mapping),
                              "--changed-only"], box, state)
    assert code == 0, err
    assert report["unchanged"] == 60
    assert report["accepted"] == 2
    assert report["changed_only"]["events"]["unchanged"] == 60
    assert report["changed_only"]["contacts"]["compared_sent"] == 1  # C99 only


def test_a_two_target_dry_run_accounts_for_every_row(tmp_path: Path,
                                                     box: RunningSandbox) -> None:
    mapping, state = _mapping(tmp_path, ORDERS), tmp_path / "s"
    header = "order_id,customer_id,email,amount"
    rows = [(f"O{i}", f"C{i % 20}", f"u{i % 20}@example.com", "10.5") for i in range(60)]
    _run([str(_csv(tmp_path / "a.csv", rows, header)), "-m", str(mapping), "--changed-only"],
         box, state)
    more = [*rows, ("O100", "C1", "u1@example.com", "3"), ("O101", "C99", "n@example.com", "4")]
    env = {**box.env(), "INSTASENT_STATE_DIR": str(state)}
    result = CliRunner().invoke(cli, ["run", str(_csv(tmp_path / "b.csv", more, header)), "-m",
                                      str(mapping), "--changed-only", "--dry-run", "-q",
                                      "--output", "json"], env=env)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["unchanged"] == 60 and report["not_attempted"] == 2
    assert report["rows_read"] == 62 and report["accepted"] == 0


# ───────────────────────────── --delete-missing ─────────────────────────────


def _night1(tmp_path: Path, box: RunningSandbox, n: int = 100) -> tuple[Path, Path]:
    mapping, state = _mapping(tmp_path), tmp_path / "s"
    code, _, err = _run([str(_csv(tmp_path / "n1.csv", _rows(n))), "-m", str(mapping),
                         "--changed-only"], box, state)
    assert code == 0, err
    return mapping, state


def test_delete_missing_deletes_exactly_the_absent_contacts(tmp_path: Path,
                                                            box: RunningSandbox) -> None:
    mapping, state = _night1(tmp_path, box)
    today = _csv(tmp_path / "n2.csv", [r for r in _rows(100) if r[0] not in ("C00007",
                                                                             "C00042")])
    code, report, err = _run([str(today), "-m", str(mapping), "--changed-only",
                              "--delete-missing", "--yes"], box, state)
    assert code == 0, err
    assert report["deletion"]["deleted"] == 2
    assert box.app.store.get_contact("C00007") is None
    assert box.app.store.get_contact("C00042") is None
    assert box.app.store.get_contact("C00008") is not None
    assert report["requests"] == 0 and report["unchanged"] == 98
    assert sorted(_recorded(box, mapping, state)[KEY].to_list()) == [r[0] for r in _rows(100)
                                                                     if r[0] not in
                                                                     ("C00007", "C00042")]


def test_a_contact_already_gone_counts_as_absent_and_leaves_the_state(
    tmp_path: Path, box: RunningSandbox
) -> None:
    mapping, state = _night1(tmp_path, box)
    box.app.store.delete_contact("C00100")  # deleted by someone else in the meantime
    code, report, err = _run([str(_csv(tmp_path / "n2.csv", _rows(98))), "-m", str(mapping),
                              "--changed-only", "--delete-missing", "--yes"], box, state)
    assert code == 0, err
    assert report["deletion"]["deleted"] == 1 and report["deletion"]["already_absent"] == 1
    assert _recorded(box, mapping, state).height == 98
    _, again, _ = _run([str(_csv(tmp_path / "n2.csv", _rows(98))), "-m", str(mapping),
                        "--changed-only", "--delete-missing", "--yes"], box, state)
    assert again["deletion"]["deleted"] == 0 and again["unchanged"] == 98


def test_delete_missing_is_refused_when_rows_could_not_be_read(tmp_path: Path,
                                                               box: RunningSandbox) -> None:
    mapping, state = _night1(tmp_path, box)
    today = tmp_path / "n2.csv"
    lines = ["customer_id,email,first_name"] + [",".join(r) for r in _rows(99)]
    lines.insert(40, 'C00099,"unterminated,Ana,extra,columns,here')
    today.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = box.app.stats()["requests_total"]
    code, _, err = _run([str(today), "-m", str(mapping), "--changed-only", "--delete-missing",
                         "--yes"], box, state)
    assert code == 2
    assert "--delete-missing refused" in err and "could not be read" in err
    assert box.app.stats()["requests_total"] == before  # nothing sent, not even GET /stream
    assert box.app.store.get_contact("C00100") is not None


def test_delete_missing_is_refused_over_the_threshold(tmp_path: Path,
                                                      box: RunningSandbox) -> None:
    mapping, state = _night1(tmp_path, box)
    truncated = _csv(tmp_path / "n2.csv", _rows(90))  # 10% missing > default 5%
    before = box.app.stats()["requests_total"]
    code, _, err = _run([str(truncated), "-m", str(mapping), "--changed-only",
                         "--delete-missing", "--yes"], box, state)
    assert code == 2
    assert "10 of the 100 recorded contacts (10.0%)" in err and "--max-delete 5%" in err
    assert box.app.stats()["requests_total"] == before
    code, _, err = _run([str(truncated), "-m", str(mapping), "--changed-only",
                         "--delete-missing", "--max-delete", "9", "--yes"], box, state)
    assert code == 2 and "(= 9)" in err
    code, report, err = _run([str(truncated), "-m", str(mapping), "--changed-only",
                              "--delete-missing", "--max-delete", "10%", "--yes"], box, state)
    assert code == 0, err
    assert report["deletion"]["deleted"] == 10


def test_delete_missing_dry_run_lists_and_deletes_nothing(tmp_path: Path,
                                                          box: RunningSandbox) -> None:
    mapping, state = _night1(tmp_path, box)
    today = _csv(tmp_path / "n2.csv", _rows(97))
    env = {**box.env(), "INSTASENT_STATE_DIR": str(state)}
    env.pop("INSTASENT_TOKEN")  # a dry run needs no token
    result = CliRunner().invoke(cli, ["run", str(today), "-m", str(mapping), "--changed-only",
                                      "--delete-missing", "--dry-run", "-q"], env=env)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split() == ["C00098", "C00099", "C00100"]
    assert "would delete 3 contacts" in result.stderr
    assert box.app.stats()["contacts_deleted"] == 0
    assert _recorded(box, mapping, state).height == 100  # a dry run writes no state


def test_delete_missing_asks_without_yes(tmp_path: Path, box: RunningSandbox) -> None:
    mapping, state = _night1(tmp_path, box)
    today = _csv(tmp_path / "n2.csv", _rows(98, name="Changed"))
    before = box.app.stats()["requests_total"]
    code, _, err = _run([str(today), "-m", str(mapping), "--changed-only", "--delete-missing"],
                        box, state, stdin="n\n")
    assert code == 1
    assert "About to PERMANENTLY delete 2 contacts" in err
    assert "not confirmed: nothing was sent or deleted" in err
    stats = box.app.stats()
    assert stats["contacts_deleted"] == 0
    assert stats["items_received"] == 100  # night 1 only: the changed rows were not sent
    assert stats["requests_total"] == before + 1  # GET /stream, to show which datasource
    code, report, _ = _run([str(today), "-m", str(mapping), "--changed-only",
                            "--delete-missing"], box, state, stdin="y\n")
    assert code == 0 and report["deletion"]["deleted"] == 2 and report["accepted"] == 98


def test_delete_missing_needs_changed_only(tmp_path: Path, box: RunningSandbox) -> None:
    data, mapping = _csv(tmp_path / "a.csv", _rows(3)), _mapping(tmp_path)
    code, _, err = _run([str(data), "-m", str(mapping), "--delete-missing"], box, tmp_path / "s")
    assert code == 2 and "only make(s) sense with --changed-only" in err


def test_max_delete_parses_a_count_or_a_percentage() -> None:
    assert MaxDelete.parse("12").limit(1000) == 12
    assert MaxDelete.parse("2.5%").limit(1000) == 25
    assert MaxDelete().limit(2_000_000) == 100_000
    with pytest.raises(UsageError, match="expected a count"):
        MaxDelete.parse("lots")


# ───────────────────────────── validate --changed-only ─────────────────────────────


def test_validate_changed_only_counts_send_skip_delete(tmp_path: Path,
                                                       box: RunningSandbox) -> None:
    mapping, state = _night1(tmp_path, box)
    today = _rows(95)  # 5 absent
    today[0] = (today[0][0], today[0][1], "Changed")
    data = _csv(tmp_path / "n2.csv", [*today, *_rows(3, start=500)])
    env = {k: v for k, v in box.env().items() if k != "INSTASENT_TOKEN"}
    env["INSTASENT_STATE_DIR"] = str(state)
    requests = box.app.stats()["requests_total"]
    result = CliRunner().invoke(cli, ["validate", str(data), "-m", str(mapping),
                                      "--changed-only", "--output", "json"], env=env)
    assert result.exit_code == 0, result.stderr
    changes = json.loads(result.stdout)["changed_only"]
    assert changes["contacts"]["would_send"] == 4 and changes["contacts"]["unchanged"] == 94
    assert changes["would_delete"] == 5
    assert box.app.stats()["requests_total"] == requests  # no network


# ───────────────────────────── crash safety and the lock ─────────────────────────────


def _sandbox_state(box: RunningSandbox, keys: list[str], bodies: dict[str, bytes]
                   ) -> set[tuple[int, int]]:
    held = [k for k in keys if box.app.store.get_contact(k) is not None]
    kh = key_hashes(held)
    ph = payload_hashes([bodies[k] for k in held])
    return set(zip(kh.tolist(), ph.tolist(), strict=True))


def _bodies(data: Path, mapping: Path, tmp_path: Path, box: RunningSandbox) -> dict[str, bytes]:
    """What the importer sends for each key (a dry run's NDJSON, the exact bytes)."""
    out = tmp_path / "sent.ndjson"
    env = {**box.env(), "INSTASENT_STATE_DIR": str(tmp_path / "dry")}
    CliRunner().invoke(cli, ["run", str(data), "-m", str(mapping), "--dry-run", "-q",
                             "--dry-run-output", str(out)], env=env, catch_exceptions=False)
    bodies = {}
    for line in out.read_bytes().splitlines():
        item = orjson.loads(line)["item"]
        bodies[item["_user_id"]] = orjson.dumps(item)
    return bodies


def _cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "importer", *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_state_equals_the_sandbox(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    box = make_sandbox(latency_ms=(20, 30))
    mapping, state = _mapping(tmp_path), tmp_path / "s"
    rows = _rows(6000)
    data = _csv(tmp_path / "big.csv", rows)
    keys = [r[0] for r in rows]
    bodies = _bodies(data, mapping, tmp_path, box)
    env = {**os.environ, **box.env(), "INSTASENT_STATE_DIR": str(state)}
    args = ["run", str(data), "-m", str(mapping), "--changed-only", "-q", "--concurrency", "2"]
    proc = _cli(args, env)
    deadline = time.monotonic() + 60
    while box.app.stats()["items_succeeded"] < 2500 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    held = box.app.stats()["contacts"]
    assert 0 < held < 6000, "the run was not killed mid-way"

    # What the killed run left: every recorded item is in the sandbox (nothing unsent is
    # recorded); at most the requests in flight are missing from it.
    key = _state_key(box, mapping)
    recovered = load_state(state, key)  # folds the killed run's log in
    assert recovered.arrays is not None
    recorded = set(zip(recovered.arrays[0].tolist(), recovered.arrays[1].tolist(), strict=True))
    in_sandbox = _sandbox_state(box, keys, bodies)
    assert recorded <= in_sandbox
    assert len(in_sandbox - recorded) <= 2 * 100

    resumed = subprocess.run([sys.executable, "-m", "importer", *args, "--resume"], env=env,
                             cwd=ROOT, capture_output=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr.decode()
    final = _recorded(box, mapping, state)
    as_set = set(zip(final[KEY_HASH].to_list(), final[PAYLOAD_HASH].to_list(), strict=True))
    assert as_set == _sandbox_state(box, keys, bodies)
    assert len(as_set) == 6000 and box.app.stats()["contacts"] == 6000


def test_a_second_concurrent_run_is_refused(tmp_path: Path,
                                            make_sandbox: Callable[..., RunningSandbox]) -> None:
    box = make_sandbox(latency_ms=(30, 40))
    mapping, state = _mapping(tmp_path), tmp_path / "s"
    data = _csv(tmp_path / "a.csv", _rows(3000))
    env = {**os.environ, **box.env(), "INSTASENT_STATE_DIR": str(state)}
    first = _cli(["run", str(data), "-m", str(mapping), "--changed-only", "-q",
                  "--concurrency", "1"], env)
    try:
        deadline = time.monotonic() + 30
        while box.app.stats()["items_succeeded"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.poll() is None, "the first run ended before the second started"
        code, _, err = _run([str(data), "-m", str(mapping), "--changed-only"], box, state)
        assert code == 2
        assert "another run is using the changed-only state" in err
        assert first.poll() is None
    finally:
        first.kill()
        first.wait(timeout=10)


def test_the_lock_is_released_when_its_holder_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, pathlib; from importer.changes import acquire_lock; "
        f"acquire_lock(pathlib.Path({str(tmp_path)!r}), 'x'); print('held', flush=True); "
        "time.sleep(60)")], cwd=ROOT, stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
    with pytest.raises(UsageError, match="another run"):
        acquire_lock(tmp_path, "x")
    holder.kill()
    holder.wait(timeout=10)
    holder.stdout.close()
    acquire_lock(tmp_path, "x").release()  # no stale lock after a kill


def test_a_torn_log_tail_is_ignored(tmp_path: Path) -> None:
    log = AckLog(tmp_path / "acks-x.log")
    log.append(["A", "B"], [b'{"a":1}', b'{"b":2}'])
    log.append(["C"], None)
    log.close()
    whole = read_log(tmp_path / "acks-x.log")
    assert whole["key"].to_list() == ["A", "B", "C"] and whole["ack"].to_list() == [True, True,
                                                                                    False]
    data = (tmp_path / "acks-x.log").read_bytes()
    (tmp_path / "acks-x.log").write_bytes(data[:-3])
    torn = read_log(tmp_path / "acks-x.log")
    assert torn["key"].to_list() == ["A", "B"]
    assert torn[KEY_HASH].to_list() == key_hashes(["A", "B"]).tolist()
    assert np.array_equal(torn[PAYLOAD_HASH].to_numpy(),
                          payload_hashes([b'{"a":1}', b'{"b":2}']))


def test_logs_left_by_killed_runs_fold_in_write_order(tmp_path: Path) -> None:
    from importer.changes import compact

    older = AckLog(tmp_path / "acks-20261201T010000000000-zzz-1.log")
    older.append(["A", "B"], [b'{"v":1}', b'{"v":1}'])
    older.close()
    newer = AckLog(tmp_path / "acks-20261202T010000000000-aaa-2.log")
    newer.append(["A"], [b'{"v":2}'])
    newer.append(["B"], None)  # deleted since
    newer.close()
    assert compact(tmp_path, {}) == 1
    manifest = read_manifest(tmp_path)
    assert manifest is not None
    folded = pl.read_parquet(tmp_path / manifest["snapshot"])
    assert folded[KEY].to_list() == ["A"]
    assert folded[PAYLOAD_HASH].to_list() == payload_hashes([b'{"v":2}']).tolist()
    assert not list(tmp_path.glob("acks-*"))


def test_the_deletions_rejects_file_goes_beside_the_first_input_in_its_bucket() -> None:
    from importer.changed_run import delete_rejects_path

    assert delete_rejects_path("s3://b/exports/crm.2026-12-03.csv?X-Amz-Signature=s") == (
        "s3://b/exports/crm.delete-rejects.csv")
    assert delete_rejects_path("exports/crm.csv") == "exports/crm.delete-rejects.csv"
