"""Files and disks (issue 18, items 7-9): output paths checked before anything is sent, a full
disk mid-run ends in one line and a ``--resume`` that completes the run, rejects files never
left with half a record, ``retry`` of a damaged one, and private modes.

We run as root, so a chmod does not stop a write: a full disk is a file-size limit
(``RLIMIT_FSIZE``) set in a child process that ignores ``SIGXFSZ``, so writes past it fail
with EFBIG exactly as they would with ENOSPC.
"""

from __future__ import annotations

import csv
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from importer.cli import cli
from importer.rejects import RejectsWriter
from importer.sandbox.server import RunningSandbox

MAPPING = """\
version: 1
target: contacts
fields:
  _user_id: customer_id
  _email: {column: email, type: email}
  _first_name: name
"""

HEADER = "customer_id,name,email,note\n"


def _invoke(args: list[str], box: RunningSandbox | None = None,
            **env: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, env={**(box.env() if box else {}), **env},
                                catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _inputs(tmp_path: Path, rows: int, *, bad_every: int = 3) -> tuple[Path, Path]:
    """``rows`` contacts; every ``bad_every``-th has a bad email and a multi-line note."""
    data = tmp_path / "crm.csv"
    lines = [HEADER]
    for i in range(1, rows + 1):
        if i % bad_every == 0:
            note = '"first line\nsecond line, ' + "x" * 200 + '\nthird"'
            lines.append(f"U{i},Name {i},not-an-email-{i},{note}\n")
        else:
            lines.append(f"U{i},Name {i},u{i}@x.es,plain\n")
    data.write_text("".join(lines), encoding="utf-8")
    mapping = tmp_path / "contacts.yaml"
    mapping.write_text(MAPPING)
    return data, mapping


def _records(path: Path) -> list[dict[str, str]]:
    """Every record of a rejects file; fails on a half record (a field count off)."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, strict=True)
        header = next(reader)
        rows = list(reader)
    assert all(len(r) == len(header) for r in rows), "a record with missing fields"
    return [dict(zip(header, r, strict=True)) for r in rows]


# ── item 7: checked before anything is sent ─────────────────────────────────────────────────


def _posts(box: RunningSandbox) -> int:
    return int(box.app.stats()["items_received"])


@pytest.mark.parametrize("where", ["rejects-missing-dir", "rejects-under-file", "report-under-file",
                                   "state-dir-under-file", "dry-run-output-missing-dir"])
def test_an_unwritable_output_is_exit_2_before_anything_is_sent(
    tmp_path: Path, sandbox_server: RunningSandbox, where: str
) -> None:
    data, mapping = _inputs(tmp_path, 30)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    (tmp_path / "a-dir").mkdir()
    args = ["run", str(data), "--mapping", str(mapping), "--quiet"]
    bad = {
        "rejects-missing-dir": ["--rejects", str(tmp_path / "nowhere" / "r.csv")],
        "rejects-under-file": ["--rejects", str(blocker / "r.csv")],
        "report-under-file": ["--report", str(blocker / "report.json")],
        "state-dir-under-file": ["--state-dir", str(blocker / "state")],
        "dry-run-output-missing-dir": ["--dry-run", "--dry-run-output",
                                       str(tmp_path / "nowhere" / "out.ndjson")],
    }[where]
    code, _, err = _invoke([*args, *bad], sandbox_server)
    assert code == 2, err
    named = bad[-1]
    assert named in err and "cannot write" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert _posts(sandbox_server) == 0
    assert list(tmp_path.glob("**/.instasent-import-probe-*")) == []  # probes cleaned up


def test_delete_checks_its_rejects_and_report_paths_before_deleting(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    code, _, err = _invoke(["delete", "--ids", "U1,U2", "--yes", "--report",
                            str(tmp_path / "nowhere" / "report.json")], sandbox_server)
    assert code == 2 and "nowhere" in err and "cannot write" in err, err
    code, _, err = _invoke(["delete", "--ids", "U1,U2", "--yes", "--rejects",
                            str(tmp_path / "nowhere" / "r.csv")], sandbox_server)
    assert code == 2 and "nowhere" in err, err
    assert sandbox_server.app.stats()["requests_total"] == 0


# ── item 7 and 8: a full disk mid-run ───────────────────────────────────────────────────────

_CHILD = """\
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
limit = int(sys.argv[1])
if limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
from importer.cli import main
sys.argv = ["instasent-import", *sys.argv[2:]]
main()
"""


def _child(args: list[str], box: RunningSandbox, *, fsize: int,
           cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **box.env()}
    return subprocess.run(
        [sys.executable, "-c", _CHILD, str(fsize), *args], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["map", "api"])
def test_a_full_disk_mid_run_is_one_line_then_resume_finishes_the_run(
    tmp_path: Path, sandbox_server: RunningSandbox, stage: str
) -> None:
    rows = 3_000
    data, mapping = _inputs(tmp_path, rows)
    if stage == "api":  # emails passed as text: the API rejects the bad ones, item by item
        mapping.write_text(MAPPING.replace("{column: email, type: email}", "email"))
    args = ["run", str(data), "--mapping", str(mapping), "--quiet", "--batch-size", "50",
            "--report", str(tmp_path / "report.json")]
    # ~1,000 rejects of ~330 bytes: the rejects file outgrows 64 KiB a few batches in.
    first = _child(args, sandbox_server, fsize=64 * 1024, cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    assert "Traceback" not in first.stderr
    lines = first.stderr.strip().splitlines()
    assert len(lines) == 1, first.stderr
    assert "crm.rejects.csv" in lines[0] or "journal" in lines[0]
    assert lines[0].endswith(" --resume") and "instasent-import run" in lines[0]
    assert "File too large" in lines[0] or "disk is full" in lines[0]  # rejects or journal
    # Cut back to whole records: the file reads to the end, every record complete.
    partial = _records(tmp_path / "crm.rejects.csv")
    assert all(r["note"].endswith("third") for r in partial)

    second = _child([*args, "--resume"], sandbox_server, fsize=0, cwd=tmp_path)
    assert second.returncode == 3, second.stderr
    rejects = _records(tmp_path / "crm.rejects.csv")
    bad = [f"U{i}" for i in range(3, rows + 1, 3)]
    assert sorted(r["customer_id"] for r in rejects) == sorted(bad)  # each exactly once
    assert {r["_reject_stage"] for r in rejects} == {stage}
    assert all(r["note"].endswith("third") for r in rejects)
    for i in range(1, rows + 1):
        assert (sandbox_server.app.get_contact(f"U{i}") is None) == (i % 3 == 0)


@pytest.mark.slow
def test_a_journal_that_cannot_grow_is_one_line_then_resume_finishes_the_run(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    rows = 30_000  # no rejects: the journal is the file that hits the limit
    data = tmp_path / "crm.csv"
    data.write_text("customer_id,name,email\n" + "".join(f"U{i},N,u{i}@x.es\n"
                                                    for i in range(1, rows + 1)))
    mapping = tmp_path / "contacts.yaml"
    mapping.write_text(MAPPING)
    args = ["run", str(data), "--mapping", str(mapping), "--quiet", "--state-dir", "state"]
    first = _child(args, sandbox_server, fsize=64 * 1024, cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    (line,) = first.stderr.strip().splitlines()
    assert line.startswith("error: cannot write state/journal.sqlite: ")
    assert line.endswith(" --resume")
    second = _child([*args, "--resume"], sandbox_server, fsize=0, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert sandbox_server.app.stats()["contacts"] == rows


def _write_rejects_under_limit(tmp_path: Path, limit: int) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(f"""\
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
        from importer.exceptions import StorageError
        from importer.records import Reject
        from importer.rejects import RejectsWriter
        note = "first\\nsecond " + "y" * 300 + "\\nthird"
        w = RejectsWriter({str(tmp_path / "r.csv")!r}, source_columns=["id", "note"])
        try:
            for batch in range(100):
                w.write([Reject("in.csv", batch * 10 + i, "map", "bad", "m",
                                values={{"id": str(batch * 10 + i), "note": note}})
                         for i in range(10)])
        except StorageError as exc:
            print(exc)
            sys.exit(1)
        """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)


def test_a_failed_write_leaves_whole_records_and_names_the_file(tmp_path: Path) -> None:
    done = _write_rejects_under_limit(tmp_path, 20_000)
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith(f"cannot write {tmp_path / 'r.csv'}: File too large")
    records = _records(tmp_path / "r.csv")
    assert records and all(r["note"].endswith("third") for r in records)
    assert len(records) % 10 == 0  # whole batches: the failed one was cut back entirely
    assert (tmp_path / "r.csv").stat().st_size <= 20_000


def test_the_writer_raises_storage_error_on_an_unwritable_path(tmp_path: Path) -> None:
    from importer.exceptions import StorageError

    with pytest.raises(StorageError, match="nowhere"):
        RejectsWriter(tmp_path / "nowhere" / "r.csv", source_columns=["id"])


# ── item 8: retry of a damaged rejects file ─────────────────────────────────────────────────


def test_retry_of_a_damaged_rejects_file_imports_what_it_can_read(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    data, mapping = _inputs(tmp_path, 12, bad_every=3)
    code, _, err = _invoke(["run", str(data), "--mapping", str(mapping), "--quiet"],
                           sandbox_server)
    assert code == 3, err
    rejects = tmp_path / "crm.rejects.csv"
    # The analyst fixes the emails; then the file is cut inside the last record's
    # multi-line note, as a full disk did before records were written whole.
    fixed = rejects.read_text(encoding="utf-8-sig")
    for i in (6, 9, 12):  # U3 stays invalid
        fixed = fixed.replace(f"not-an-email-{i},", f"u{i}@x.es,")
    cut = fixed.rindex("second line")
    rejects.write_text("\ufeff" + fixed[:cut], encoding="utf-8")

    code, _, err = _invoke(["retry", str(rejects), "--all"], sandbox_server)
    assert code == 3, err  # done; the damaged line and U3 are permanent rejects
    assert "cannot be read" in err and "Traceback" not in err
    for i in (6, 9):  # readable and fixed: imported
        assert sandbox_server.app.get_contact(f"U{i}") is not None
    again = _records(tmp_path / "crm.rejects.retry1.csv")
    stages = {r["_reject_stage"] for r in again}
    assert stages == {"map", "read"}, again
    read = next(r for r in again if r["_reject_stage"] == "read")
    assert read["_source_file"] == str(rejects)
    assert "U12" in read["_raw_line"]
    assert sandbox_server.app.get_contact("U12") is None


# ── item 9: private modes ───────────────────────────────────────────────────────────────────


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_report_and_dry_run_output_are_private(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    data, mapping = _inputs(tmp_path, 6)
    report, preview = tmp_path / "report.json", tmp_path / "preview.ndjson"
    preview.write_text("old")
    os.chmod(preview, 0o644)  # an existing file is made private too
    code, _, err = _invoke(["run", str(data), "--mapping", str(mapping), "--quiet",
                            "--report", str(report)], sandbox_server)
    assert code == 3, err
    code, _, err = _invoke(["run", str(data), "--mapping", str(mapping), "--quiet",
                            "--dry-run", "--dry-run-output", str(preview)])
    assert code == 3, err
    assert _mode(report) == 0o600
    assert _mode(preview) == 0o600
    assert preview.read_text().count('"target":"contacts"') == 4


def test_delete_report_is_private(tmp_path: Path, sandbox_server: RunningSandbox) -> None:
    report = tmp_path / "deleted.json"
    code, _, err = _invoke(["delete", "--ids", "U1", "--yes", "--quiet",
                            "--report", str(report)], sandbox_server)
    assert code == 0, err
    assert _mode(report) == 0o600


def test_a_token_file_others_can_read_is_warned_about_once(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    token = tmp_path / "token"
    token.write_text(sandbox_server.settings.token + "\n")
    os.chmod(token, 0o644)
    env = {k: v for k, v in sandbox_server.env().items() if k != "INSTASENT_TOKEN"}
    result = CliRunner().invoke(cli, ["check", "--token-file", str(token)],
                                env={**env, "INSTASENT_TOKEN": ""}, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "token file" in line]
    assert len(warnings) == 1 and "0644" in warnings[0] and "chmod 600" in warnings[0]
    os.chmod(token, 0o600)
    result = CliRunner().invoke(cli, ["check", "--token-file", str(token)],
                                env={**env, "INSTASENT_TOKEN": ""}, catch_exceptions=False)
    assert result.exit_code == 0 and "token file" not in result.stderr


def test_a_resumed_rejects_file_drops_a_record_cut_inside_a_quoted_field(
    tmp_path: Path,
) -> None:
    from importer.records import Reject

    path = tmp_path / "r.csv"

    def rejects(first: int) -> list[Reject]:
        return [Reject("in.csv", i, "map", "bad", "m",
                       values={"id": str(i), "note": 'say "hi"\nsecond line\nthird'})
                for i in range(first, first + 3)]

    with RejectsWriter(path, source_columns=["id", "note"]) as writer:
        writer.write(rejects(1))
    whole = path.read_bytes()
    # A kill inside the next record's note, just after one of its newlines.
    path.write_bytes(whole + b'4,"say ""hi""\nsecond')
    with RejectsWriter(path, source_columns=["id", "note"], append=True) as writer:
        writer.write(rejects(5))
    records = _records(path)
    assert [r["id"] for r in records] == ["1", "2", "3", "5", "6", "7"]
    assert all(r["note"] == 'say "hi"\nsecond line\nthird' for r in records)


def test_validate_checks_its_rejects_path_first(tmp_path: Path) -> None:
    data, mapping = _inputs(tmp_path, 6)
    target = tmp_path / "nowhere" / "r.csv"
    code, _, err = _invoke(["validate", str(data), "--mapping", str(mapping), "--rejects",
                            str(target)])
    assert code == 2, err
    assert err.strip() == (f"error: cannot write the rejects file {target}: its directory does "
                           "not exist — choose another path or fix the directory; nothing was "
                           "sent")

