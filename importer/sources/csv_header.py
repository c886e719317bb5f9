"""CSV inspection: the delimiter (given or sniffed) and the header record."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

from importer.exceptions import InputError
from importer.remote import RemoteFile
from importer.sources import limits
from importer.sources.csv_reference import _reference_records
from importer.sources.encoding import _report_encoding, _resolve_encoding
from importer.sources.model import ReadOptions, SourceFile, _name_columns, _size
from importer.sources.textstream import _SURROGATE, _is_utf8, _TextStream, _Window

#: Candidates for delimiter sniffing, in order of preference on a tie.
DELIMITERS: tuple[str, ...] = (",", ";", "\t", "|")


class NotDelimitedText(InputError):
    """A ``.txt`` file whose content does not sniff as delimited text."""


def _inspect_csv(
    path: str, compression: str | None, options: ReadOptions, *, must_sniff: bool = False,
    origin: RemoteFile | None = None,
) -> SourceFile:
    """``must_sniff``: a ``.txt`` file is CSV only if some delimiter splits its lines evenly."""
    choice = _resolve_encoding(path, compression, options.encoding, origin)
    encoding = choice.encoding
    notes: list[str] = []
    with _TextStream(path, compression, encoding, origin) as stream:
        window = _Window(stream)
        window.fill_to(limits.SAMPLE_BYTES)
        sample = window.slice(0, limits.SAMPLE_BYTES)
        sep = _sep_line(sample)
        if sep is not None:  # Excel's "sep=;" line: the delimiter, and not a row
            sample = sample[sample.find(b"\n") + 1:]
            notes.append(f"line 1 {('sep=' + sep)!r} names the delimiter (not a row)")
        if must_sniff and not _sniffs_delimited(sample, window.eof):
            raise NotDelimitedText(path, "a .txt file that does not read as delimited text "
                                         "(no , ; tab or | splits its lines evenly)",
                                   "export it as CSV, or pass the file with a .csv name")
        delimiter = _resolve_delimiter(path, options.delimiter or sep, sample, window.eof)
        header = _read_header(window, path, delimiter, encoding)
    columns = header.columns if header else ()
    return SourceFile(path=path, format="csv", columns=columns,
                      encoding=_report_encoding(encoding), encoding_reason=choice.reason,
                      delimiter=delimiter,
                      compression=compression, total=_size(path, origin), total_unit="bytes",
                      notes=(*notes, *(header.notes if header else ())),
                      renamed=header.renamed if header else (), origin=origin)


_SEP_LINE = re.compile(rb"sep=([^\r\n\"])\r?\n")


def _sep_line(sample: bytes) -> str | None:
    """The delimiter named by an Excel ``sep=X`` first line, if there is one."""
    found = _SEP_LINE.match(sample.removeprefix(b"\xef\xbb\xbf"))
    return found.group(1).decode("utf-8", "replace") if found else None


def _sniffs_delimited(sample: bytes, complete: bool) -> bool:
    text = sample.decode("utf-8", "replace")
    if not complete:
        text = text[: text.rfind("\n") + 1] or text
    return any(_delimiter_score(text, d)[0] >= 0.9 for d in DELIMITERS)


def _resolve_delimiter(path: str, given: str | None, sample: bytes, complete: bool) -> str:
    if given is None:
        return sniff_delimiter(sample.decode("utf-8", "replace"), complete)
    delimiter = "\t" if given in ("\\t", "tab", "TAB") else given
    if len(delimiter.encode("utf-8")) != 1 or delimiter in '"\r\n':
        raise InputError(path, f"the delimiter {given!r} is not a single character",
                         "use one of , ; | or \\t")
    return delimiter


def sniff_delimiter(text: str, complete: bool = True) -> str:
    """The candidate that splits the header widest and the sample rows most consistently."""
    if not complete:
        text = text[: text.rfind("\n") + 1] or text
    best: tuple[float, int] = (0.0, 1)
    chosen = ","
    for candidate in DELIMITERS:
        score = _delimiter_score(text, candidate)
        if score > best:
            best, chosen = score, candidate
    return chosen


def _delimiter_score(text: str, delimiter: str) -> tuple[float, int]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records: list[list[str]] = []
    try:
        for record in reader:
            if record:
                records.append(record)
            if len(records) > 50:
                break
    except csv.Error:
        return (0.0, 1)
    if not records or len(records[0]) < 2:
        return (0.0, 1)
    width = len(records[0])
    rows = records[1:]
    consistent = sum(len(r) == width for r in rows) / len(rows) if rows else 1.0
    return (round(consistent, 2), width)


@dataclass(frozen=True, slots=True)
class _Header:
    columns: tuple[str, ...]
    end: int  # byte offset where data starts
    lines: int  # physical lines up to there
    notes: tuple[str, ...] = ()  # names generated or trimmed
    renamed: tuple[tuple[str, str], ...] = ()  # (name in the file, trimmed name)


def _read_header(window: _Window, path: str, delimiter: str, encoding: str) -> _Header | None:
    """The first non-blank record; None for an empty file. Raises InputError if unusable."""
    records = _reference_records(window, 0, 0, delimiter, stop=None, width=None)
    for record in records:
        if record.fields == []:
            continue  # blank lines before the header
        if record.fields is None:
            if "\r" in record.text.rstrip("\r\n"):
                raise InputError(path, "the lines end with a bare CR (classic Mac line ends)",
                                 "re-save the file with LF or CRLF line ends")
            _check_header_text(path, record.text, encoding)
            raise InputError(path, f"the header line cannot be read ({record.problem})",
                             "fix the first line of the file")
        raw = record.text.encode("utf-8", "surrogateescape")
        if record.line == 1 and _SEP_LINE.fullmatch(raw):
            continue  # Excel's "sep=;" line: it consumes line 1, not a row number
        _check_header_text(path, record.text, encoding)
        columns, notes, renamed = _name_columns(path, tuple(record.fields))
        return _Header(columns, record.end, record.line + record.lines - 1, notes, renamed)
    return None


def _check_header_text(path: str, text: str, encoding: str) -> None:
    if "\x00" in text:
        raise InputError(path, "the header line contains NUL bytes (a UTF-16 file?)",
                         "try --encoding=utf-16")
    if _SURROGATE.search(text):
        remedy = "try --encoding=cp1252" if _is_utf8(encoding) else "check --encoding"
        raise InputError(path, f"the header line is not valid {_report_encoding(encoding)}", remedy)
