"""Issue 15's mapping cases end to end: a run against a live sandbox stores exactly these
values (sample files in ``sample_data/edge/``), and the mapping check reports every problem."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from importer.config import Credentials
from importer.exceptions import MappingError
from importer.pipeline import RunOptions, plan_import, run_import
from importer.report import EXIT_REJECTS
from importer.sandbox.server import RunningSandbox
from importer.upload import UploadSettings
from importer.validate import validate_files

EDGE = Path(__file__).parent.parent / "sample_data" / "edge"
FAST = UploadSettings(backoff_base=0.01, backoff_cap=0.05, max_attempts=12, rate_jitter=0.01)

DATES_MAPPING = """\
target: contacts
fields:
  _user_id: customer_id
  seen_at: {column: seen_at, type: datetime, format: "%Y-%m-%d %H:%M:%S.%f",
            timezone: Europe/Madrid}
  created: {column: hubspot_created, type: datetime}
  visited: {column: visited, type: datetime, timezone: Europe/Madrid}
  signup: {column: signup_epoch, type: datetime, format: epoch_s}
  first_order: {column: first_order_excel, type: datetime, format: excel}
  birthday: {column: birthday, type: date, format: "%d %b %Y"}
  called_at: {column: called_at, type: datetime, format: "%d/%m/%Y %I:%M %p %z"}
"""


def creds(box: RunningSandbox) -> Credentials:
    s = box.settings
    return Credentials(box.api_url, s.project, s.datasource, s.token)


def test_python_formats_iso_epoch_and_excel_store_exact_values(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    data = tmp_path / "dates.csv"
    shutil.copy(EDGE / "datetimes_python_formats.csv", data)
    mapping = tmp_path / "dates.yaml"
    mapping.write_text(DATES_MAPPING)
    rejects = tmp_path / "dates.rejects.csv"
    report = run_import([str(data)], mapping, creds(sandbox_server),
                        RunOptions(upload=FAST, rejects_path=str(rejects)))
    assert (report.accepted, report.rejected, report.exit_code) == (3, 1, EXIT_REJECTS)
    app = sandbox_server.app
    assert app.get_contact("C1") == {
        "_user_id": "C1",
        "seen_at": "2024-11-14T18:21:00.123Z",  # was 18:21:00.000Z: %f lost its digits
        "created": "2024-11-14T19:21:00.123Z",  # HubSpot's "… UTC"
        "visited": "2024-11-14T18:21:00.000Z",  # +01:00 without seconds
        "signup": "2024-11-14T19:21:00.000Z",
        "first_order": "2024-11-16T12:00:00.000Z",  # Excel 45612.5
        "birthday": "1990-11-14",
        "called_at": "2024-11-14T18:21:00.000Z",  # 07:21 PM +0100
    }
    assert app.get_contact("C2") == {
        "_user_id": "C2",
        "seen_at": "2024-11-14T18:21:00.500Z",
        "created": "2024-11-14T19:21:00.000Z",  # GMT
        "visited": "2024-11-14T19:21:00.000Z",  # lower-case t and z
        "signup": "2024-11-14T19:21:00.250Z",
        "first_order": "2024-11-16T00:00:00.000Z",
        "birthday": "1985-02-03",  # "feb": names in any case, as Python reads them
        "called_at": "2024-02-01T05:35:00.000Z",  # 12:05 am -0530
    }
    assert app.get_contact("C3") == {
        "_user_id": "C3",
        "seen_at": "2024-07-01T06:00:00.000Z",  # summer in Madrid, microseconds to ms
        "created": "2024-11-14T18:21:00.000Z",  # a +01 offset
        "visited": "2024-11-14T18:21:00.000Z",  # naive: Madrid
        "signup": "1970-01-01T00:00:00.000Z",
        "first_order": "1900-03-01T00:00:00.000Z",  # serial 61, after Excel's 29 Feb 1900
        "birthday": "2000-02-29",
        "called_at": "2024-12-31T23:59:00.000Z",  # %z reads Z
    }
    assert app.get_contact("C4") is None
    with rejects.open(encoding="utf-8-sig", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert (row["_source_row"], row["_reject_code"], row["_reject_field"]) == (
        "4", "invalid_date", "seen_at")
    message = row["_reject_message"]
    for reason in [
        "seen_at: '2024-11-14 19:21:00' from column 'seen_at' is not a date/time matching "
        "%Y-%m-%d %H:%M:%S.%f",
        "created: '2024-11-14 19:21:00 CET' from column 'hubspot_created' is not an ISO 8601 "
        "date/time",
        "visited: '2024-11-14T25:00Z' from column 'visited' is not a real calendar date or "
        "time of day (expected an ISO 8601 date/time",
        "signup: '1.7e9' from column 'signup_epoch' is not a Unix time in seconds",
        "first_order: '60' from column 'first_order_excel' is not a real calendar date",
        "birthday: '30 Feb 2001' from column 'birthday' is not a real calendar date",
        "called_at: '14/11/2024 07:21 PM +01' from column 'called_at' is not a date/time "
        "matching %d/%m/%Y %I:%M %p %z",
    ]:
        assert reason in message, message
    assert "in UTC" not in message


HEADER_MAPPING = """\
target: contacts
fields:
  _user_id: customer_id
  _email: {column: email, type: email}
custom_attributes:
  all_other_columns: true
  exclude: [notes]
"""


def test_header_names_with_stray_spaces_match_and_send_trimmed_names(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    data = tmp_path / "crm.csv"
    shutil.copy(EDGE / "header_stray_spaces.csv", data)  # " email ", "city\xa0", "\xa0plan "
    mapping = tmp_path / "crm.yaml"
    mapping.write_text(HEADER_MAPPING)
    checked = validate_files([str(data)], mapping)
    notes = [w.message for w in checked.warnings]
    assert any("column 'email' is ' email ' in the header" in n for n in notes), notes
    assert any("all_other_columns sends 'city\\xa0' as 'city', '\\xa0plan ' as 'plan'" in n
               for n in notes), notes
    assert checked.exit_code == 0
    report = run_import([str(data)], mapping, creds(sandbox_server), RunOptions(upload=FAST))
    assert (report.accepted, report.rejected) == (2, 0)
    app = sandbox_server.app
    assert app.get_contact("C1") == {"_user_id": "C1", "_email": "ana@example.com",
                                     "city": "Madrid", "plan": "pro"}
    assert app.get_contact("C2") == {"_user_id": "C2", "_email": "bo@example.com",
                                     "city": "Sevilla"}


def test_the_mapping_check_reports_column_type_and_format_problems_at_once(
    tmp_path: Path,
) -> None:
    data = tmp_path / "crm.csv"
    data.write_text("customer_id,email,signup\nC1,a@example.com,2024-11-14\n")
    mapping = tmp_path / "crm.yaml"
    mapping.write_text(
        "target: contacts\n"
        "fields:\n"
        "  _user_id: customer_id\n"
        "  _email: {column: e_mail, type: email}\n"  # not in the header
        "  signup: {column: signup, type: datetime, format: '%Y-%m-%d %H:%M:%S%.f'}\n"
        "  points: {column: points, type: integr}\n"  # unknown type, unknown column
        "  ratio: {column: ratio, type: float, decimal: }\n"  # empty decimal, unknown column
    )
    # validate and run (its plan, made before any request) report the same, in one pass
    for check in (lambda: validate_files([str(data)], mapping),
                  lambda: plan_import([str(data)], mapping)):
        with pytest.raises(MappingError) as caught:
            check()
        problems = [(p.line, p.message) for p in caught.value.problems]
        text = json.dumps(problems)
        assert "column 'e_mail' is not in the header" in text
        assert "uses %.f, which Python's strptime does not know; use .%f" in text
        assert "unknown type 'integr'" in text
        assert "column 'points' is not in the header" in text
        assert "`decimal:` has no value" in text
        assert "column 'ratio' is not in the header" in text
        assert [line for line, _ in problems] == sorted(line for line, _ in problems)
