"""Property tests for the CSV reader.

1. Random tables written in several dialects and encodings read back identical, with row
   numbers 1..n (empty cells read as null).
2. Whatever damage is sprinkled into a file, the result does not depend on the batch size,
   and the fast path (polars) gives exactly what the reference parser (Python's csv) gives.
"""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import importer.sources as sources
from importer.exceptions import InputError
from importer.records import Reject
from importer.sources import DELIMITERS, ReadOptions, csv_read, iter_batches, resolve_inputs

# Characters that make CSV hard, the polars marker bytes, and anything else but NUL/surrogates.
_SPECIAL = st.sampled_from(['"', ",", ";", "\t", "|", "\n", "\r", "\r\n", " ", "\x1f", "\x1e"])
_ANY = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
_CP1252 = st.characters(codec="cp1252", exclude_characters="\x00")


def _cells(chars: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(st.one_of(_SPECIAL, chars), max_size=8).map("".join)


@st.composite
def tables(draw: st.DrawFn, chars: st.SearchStrategy[str]) -> tuple[list[str], list[list[str]]]:
    width = draw(st.integers(1, 4))
    # (a name of only spaces, no-break or zero-width spaces or BOMs is blank: it gets a
    # generated name, tested in test_sources_everyday.py)
    name = _cells(chars).filter(lambda n: bool(n.strip() and n.strip("\u200b\ufeff"))
                                and not n.startswith("_source"))
    names = draw(st.lists(name, min_size=width, max_size=width, unique=True))
    rows = draw(st.lists(st.lists(_cells(chars), min_size=width, max_size=width), max_size=20))
    return names, rows


def to_csv(rows: list[list[str]], delimiter: str, quote_all: bool, eol: str) -> str:
    """A writer that quotes whatever needs it (Python's leaves a lone CR unquoted)."""

    def cell(value: str, alone: bool) -> str:
        special = any(c in value for c in (delimiter, '"', "\r", "\n")) or (alone and not value)
        return f'"{value.replace(chr(34), chr(34) * 2)}"' if quote_all or special else value

    return "".join(delimiter.join(cell(v, len(r) == 1) for v in r) + eol for r in rows)


def values(frame: pl.DataFrame, names: list[str]) -> list[tuple[object, ...]]:
    """Rows of the named columns (frame.select would read "*" or "^a$" as patterns)."""
    return list(zip(*(frame.get_column(n).to_list() for n in names), strict=True)) if len(
        frame) else []


def read_back(
    path: Path, options: ReadOptions
) -> tuple[sources.SourceFile, pl.DataFrame, list[Reject]]:
    [source] = resolve_inputs([str(path)], options)
    batches = list(iter_batches(source, options))
    schema = {name: pl.String for name in source.columns}
    frames = [b.frame for b in batches] or [
        pl.DataFrame(schema={**schema, "_source_file": pl.String, "_source_row": pl.Int64})
    ]
    return source, pl.concat(frames), [r for b in batches for r in b.rejects]


@settings(max_examples=150, deadline=None)
@given(
    table=st.data(),
    delimiter=st.sampled_from(DELIMITERS),
    quote_all=st.booleans(),
    eol=st.sampled_from(["\n", "\r\n"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"]),
    gzipped=st.booleans(),
    batch_rows=st.integers(1, 7),
)
def test_round_trip(
    table: st.DataObject, delimiter: str, quote_all: bool, eol: str, encoding: str,
    gzipped: bool, batch_rows: int,
) -> None:
    names, rows = table.draw(tables(_CP1252 if encoding == "cp1252" else _ANY))
    raw = to_csv([names, *rows], delimiter, quote_all, eol).encode(encoding)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("t.csv.gz" if gzipped else "t.csv")
        path.write_bytes(gzip.compress(raw, mtime=0) if gzipped else raw)
        options = ReadOptions(delimiter=delimiter, encoding=encoding, batch_rows=batch_rows)
        source, frame, rejects = read_back(path, options)
    assert source.columns == tuple(names)
    assert rejects == []
    expected = [tuple(v or None for v in row) for row in rows]
    assert values(frame, names) == expected
    assert frame.get_column("_source_row").to_list() == list(range(1, len(rows) + 1))


@settings(max_examples=60, deadline=None)
@given(
    table=tables(_ANY).filter(lambda t: len(t[0]) >= 2),  # one column: nothing to sniff
    delimiter=st.sampled_from(DELIMITERS),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
)
def test_round_trip_with_detection(
    table: tuple[list[str], list[list[str]]], delimiter: str, encoding: str
) -> None:
    """Delimiter and encoding found on their own when the header is plain identifiers — or,
    when a few odd characters are all the evidence, the file refused with the right encoding
    among the candidates: never read with a wrong one."""
    width, rows = len(table[0]), table[1]
    names = [f"col{i}" for i in range(width)]
    raw = to_csv([names, *rows], delimiter, False, "\n").encode(encoding)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        path.write_bytes(raw)
        try:
            source, frame, rejects = read_back(path, ReadOptions(batch_rows=3))
        except InputError as exc:
            assert "cannot tell the text encoding for sure" in str(exc)
            assert f"--encoding={encoding.removesuffix('-sig')} " in str(exc)
            return
    assert (source.delimiter, source.encoding) == (delimiter, encoding.removesuffix("-sig"))
    assert rejects == []
    assert values(frame, names) == [tuple(v or None for v in row) for row in rows]


_DAMAGE = st.sampled_from([
    b"", b"   ", b'x,"open', b"short", b"a,b,c,d,e,f,g,h", b"a,\x00,c", b"\xff\xfe,x",
    b'"', b'a,"b"c,d', b'"a""', b"a\rb,c", b'"multi\nline",x,y', b"\x1f,\x1e,\x1d",
])  # fmt: skip


@settings(max_examples=80, deadline=None)
@given(
    table=tables(st.characters(codec="utf-8", exclude_characters="\x00")),
    damage=st.lists(st.tuples(st.integers(0, 30), _DAMAGE), max_size=6),
    quote_all=st.booleans(),
)
def test_damage_does_not_depend_on_batch_size_or_path(
    table: tuple[list[str], list[list[str]]], damage: list[tuple[int, bytes]], quote_all: bool
) -> None:
    names, rows = table
    lines = to_csv(rows, ",", quote_all, "\n").encode().split(b"\n")[:-1]
    for position, bad in damage:
        lines.insert(min(position, len(lines)), bad)
    header = to_csv([names], ",", quote_all, "\n").encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "damaged.csv"
        path.write_bytes(header + b"\n".join(lines) + b"\n")
        results = []
        for batch_rows in (1, 2, 1000):
            options = ReadOptions(delimiter=",", encoding="utf-8", batch_rows=batch_rows)
            results.append(read_back(path, options)[1:])
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(csv_read, "_fast_parse", lambda *args: None)
            reference = read_back(path, ReadOptions(delimiter=",", encoding="utf-8"))[1:]
    for frame, rejects in results:
        assert frame.equals(reference[0])
        assert rejects == reference[1]
    used = frame.get_column("_source_row").to_list() + [r.source_row for r in rejects]
    assert len(set(used)) == len(used), "a row number is used once"
    assert frame.get_column("_source_row").is_sorted()
    if not damage:
        assert values(frame, names) == [tuple(v or None for v in row) for row in rows]
