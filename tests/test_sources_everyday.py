"""Everyday exports and hostile inputs the reader must take in its stride (issues 15 and 18):
recursive globs over symbolic-link loops, Excel's ``sep=`` line, blank and padded header
names, Excel's "Unicode text" ``.txt``, and an unterminated quote before long lines."""

from __future__ import annotations

import glob
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from importer.cli import cli
from importer.exceptions import InputError
from importer.records import Reject
from importer.sandbox.server import RunningSandbox
from importer.sources import ReadOptions, SourceFile, iter_batches, limits, resolve_inputs
from importer.sources import inputs as inputs_module

ROOT = Path(__file__).resolve().parent.parent
EDGE = ROOT / "sample_data" / "edge"


def read(path: Path | str, **options: object) -> tuple[SourceFile, pl.DataFrame, list[Reject]]:
    opts = ReadOptions(**options)  # type: ignore[arg-type]
    [source] = resolve_inputs([str(path)], opts)
    batches = list(iter_batches(source, opts))
    frame = pl.concat([b.frame for b in batches]) if batches else pl.DataFrame()
    return source, frame, [r for b in batches for r in b.rejects]


# ───────────── recursive globs (issue 18 item 12) ─────────────


def _tree_with_loops(root: Path) -> None:
    (root / "d" / "sub" / "deeper").mkdir(parents=True)
    (root / "d" / "a.csv").write_text("id\n1\n")
    (root / "d" / "sub" / "b.csv").write_text("id\n2\n")
    (root / "d" / "sub" / "deeper" / "c.csv").write_text("id\n3\n")
    (root / "d" / "sub" / "up").symlink_to("..")  # two loops back up the tree
    (root / "d" / "sub" / "deeper" / "top").symlink_to("../..")


def test_recursive_glob_over_symlink_loops_ends(tmp_path: Path) -> None:
    """Each directory once: the walk ends, every file once. Run in a child process so the
    old behaviour (glob following the loops for ever) fails on the timeout, not hangs."""
    _tree_with_loops(tmp_path)
    script = textwrap.dedent(f"""
        import os
        from importer.sources import resolve_inputs
        os.chdir({str(tmp_path)!r})
        print("|".join(s.path for s in resolve_inputs(["d/**/*.csv"])))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().split("|") == ["d/a.csv", "d/sub/b.csv", "d/sub/deeper/c.csv"]


def test_recursive_glob_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(12):
        (tmp_path / "t" / f"dir{i}").mkdir(parents=True)
    (tmp_path / "t" / "dir3" / "x.csv").write_text("id\n1\n")
    monkeypatch.setattr(inputs_module, "MAX_GLOB_DIRS", 10)
    with pytest.raises(InputError, match="walks more than 10 directories — narrow it down"):
        resolve_inputs([str(tmp_path / "t" / "**" / "*.csv")])


@pytest.mark.parametrize("pattern", ["**/*.csv", "t/**/*.csv", "t/*/x*.csv", "t/**",
                                     "t/**/d?/*.csv", "*/dir1/**/*.csv", "t/[ab]*/**/*.csv"])
def test_glob_matches_what_python_glob_matches_without_loops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pattern: str
) -> None:
    rng = random.Random(pattern)
    for i in range(30):
        depth = rng.randint(0, 3)
        parts = [rng.choice(["a1", "b2", "dir1", "d9", ".hidden"]) for _ in range(depth)]
        folder = tmp_path.joinpath("t", *parts)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"x{i}.csv").write_text("id\n1\n")
    monkeypatch.chdir(tmp_path)
    want = sorted(p for p in glob.glob(pattern, recursive=True)
                  if os.path.isfile(p) and inputs_module._wanted(p))
    assert [s.path for s in resolve_inputs([pattern])] == want
    absolute = str(tmp_path / pattern)
    want_abs = sorted(p for p in glob.glob(absolute, recursive=True)
                      if os.path.isfile(p) and inputs_module._wanted(p))
    assert [s.path for s in resolve_inputs([absolute])] == want_abs


# ───────────── everyday exports (issue 15) ─────────────


def test_excel_sep_line_sets_the_delimiter_and_is_not_a_row() -> None:
    source, frame, rejects = read(EDGE / "excel_sep_line.csv")
    assert (source.delimiter, source.encoding, source.columns) == (
        ";", "cp1252", ("id", "nombre", "ciudad"))
    assert frame.rows() == [("1", "José", "Logroño", str(EDGE / "excel_sep_line.csv"), 1),
                            ("2", "Ana", "A Coruña", str(EDGE / "excel_sep_line.csv"), 2)]
    assert rejects == []
    assert "line 1 'sep=;' names the delimiter (not a row)" in source.describe()


def test_after_a_sep_line_physical_lines_stay_right(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"sep=,\nid,name\n1,Ana\n2\n3,Cid\n")
    source, frame, rejects = read(path)
    assert source.delimiter == ","
    assert frame.get_column("_source_row").to_list() == [1, 3]
    [reject] = rejects
    assert reject.source_row == 2 and f"{path} line 4 (data row 2)" in reject.message


def test_a_given_delimiter_wins_over_the_sep_line(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"sep=;\nid|name\n1|Ana\n")
    source, frame, _ = read(path, delimiter="|")
    assert source.columns == ("id", "name") and frame.row(0)[:2] == ("1", "Ana")


def test_blank_header_names_are_generated_with_a_note() -> None:
    source, frame, rejects = read(EDGE / "pandas_index.csv")
    assert source.columns == ("column_1", "id", "email")
    assert frame.select("column_1", "id", "email").rows() == [
        ("0", "U1", "a@example.com"), ("1", "U2", "b@example.com")]
    assert rejects == []
    assert "header cell 1 is blank: read as column 'column_1'" in source.describe()
    [both] = resolve_inputs([str(EDGE / "blank_header.csv")])
    assert both.columns == ("id", "column_2", "email", "column_4")


def test_a_generated_name_does_not_take_an_existing_one(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"column_1,,id\na,b,c\n")
    source = read(path)[0]
    assert source.columns == ("column_1", "column_2", "id")
    path.write_bytes(b",column_1\na,b\n")
    assert read(path)[0].columns == ("column_1_", "column_1")


def test_padded_header_names_are_listed_trimmed_and_kept_verbatim_in_rows() -> None:
    source, frame, _ = read(EDGE / "padded_header.csv")
    assert source.columns == ("id ", "\u00a0email", "city")  # as in the file (rejects keep it)
    assert dict(source.renamed) == {"id ": "id", "\u00a0email": "email"}
    assert frame.select("id ", "\u00a0email").row(0) == (" U1", "a@example.com")
    described = source.describe()
    assert "header 'id ' has stray spaces: matched as 'id'" in described
    assert "header '\\xa0email' has stray spaces: matched as 'email'" in described


def test_trimming_that_would_collide_is_not_done(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"email,email \na,b\n")
    source = read(path)[0]
    assert source.renamed == ()
    assert "header 'email ' has stray spaces, kept as is" in source.describe()


def test_duplicate_names_stay_an_error() -> None:
    with pytest.raises(InputError, match="duplicate column name 'email' at positions 2 and 4"):
        resolve_inputs([str(EDGE / "duplicate_header.csv")])


def test_excel_unicode_text_txt_is_read_as_delimited_text() -> None:
    source, frame, rejects = read(EDGE / "excel_unicode_text.txt")
    assert (source.format, source.encoding, source.delimiter) == ("csv", "utf-16", "\t")
    assert frame.select("id", "nombre", "ciudad").rows() == [
        ("1", "María", "Málaga"), ("2", "Íñigo", "Bilbao")]
    assert rejects == []


def test_txt_that_is_not_delimited_is_refused_by_name_and_skipped_in_a_folder(
    tmp_path: Path,
) -> None:
    with pytest.raises(InputError, match=r"a \.txt file that does not read as delimited text"):
        resolve_inputs([str(EDGE / "notes.txt")])
    (tmp_path / "notes.txt").write_bytes((EDGE / "notes.txt").read_bytes())
    (tmp_path / "unicode.txt").write_bytes((EDGE / "excel_unicode_text.txt").read_bytes())
    (tmp_path / "a.csv").write_text("id\n1\n")
    found = resolve_inputs([str(tmp_path)])
    assert [Path(s.path).name for s in found] == ["a.csv", "unicode.txt"]


def test_everyday_exports_land_in_the_sandbox_exactly(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    box = make_sandbox()
    mapping = tmp_path / "m.yaml"
    mapping.write_text("version: 1\ntarget: contacts\nfields:\n  _user_id: id\n"
                       "  _first_name: nombre\n  _city: ciudad\n")
    for name in ("excel_sep_line.csv", "excel_unicode_text.txt"):
        result = CliRunner().invoke(cli, ["run", str(EDGE / name), "--mapping", str(mapping)],
                                    env=box.env(), catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
        if name == "excel_sep_line.csv":
            first = box.app.get_contact("1")
            assert first is not None and (first["_first_name"], first["_city"]) == (
                "José", "Logroño")
    got = {u: box.app.get_contact(u) for u in ("1", "2")}
    # excel_unicode_text.txt ran second: its values won (later upserts win)
    assert {u: (c or {}).get("_first_name") for u, c in got.items()} == {"1": "María",
                                                                          "2": "Íñigo"}
    assert {u: (c or {}).get("_city") for u, c in got.items()} == {"1": "Málaga", "2": "Bilbao"}
    pandas = tmp_path / "p.yaml"
    pandas.write_text("version: 1\ntarget: contacts\nfields:\n  _user_id: id\n"
                      "  _email: email\n  row_index: column_1\n")
    result = CliRunner().invoke(cli, ["run", str(EDGE / "pandas_index.csv"), "--mapping",
                                      str(pandas)], env=box.env(), catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert "header cell 1 is blank: read as column 'column_1'" in result.stderr
    stored = box.app.get_contact("U2")
    assert stored is not None and stored["_email"] == "b@example.com"


# ───────────── an unterminated quote before long lines (issue 18 item 13) ─────────────


def test_long_rejected_lines_keep_a_bounded_raw_line(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    long_fields = b"x," * 100_000  # 200 KB lines with the wrong field count
    with path.open("wb") as fh:
        fh.write(b'id,note\n1,"open\n')
        for i in range(2, 12):
            fh.write(f"{i},".encode() + long_fields + b"\n")
        fh.write(b"12,fine\n")
    _, frame, rejects = read(path)
    assert frame.select("id", "note").rows() == [("12", "fine")]
    assert [r.source_row for r in rejects] == list(range(1, 12))
    limit = limits.MAX_RAW_LINE_CHARS
    for reject in rejects[1:]:
        assert reject.raw_line is not None
        assert len(reject.raw_line) < limit + 100
        assert reject.raw_line.startswith(f"{reject.source_row},x,x,")
        assert reject.raw_line.endswith(f"…[{200_001 + len(str(reject.source_row)) - limit:,}"
                                        " more characters not kept]")
        assert "_raw_line keeps the first 65,536; fix it in the original file" in reject.message
    assert rejects[0].raw_line == '1,"open'  # a short line is kept whole, without a note
    assert "_raw_line keeps" not in rejects[0].message


def test_a_long_ndjson_line_keeps_a_bounded_raw_line(tmp_path: Path) -> None:
    path = tmp_path / "long.ndjson"
    path.write_bytes(b'{"id": 1}\n{"id": 2, "x": "' + b"y" * 100_000 + b'"\n{"id": 3}\n')
    _, frame, rejects = read(path)
    assert frame.get_column("id").to_list() == ["1", "3"]
    [reject] = rejects
    assert reject.raw_line is not None and len(reject.raw_line) < limits.MAX_RAW_LINE_CHARS + 100
    assert "_raw_line keeps the first" in reject.message


# ───────────── memory bounded by bytes, not rows (issue 15 Resources, issue 18 item 14) ─────


def _batches(path: Path, batch_rows: int) -> list[pl.DataFrame]:
    options = ReadOptions(batch_rows=batch_rows)
    [source] = resolve_inputs([str(path)], options)
    return [b.frame for b in iter_batches(source, options)]


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
def test_wide_rows_make_smaller_batches_with_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    columns, rows = 200, 600
    frame = pl.DataFrame({f"c{i}": [f"r{r}v{i:04d}" for r in range(rows)]
                          for i in range(columns)})
    path = tmp_path / f"wide.{fmt}"
    {"csv": frame.write_csv, "ndjson": frame.write_ndjson,
     "parquet": frame.write_parquet}[fmt](path)
    whole = _batches(path, 100_000)
    budget = 256 * 1024 if fmt != "parquet" else 64 * 1024  # Parquet batches take 4x
    monkeypatch.setattr(limits, "BATCH_BYTES", budget)
    budgeted = _batches(path, 100_000)
    # (Parquet: its uncompressed bytes per row, ~10 per cell)
    row_bytes = path.stat().st_size / rows if fmt != "parquet" else columns * 10
    factor = 2 if fmt != "parquet" else 4 * 2
    assert len(whole) == 1 and len(budgeted) > 3
    for batch in budgeted:  # each about the budget (a parse span may overshoot it once)
        assert batch.height * row_bytes <= factor * budget + row_bytes
    assert pl.concat(budgeted).equals(whole[0])
    assert pl.concat(budgeted).get_column("_source_row").to_list() == list(range(1, rows + 1))


def _mixed_types(columns: int, rows: int) -> pa.Table:
    """Columns of every kind the reader converts: text with empty cells, integers with
    nulls, time zones, lists, and dictionary-encoded text."""
    madrid = pa.timestamp("us", "Europe/Madrid")
    kinds: list[Callable[[int], pa.Array]] = [
        lambda i: pa.array([f"r{r}c{i}" if (r + i) % 5 else "" for r in range(rows)]),
        lambda i: pa.array([r * i if r % 7 else None for r in range(rows)], pa.int64()),
        lambda i: pa.array([1_700_000_000_000_000 + r * i for r in range(rows)], madrid),
        lambda i: pa.array([[f"t{r % 3}"] * (r % 3) for r in range(rows)]),
        lambda i: pa.array([f"s{r % 4}" if r % 4 else "" for r in range(rows)]).dictionary_encode(),
    ]
    return pa.table({f"c{i}": kinds[i % len(kinds)](i) for i in range(columns)})


def _windowed(path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pl.DataFrame]:
    """The file's batches of 100 rows read in windows of 256 KiB, 10 columns at a time."""
    monkeypatch.setattr(limits, "PARQUET_COLUMN_SLICE", 10)
    monkeypatch.setattr(limits, "PARQUET_WINDOW_BYTES", 256 * 1024)
    yield from _iter_frames(path, 100)
    monkeypatch.undo()


def _iter_frames(path: Path, batch_rows: int) -> Iterator[pl.DataFrame]:
    options = ReadOptions(batch_rows=batch_rows)
    [source] = resolve_inputs([str(path)], options)
    return (b.frame for b in iter_batches(source, options))


def test_a_wide_row_group_is_read_in_windows_bounded_by_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row group bigger than its window, of more columns than are decoded at once, is read
    a window of rows at a time (issue 18 item 14): the Arrow memory the reader ever holds
    follows the window, not the row group; the batches are those of the row group read whole
    (types, empty text as null, row numbers), byte for byte."""
    path = tmp_path / "wide.parquet"
    pq.write_table(_mixed_types(300, 2_000), path)
    group = pq.ParquetFile(path).metadata.row_group(0).total_byte_size
    assert pq.ParquetFile(path).metadata.num_row_groups == 1 and group > 3_000_000
    whole = _batches(path, 100)
    windowed = list(_windowed(path, monkeypatch))
    assert len(windowed) == len(whole) == 20
    for ours, theirs in zip(windowed, whole, strict=True):
        assert ours.equals(theirs) and ours.schema == theirs.schema
    # the peak in a fresh process (pyarrow's peak cannot be reset)
    script = textwrap.dedent(f"""
        import pyarrow as pa
        from importer.sources import ReadOptions, iter_batches, limits, resolve_inputs
        limits.PARQUET_COLUMN_SLICE, limits.PARQUET_WINDOW_BYTES = 10, 256 * 1024
        options = ReadOptions(batch_rows=100)
        [source] = resolve_inputs([{str(path)!r}], options)
        count = sum(1 for _ in iter_batches(source, options))
        print(count, pa.default_memory_pool().max_memory())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    count, peak = map(int, done.stdout.split())
    assert count == 20
    # the window, a slice of 10 columns decoded whole, and a read buffer of 64 KiB per column
    # (0.9 MB here; 5.0 MB with the row group read whole, 10 columns at a time)
    assert peak < group / 3, f"{peak:,} of {group:,} bytes"


def test_a_big_row_group_of_few_columns_is_streamed_with_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "narrow.parquet"
    pq.write_table(_mixed_types(5, 20_000), path)
    assert pq.ParquetFile(path).metadata.row_group(0).total_byte_size > 2 * 256 * 1024
    whole = _batches(path, 100)
    windowed = list(_windowed(path, monkeypatch))
    assert len(windowed) == len(whole) == 200
    for ours, theirs in zip(windowed, whole, strict=True):
        assert ours.equals(theirs) and ours.schema == theirs.schema


def test_a_parquet_file_of_no_rows_gives_no_batch(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"a": pa.array([], pa.string())}), path)
    assert pq.ParquetFile(path).metadata.num_row_groups == 1  # a row group of no rows
    assert _batches(path, 100) == []


def test_unterminated_quote_before_long_lines_keeps_memory_flat(tmp_path: Path) -> None:
    """40 lines of 1 MiB, half a million fields each, after an unterminated quote: the
    reader's peak RSS stays well below what polars' attempts at such spans cost (470-560 MB)."""
    path = tmp_path / "long.csv"
    with path.open("wb") as fh:
        fh.write(b'id,note\n1,"open\n')
        for i in range(2, 42):
            fh.write(f"{i},".encode() + b"x," * (1 << 19) + b"\n")
    # VmHWM, not ru_maxrss: the latter keeps the forked pytest's own size across exec
    script = textwrap.dedent(f"""
        import re
        from importer.sources import ReadOptions, iter_batches, resolve_inputs
        options = ReadOptions(batch_rows=25_000)
        [source] = resolve_inputs([{str(path)!r}], options)
        rejects = sum(len(b.rejects) for b in iter_batches(source, options))
        status = open("/proc/self/status").read()
        print(rejects, int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1)) // 1024)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    rejects, peak_mb = map(int, done.stdout.split())
    assert rejects == 41
    assert peak_mb < 250, f"peak RSS {peak_mb} MB"  # 110 MB here; 473 MB before
