"""Inputs in object storage and on the web: read as the same files on disk are, streamed,
and their failures named before anything is sent.

A real S3 implementation (moto's server, tests/_s3.py) and python's file server
(tests/_web.py), both on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import io
import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from importer import remote
from importer.cli import cli
from importer.exceptions import InputChanged, InputError
from importer.journal import Journal
from importer.pipeline import RunOptions, plan_import, run_import
from importer.records import SourceBatch
from importer.sandbox.server import RunningSandbox
from importer.sources import ReadOptions, SourceFile, inspect_file, iter_all, limits, resolve_inputs
from tests._s3 import S3
from tests._web import serving
from tests.test_run import FAST, ORDERS_MAPPING, creds, write_orders

CSV = ("customer_id;email;city\nU1;a@x.es;Málaga\nU2;b@x.es;\n"
       'U3;c@x.es;"León\nnorte"\n').encode()


def _exports(folder: Path) -> dict[str, bytes]:
    """One export of each kind, and what a listing must leave out."""
    parquet = io.BytesIO()
    pl.DataFrame({"customer_id": ["P1", "P2"], "email": ["p1@x.es", None]}).write_parquet(parquet)
    files = {
        "2026-11-01.csv": CSV,
        "2026-11-02.csv.gz": gzip.compress(CSV.replace(b"U", b"G")),
        "2026-11-03.parquet": parquet.getvalue(),
        "2026-11-04.ndjson": b'{"customer_id": "N1", "email": "n@x.es"}\n{"customer_id": 7}\n',
        "2026-11-05.rejects.csv": b"customer_id\nR1\n",  # our own output: not an input
        ".2026-11-06.csv": b"customer_id\nH1\n",  # hidden
        "2026-11-07.xlsx": b"PK",  # unsupported
    }
    folder.mkdir(exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def _read(sources: list[SourceFile]) -> list[dict[str, object]]:
    rows = []
    for batch in iter_all(sources):
        rows += batch.frame.drop("_source_file").to_dicts()
    return rows


def _shown(sources: list[SourceFile], base: str) -> list[str]:
    return [s.describe().removeprefix(base) for s in sources]


@pytest.mark.parametrize("pattern", ["2026-11-*", "", "*"])
def test_a_bucket_glob_or_prefix_reads_as_the_same_files_on_disk(
    s3: S3, tmp_path: Path, pattern: str
) -> None:
    files = _exports(tmp_path / "exports")
    for name, data in files.items():
        s3.put(f"exports/{name}", data)
    local = resolve_inputs([str(tmp_path / "exports" / pattern)])
    remote_ = resolve_inputs([s3.url(f"exports/{pattern}")])
    assert [s.path for s in remote_] == [s3.url(f"exports/{n}") for n in sorted(files)
                                             if not n.startswith(".")][:4]
    assert _shown(remote_, s3.url("exports/")) == _shown(local, str(tmp_path / "exports") + "/")
    assert _read(remote_) == _read(local)
    assert {s.format for s in remote_} == {"csv", "parquet", "ndjson"}
    assert remote_[1].compression == "gzip"


@pytest.fixture
def small_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks, spans and batches of a few KiB, so a small object takes many range reads."""
    monkeypatch.setattr(remote, "STREAM_BLOCK", 32 * 1024)
    for name in ("READ_BLOCK", "PARSE_SPAN_BYTES", "BATCH_BYTES"):
        monkeypatch.setattr(limits, name, 16 * 1024)


def test_a_listing_is_fresh_in_a_long_lived_process(s3: S3) -> None:
    s3.put("exports/2026-11-01.csv", CSV)
    assert [s.path for s in resolve_inputs([s3.url("exports/")])] == [
        s3.url("exports/2026-11-01.csv")]
    s3.put("exports/2026-11-02.csv", CSV)  # the next night's export
    s3.put("exports/2026-11-01.csv", CSV + b"U4;d@x.es;Vigo\n")  # and a re-export
    again = resolve_inputs([s3.url("exports/")])
    assert [s.path for s in again] == [s3.url("exports/2026-11-01.csv"),
                                       s3.url("exports/2026-11-02.csv")]
    assert len(_read(again)) == 7


@pytest.mark.usefixtures("small_reads")
def test_an_object_is_streamed_by_ranges_not_downloaded_whole(s3: S3) -> None:
    body = b"customer_id,email\n" + b"".join(b"U%d,u%d@x.es\n" % (i, i) for i in range(40_000))
    s3.put("big.csv", body)
    (source,) = resolve_inputs([s3.url("big.csv")])
    assert source.total == len(body) and source.total_unit == "bytes"
    progress = [b.progress for b in iter_all([source])]
    # the raw position grows with the batches: the object is read as it is parsed, one
    # block ahead at most
    assert len(progress) > 10 and progress == sorted(progress)
    assert progress[0] <= 2 * 32 * 1024 + 16 * 1024
    assert progress[-1] == len(body)


def test_a_missing_object_or_bucket_is_one_line_and_exit_2(s3: S3, tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(ORDERS_MAPPING)
    for url in (s3.url("exports/none.csv"), "s3://no-such-bucket-here/a.csv",
                s3.url("exports/*.csv")):
        result = CliRunner().invoke(cli, ["validate", url, "--mapping", str(mapping)])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        if "*" in url:
            assert f"{url}: the pattern matches no supported file" in result.stderr
        else:
            assert f"{url}: no such object or bucket — check the URL" in result.stderr


def test_access_denied_is_named_before_anything_is_sent(
    s3: S3, tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    s3.put("exports/a.csv", CSV)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(ORDERS_MAPPING)
    # moto enforces signatures and IAM from the Nth request on; its dummy keys are unknown
    _moto_auth(s3, "0")
    try:
        result = CliRunner().invoke(cli, ["run", s3.url("exports/*.csv"), "--mapping",
                                          str(mapping)], env=sandbox_server.env())
    finally:
        _moto_auth(s3, "inf")
    assert result.exit_code == 2, result.output
    assert f"{s3.url('exports/*.csv')}: access denied — check the credentials" in result.stderr
    assert sandbox_server.app.stats()["requests"] == {}  # not even the token check
    assert "testing-secret" not in result.output


def _moto_auth(s3: S3, after: str) -> None:
    request = urllib.request.Request(f"{s3.endpoint}/moto-api/reset-auth", data=after.encode(),
                                     headers={"Content-Type": "text/plain"}, method="POST")
    with urllib.request.urlopen(request) as answer:
        answer.read()


def test_a_missing_extra_names_the_pip_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real = builtins.__import__

    def no_s3fs(name: str, *args: object, **kwargs: object) -> object:
        if name == "s3fs":
            raise ImportError("No module named 's3fs'")
        return real(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_s3fs)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(ORDERS_MAPPING)
    result = CliRunner().invoke(cli, ["validate", "s3://b/exports/*.csv", "--mapping",
                                      str(mapping)])
    assert result.exit_code == 2
    assert "s3:// needs the optional 's3' support" in result.stderr
    assert "pip install 'instasent-import[s3]'" in result.stderr


def _stored(box: RunningSandbox) -> tuple[list[object], list[object]]:
    events = sorted(json.dumps(e, sort_keys=True, default=str) for e in box.app.events())
    users = sorted({json.loads(e)["_user_id"] for e in events} if events else set())
    contacts = [json.dumps(box.app.get_contact(u), sort_keys=True, default=str) for u in users]
    return list(events), contacts


def test_a_run_from_the_bucket_lands_what_the_same_file_on_disk_lands(
    s3: S3, tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    data = tmp_path / "orders.csv"
    write_orders(data, 600)
    s3.put("exports/orders.csv.gz", gzip.compress(data.read_bytes()))
    (tmp_path / "local").mkdir()
    local_copy = tmp_path / "local" / "orders.csv.gz"
    local_copy.write_bytes(gzip.compress(data.read_bytes()))
    mapping = tmp_path / "orders.yaml"
    mapping.write_text(ORDERS_MAPPING)
    disk_box, bucket_box = make_sandbox(), make_sandbox()

    def run(inputs: str, box: RunningSandbox, name: str) -> tuple[object, list[dict[str, str]]]:
        rejects = tmp_path / f"{name}.rejects.csv"
        report = run_import([inputs], mapping, creds(box),
                            RunOptions(upload=FAST, rejects_path=str(rejects)))
        rows = pl.read_csv(rejects, infer_schema=False).drop("_source_file").to_dicts()
        return report, rows

    disk, disk_rejects = run(str(tmp_path / "local" / "*.csv.gz"), disk_box, "disk")
    bucket, bucket_rejects = run(s3.url("exports/*.csv.gz"), bucket_box, "bucket")
    assert _stored(bucket_box) == _stored(disk_box)
    assert len(_stored(bucket_box)[0]) > 500
    assert bucket_rejects == disk_rejects and bucket_rejects
    assert (bucket.accepted, bucket.rejected, bucket.exit_code) == (  # type: ignore[attr-defined]
        disk.accepted, disk.rejected, disk.exit_code)  # type: ignore[attr-defined]
    assert bucket.inputs == (s3.url("exports/orders.csv.gz"),)  # type: ignore[attr-defined]


def test_the_run_identity_is_the_object_and_its_version(s3: S3, tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(ORDERS_MAPPING)
    data = tmp_path / "orders.csv"
    write_orders(data, 20)
    s3.put("orders.csv", data.read_bytes())
    first = plan_import([s3.url("orders.csv")], mapping).run_id
    assert plan_import([s3.url("orders.csv")], mapping).run_id == first
    s3.put("orders.csv", data.read_bytes() + b"O9,1,C9,c9@x.es,2024-11-01 10:00:00,1.0,EUR\n")
    assert plan_import([s3.url("orders.csv")], mapping).run_id != first


def test_an_object_replaced_during_inspection_stops_with_exit_2(s3: S3) -> None:
    s3.put("a.csv", CSV)
    (listed,) = remote.expand(s3.url("a.csv"))
    s3.put("a.csv", CSV + b"U4;d@x.es;Vigo\n")  # the export is rewritten after the listing
    with pytest.raises(InputError) as caught:
        inspect_file(listed.shown, origin=listed)
    assert caught.value.exit_code == 2
    assert str(caught.value) == (f"{s3.url('a.csv')}: the object changed while it was being "
                                 "inspected — run again once the export is complete; nothing "
                                 "was sent")


def _orders_object(s3: S3, tmp_path: Path, rows: int) -> tuple[Path, bytes]:
    data = tmp_path / "orders.csv"
    write_orders(data, rows)
    mapping = tmp_path / "orders.yaml"
    mapping.write_text(ORDERS_MAPPING)
    s3.put("orders.csv", data.read_bytes())
    return mapping, data.read_bytes()


@pytest.mark.usefixtures("small_reads")
def test_an_object_replaced_mid_read_stops_the_run_cleanly_and_a_plain_rerun_completes(
    s3: S3, tmp_path: Path, sandbox_server: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    mapping, body = _orders_object(s3, tmp_path, 4_000)
    state = tmp_path / "state"
    args = ["run", s3.url("orders.csv"), "--mapping", str(mapping), "--rejects",
            str(tmp_path / "r.csv"), "--state-dir", str(state)]
    replaced = []

    def replace_after_first_batch(*_: object, **__: object) -> None:
        if not replaced:
            replaced.append(s3.put("orders.csv", body.replace(b"EUR", b"USD")))

    monkeypatch.setattr("importer.sources.csv_read._csv_batch",
                        _calling_first(replace_after_first_batch))
    result = CliRunner().invoke(cli, args, env=sandbox_server.env())
    assert replaced
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert (f"{s3.url('orders.csv')}: the object changed while it was being read"
            in result.stderr)
    assert "run the same command again, without --resume" in result.stderr
    (record,) = Journal(str(state)).runs()
    assert record.status == "aborted"  # the journal is kept
    # following the message: --resume would refuse; the same command without it completes
    resumed = CliRunner().invoke(cli, [*args, "--resume"], env=sandbox_server.env())
    assert resumed.exit_code == 2
    assert "an input changed (its size or the object's version differ)" in resumed.stderr
    again = CliRunner().invoke(cli, args, env=sandbox_server.env())
    assert again.exit_code == 3, again.output  # finished; the export's bad rows rejected
    assert "the object changed" not in again.stderr


def _calling_first(hook: Callable[..., None]) -> Callable[..., object]:
    from importer.sources import csv_read

    real = csv_read._csv_batch

    def wrapped(*args: object, **kwargs: object) -> object:
        hook()
        return real(*args, **kwargs)  # type: ignore[arg-type]

    return wrapped


@pytest.mark.usefixtures("small_reads")
def test_a_read_refused_by_the_store_as_changed_raises_input_changed(s3: S3) -> None:
    body = b"customer_id,email\n" + b"".join(b"U%d,u%d@x.es\n" % (i, i) for i in range(20_000))
    s3.put("a.csv", body)
    (source,) = resolve_inputs([s3.url("a.csv")])
    batches = iter_all([source], ReadOptions(batch_rows=500))
    next(batches)
    s3.put("a.csv", body.replace(b"x.es", b"y.es"))
    with pytest.raises(InputChanged) as caught:
        for _ in batches:
            pass
    assert caught.value.exit_code == 1
    assert str(caught.value).startswith(f"{s3.url('a.csv')}: the object changed while it was "
                                        "being read")


def _parquet_read_one_row_group(s3: S3, monkeypatch: pytest.MonkeyPatch) -> tuple[
        Iterator[SourceBatch], bytes]:
    """A 10-row-group Parquet object in small range blocks, its first group read: the rest
    of the read (returned) fetches ranges of it again."""
    monkeypatch.setattr(remote, "RANGE_BLOCK", 64 * 1024)
    monkeypatch.setattr(remote, "RANGE_BLOCKS", 2)
    frame = pl.DataFrame({"customer_id": [f"U{i:07d}" for i in range(200_000)]})
    buffer = io.BytesIO()
    frame.write_parquet(buffer, row_group_size=20_000, compression="uncompressed")
    s3.put("a.parquet", buffer.getvalue())
    (source,) = resolve_inputs([s3.url("a.parquet")])
    batches = iter_all([source], ReadOptions(batch_rows=20_000))
    assert next(batches).frame.height == 20_000
    return batches, buffer.getvalue()


def test_a_parquet_object_replaced_mid_read_raises_input_changed(
    s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches, data = _parquet_read_one_row_group(s3, monkeypatch)
    s3.put("a.parquet", data + b"\0")
    with pytest.raises(InputChanged, match="the object changed while it was being read"):
        for _ in batches:
            pass


def test_a_parquet_object_gone_mid_read_is_a_storage_failure_not_damaged_data(
    s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches, _ = _parquet_read_one_row_group(s3, monkeypatch)
    s3.fs.rm(f"{s3.bucket}/a.parquet")
    with pytest.raises(InputError) as gone:
        for _ in batches:
            pass
    assert "cannot be read after row 20000: no such object or bucket" in str(gone.value)
    assert "damaged" not in str(gone.value)


# --- the web ----------------------------------------------------------------------------

SECRET = "X-Amz-Signature=0123456789abcdef&X-Amz-Credential=AKIAEXAMPLE"


@pytest.mark.parametrize("ranges", [True, False])
def test_a_web_csv_streams_with_or_without_range_support(tmp_path: Path, ranges: bool) -> None:
    _exports(tmp_path)
    names = ["2026-11-01.csv", "2026-11-02.csv.gz", "2026-11-04.ndjson"]
    with serving(tmp_path, ranges=ranges) as web:
        got = resolve_inputs([web.url(f"{names[0]}?{SECRET}"), *map(web.url, names[1:])])
        assert _read(got) == _read(resolve_inputs([str(tmp_path / n) for n in names]))
    assert got[0].path == web.url("2026-11-01.csv")
    assert SECRET not in repr(got)
    assert any("Range" not in r or "bytes=" not in r for r in web.requests)


def test_a_web_parquet_is_read_by_ranges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote, "RANGE_BLOCK", 16 * 1024)
    frame = pl.DataFrame({"customer_id": [f"U{i}" for i in range(30_000)]})
    frame.write_parquet(tmp_path / "a.parquet")
    with serving(tmp_path, ranges=True) as web:
        (source,) = resolve_inputs([web.url("a.parquet")])
        rows = _read([source])
    assert [r["customer_id"] for r in rows] == frame["customer_id"].to_list()
    ranged = [r for r in web.requests if "bytes=" in r]
    assert ranged and all(r.startswith("GET") for r in ranged)


def test_a_web_parquet_without_range_support_is_refused_with_a_remedy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote, "RANGE_BLOCK", 16 * 1024)
    frame = pl.DataFrame({"customer_id": [f"U{i}" for i in range(30_000)]})
    frame.write_parquet(tmp_path / "a.parquet")
    with serving(tmp_path, ranges=False) as web:
        url = web.url(f"a.parquet?{SECRET}")
        with pytest.raises(InputError) as caught:
            resolve_inputs([url])
    assert str(caught.value).startswith(
        f"{web.url('a.parquet')}: the web server does not serve byte ranges, which reading "
        "Parquet needs")
    assert caught.value.exit_code == 2


def test_a_presigned_query_never_leaves_the_process(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    data = tmp_path / "orders.csv"
    write_orders(data, 300)
    mapping = tmp_path / "orders.yaml"
    mapping.write_text(ORDERS_MAPPING)
    report, rejects = tmp_path / "report.json", tmp_path / "r.csv"
    with serving(tmp_path, ranges=False) as web:
        result = CliRunner().invoke(cli, [
            "run", web.url(f"orders.csv?{SECRET}"), "--mapping", str(mapping), "--report",
            str(report), "--rejects", str(rejects)], env=sandbox_server.env())
        missing = CliRunner().invoke(cli, ["validate", web.url(f"none.csv?{SECRET}"),
                                           "--mapping", str(mapping)])
    assert result.exit_code == 3, result.output
    assert missing.exit_code == 2
    assert f"{web.url('none.csv')}: no such object or bucket" in missing.stderr
    written = [report.read_text(), rejects.read_text(), Path(f"{rejects}.meta.json").read_text()]
    for text in [*written, result.output, missing.output]:
        assert "0123456789abcdef" not in text and "AKIAEXAMPLE" not in text
    assert web.url("orders.csv") in report.read_text()
    assert any(SECRET in r for r in web.requests)  # it was used to read, all the same


def test_validate_and_delete_take_bucket_urls(
    s3: S3, tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text("version: 1\ntarget: contacts\nfields:\n  _user_id: customer_id\n"
                       "  _email: {column: email, type: email}\n")
    s3.put("exports/a.csv", CSV)
    s3.put("exports/b.csv", b"customer_id,email\nU9,bad-email\n")
    checked = CliRunner().invoke(cli, ["validate", s3.url("exports/"), "--mapping",
                                       str(mapping), "--output", "json"])
    assert checked.exit_code == 3, checked.output  # U9's email would be rejected
    summary = json.loads(checked.stdout)
    assert (summary["rows_read"], summary["rejected"]) == (4, 1)
    for user in ("U1", "U2"):
        sandbox_server.app.store.upsert_contact(user, {"_email": f"{user}@x.es"})
    s3.put("gdpr/ids.csv", b"customer_id\nU1\nU2\n")
    # (--rejects local: a rejects file in the bucket is the outputs' part of issue 17)
    deleted = CliRunner().invoke(cli, ["delete", s3.url("gdpr/ids.csv"), "--column",
                                       "customer_id", "--yes", "--rejects",
                                       str(tmp_path / "d.csv")], env=sandbox_server.env())
    assert deleted.exit_code == 0, deleted.output
    assert "deleted                          2" in deleted.stderr
    assert sandbox_server.app.get_contact("U1") is None


@pytest.mark.parametrize("ranges", [True, False])
def test_a_web_file_gone_after_inspection_is_named_without_its_query(
    tmp_path: Path, ranges: bool
) -> None:
    (tmp_path / "a.csv").write_bytes(CSV)
    with serving(tmp_path, ranges=ranges) as web:
        (source,) = resolve_inputs([web.url(f"a.csv?{SECRET}")])
        (tmp_path / "a.csv").unlink()
        with pytest.raises(InputError) as caught:
            list(iter_all([source]))
    assert str(caught.value).startswith(f"{web.url('a.csv')}: cannot be read: no such object")
    assert "0123456789abcdef" not in str(caught.value)


@pytest.mark.usefixtures("small_reads")
def test_a_run_from_the_bucket_stopped_midway_resumes_as_the_same_run(
    s3: S3, tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    mapping, body = _orders_object(s3, tmp_path, 3_000)
    valid = sum(1 for line in body.decode().splitlines()[1:]
                if "not-an-email" not in line and "31/02/2024" not in line)
    args = ["run", s3.url("orders.csv"), "--mapping", str(mapping), "--rejects",
            str(tmp_path / "r.csv"), "--quiet", "--output", "json"]
    # stops at the 60th reject, a quarter into the export: exit 1, the journal kept
    first = CliRunner().invoke(cli, [*args, "--max-rejects", "60"], env=sandbox_server.env())
    assert first.exit_code == 1, first.output
    before = json.loads(first.stdout)
    assert before["not_attempted"] > 0, before
    resumed = CliRunner().invoke(cli, [*args, "--resume"], env=sandbox_server.env())
    assert resumed.exit_code == 3, resumed.output
    after = json.loads(resumed.stdout)
    # the object's identity (URL, size, ETag) matched: the same run, its rejects not redone
    assert (after["resumed"], after["run_id"]) == (True, before["run_id"])
    assert (after["rejected_before"], after["skipped_done"]) == (60, 60)
    assert after["accepted"] == valid == sandbox_server.app.stats()["events"]


def test_a_web_file_rewritten_after_inspection_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(CSV)
    with serving(tmp_path, ranges=True) as web:  # (this server sends an ETag)
        (source,) = resolve_inputs([web.url(f"a.csv?{SECRET}")])
        (tmp_path / "a.csv").write_bytes(CSV + b"U4;d@x.es;Vigo\n")
        with pytest.raises(InputChanged) as caught:
            list(iter_all([source]))
    assert str(caught.value).startswith(f"{web.url('a.csv')}: the object changed while it was "
                                        'being read (version ETag="')


def test_a_damaged_gzip_object_is_named_as_damaged_data_not_a_storage_failure(s3: S3) -> None:
    s3.put("a.csv.gz", gzip.compress(CSV)[:-12] + b"not gzip at all")
    with pytest.raises(InputError, match="the compressed data is damaged"):
        list(iter_all(resolve_inputs([s3.url("a.csv.gz")])))


def test_a_bucket_input_without_rejects_option_gets_its_rejects_beside_it(
    s3: S3, tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    mapping, _ = _orders_object(s3, tmp_path, 300)
    result = CliRunner().invoke(cli, ["run", s3.url("orders.csv"), "--mapping", str(mapping),
                                      "--quiet"], env=sandbox_server.env())
    assert result.exit_code == 3, result.output
    rows = pl.read_csv(io.BytesIO(s3.get("orders.rejects.csv")), infer_schema=False)
    assert rows.height > 0
    assert set(rows["_source_file"]) == {s3.url("orders.csv")}
