"""The streaming reader: every edge-case file in sample_data/edge/, bad inputs, and the
fast path (polars) agreeing with the reference parser (Python's csv) on real-looking data."""

from __future__ import annotations

import gzip
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest

from importer.exceptions import InputError
from importer.records import Reject, SourceBatch
from importer.sources import (
    ReadOptions,
    SourceFile,
    csv_grammar,
    csv_read,
    detect_encoding,
    inputs,
    iter_all,
    iter_batches,
    limits,
    resolve_inputs,
    sniff_delimiter,
)

ROOT = Path(__file__).resolve().parent.parent
EDGE = ROOT / "sample_data" / "edge"


def _load_generator() -> ModuleType:
    # bench/ is not an installed package; load the shared generator from its file.
    spec = importlib.util.spec_from_file_location("bench_gen", ROOT / "bench" / "gen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate_contacts_csv = _load_generator().generate_contacts_csv


def read(path: Path | str, **options: object) -> tuple[SourceFile, pl.DataFrame, list[Reject]]:
    opts = ReadOptions(**options)  # type: ignore[arg-type]
    [source] = resolve_inputs([str(path)], opts)
    batches = list(iter_batches(source, opts))
    for batch in batches:
        assert batch.rows_read > 0, "no empty batches"
    frame = (
        pl.concat([b.frame for b in batches])
        if batches
        else pl.DataFrame()
    )
    return source, frame, [r for b in batches for r in b.rejects]


def data(frame: pl.DataFrame) -> list[tuple[object, ...]]:
    """Rows without the provenance columns."""
    return frame.drop("_source_file", "_source_row").rows()


def numbers(frame: pl.DataFrame) -> list[int]:
    return frame.get_column("_source_row").to_list()


# ───────────── CSV dialects and encodings ─────────────


def test_semicolon_cp1252_excel_export() -> None:
    source, frame, rejects = read(EDGE / "semicolon_cp1252.csv")
    assert (source.delimiter, source.encoding) == (";", "cp1252")
    assert source.columns == ("id_cliente", "nombre", "apellidos", "ciudad", "saldo")
    assert data(frame) == [
        ("1", "José", "Núñez Peña", "A Coruña", "1.234,50"),
        ("2", "María", "López", "Málaga", "€ 12,00"),
        ("3", "Iñaki", "Etxeberría", "Donostia", "0,99"),
    ]
    assert numbers(frame) == [1, 2, 3]
    assert set(frame.get_column("_source_file")) == {str(EDGE / "semicolon_cp1252.csv")}
    assert rejects == []


def test_tab_and_pipe_delimiters_are_sniffed() -> None:
    source, frame, rejects = read(EDGE / "tab_delimited.tsv")
    assert source.delimiter == "\t"
    assert data(frame) == [("1", "Ana", "likes commas, semicolons; and |pipes|"),
                           ("2", "Bob", None)]
    assert (numbers(frame), rejects) == ([1, 2], [])
    source, frame, rejects = read(EDGE / "pipe_delimited.csv")
    assert source.delimiter == "|"
    assert data(frame) == [("1", "ana@example.com", "Madrid, ES"), ("2", "bob@example.com", None)]
    assert (numbers(frame), rejects) == ([1, 2], [])


def test_utf8_bom_and_crlf() -> None:
    source, frame, rejects = read(EDGE / "utf8_bom_crlf.csv", batch_rows=1)
    assert source.encoding == "utf-8"
    assert source.columns == ("id", "name", "address")  # no BOM glued to "id"
    assert data(frame) == [("1", "Zoë", "Calle Mayor 1\r\n28013 Madrid"), ("2", "Søren", "Aarhus")]
    assert numbers(frame) == [1, 2]
    assert rejects == []


def test_utf16_unicode_text_is_transcoded() -> None:
    source, frame, rejects = read(EDGE / "utf16_excel_unicode.tsv")
    assert (source.encoding, source.delimiter) == ("utf-16", "\t")
    assert data(frame) == [("1", "Jürgen", "Köln"), ("2", "李雷", "北京")]
    assert (numbers(frame), rejects) == ([1, 2], [])


@pytest.mark.parametrize("batch_rows", [1, 2, 100_000])
def test_quoted_fields_keep_row_numbers(batch_rows: int) -> None:
    _, frame, rejects = read(EDGE / "quoted_fields.csv", batch_rows=batch_rows)
    assert data(frame) == [
        ("1", "Smith, John", 'He said "hi"', None),
        ("2", "Ana", "line one\nline two\r\nline three", None),
        ("3", None, "a,b,c", "x"),
        ("4", "Eve", "plain", None),
    ]
    assert numbers(frame) == [1, 2, 3, 4]
    assert rejects == []


# ───────────── malformed rows become rejects ─────────────


@pytest.mark.parametrize("batch_rows", [1, 2, 3, 100_000])
def test_malformed_rows_are_rejects_and_the_rest_is_read(batch_rows: int) -> None:
    path = EDGE / "malformed_rows.csv"
    _, frame, rejects = read(path, batch_rows=batch_rows)
    assert data(frame) == [("1", "Ana", "Madrid"), ("7", "Eva", "Vigo"), ("8", "Fer", "León")]
    assert numbers(frame) == [1, 7, 8]
    found = [(r.source_row, r.stage, r.code, r.raw_line) for r in rejects]
    assert found == [
        (2, "read", "wrong_field_count", "2,Bob"),
        (3, "read", "wrong_field_count", "3,Cid,Sevilla,extra"),
        (4, "read", "nul_byte", "4,Dan\x00iel,Bilbao"),
        (6, "read", "wrong_field_count", "   "),
    ]
    assert rejects[0].message.startswith(f"{path} line 3 (data row 2): 2 fields, the header has 3")
    assert "line 5 (data row 4): a NUL byte in column 'name'" in rejects[2].message
    assert all(r.source_file == str(path) and r.values == {} for r in rejects)
    assert all(" — " in r.message for r in rejects), "every message ends with a remedy"


@pytest.mark.parametrize("width", [1_500, 12_000])
def test_very_wide_files_are_read_exactly(tmp_path: Path, width: int) -> None:
    """1,500 columns: the grammar check proves spans clean (RE2 refused a repeat over 1,000
    and the run failed). 12,000: the grammar exceeds the regex size limit, so every span goes
    through the reference parser: slower, same rows, same rejects."""
    header = ",".join(f"c{i}" for i in range(width))
    good = ",".join('"a,""b"""' if i % 7 == 0 else f"v{i}" for i in range(width))
    short = ",".join(f"w{i}" for i in range(width - 1))
    path = tmp_path / "wide.csv"
    n = 8 if width < 10_000 else 2  # the reference parser is slow on 12,000 columns
    lines = [good] * n + [short] + [good] * n
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    spans: list[bool] = []
    check = csv_grammar._check_span

    def spy(chunk: bytes, grammar: str) -> tuple[bool, int]:
        spans.append(check(chunk, grammar)[0])
        return check(chunk, grammar)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(csv_grammar, "_check_span", spy)
        _, frame, rejects = read(path)
    assert numbers(frame) == [*range(1, n + 1), *range(n + 2, 2 * n + 2)]
    assert frame.row(0)[0] == 'a,"b"' and frame.row(2 * n - 1)[width - 1] == good.split(",")[-1]
    assert [(r.source_row, r.code) for r in rejects] == [(n + 1, "wrong_field_count")]
    if width == 1_500:
        assert True in spans, "the grammar check proved a span clean"
    else:
        assert spans == [], "too wide for the regex: no fast path, not even a check"


def test_unterminated_quote_costs_one_line() -> None:
    _, frame, rejects = read(EDGE / "unterminated_quote.csv")
    assert numbers(frame) == [1, 3, 4, 5]
    assert data(frame)[1:3] == [("3", "Cid", "Sevilla"), ("4", "Dan", "Palma de Mallorca")]
    [reject] = rejects
    assert (reject.source_row, reject.code, reject.raw_line) == (2, "unterminated_quote",
                                                                '2,"Bob,Valencia')
    assert "line 3 (data row 2)" in reject.message


def test_unterminated_quote_at_the_end() -> None:
    _, frame, rejects = read(EDGE / "unterminated_quote_at_end.csv")
    assert data(frame) == [("1", "Ana"), ("3", "Cid")]
    assert [(r.source_row, r.code) for r in rejects] == [(2, "unterminated_quote")]


def test_mixed_encoding_keeps_utf8_and_rejects_the_foreign_row() -> None:
    source, frame, rejects = read(EDGE / "mixed_encoding.csv")
    assert source.encoding == "utf-8"
    assert data(frame) == [("1", "José", "Málaga"), ("2", "Zoë", "Düsseldorf"),
                           ("4", "Łukasz", "Łódź")]
    [reject] = rejects
    assert (reject.source_row, reject.code) == (3, "bad_encoding")
    assert "(0xF1) in column 'name'" in reject.message
    assert "--encoding=cp1252" in reject.message
    assert reject.raw_line == "3,I\ufffdaki,Logro\ufffdo"


def test_forcing_the_wrong_encoding_rejects_rows_not_the_file() -> None:
    source, frame, rejects = read(EDGE / "semicolon_cp1252.csv", encoding="utf-8")
    assert source.encoding == "utf-8"
    assert frame.height == 0
    assert [(r.source_row, r.code) for r in rejects] == [(1, "bad_encoding"), (2, "bad_encoding"),
                                                         (3, "bad_encoding")]


def test_byte_undefined_in_the_code_page_is_a_reject(tmp_path: Path) -> None:
    path = tmp_path / "cp.csv"
    path.write_bytes(b"id,name\n1,a\x81b\n2,Jos\xe9\n")  # 0x81 means nothing in cp1252
    _, frame, rejects = read(path, encoding="cp1252")
    assert data(frame) == [("2", "José")]
    [reject] = rejects
    assert (reject.source_row, reject.code, reject.raw_line) == (1, "bad_encoding", "1,a\ufffdb")
    assert "not valid cp1252 in column 'name'" in reject.message


def test_empty_and_header_only_files_have_no_rows() -> None:
    source, frame, rejects = read(EDGE / "empty.csv")
    assert (source.columns, frame.height, rejects) == ((), 0, [])
    source, frame, rejects = read(EDGE / "header_only.csv")
    assert (source.columns, frame.height, rejects) == (("id", "email", "phone"), 0, [])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("duplicate_header.csv", "duplicate column name 'email' at positions 2 and 4"),
        ("mac_cr_line_ends.csv", "bare CR (classic Mac line ends) — re-save the file with LF"),
        ("unsupported.xlsx", "unsupported file type .xlsx — export it as CSV, Parquet or NDJSON"),
        ("not_parquet.parquet", "is not a readable Parquet file"),
    ],
)
def test_unusable_files_are_input_errors(name: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        resolve_inputs([str(EDGE / name)])
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(str(EDGE / name) + ": ")
    assert message in str(caught.value)


# ───────────── compression, provenance, several files ─────────────


@pytest.mark.parametrize(("name", "compression"),
                         [("compressed.csv.gz", "gzip"), ("compressed.csv.zst", "zstd")])
def test_compressed_csv(name: str, compression: str) -> None:
    path = EDGE / name
    [source] = resolve_inputs([str(path)])
    assert (source.compression, source.total, source.total_unit) == (
        compression, path.stat().st_size, "bytes")
    batches = list(iter_batches(source, ReadOptions(batch_rows=1)))
    frame = pl.concat([b.frame for b in batches])
    assert data(frame) == [("1", "ana@example.com"), ("2", "bob@example.com"),
                           ("3", "cid@example.com")]
    assert numbers(frame) == [1, 2, 3] and not any(b.rejects for b in batches)
    progress = [b.progress for b in batches]
    assert progress == sorted(progress) and progress[-1] == source.total


def test_compressed_ndjson() -> None:
    source, frame, rejects = read(EDGE / "compressed.ndjson.zst")
    assert (source.format, source.compression) == ("ndjson", "zstd")
    assert data(frame) == [("1", "ana@example.com"), ("2", "bob@example.com")]
    assert (numbers(frame), rejects) == ([1, 2], [])


def test_rejects_file_edited_in_excel_keeps_its_provenance() -> None:
    source, frame, _ = read(EDGE / "rejects_edited_utf8_bom.csv")
    assert source.delimiter == ";"
    assert frame.columns == ["_reject_message", "email", "id", "_source_file", "_source_row"]
    assert frame.get_column("_source_row").dtype == pl.Int64
    assert frame.select("_source_file", "_source_row").rows() == [
        ("exports/2026-11-01.csv", 17), ("exports/2026-11-01.csv", 42)]


def test_rejects_file_in_cp1252_falls_back_where_provenance_is_unusable() -> None:
    path = EDGE / "rejects_edited_cp1252.csv"
    source, frame, _ = read(path)
    assert (source.encoding, source.delimiter) == ("cp1252", ";")  # despite its UTF-8 BOM
    assert source.columns[0] == "id"
    assert frame.select("nombre", "_source_file", "_source_row").rows() == [
        ("José", "exports/clientes.csv", 7),
        ("Núria", "exports/clientes.csv", 2),  # "siete" is not a number: its own row
        ("Ángel", str(path), 3),  # nothing recorded: this file, its own row
    ]


def test_glob_and_directory_expansion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(EDGE)
    globbed = resolve_inputs(["exports/2026-11-*.csv"])
    assert [s.path for s in globbed] == ["exports/2026-11-01.csv", "exports/2026-11-02.csv"]
    directory = resolve_inputs(["exports"])
    assert [s.path for s in directory] == [
        os.path.join("exports", n) for n in ("2026-11-01.csv", "2026-11-02.csv", "2026-12-01.csv")
    ]
    # The same file named twice is read once.
    again = resolve_inputs(["exports/2026-11-02.csv", "exports", "./exports/2026-12-01.csv"])
    assert [s.path for s in again] == ["exports/2026-11-02.csv", "exports/2026-11-01.csv",
                                       "exports/2026-12-01.csv"]
    batches = list(iter_all(directory, ReadOptions()))
    frame = pl.concat([b.frame for b in batches])
    assert frame.select("id", "_source_file", "_source_row").rows() == [
        ("1", "exports/2026-11-01.csv", 1), ("2", "exports/2026-11-01.csv", 2),
        ("3", "exports/2026-11-02.csv", 1), ("4", "exports/2026-12-01.csv", 1)]


# ───────────── Parquet and NDJSON ─────────────


def test_parquet_nested_and_timezone_columns_arrive_intact() -> None:
    path = EDGE / "nested_tz.parquet"
    [source] = resolve_inputs([str(path)])
    assert (source.format, source.total, source.total_unit) == ("parquet", 3, "rows")
    batches = list(iter_batches(source, ReadOptions(batch_rows=2)))
    assert [(b.frame.height, b.progress) for b in batches] == [(2, 2), (1, 3)]
    frame = pl.concat([b.frame for b in batches])
    schema = frame.schema
    assert schema["tags"] == pl.List(pl.String)
    assert schema["address"] == pl.Struct({"city": pl.String, "zip": pl.String})
    assert schema["ordered_at"] == pl.Datetime("us", "Europe/Madrid")
    assert schema["segment"] == pl.String
    assert numbers(frame) == [1, 2, 3]
    assert frame.get_column("name").to_list() == ["Ana", None, None]
    assert frame.get_column("tags").to_list() == [["vip", "es"], [], None]
    assert frame.get_column("address")[0] == {"city": "Madrid", "zip": "28013"}
    first = frame.get_column("ordered_at")[0]
    assert first.utcoffset().total_seconds() == 3600 and first.hour == 10


def test_ndjson_lines_are_rows_and_bad_lines_are_rejects() -> None:
    source, frame, rejects = read(EDGE / "events.ndjson", batch_rows=3)
    assert source.columns == ("order_id", "amount", "paid", "items", "coupon", "note")
    assert numbers(frame) == [1, 5, 6, 7, 8]
    rows = frame.select("order_id", "amount", "paid", "items", "coupon", "note").rows()
    assert rows == [
        ("O1", "12.5", "true", '[{"sku": "A", "qty": 2}]', None, None),
        ("O5", "3", None, None, "XMAS", None),
        ("O6", "0", "false", None, None, None),
        ("O7", None, None, "[]", None, "café"),
        (None, "1", None, None, None, None),
    ]
    assert [(r.source_row, r.code) for r in rejects] == [(3, "bad_json"), (4, "not_an_object")]
    assert rejects[1].raw_line == '["O4", 1]'


def test_ndjson_key_first_seen_after_the_sample_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "NDJSON_SAMPLE_BYTES", 64)
    path = tmp_path / "late.jsonl"
    lines = ['{"id": 1, "email": "a@example.com"}'] * 3
    lines += ['{"id": 4, "coupon": null}', '{"id": 5, "coupon": "XMAS"}', '{"id": 6}']
    path.write_text("\n".join(lines) + "\n")
    source, frame, rejects = read(path)
    assert source.columns == ("id", "email")
    assert numbers(frame) == [1, 2, 3, 4, 6]  # a null under an unknown key carries nothing
    [reject] = rejects
    assert (reject.source_row, reject.code) == (5, "unexpected_key")
    assert "'coupon'" in reject.message


def test_ndjson_overlong_line_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_RECORD_BYTES", 200)
    path = tmp_path / "long.ndjson"
    path.write_bytes(b'{"id": 1}\n{"id": "' + b"x" * 500 + b'"}\n{"id": 3}\n')
    _, frame, rejects = read(path)
    assert frame.select("id", "_source_row").rows() == [("1", 1), ("3", 3)]
    assert [(r.source_row, r.code) for r in rejects] == [(2, "bad_json")]
    assert "longer than" in rejects[0].message


# ───────────── bad inputs ─────────────


def test_missing_path_and_empty_glob(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or directory — check the path"):
        resolve_inputs([str(tmp_path / "nope.csv")])
    with pytest.raises(InputError, match="the pattern matches no supported file"):
        resolve_inputs([str(tmp_path / "2026-*.csv")])
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="the directory holds no supported file"):
        resolve_inputs([str(tmp_path)])


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.csv"
    path.write_text("id\n1\n")
    if os.geteuid() == 0:  # root reads anything: refuse this one path at open() instead
        real_open = open

        def refusing_open(file: object, *args: object, **kwargs: object) -> object:
            if str(file) == str(path):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr(inputs, "open", refusing_open, raising=False)
    else:
        path.chmod(0)
    with pytest.raises(InputError) as caught:
        resolve_inputs([str(path)])
    assert str(caught.value) == (
        f"{path}: permission denied — make the file readable by this user (chmod/chown)")


def test_damaged_gzip_is_an_input_error(tmp_path: Path) -> None:
    rows = b"".join(b"%d,x%d@example.com\n" % (i, i) for i in range(400_000))
    whole = gzip.compress(b"id,email\n" + rows)
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(whole[: len(whole) // 2])  # truncated download
    [source] = resolve_inputs([str(broken)])
    with pytest.raises(InputError, match="compressed data is damaged"):
        list(iter_batches(source))
    garbage = tmp_path / "garbage.csv.gz"
    garbage.write_bytes(b"\x1f\x8b\x08\x00" + b"not deflate at all" * 10)
    with pytest.raises(InputError, match="compressed data is damaged"):
        resolve_inputs([str(garbage)])


def test_every_unusable_input_is_named_at_once(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        resolve_inputs([str(EDGE / "unsupported.xlsx"), str(EDGE / "header_only.csv"),
                        str(tmp_path / "missing.csv"), str(EDGE / "duplicate_header.csv")])
    lines = str(caught.value).splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        str(EDGE / "unsupported.xlsx"), str(tmp_path / "missing.csv"),
        str(EDGE / "duplicate_header.csv")]
    assert all(" — " in line for line in lines)


def test_a_rejects_file_named_explicitly_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(EDGE)
    [source] = resolve_inputs(["exports/2026-11-01.rejects.csv"])
    assert source.columns == ("id", "email", "_reject_code")


def test_bad_options_are_input_errors() -> None:
    with pytest.raises(InputError, match="unknown encoding 'klingon'"):
        resolve_inputs([str(EDGE / "header_only.csv")], ReadOptions(encoding="klingon"))
    with pytest.raises(InputError, match="is not a single character"):
        resolve_inputs([str(EDGE / "header_only.csv")], ReadOptions(delimiter=";;"))


def test_given_delimiter_overrides_sniffing() -> None:
    source, frame, _ = read(EDGE / "tab_delimited.tsv", delimiter="\\t")
    assert source.delimiter == "\t"
    source, frame, rejects = read(EDGE / "pipe_delimited.csv", delimiter=",")
    assert source.columns == ("id|email|city",)
    assert numbers(frame) == [2] and [r.source_row for r in rejects] == [1]  # "Madrid, ES"


# ───────────── smaller units ─────────────


def test_sniffing_and_detection() -> None:
    assert sniff_delimiter("id;importe\n1;3,50\n2;4,00\n") == ";"
    assert sniff_delimiter('name,city\n"Smith; J",Madrid\n') == ","
    assert sniff_delimiter("single\nvalue\n") == ","
    assert detect_encoding("José;Núñez\n".encode("cp1252"), complete=True).encoding == "cp1252"
    assert detect_encoding("José;Núñez\n".encode(), complete=True).encoding == "utf-8"
    assert detect_encoding("id\tx\n".encode("utf-16"), complete=True).encoding == "utf-16"
    assert detect_encoding("id\tx\n".encode("utf-16-le"), complete=True).encoding == "utf-16-le"
    assert detect_encoding(b"\xef\xbb\xbfid\n", complete=True).encoding == "utf-8"


def test_column_names_that_look_like_patterns(tmp_path: Path) -> None:
    path = tmp_path / "odd.csv"
    path.write_bytes(b'*,^a$,"x,y"\n1,,\n,2,3\n')
    source, frame, _ = read(path)
    assert source.columns == ("*", "^a$", "x,y")
    assert frame.columns == ["*", "^a$", "x,y", "_source_file", "_source_row"]
    assert frame.rows() == [("1", None, None, str(path), 1), (None, "2", "3", str(path), 2)]


def test_lone_cr_is_data_inside_quotes_and_a_reject_outside(tmp_path: Path) -> None:
    path = tmp_path / "cr.csv"
    path.write_bytes(b'id,note\n1,"a\rb"\n2,a\rb\n3,c\n')
    _, frame, rejects = read(path)
    assert data(frame) == [("1", "a\rb"), ("3", "c")]
    assert [(r.source_row, r.code) for r in rejects] == [(2, "malformed_csv")]


def test_one_column_blank_lines_and_empty_values(tmp_path: Path) -> None:
    path = tmp_path / "emails.csv"
    path.write_bytes(b'email\na@example.com\n\n""\nb@example.com\n')
    for batch_rows in (1, 100):
        _, frame, rejects = read(path, batch_rows=batch_rows)
        assert frame.select("email", "_source_row").rows() == [
            ("a@example.com", 1), (None, 3), ("b@example.com", 4)]
        assert rejects == []


def test_overlong_record_is_rejected_and_reading_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_RECORD_BYTES", 200)
    path = tmp_path / "long.csv"
    long_line, long_quote = b"2," + b"x" * 1000 + b"\n", b'4,"' + b"y\n" * 300 + b'"\n'
    path.write_bytes(b"id,note\n1,ok\n" + long_line + b"3,ok\n" + long_quote)
    _, frame, rejects = read(path)
    assert data(frame)[:2] == [("1", "ok"), ("3", "ok")]
    assert rejects[0].source_row == 2 and rejects[0].code == "unterminated_quote"
    assert rejects[0].raw_line is not None and rejects[0].raw_line.endswith("…")
    assert rejects[1].source_row == 4 and "longer than" in rejects[1].message


def contacts_with_damage(tmp_path: Path, rows: int) -> Path:
    """A generated contacts export with damage sprinkled at known places."""
    clean = generate_contacts_csv(tmp_path / "clean.csv", rows, seed=7)
    lines = clean.read_bytes().split(b"\n")
    damaged = tmp_path / "damaged.csv"
    for index, bad in DAMAGE.items():
        lines[index] = bad
    damaged.write_bytes(b"\n".join(lines))
    return damaged


# data row -> what replaces it; row 4500 becomes a blank line (skipped, not a reject)
DAMAGE = {5: b"short,row", 2001: b"x,\x00", 4500: b"", 4501: b'9,"open',
          5999: b"\xe9t\xe9,1,2,3,4,5,6,7,8,9,10"}


def test_fast_path_agrees_with_the_reference_parser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = contacts_with_damage(tmp_path, 6000)
    results = {}
    for batch_rows in (700, 100_000):
        _, frame, rejects = read(path, batch_rows=batch_rows, encoding="utf-8")
        results[batch_rows] = (frame, rejects)
    monkeypatch.setattr(csv_read, "_fast_parse", lambda *args: None)  # reference parser only
    _, reference, reference_rejects = read(path, batch_rows=1000, encoding="utf-8")
    assert reference.height > 5900
    for frame, rejects in results.values():
        assert frame.equals(reference)
        assert rejects == reference_rejects
    assert [(r.source_row, r.code) for r in reference_rejects] == [
        (5, "wrong_field_count"), (2001, "wrong_field_count"), (4501, "unterminated_quote"),
        (5999, "bad_encoding")]
    assert reference.height == 6000 - 5


def test_batches_are_about_batch_rows_and_progress_reaches_the_total(tmp_path: Path) -> None:
    path = generate_contacts_csv(tmp_path / "c.csv", 20_000)
    [source] = resolve_inputs([str(path)])
    batches: list[SourceBatch] = list(iter_batches(source, ReadOptions(batch_rows=3000)))
    sizes = [b.rows_read for b in batches]
    assert sum(sizes) == 20_000
    assert all(3000 <= s <= 6000 for s in sizes[:-1]) and sizes[-1] <= 6000
    progress = [b.progress for b in batches]
    assert progress == sorted(progress) and progress[-1] == source.total
    assert numbers(pl.concat([b.frame for b in batches])) == list(range(1, 20_001))


@pytest.mark.parametrize("batch_rows", [1, 2, 25_000])
def test_a_cell_that_starts_with_a_bom_character_keeps_it(tmp_path: Path, batch_rows: int) -> None:
    """polars drops a BOM at the start of what it parses: a span that starts on a data line
    beginning with U+FEFF lost that character (and a one-column row of only U+FEFF vanished
    as a blank line). Found by the round-trip property test."""
    options = ReadOptions(delimiter=",", encoding="utf-8", batch_rows=batch_rows)
    one = tmp_path / "one.csv"
    one.write_bytes('""""\n\ufeff\n'.encode())
    two = tmp_path / "two.csv"
    two.write_bytes("a,b\nfirst,1\n\ufeffsecond,2\n".encode())
    (source,) = resolve_inputs([str(one)], options)
    rows = [r for b in iter_batches(source, options) for r in b.frame.select('"').rows()]
    assert rows == [("\ufeff",)]
    (source,) = resolve_inputs([str(two)], options)
    rows = [r for b in iter_batches(source, options) for r in b.frame.select("a", "b").rows()]
    assert rows == [("first", "1"), ("\ufeffsecond", "2")]
