"""``instasent-import retry``: rejects files fed back, whatever a spreadsheet did to them."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from importer.cli import cli
from importer.sandbox.server import RunningSandbox
from importer.sandbox.settings import FaultSettings

MAPPING = """\
version: 1
target: contacts
fields:
  _user_id: customer_id
  _email: {column: email, type: email}
  _first_name: name
"""


def _cli(args: list[str], box: RunningSandbox) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args, env=box.env(), catch_exceptions=False)
    return result.exit_code, result.stderr


def _read(path: Path, encoding: str = "utf-8-sig", delimiter: str = ",") -> list[dict[str, str]]:
    with path.open(encoding=encoding, newline="") as fh:
        return list(csv.DictReader(fh, delimiter=delimiter))


def _setup(tmp_path: Path, rows: str) -> tuple[Path, Path]:
    data = tmp_path / "crm.csv"
    data.write_text("customer_id,name,email\n" + rows, encoding="utf-8")
    mapping = tmp_path / "contacts.yaml"
    mapping.write_text(MAPPING)
    return data, mapping


def test_a_spreadsheet_edited_rejects_file_re_runs(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    data, mapping = _setup(
        tmp_path,
        "U1,Ana,ana@x.es\nU2,Íñigo,inigo-at-x.es\nU3,Zoë,zoe@@x.es\nU4,Bea,bea@x.es\n"
        "U5,Óscar,oscar x.es\n",
    )
    code, err = _cli(["run", str(data), "--mapping", str(mapping), "--quiet"], sandbox_server)
    assert code == 3, err
    rejects = tmp_path / "crm.rejects.csv"
    rows = _read(rejects)
    assert [r["customer_id"] for r in rows] == ["U2", "U3", "U5"]

    # The analyst fixes two emails in Excel, deletes the _reject_* columns, moves the
    # email column first and saves as "CSV (semicolon)": cp1252 behind a UTF-8 BOM.
    fixed = {"U2": "inigo@x.es", "U3": "zoe@x.es"}
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow(["email", "customer_id", "name", "_source_file", "_source_row"])
    for r in rows:
        writer.writerow([fixed.get(r["customer_id"], r["email"]), r["customer_id"], r["name"],
                         r["_source_file"], r["_source_row"]])
    rejects.write_bytes(b"\xef\xbb\xbf" + out.getvalue().encode("cp1252"))

    code, err = _cli(["retry", str(rejects), "--all", "--quiet"], sandbox_server)
    assert code == 3, err
    contact = sandbox_server.app.get_contact("U2")
    assert contact is not None
    assert sandbox_server.app.get_contact("U3") is not None
    assert sandbox_server.app.get_contact("U5") is None
    # The new rejects file keeps the delimiter the spreadsheet saved (UTF-8 with a BOM).
    retried = tmp_path / "crm.rejects.retry1.csv"
    assert retried.read_bytes().startswith(b"\xef\xbb\xbf")
    assert retried.read_text(encoding="utf-8-sig").splitlines()[0].count(";") >= 4
    again = _read(retried, delimiter=";")
    assert [r["customer_id"] for r in again] == ["U5"]
    # Provenance survives: the row still points at the original export and line.
    assert again[0]["_source_file"] == str(data)
    assert again[0]["_source_row"] == "5"
    assert again[0]["name"] == "Óscar"


def test_retry_takes_only_retryable_rows_by_default(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    box = make_sandbox()
    data, mapping = _setup(tmp_path, "U1,Ana,ana@x.es\nU2,Bo,bad\nU3,Cy,cy@x.es\n")

    # Faults switch on after the credential check: U1 and U3 fail in transport.
    from importer.pipeline import Progress, RunOptions, run_import
    from importer.upload import UploadSettings
    from tests.test_run import creds

    def break_server(_: Progress) -> None:
        box.app.set_faults(FaultSettings(fail_rate=1.0))

    report = run_import([str(data)], mapping, creds(box),
                        RunOptions(upload=UploadSettings(max_attempts=2, backoff_base=0.01)),
                        progress=break_server)
    assert report.exit_code == 4
    assert report.rejects_path is not None
    box.app.set_faults(FaultSettings())

    code, err = _cli(["retry", report.rejects_path, "--quiet"], box)
    assert code == 0, err  # the two transport rows land; the bad email was not retried
    assert box.app.stats()["contacts"] == 2
    assert not (tmp_path / "crm.rejects.retry1.csv").exists()
    code, err = _cli(["retry", report.rejects_path, "--all", "--quiet"], box)
    assert code == 3  # now the bad email is tried too, and fails again
    assert [r["customer_id"] for r in _read(tmp_path / "crm.rejects.retry1.csv")] == ["U2"]


def test_retry_without_a_recorded_mapping_asks_for_one(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    rejects = tmp_path / "lonely.rejects.csv"
    rejects.write_text("customer_id,email,_reject_retryable\nU1,a@x.es,true\n")
    code, err = _cli(["retry", str(rejects)], sandbox_server)
    assert code == 2
    assert "pass --mapping" in err


def test_a_changed_mapping_is_used_with_a_warning(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    data, mapping = _setup(tmp_path, "U1,Ana,nope\n")
    code, _ = _cli(["run", str(data), "--mapping", str(mapping), "--quiet"], sandbox_server)
    assert code == 3
    mapping.write_text(MAPPING.replace("{column: email, type: email}", "{value: fixed@x.es}"))
    code, err = _cli(["retry", str(tmp_path / "crm.rejects.csv"), "--all"], sandbox_server)
    assert "changed since these rows were rejected" in err
    assert code == 0, err
