"""The rejects file: format, columns, mode 0600, sidecar, append for resumed runs."""

from __future__ import annotations

import csv
import json
import stat
from pathlib import Path

import polars as pl
import pytest

from importer.records import REJECT_COLUMNS, REJECT_SCHEMA, Reject, RejectFrame
from importer.rejects import (
    RenderedRejects,
    csv_layout,
    default_rejects_path,
    meta_path,
    open_rejects,
    render,
)

R1 = Reject(
    "crm.csv", 7, "map", "invalid_email", "email 'ada@' is not an address", field="email",
    values={"id": "U7", "email": "ada@", "name": "Muñoz"},
)  # fmt: skip
R2 = Reject(
    "crm.csv", 9, "transport", "transport", "gave up after 5 attempts", http_status=503,
    attempts=5, retryable=True, values={"id": "U9", "email": "x@y.es", "name": None},
)  # fmt: skip
R3 = Reject("crm.csv", 11, "read", "wrong_field_count", "3 fields, expected 4",
            raw_line='U11;"oops')


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_csv_rejects_keep_source_columns_verbatim_then_reject_columns(tmp_path: Path) -> None:
    path = tmp_path / "crm.rejects.csv"
    with open_rejects(path, source_columns=["id", "email", "name"], delimiter=";",
                      meta={"mapping": "m.yaml"}) as writer:
        writer.write([R1, R2])
        writer.write([R3])
    assert writer.count == 3
    text = path.read_text(encoding="utf-8")
    assert text.startswith("\ufeff")  # Excel reads UTF-8 only with a BOM
    rows = list(csv.DictReader(text.lstrip("\ufeff").splitlines(), delimiter=";"))
    assert list(rows[0]) == ["id", "email", "name", *REJECT_COLUMNS, "_raw_line"]
    assert rows[0]["name"] == "Muñoz" and rows[0]["_reject_code"] == "invalid_email"
    assert rows[1]["_reject_retryable"] == "true" and rows[1]["_reject_http_status"] == "503"
    assert rows[1]["name"] == ""
    assert rows[2]["_raw_line"] == 'U11;"oops' and rows[2]["_source_row"] == "11"
    assert _mode(path) == 0o600
    assert _mode(meta_path(path)) == 0o600
    assert json.loads(meta_path(path).read_text())["mapping"] == "m.yaml"


def test_an_existing_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("old")
    path.chmod(0o644)
    with open_rejects(path, source_columns=["id"]) as writer:
        writer.write([R1])
    assert _mode(path) == 0o600
    assert "old" not in path.read_text()


@pytest.mark.parametrize("fmt", ["csv", "parquet", "ndjson"])
def test_append_continues_the_same_file(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"r.{fmt}"
    for batch in ([R1], [R2, R3]):
        with open_rejects(path, source_columns=["id", "email", "name"], fmt=fmt,  # type: ignore[arg-type]
                          append=True) as writer:
            writer.write(batch)
    if fmt == "parquet":
        frame = pl.read_parquet(path)
    elif fmt == "ndjson":
        frame = pl.read_ndjson(path)
    else:
        frame = pl.read_csv(path, infer_schema=False)
    assert frame["_source_row"].cast(pl.Int64).to_list() == [7, 9, 11]
    assert frame["_reject_code"].to_list() == ["invalid_email", "transport", "wrong_field_count"]
    assert _mode(path) == 0o600


def test_default_path_sits_beside_the_first_input() -> None:
    assert default_rejects_path("exports/crm.csv.gz", "csv") == Path("exports/crm.rejects.csv")
    assert default_rejects_path("orders.parquet", "parquet") == Path("orders.rejects.parquet")


def _map_rejects(values: list[dict[str, str | None]]) -> RejectFrame:
    """A mapping stage's rejects frame: source columns, then the reject columns."""
    n = len(values)
    data: dict[str, list[object]] = {c: [v.get(c) for v in values] for c in ("id", "email")}
    data.update({
        "_source_file": ["crm.csv"] * n, "_source_row": list(range(2, n + 2)),
        "_reject_stage": ["map"] * n, "_reject_code": ["invalid_email"] * n,
        "_reject_field": ["email"] * n,
        "_reject_message": [f"'{v['email']}' is not an address" for v in values],
        "_reject_http_status": [None] * n, "_reject_attempts": [0] * n,
        "_reject_retryable": [False] * n, "_raw_line": [None] * n,
    })  # fmt: skip
    return RejectFrame(pl.DataFrame(data, schema_overrides=REJECT_SCHEMA))


def test_rejects_rendered_ahead_are_the_bytes_the_writer_would_write(tmp_path: Path) -> None:
    """The reading thread renders the mapping's rejects (rejects.render) for the file's
    layout; the writer appends them as they are — byte for byte what it writes itself — and
    renders a frame laid out for another file itself."""
    rejects = _map_rejects([
        {"id": "U1", "email": "ada@"}, {"id": "U2", "email": 'semi;"quoted"'},
        {"id": None, "email": "Muñoz\nline"},
    ])  # fmt: skip
    schema = {"id": pl.String(), "email": pl.String()}
    layout = csv_layout(["id", "email"], ";", schema)
    assert layout is not None
    rendered = render(rejects, layout)
    assert isinstance(rendered, RenderedRejects)
    other = csv_layout(["id", "email"], ",", schema)  # another delimiter: another file
    assert other is not None and other != layout
    files = []
    for name, frame in (("plain", rejects), ("ahead", rendered),
                        ("elsewhere", render(rejects, other))):
        path = tmp_path / f"{name}.csv"
        with open_rejects(path, source_columns=["id", "email"], delimiter=";",
                          source_schema=schema) as writer:
            assert writer.layout == layout
            writer.write(frame)
        assert writer.count == 3
        files.append(path.read_bytes())
    assert files[0] == files[1] == files[2]
    rows = list(csv.DictReader(files[0].decode("utf-8-sig").splitlines(keepends=True),
                               delimiter=";"))
    assert [r["email"] for r in rows] == ["ada@", 'semi;"quoted"', "Muñoz\nline"]
    assert rows[2]["id"] == ""  # a missing value stays empty


def test_no_layout_where_a_source_column_is_not_text() -> None:
    """Typed sources (Parquet) or an unknown schema: rejects are written row by row, so
    nothing is rendered ahead."""
    assert csv_layout(["id", "n"], ",", {"id": pl.String(), "n": pl.Int64()}) is None
    assert csv_layout(["id"], ",", {}) is None
    rejects = _map_rejects([{"id": "U1", "email": "x"}])
    assert render(rejects, None) is rejects
