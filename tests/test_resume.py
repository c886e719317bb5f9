"""Crashes and re-runs: nothing lost, nothing duplicated (the journal, --resume, --restart)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from importer.cli import cli
from importer.journal import FLUSH_ROWS
from importer.sandbox.server import RunningSandbox

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


def write_events(path: Path, n: int) -> set[int]:
    """Every 97th row has an impossible date; returns those rows' numbers."""
    bad = set()
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["order_id", "customer_id", "ordered_at", "amount"])
        for i in range(1, n + 1):
            date = f"2024-10-{1 + i % 28:02d} 12:{i % 60:02d}:00"
            if i % 97 == 0:
                date = "2024-02-31 25:00:00"
                bad.add(i)
            out.writerow([f"ORD-{i:07d}", f"C{i % 5000:05d}", date, f"{i % 500}.{i % 100:02d}"])
    return bad


def _env(box: RunningSandbox, state: Path) -> dict[str, str]:
    return {**os.environ, **box.env(), "INSTASENT_STATE_DIR": str(state)}


def _cmd(data: Path, mapping: Path, rejects: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "importer", "run", str(data), "--mapping", str(mapping),
            "--rejects", str(rejects), "--quiet", "--output", "json", *extra]


@pytest.mark.slow
def test_kill_9_three_times_then_resume_lands_every_event_exactly_once(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    n = 200_000
    data = tmp_path / "events.csv"
    bad = write_events(data, n)
    mapping = tmp_path / "events.yaml"
    mapping.write_text(EVENTS_MAPPING)
    rejects = tmp_path / "events.rejects.csv"
    box = make_sandbox(latency_ms=(2, 6))
    env = _env(box, tmp_path / "state")
    deadline = time.monotonic() + 240  # the whole test, bounded

    kills = 0
    for fraction in (0.15, 0.45, 0.75):
        args = _cmd(data, mapping, rejects, *(["--resume"] if kills else []))
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        while box.app.stats()["events"] < fraction * n and proc.poll() is None:
            assert time.monotonic() < deadline, "the import is too slow for this test"
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1

    # Without --resume or --restart the same command refuses to guess (exit 2).
    refused = subprocess.run(_cmd(data, mapping, rejects), env=env, capture_output=True,
                             text=True, timeout=60, check=False)
    assert refused.returncode == 2
    assert "--resume" in refused.stderr and "--restart" in refused.stderr

    final = subprocess.run(_cmd(data, mapping, rejects, "--resume"), env=env,
                           capture_output=True, text=True,
                           timeout=max(deadline - time.monotonic(), 10), check=False)
    assert final.returncode == 3, final.stderr
    report = json.loads(final.stdout)
    stats = box.app.stats()

    # Every valid event exactly once (the store is keyed by _event_id; resends are counted).
    assert stats["events"] == n - len(bad)
    # The rejects file has each invalid row exactly once.
    with rejects.open(encoding="utf-8-sig", newline="") as fh:
        rejected_rows = [int(r["_source_row"]) for r in csv.DictReader(fh)]
    assert sorted(rejected_rows) == sorted(bad)
    # The counts add up: the resumed run skipped what the killed ones had finished.
    assert report["rows_read"] == n
    assert report["skipped_done"] + report["accepted"] + report["rejected"] == n
    assert report["skipped_done"] > 0.7 * n
    # Re-sent rows are bounded by what was in flight at each kill (concurrency x batch) plus
    # the acknowledgements the journal had not committed yet.
    resent = stats["items_received"] - stats["events"] - stats["items_failed"]
    assert resent <= kills * (32 * 100 + FLUSH_ROWS), resent
    print(f"kills={kills} resent={resent} skipped_done={report['skipped_done']} "
          f"accepted_by_final_run={report['accepted']} duplicates={report['duplicates']}")


def test_unfinished_run_needs_a_choice_and_restart_starts_over(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    box = make_sandbox()
    data = tmp_path / "events.csv"
    write_events(data, 500)
    mapping = tmp_path / "events.yaml"
    mapping.write_text(EVENTS_MAPPING)
    env = {k: v for k, v in _env(box, tmp_path / "state").items() if k.startswith("INSTASENT")}

    def run(*extra: str) -> tuple[int, str, str]:
        r = CliRunner().invoke(cli, ["run", str(data), "--mapping", str(mapping), "--quiet",
                                     "--output", "json", *extra], env=env)
        return r.exit_code, r.stdout, r.stderr

    # An earlier invocation that died: a run left "running" in the journal.
    from importer.journal import Journal
    from importer.pipeline import plan_import

    plan = plan_import([str(data)], mapping)
    journal = Journal(tmp_path / "state")
    journal.start(plan.run_id, {"rejects_path": str(tmp_path / "events.rejects.csv")},
                  resume=False)
    journal.close()

    code, _, err = run()
    assert code == 2
    assert f"run {plan.run_id}" in err
    assert box.app.stats()["requests_total"] == 0  # refused before any network call
    code, out, err = run("--restart")
    assert code == 3, err
    assert json.loads(out)["skipped_done"] == 0
    code, out, _ = run()  # finished now: a plain re-run is allowed, and dedups events
    assert code == 3
    assert json.loads(out)["duplicates"] == 500 - 5


def test_same_input_in_two_processes_with_different_batch_sizes_gives_identical_ids(
    tmp_path: Path,
) -> None:
    data = tmp_path / "orders.csv"
    data.write_text("order_id,line_no,customer_id\n"
                    + "".join(f"O{i},{i % 3},C{i}\n" for i in range(1, 301)))
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "version: 1\ntarget: events\nfields:\n  _event_id: {hash: [order_id, line_no]}\n"
        "  _user_id: customer_id\n  _event_type: {value: page_view}\n"
    )
    outputs = []
    for batch, seed in (("7", "1"), ("100", "2")):
        out = tmp_path / f"dry-{batch}.ndjson"
        subprocess.run(
            [sys.executable, "-m", "importer", "run", str(data), "--mapping", str(mapping),
             "--dry-run", "--dry-run-output", str(out), "--batch-size", batch, "--quiet"],
            env={**os.environ, "PYTHONHASHSEED": seed}, check=True, timeout=120,
        )
        outputs.append([orjson.loads(x)["item"]["_event_id"] for x in out.read_bytes().split()])
    assert len(outputs[0]) == 300
    assert len(set(outputs[0])) == 300
    assert outputs[0] == outputs[1]


def test_a_finished_run_drops_its_acknowledgements_an_aborted_one_keeps_them(
    tmp_path: Path,
) -> None:
    from importer.journal import Journal

    journal = Journal(tmp_path / "state")
    try:
        for run_id in ("done", "stopped"):
            journal.start(run_id, {}, resume=False)
            journal.record(run_id, "events", ["a.csv", "a.csv", "b.csv"], [2, 3, 2])
        journal.finish("done", "finished")
        journal.finish("stopped", "aborted")
        assert journal.acked("done", "events") == {}
        kept = journal.acked("stopped", "events")
        assert sorted(kept) == ["a.csv", "b.csv"]
        assert sorted(kept["a.csv"].to_list()) == [2, 3]
        record = journal.get("done")
        assert record is not None and record.status == "finished"
    finally:
        journal.close()


def test_a_resumed_run_answers_for_the_rejects_of_its_earlier_invocations(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    """The rows rejected before a crash are skipped on --resume, yet the run as a whole has
    permanent rejects: its exit code says so (3, not 0) and the report points at the file."""
    box = make_sandbox()
    data = tmp_path / "events.csv"
    bad = write_events(data, 500)  # 5 impossible dates, all in the first (only) batch
    mapping = tmp_path / "events.yaml"
    mapping.write_text(EVENTS_MAPPING)
    rejects = tmp_path / "events.rejects.csv"
    env = {k: v for k, v in _env(box, tmp_path / "state").items() if k.startswith("INSTASENT")}

    def run(*extra: str) -> tuple[int, dict[str, object]]:
        r = CliRunner().invoke(cli, ["run", str(data), "--mapping", str(mapping), "--quiet",
                                     "--rejects", str(rejects), "--output", "json", *extra],
                               env=env)
        return r.exit_code, json.loads(r.stdout)

    # The first invocation stops at the first reject: one reject is written (--max-rejects
    # caps the file), the rest of the batch is not attempted, nothing is sent.
    code, first = run("--max-rejects", "1")
    assert code == 1 and first["rejected"] == 1 and first["accepted"] == 0
    assert first["not_attempted"] == 499
    code, final = run("--resume")
    assert final["rejected"] == len(bad) - 1  # the one rejected before is not redone
    assert final["rejected_before"] == 1 and final["retryable_before"] == 0
    assert final["accepted"] == 500 - len(bad)
    assert final["rejects_path"] == str(rejects)
    assert code == 3
    assert box.app.stats()["events"] == 500 - len(bad)


def test_acknowledgements_are_committed_in_groups_and_on_close(tmp_path: Path) -> None:
    """A few batches wait in memory (what a kill -9 may lose and a resume sends again); a
    full group, finishing or closing commits them."""
    import sqlite3

    from importer.journal import Journal

    def committed() -> int:
        with sqlite3.connect(tmp_path / "state" / "journal.sqlite") as other:
            return int(other.execute("SELECT COUNT(*) FROM acked").fetchone()[0])

    journal = Journal(tmp_path / "state")
    journal.start("r", {}, resume=False)
    batch = list(range(100))
    journal.record("r", "events", ["a.csv"] * 100, batch)
    assert committed() == 0
    for _ in range(FLUSH_ROWS // 100 - 1):
        journal.record("r", "events", ["a.csv"] * 100, batch)
    assert committed() == 1  # one group: one record for the file
    journal.record("r", "events", ["a.csv", "b.csv"], [1, 1])
    journal.close()
    assert committed() == 3
