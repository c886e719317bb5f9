"""What the sources hand out: how to read (:class:`ReadOptions`) and what a file is
(:class:`SourceFile`), plus the rule every format's columns obey."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from importer.exceptions import InputError
from importer.remote import RemoteFile

Format = Literal["csv", "parquet", "ndjson"]


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How to read inputs; ``None`` means detect."""

    delimiter: str | None = None  # None = sniff among , ; \t |
    encoding: str | None = None  # None = detect (sources.encoding); refused when unsure
    batch_rows: int = 100_000  # rows per yielded SourceBatch (approximate)


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One input file, inspected: what it is and how it will be read."""

    path: str  # the value put in _source_file: as given, or as the glob expanded it
    format: Format
    columns: tuple[str, ...]  # the file's own columns in file order
    encoding: str | None  # detected or given (csv/ndjson)
    delimiter: str | None  # csv only
    compression: str | None  # None, "gzip", "zstd"
    total: int  # for progress: bytes (csv, ndjson) or rows (parquet)
    total_unit: Literal["bytes", "rows"]
    encoding_reason: str | None = None  # why this encoding: "given with --encoding", ...
    #: What reading the file changed or assumed, for validate and the report: a ``sep=``
    #: line, generated names for blank header cells, names with stray spaces.
    notes: tuple[str, ...] = ()
    #: (name as in the file, name trimmed of spaces and no-break spaces) for each column whose
    #: header cell has stray spaces. The frames and rejects keep the file's own name; the
    #: mapping matches the trimmed one.
    renamed: tuple[tuple[str, str], ...] = ()
    #: For an object in storage or on the web (``path`` is then its URL without any query
    #: string): how to open it, and the version inspected, which the run reads or stops.
    origin: RemoteFile | None = None

    def describe(self) -> str:
        """How the file is read, for reports:
        ``crm.csv (csv, cp1252 [not UTF-8; …], ';'-separated)``, then any notes."""
        parts: list[str] = [self.format]
        if self.compression:
            parts.append(self.compression)
        if self.encoding:
            why = f" [{self.encoding_reason}]" if self.encoding_reason else ""
            parts.append(f"{self.encoding}{why}")
        if self.delimiter:
            shown = "tab" if self.delimiter == "\t" else repr(self.delimiter)
            parts.append(f"{shown}-separated")
        notes = "".join(f"; {note}" for note in self.notes)
        return f"{self.path} ({', '.join(parts)}){notes}"


def _size(path: str, origin: RemoteFile | None) -> int:
    """Bytes, for progress (0 when a web server does not say)."""
    if origin is not None:
        return origin.size or 0
    return os.path.getsize(path)


def _check_names(path: str, columns: Sequence[str]) -> None:
    """Blank or duplicate column names, all named in one message."""
    problems: list[str] = []
    blank = [str(i + 1) for i, name in enumerate(columns) if _blank(name)]
    if blank:
        problems.append(f"blank column name at position {', '.join(blank)}")
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(columns):
        positions.setdefault(name, []).append(i + 1)
    for name, where in positions.items():
        if len(where) > 1 and not _blank(name):
            places = " and ".join(str(w) for w in where)
            problems.append(f"duplicate column name {name!r} at positions {places}")
    if problems:
        raise InputError(path, "; ".join(problems), "give every column a unique, non-blank name")


def _blank(name: str) -> bool:
    return not name.strip() or not name.strip(_STRAY)


#: What surrounds a header name by accident: spaces, tabs, no-break and zero-width spaces, BOMs.
_STRAY = " \t\r\n\u00a0\u2007\u202f\u200b\ufeff"


def _name_columns(
    path: str, columns: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(names, notes, renamed) for a header as read.

    A blank name (pandas writes its index column so) becomes ``column_<position>``, with a
    note; duplicate names stay an error. A name with stray spaces keeps its own spelling in
    the frames (a rejects file keeps the file's columns) and is listed in ``renamed`` with
    its trimmed spelling, which is what the mapping matches.
    """
    names = list(columns)
    notes: list[str] = []
    taken = set(columns)
    for i, name in enumerate(columns):
        if _blank(name):
            generated = f"column_{i + 1}"
            while generated in taken:
                generated += "_"
            taken.add(generated)
            names[i] = generated
            notes.append(f"header cell {i + 1} is blank: read as column {generated!r}")
    _check_names(path, names)
    renamed: list[tuple[str, str]] = []
    for name in names:
        trimmed = name.strip(_STRAY)
        if trimmed == name:
            continue
        if trimmed in taken or any(trimmed == t for _, t in renamed):
            notes.append(f"header {name!r} has stray spaces, kept as is: {trimmed!r} is "
                         "another column")
            continue
        renamed.append((name, trimmed))
        notes.append(f"header {name!r} has stray spaces: matched as {trimmed!r}")
    return tuple(names), tuple(notes), tuple(renamed)
