"""``instasent-import validate`` through click's CliRunner: output, exit codes, files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import orjson
import polars as pl
from click.testing import CliRunner

from importer.cli import cli

ROOT = Path(__file__).resolve().parent.parent
CONTACTS = str(ROOT / "sample_data" / "contacts.csv")
MAPPING = str(ROOT / "mappings" / "contacts.yaml")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["validate", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_summary_counts_problems_and_exit_3() -> None:
    code, out, _ = invoke(CONTACTS, "--mapping", MAPPING, "--top", "2")
    assert code == 3
    lines = out.splitlines()
    assert "rows read             60" in lines
    assert "valid                 50" in lines
    assert "filtered               2" in lines
    assert "would reject           8" in lines
    assert "  invalid_email                  3" in lines
    assert "first 2 problems (file:row — row 1 is the first data row after the header):" in out
    assert f"  {CONTACTS}:5  invalid_email [_email]  _email: 'lucia.perez@@example.com'" in out
    assert "payloads (as sent)" not in out  # no --sample


def test_sample_payloads_are_the_exact_bytes() -> None:
    code, out, _ = invoke(CONTACTS, "--mapping", MAPPING, "--sample", "2")
    assert code == 3
    after = out.split("sample contacts payloads (as sent):\n", 1)[1].splitlines()
    first, second = (orjson.loads(line) for line in after[:2])
    assert first["_user_id"] == "C00001" and second["_user_id"] == "C00002"
    assert after[0] == orjson.dumps(first).decode()  # compact, key order kept, UTF-8


def test_json_output() -> None:
    code, out, _ = invoke(CONTACTS, "--mapping", MAPPING, "--output", "json", "--sample", "1")
    assert code == 3
    data = json.loads(out)
    assert (data["rows_read"], data["valid"], data["filtered"], data["rejected"]) == (60, 50, 2, 8)
    assert data["rejects_by_code"]["required_missing"] == 2
    assert data["problems"][0] == {
        "file": CONTACTS, "row": 5, "stage": "map", "code": "invalid_email", "field": "_email",
        "message": data["problems"][0]["message"],
    }
    assert data["samples"]["contacts"][0]["_phone_mobile"] == "+34641442316"
    assert data["exit_code"] == 3 and data["mapping"]["sha256"]


def test_rejects_file_is_written_private_with_original_values(tmp_path: Path) -> None:
    rejects = tmp_path / "out.rejects.csv"
    code, out, _ = invoke(CONTACTS, "--mapping", MAPPING, "--rejects", str(rejects))
    assert code == 3 and f"rejects written to {rejects}" in out
    assert stat.S_IMODE(os.stat(rejects).st_mode) == 0o600
    frame = pl.read_csv(rejects, infer_schema=False)
    assert frame.height == 8
    row = frame.filter(pl.col("_source_row") == "5").row(0, named=True)
    assert row["email"] == "lucia.perez@@example.com"
    assert (row["_reject_stage"], row["_reject_code"]) == ("map", "invalid_email")
    meta = json.loads(Path(f"{rejects}.meta.json").read_text())
    assert meta["mapping"] == str(Path(MAPPING).resolve())


def test_clean_file_exits_0_and_writes_no_rejects(tmp_path: Path) -> None:
    data = tmp_path / "clean.csv"
    data.write_text("id,email\n1,a@b.es\n2,\n", encoding="utf-8")
    mapping = tmp_path / "m.yaml"
    mapping.write_text("target: contacts\nfields:\n  _user_id: id\n  _email: {column: email, "
                       "type: email}\n", encoding="utf-8")
    rejects = tmp_path / "r.csv"
    code, out, _ = invoke(str(data), "--mapping", str(mapping), "--rejects", str(rejects))
    assert code == 0
    assert "would reject           0" in out.splitlines()
    assert not rejects.exists()


def test_bad_mapping_exits_2_with_lines(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text("target: contacts\nfields:\n  _user_id: {colum: id}\n  x: {column: "
                       "email, type: emial}\n", encoding="utf-8")
    code, out, err = invoke(CONTACTS, "--mapping", str(mapping))
    assert code == 2 and out == ""
    assert f"{mapping}:3: error: unknown key 'colum'" in err
    assert f"{mapping}:4: error: field 'x': unknown type 'emial' (did you mean 'email'?)" in err
    code, out, _ = invoke(CONTACTS, "--mapping", str(mapping), "--output", "json")
    data = json.loads(out)
    assert code == 2 and data["exit_code"] == 2
    assert [p["line"] for p in data["problems"]] == [3, 3, 4]


def test_unknown_column_in_any_file_exits_2(tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("customer_id,emial,mobile\nC1,a@b.es,612345678\n", encoding="utf-8")
    code, _, err = invoke(CONTACTS, str(other), "--mapping", MAPPING)
    assert code == 2
    assert f"column 'email' is not in the header of {other} (did you mean 'emial'?)" in err
    assert f"{MAPPING}:30: error: column 'email'" in err  # the line of `column: email`


def test_delimiter_and_encoding_reach_the_reader(tmp_path: Path) -> None:
    data = tmp_path / "es.txt.csv"
    data.write_bytes("id|nombre\n1|Muñoz\n".encode("cp1252"))
    mapping = tmp_path / "m.yaml"
    mapping.write_text("target: contacts\nfields:\n  _user_id: id\n  nombre: nombre\n",
                       encoding="utf-8")
    code, out, _ = invoke(str(data), "--mapping", str(mapping), "--delimiter", "|",
                          "--encoding", "cp1252", "--sample", "1")
    assert code == 0
    assert '{"_user_id":"1","nombre":"Muñoz"}' in out


def test_read_rejects_count_as_would_reject(tmp_path: Path) -> None:
    data = tmp_path / "ragged.csv"
    data.write_text('id,email\n1,a@b.es\n2,b@c.es,extra,cells\n3,"unterminated\n',
                    encoding="utf-8")
    mapping = tmp_path / "m.yaml"
    mapping.write_text("target: contacts\nfields:\n  _user_id: id\n", encoding="utf-8")
    code, out, _ = invoke(str(data), "--mapping", str(mapping), "--output", "json")
    report = json.loads(out)
    assert code == 3
    assert report["rejected"] >= 1
    assert report["rows_read"] == report["valid"] + report["rejected"] + report["filtered"]
    assert {p["stage"] for p in report["problems"]} == {"read"}
