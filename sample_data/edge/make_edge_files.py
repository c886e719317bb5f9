"""Regenerate the edge-case inputs in this directory (deterministic, byte for byte).

    .venv/bin/python sample_data/edge/make_edge_files.py

Each file is described in sample_data/README.md and pinned by tests/test_sources.py.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

HERE = Path(__file__).resolve().parent


def write(name: str, data: bytes) -> None:
    path = HERE / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def text_files() -> None:
    write("semicolon_cp1252.csv", (
        "id_cliente;nombre;apellidos;ciudad;saldo\r\n"
        "1;José;Núñez Peña;A Coruña;1.234,50\r\n"
        "2;María;López;Málaga;€ 12,00\r\n"
        "3;Iñaki;Etxeberría;Donostia;0,99\r\n"
    ).encode("cp1252"))
    write("tab_delimited.tsv", (
        b"id\tname\tnote\n"
        b"1\tAna\tlikes commas, semicolons; and |pipes|\n"
        b"2\tBob\t\n"
    ))
    write("pipe_delimited.csv",
          b"id|email|city\n1|ana@example.com|Madrid, ES\n2|bob@example.com|\n")
    write("utf8_bom_crlf.csv", (
        "\ufeffid,name,address\r\n"
        '1,Zoë,"Calle Mayor 1\r\n28013 Madrid"\r\n'
        "2,Søren,Aarhus\r\n"
    ).encode())
    write("utf16_excel_unicode.tsv", (
        "id\tname\tcity\r\n1\tJürgen\tKöln\r\n2\t李雷\t北京\r\n"
    ).encode("utf-16"))  # Excel's "Unicode Text": UTF-16 LE with a BOM, tab-separated
    write("quoted_fields.csv", (
        b"id,name,comment,empty\n"
        b'1,"Smith, John","He said ""hi""",\n'
        b'2,Ana,"line one\nline two\r\nline three",""\n'
        b'3,"","a,b,c",x\n'
        b"4,Eve,plain,\n"
    ))
    write("malformed_rows.csv", (
        "id,name,city\n"
        "1,Ana,Madrid\n"
        "2,Bob\n"                      # row 2: too few fields
        "3,Cid,Sevilla,extra\n"        # row 3: too many fields
        "4,Dan\x00iel,Bilbao\n"        # row 4: NUL byte
        "\n"                           # row 5: blank line, skipped
        "   \n"                        # row 6: whitespace only: one field
        "7,Eva,Vigo\n"
        "8,Fer,León"                   # last line without a newline
    ).encode())
    write("unterminated_quote.csv", (
        b"id,name,city\n"
        b"1,Ana,Madrid\n"
        b'2,"Bob,Valencia\n'            # row 2: the quote never closes
        b"3,Cid,Sevilla\n"
        b'4,Dan,"Palma de Mallorca"\n'
        b"5,Eva,Vigo\n"
    ))
    write("unterminated_quote_at_end.csv", b'id,name\n1,Ana\n2,"Bob\n3,Cid\n')
    write("mixed_encoding.csv", (
        "id,name,city\n1,José,Málaga\n2,Zoë,Düsseldorf\n".encode()
        + "3,Iñaki,Logroño\n".encode("cp1252")  # row 3 pasted from a cp1252 system
        + "4,Łukasz,Łódź\n".encode()
    ))
    write("empty.csv", b"")
    write("header_only.csv", b"id,email,phone\n")
    write("blank_header.csv", b"id,,email,\n1,x,a@example.com,y\n")
    # Excel (Spanish locale) "CSV (delimitado por comas)" with its "sep=;" first line
    write("excel_sep_line.csv", (
        "sep=;\r\nid;nombre;ciudad\r\n1;José;Logroño\r\n2;Ana;A Coruña\r\n"
    ).encode("cp1252"))
    # pandas' to_csv() with its index: a blank first header cell
    write("pandas_index.csv", b",id,email\n0,U1,a@example.com\n1,U2,b@example.com\n")
    # header names with a trailing space and a no-break space, as pasted from a web page
    write("padded_header.csv", (
        "id ,\u00a0email,city\n U1,a@example.com,Madrid\n".encode()))
    # Excel's "Unicode text" saved as .txt: UTF-16 LE with a BOM, tab-separated
    write("excel_unicode_text.txt", (
        "id\tnombre\tciudad\r\n1\tMaría\tMálaga\r\n2\tÍñigo\tBilbao\r\n"
    ).encode("utf-16"))
    write("notes.txt", b"Exported by the CRM team.\nAsk Ana before re-running.\n")
    write("duplicate_header.csv", b"id,email,Email,email\n1,a,b,c\n")
    write("mac_cr_line_ends.csv", b"id,name\r1,Ana\r2,Bob\r")
    write("unsupported.xlsx", b"PK\x03\x04 this is not a spreadsheet the importer can read\n")
    write("not_parquet.parquet", b"id,name\n1,Ana\n")


def compressed() -> None:
    plain = b"id,email\n1,ana@example.com\n2,bob@example.com\n3,cid@example.com\n"
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
        handle.write(plain)
    write("compressed.csv.gz", buffer.getvalue())
    write("compressed.csv.zst", zstandard.ZstdCompressor(level=3).compress(plain))
    lines = b'{"id": 1, "email": "ana@example.com"}\n{"id": 2, "email": "bob@example.com"}\n'
    write("compressed.ndjson.zst", zstandard.ZstdCompressor(level=3).compress(lines))


def rejects_edited() -> None:
    # A rejects file opened in Excel, columns reordered and some deleted, saved as "CSV UTF-8".
    write("rejects_edited_utf8_bom.csv", (
        "\ufeff_reject_message;email;_source_row;id;_source_file\r\n"
        "bad e-mail;ana@example.com;17;1;exports/2026-11-01.csv\r\n"
        "bad e-mail;bob@example.com;42;2;exports/2026-11-01.csv\r\n"
    ).encode())
    # The same saved by a Spanish Excel: cp1252 text behind a UTF-8 BOM (sic), one row number
    # mangled, one row without provenance.
    write("rejects_edited_cp1252.csv", b"\xef\xbb\xbf" + (
        "id;nombre;_source_file;_source_row;_reject_code\r\n"
        "1;José;exports/clientes.csv;7;invalid_email\r\n"
        "2;Núria;exports/clientes.csv;siete;invalid_email\r\n"
        "3;Ángel;;;invalid_phone\r\n"
    ).encode("cp1252"))


def exports() -> None:
    write("exports/2026-11-01.csv", b"id,email\n1,a@example.com\n2,b@example.com\n")
    write("exports/2026-11-02.csv", b"id,email\n3,c@example.com\n")
    write("exports/2026-12-01.csv", b"id,email\n4,d@example.com\n")
    write("exports/2026-11-01.rejects.csv", b"id,email,_reject_code\n2,b@example.com,x\n")
    write("exports/notes.txt", b"not an export\n")


def parquet_and_ndjson() -> None:
    madrid = dt.timezone(dt.timedelta(hours=1))
    table = pa.table({
        "id": pa.array([1, 2, 3], pa.int64()),
        "name": pa.array(["Ana", "", None], pa.string()),
        "tags": pa.array([["vip", "es"], [], None], pa.list_(pa.string())),
        "address": pa.array(
            [{"city": "Madrid", "zip": "28013"}, {"city": "Köln", "zip": None}, None],
            pa.struct([("city", pa.string()), ("zip", pa.string())]),
        ),
        "ordered_at": pa.array(
            [dt.datetime(2026, 11, 3, 10, 0, tzinfo=madrid),
             dt.datetime(2026, 11, 3, 23, 30, tzinfo=madrid), None],
            pa.timestamp("us", tz="Europe/Madrid"),
        ),
        "segment": pa.array(["gold", "silver", "gold"]).dictionary_encode(),
    })  # fmt: skip
    pq.write_table(table, HERE / "nested_tz.parquet", row_group_size=2)
    write("events.ndjson", (
        b'{"order_id": "O1", "amount": 12.5, "paid": true, "items": [{"sku": "A", "qty": 2}]}\n'
        b"\n"                                                  # line 2: blank, skipped
        b'{"order_id": "O3", "amount": }\n'                     # line 3: not JSON
        b'["O4", 1]\n'                                          # line 4: not an object
        b'{"order_id": "O5", "amount": 3, "coupon": "XMAS"}\n'  # line 5: a key seen once
        b'{"order_id": "O6", "amount": 0, "paid": false, "coupon": null}\n'
        b'{"order_id": "O7", "paid": null, "items": [], "note": "caf\\u00e9"}\n'
        b'{"order_id": "", "amount": 1}\n'
    ))


if __name__ == "__main__":
    text_files()
    compressed()
    rejects_edited()
    exports()
    parquet_and_ndjson()
