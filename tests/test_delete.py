"""``instasent-import delete`` against a live sandbox: confirmation, dry run, unknown ids, odd ids,
rejects, retries, 429s and a token revoked mid-run."""

from __future__ import annotations

import asyncio
import csv
import json
import random
import stat
from collections.abc import Callable
from pathlib import Path

import httpx
import polars as pl
import pytest
from click.testing import CliRunner

from importer.cli import cli
from importer.config import Credentials
from importer.datasource import Timing, UnexpectedResponse
from importer.delete import (
    DeleteOptions,
    DeleteReport,
    adelete_contacts,
    delete_contacts,
    plan_from_files,
    plan_from_ids,
)
from importer.deleter import classify_404
from importer.records import REJECT_COLUMNS
from importer.sandbox.server import RunningSandbox
from importer.sandbox.settings import FaultSettings
from importer.upload import UploadSettings

TOKEN = "tok-DELETE-7c1e-never-print-me"
ODD_IDS = ("a/b c", "Muñoz/ñandú 東京", "..", ".", "50%2F", "q?x=1#frag", "  padded  ")
FAST = UploadSettings(backoff_base=0.001, backoff_cap=0.01, rate_jitter=0.01)


@pytest.fixture
def box(make_sandbox: Callable[..., RunningSandbox]) -> RunningSandbox:
    return make_sandbox(token=TOKEN)


@pytest.fixture(autouse=True)
def _in_own_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``delete --ids`` writes ./instasent-delete.rejects.csv: in the test's directory, not
    in the checkout (an outage test left one there)."""
    monkeypatch.chdir(tmp_path)


def _env(box: RunningSandbox, token: str = TOKEN) -> dict[str, str]:
    return {"INSTASENT_API_URL": box.api_url, "INSTASENT_PROJECT": box.settings.project,
            "INSTASENT_DATASOURCE": box.settings.datasource, "INSTASENT_TOKEN": token}


def _creds(box: RunningSandbox) -> Credentials:
    return Credentials(box.api_url, box.settings.project, box.settings.datasource, TOKEN)


def _seed(box: RunningSandbox, *ids: str) -> None:
    response = httpx.post(f"{box.base_url}/stream/contacts",
                          headers={"Authorization": f"Bearer {TOKEN}"},
                          json=[{"_user_id": i, "_first_name": "x"} for i in ids])
    assert response.status_code == 202
    assert all(box.app.get_contact(i) is not None for i in ids)


def _deletes(box: RunningSandbox) -> dict[str, int]:
    return dict(box.app.stats()["requests"].get("DELETE /stream/contacts/{_user_id}", {}))


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["customer_id", "email"])
        out.writerows(rows)
    return path


def _delete(box: RunningSandbox, *args: str, input: str | None = None,
            token: str = TOKEN) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["delete", *args], env=_env(box, token), input=input,
                                catch_exceptions=False)
    assert TOKEN not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


def test_asks_with_datasource_and_count_then_deletes(tmp_path: Path, box: RunningSandbox) -> None:
    _seed(box, "C1", "C2", "C3", "KEEP")
    data = _csv(tmp_path / "gdpr.csv", [("C1", "a@x.es"), ("C2", "b@x.es"), ("C3", "c@x.es")])
    code, out, err = _delete(box, str(data), "--column", "customer_id", input="y\n")
    assert (code, out) == (0, "")
    assert err.startswith(
        f"About to PERMANENTLY delete 3 contacts (ids from column 'customer_id' of {data})\n"
        "  datasource    sandbox-datasource [api]\n"
        "  project       sandbox-project\n"
        "  organization  Instasent sandbox (sandbox-organization)\n"
        f"  API           {box.api_url}\n"
        "Deleted contacts cannot be recovered.\n"
        "Delete 3 contacts? [y/N]: y\n"
    )
    assert [box.app.get_contact(i) for i in ("C1", "C2", "C3")] == [None, None, None]
    assert box.app.get_contact("KEEP") is not None
    assert _deletes(box) == {"200": 3}
    assert "  deleted                          3" in err.splitlines()


def test_no_means_nothing_is_deleted(tmp_path: Path, box: RunningSandbox) -> None:
    _seed(box, "C1")
    data = _csv(tmp_path / "d.csv", [("C1", "")])
    code, _, err = _delete(box, str(data), "--column", "customer_id", input="n\n")
    assert code == 1
    assert "ABORTED: not confirmed: nothing was deleted" in err
    assert box.app.get_contact("C1") is not None and _deletes(box) == {}


def test_no_answer_is_no_and_says_how_to_script_it(box: RunningSandbox) -> None:
    _seed(box, "C1")
    code, _, err = _delete(box, "--ids", "C1", input="")
    assert code == 1
    assert "no answer: pass --yes to delete without the question" in err
    assert box.app.get_contact("C1") is not None and _deletes(box) == {}


def test_yes_skips_the_question(box: RunningSandbox) -> None:
    _seed(box, "C1", "C2")
    code, _, err = _delete(box, "--ids", "C1,C2", "--yes")
    assert code == 0
    assert "About to" not in err and "[y/N]" not in err
    assert box.app.get_contact("C1") is None and box.app.get_contact("C2") is None


def test_dry_run_lists_and_deletes_nothing(tmp_path: Path, box: RunningSandbox) -> None:
    _seed(box, "C1", "C2")
    data = _csv(tmp_path / "d.csv", [("C2", ""), ("C1", ""), ("C2", ""), ("GONE", "")])
    code, out, err = _delete(box, str(data), "--column", "customer_id", "--dry-run")
    assert code == 0
    assert out == "C2\nC1\nGONE\n"
    assert err.startswith("would delete 3 contacts from datasource sandbox-datasource [api] "
                          f"(ids from column 'customer_id' of {data}):\n")
    assert "dry run: nothing was deleted" in err
    assert _deletes(box) == {} and box.app.get_contact("C1") is not None


def test_unknown_ids_are_already_absent_not_failures(box: RunningSandbox) -> None:
    _seed(box, "C1")
    code, out, _ = _delete(box, "--ids", "C1,NOPE", "--ids", "NOPE", "--yes",
                           "--output", "json")
    assert code == 0
    report = json.loads(out)
    picked = {k: report[k] for k in ("requested", "deleted", "already_absent", "failed",
                                     "duplicates", "not_attempted", "requests", "exit_code")}
    assert picked == {"requested": 3, "deleted": 1, "already_absent": 1, "failed": 0,
                      "duplicates": 1, "not_attempted": 0, "requests": 2, "exit_code": 0}
    assert report["http_statuses"] == {"200": 1, "404": 1}


def test_odd_ids_are_percent_encoded_and_hit_only_themselves(
    tmp_path: Path, box: RunningSandbox
) -> None:
    # the neighbours a badly encoded id would hit instead: its path pieces, or the bare ids
    neighbours = ("a", "b c", "a%2Fb c", "Muñoz", "50", "q", "padded")
    _seed(box, *ODD_IDS, *neighbours)
    data = _csv(tmp_path / "odd.csv", [(i, "") for i in ODD_IDS])
    code, _, err = _delete(box, str(data), "--column", "customer_id", "--yes")
    assert code == 0, err
    assert [i for i in ODD_IDS if box.app.get_contact(i) is not None] == []
    assert [i for i in neighbours if box.app.get_contact(i) is None] == []
    assert _deletes(box) == {"200": len(ODD_IDS)}


def test_ids_from_parquet_integers(tmp_path: Path, box: RunningSandbox) -> None:
    _seed(box, "101", "102")
    data = tmp_path / "ids.parquet"
    pl.DataFrame({"id": [101, 102, 103]}).write_parquet(data)
    code, _, _ = _delete(box, str(data), "--column", "id", "--yes")
    assert code == 0
    assert box.app.get_contact("101") is None and box.app.get_contact("102") is None


def test_blank_ids_go_to_the_rejects_file_exit_3(tmp_path: Path, box: RunningSandbox) -> None:
    _seed(box, "C1")
    data = _csv(tmp_path / "d.csv", [("C1", "a@x.es"), ("", "blank@x.es"), ("  ", "sp@x.es")])
    code, _, err = _delete(box, str(data), "--column", "customer_id", "--yes")
    assert code == 3
    rejects = tmp_path / "d.rejects.csv"
    assert f"rejects file: {rejects}" in err
    assert f"re-run the failures: instasent-import delete {rejects} --column customer_id" in err
    assert stat.S_IMODE(rejects.stat().st_mode) == 0o600
    rows = list(csv.DictReader(rejects.read_text(encoding="utf-8-sig").splitlines()))
    assert list(rows[0])[:2 + len(REJECT_COLUMNS)] == ["customer_id", "email", *REJECT_COLUMNS]
    assert [(r["email"], r["_source_row"], r["_reject_stage"], r["_reject_code"]) for r in rows] \
        == [("blank@x.es", "2", "map", "required_missing"), ("sp@x.es", "3", "map",
                                                              "required_missing")]
    assert box.app.get_contact("C1") is None
    meta = json.loads(Path(f"{rejects}.meta.json").read_text())
    assert (meta["command"], meta["column"]) == ("delete", "customer_id")


def test_usage_errors_are_exit_2_before_any_request(tmp_path: Path, box: RunningSandbox) -> None:
    data = _csv(tmp_path / "d.csv", [("C1", "")])
    cases = {
        ("--ids", "A", str(data)): "error: give ids either in FILE (with --column) or with "
                                   "--ids, not both\n",
        (str(data),): f"error: --column is required with FILE: the column of {data} that "
                      "holds the _user_id values\n",
        (): "error: name the contacts to delete: `delete FILE --column COLUMN` or `delete --ids "
            "ID1,ID2`\n",
        (str(data), "--column", "custmer_id"): f"error: {data}: has no column 'custmer_id' "
            "(did you mean 'customer_id'?) — pass --column with one of: customer_id, email\n",
        ("--ids", " , "): "error: --ids lists no id — give at least one, e.g. --ids C001,C002\n",
    }
    for args, message in cases.items():
        code, _, err = _delete(box, *args)
        assert (code, err) == (2, message), args
    assert box.app.stats()["requests_total"] == 0


def test_wrong_token_stops_before_any_delete(box: RunningSandbox) -> None:
    code, _, err = _delete(box, "--ids", "C1", "--yes", token="bad")
    assert code == 1
    assert err.startswith("error: the API refused the token (401)")
    code, out, _ = _delete(box, "--ids", "C1", "--yes", "--output", "json", token="bad")
    assert code == 1 and json.loads(out)["problem"] == "token"
    assert _deletes(box) == {}


# ---------------------------------------------------------------- the library, faults injected


def _run(box: RunningSandbox, plan_ids: list[str], **kw: object) -> DeleteReport:
    plan = plan_from_ids(plan_ids)
    return delete_contacts(plan, _creds(box), DeleteOptions(upload=FAST), **kw)  # type: ignore[arg-type]


def test_server_faults_become_retryable_rejects_with_the_whole_row(
    tmp_path: Path, box: RunningSandbox
) -> None:
    _seed(box, "C1", "C2", "C3")
    data = _csv(tmp_path / "d.csv", [("C1", "a@x.es"), ("C2", "b@x.es"), ("C3", "c@x.es")])
    plan = plan_from_files([str(data)], "customer_id")
    broken = FaultSettings(fail_rate=1.0, fail_statuses=(503,))
    # One attempt an id: 3 failures in a row. Five in a row would be an outage, waited out
    # rather than given up on (the outage tests below).
    once = UploadSettings(backoff_base=0.001, backoff_cap=0.01, rate_jitter=0.01,
                          max_attempts=1, concurrency=1)
    report = delete_contacts(
        plan, _creds(box), DeleteOptions(upload=once),
        on_verified=lambda _info: box.app.set_faults(broken),  # GET /stream went through
    )
    assert (report.failed, report.retryable, report.exit_code) == (3, 3, 4)
    assert (report.requests, report.retries) == (3, 0)
    assert report.failed_by_code == {"transport": 3}
    rejects = tmp_path / "d.rejects.csv"
    rows = list(csv.DictReader(rejects.read_text(encoding="utf-8-sig").splitlines()))
    assert [(r["customer_id"], r["email"], r["_reject_stage"], r["_reject_http_status"],
             r["_reject_attempts"], r["_reject_retryable"]) for r in rows] == [
        (f"C{i}", f"{'abc'[i - 1]}@x.es", "transport", "503", "1", "true") for i in (1, 2, 3)]
    assert rows[0]["_reject_message"] == (
        "delete contact 'C1': gave up after 1 attempt(s): HTTP 503 — run the same delete on "
        "the rejects file later")
    # the rerun the report prints works once the API is back
    box.app.set_faults(FaultSettings())
    again = delete_contacts(plan_from_files([str(rejects)], "customer_id"), _creds(box),
                            DeleteOptions(upload=FAST))
    assert (again.deleted, again.exit_code) == (3, 0)
    assert all(box.app.get_contact(i) is None for i in ("C1", "C2", "C3"))


def test_token_revoked_mid_run_aborts_and_counts_the_rest(box: RunningSandbox) -> None:
    ids = [f"C{i}" for i in range(20)]
    _seed(box, *ids)
    report = _run(box, ids, on_verified=lambda _info: box.app.revoke_token())
    assert report.exit_code == 1
    assert report.aborted is not None and report.aborted.startswith(
        "the API refused the token (401)")
    assert (report.deleted, report.not_attempted) == (0, 20)
    assert report.requested == report.deleted + report.not_attempted


def test_rate_limited_deletes_are_paced_and_all_land(
    make_sandbox: Callable[..., RunningSandbox],
) -> None:
    limited = make_sandbox(token=TOKEN, rate_limit=6, rate_window_s=0.5)
    ids = [f"R{i}" for i in range(15)]
    _seed(limited, *ids)
    report = _run(limited, ids)
    assert (report.deleted, report.failed, report.exit_code) == (15, 0, 0)
    served = limited.app.stats()
    assert report.rate_limited == served["requests"]["DELETE /stream/contacts/{_user_id}"].get(
        "429", 0)
    assert report.requests == 15 + report.rate_limited
    assert served["contacts"] == 0


def test_accounting_holds_whatever_the_mix(box: RunningSandbox) -> None:
    rng = random.Random(5)
    present = [f"P{i}" for i in range(30)]
    _seed(box, *present)
    given = [rng.choice([*present, "X1", "X2", "X3"]) for _ in range(60)]
    report = _run(box, given)
    assert report.deleted == len(set(given) & set(present))
    assert report.already_absent == len(set(given) - set(present))
    assert report.duplicates == len(given) - len(set(given))
    assert report.requested == 60


def test_a_404_is_read_by_what_it_names() -> None:
    assert classify_404("Contact not found: no contact with _user_id 'x'") == "contact"
    assert classify_404("Project or datasource not found, or the token is not allowed") == (
        "datasource")
    assert classify_404("") == "unknown"


def test_the_datasource_check_backs_off_on_the_injected_clock(box: RunningSandbox) -> None:
    waited: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waited.append(seconds)

    _seed(box, "C1")
    box.app.set_faults(FaultSettings(fail_rate=1.0, fail_statuses=(500,)))
    with pytest.raises(UnexpectedResponse, match=r"^GET /stream answered HTTP 500 3 times"):
        asyncio.run(adelete_contacts(plan_from_ids(["C1"]), _creds(box), DeleteOptions(),
                                     timing=Timing(sleep=fake_sleep)))
    assert len(waited) == 2 and 0 <= waited[0] <= 0.5 and 0 <= waited[1] <= 1.0
    assert _deletes(box) == {} and box.app.get_contact("C1") is not None


def test_an_outage_is_waited_out_not_turned_into_failed_deletes(box: RunningSandbox) -> None:
    ids = [f"O{i}" for i in range(40)]
    _seed(box, *ids)
    settings = UploadSettings(backoff_base=0.001, backoff_cap=0.01, rate_jitter=0.01,
                              max_attempts=5, concurrency=2, outage_wait=30)

    def down_after_ten(done: int, _total: int) -> None:
        if done == 10:
            box.app.go_down(1.5)  # every connection closed for 1.5 s

    report = delete_contacts(plan_from_ids(ids), _creds(box), DeleteOptions(upload=settings),
                             progress=down_after_ten)
    # 5 attempts an id, 1-10 ms apart, against 1.5 s of closed connections: without the
    # wait, the ids sent meanwhile would have been given up on. (The failures before the
    # outage is noticed count: OUTAGE_STREAK - 1 = 4 of them, fewer than one id's 5.)
    assert (report.deleted, report.failed, report.exit_code) == (40, 0, 0), report.aborted
    assert box.app.stats()["faults"].get("down", 0) >= 5
    assert report.requests > 40  # the probes and the failed requests were counted
    assert all(box.app.get_contact(i) is None for i in ids)


def test_an_outage_past_outage_wait_stops_the_deletes_with_what_to_do(
    box: RunningSandbox,
) -> None:
    ids = [f"Q{i}" for i in range(30)]
    _seed(box, *ids)
    settings = UploadSettings(backoff_base=0.001, backoff_cap=0.01, rate_jitter=0.01,
                              max_attempts=5, concurrency=2, outage_wait=1.0)

    def down_after_five(done: int, _total: int) -> None:
        if done == 5:
            box.app.go_down(600, 503)  # a proxy answering 503 to everything

    try:
        report = delete_contacts(plan_from_ids(ids), _creds(box),
                                 DeleteOptions(upload=settings), progress=down_after_five)
    finally:
        box.app.go_down(0)
    assert report.exit_code == 1
    assert report.aborted is not None and "--outage-wait 1 s" in report.aborted
    assert "run the same delete again" in report.aborted
    # No id was turned into a failure by the outage: each is deleted or still to do.
    assert report.failed == 0
    assert report.deleted + report.not_attempted == 30 and report.not_attempted > 0
    again = delete_contacts(plan_from_ids(ids), _creds(box), DeleteOptions(upload=FAST))
    assert again.exit_code == 0
    assert again.deleted + again.already_absent == 30 and again.already_absent == report.deleted
