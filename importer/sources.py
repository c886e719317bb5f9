"""Streaming sources: CSV, Parquet and NDJSON files in, :class:`SourceBatch` slices out.

The only module that touches polars/pyarrow file I/O. Memory stays flat whatever the file
size: text files are read through a sliding window of about ``batch_rows`` rows, Parquet one
record batch at a time.

Every batch frame holds the file's columns plus ``_source_file`` and ``_source_row`` (Int64,
1-based data-row number: row 1 is the first record after the header). Empty cells are null,
quoted or not. A file that already has ``_source_file``/``_source_row`` columns (a re-imported
rejects file) keeps its own values, so a row keeps its provenance through any number of re-runs.

CSV, the hard case::

    file ─► gunzip/unzstd ─► transcode to UTF-8 (only if not UTF-8) ─► window of bytes
         ─► span of whole lines ─► fast path: if the span matches the strict CSV grammar with
            exactly the header's field count (polars' regex engine, linear time), polars
            parses it
         ─► a span that is not provably clean is halved until the damage is isolated, and the
            damaged part goes through the reference parser (Python's csv module, strict,
            record by record), which turns each malformed record into a ``read`` reject

The reference parser defines the semantics; the fast path only accepts spans on which it
provably agrees, so rows and row numbers do not depend on the batch size. Blank lines are
skipped but consume a row number (row N stays on physical line N+1 in a plain file). A record
that cannot be split is rejected as its first physical line, and reading resumes on the next
line: an unterminated quote costs one row, not the rest of the file. The grammar check runs
in one helper thread per file while polars parses (both release the GIL).

NDJSON: one object per line, row N = line N; columns are the keys of the first MiB, scalars
read as text and nested values as JSON text; a line that is not an object, or has a key with
a value that is not a column, is a ``read`` reject. Parquet: pyarrow ``iter_batches``, types
kept (nested, time zones) except dictionary columns, which become plain strings.
"""

from __future__ import annotations

import codecs
import csv
import glob
import gzip
import io
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Literal, Protocol, TypeVar, cast

import orjson
import polars as pl
import zstandard

from importer.exceptions import InputError
from importer.records import SOURCE_FILE, SOURCE_ROW, Reject, SourceBatch

if TYPE_CHECKING:
    import pyarrow.parquet as pq

Format = Literal["csv", "parquet", "ndjson"]
_T = TypeVar("_T")

#: Candidates for delimiter sniffing, in order of preference on a tie.
DELIMITERS: tuple[str, ...] = (",", ";", "\t", "|")
_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv", ".tsv": "csv", ".jsonl": "ndjson", ".ndjson": "ndjson",
    ".parquet": "parquet", ".pq": "parquet",
}  # fmt: skip
_COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
SUPPORTED = ".csv .tsv .jsonl .ndjson .parquet (text files also as .gz or .zst)"

_SAMPLE_BYTES = 64 * 1024  # sniffing encoding and delimiter
_NDJSON_SAMPLE_BYTES = 1024 * 1024  # discovering NDJSON keys
_READ_BLOCK = 1024 * 1024
_MAX_SPAN_BYTES = 256 * 1024 * 1024
_PARSE_SPAN_BYTES = 4 * 1024 * 1024
#: A record longer than this is rejected (almost always an unterminated quote); it bounds the
#: look-ahead of the reference parser, hence memory.
MAX_RECORD_BYTES = 8 * 1024 * 1024
#: Below this size a span that failed the fast path goes to the reference parser.
_SLOW_SPAN_BYTES = 64 * 1024
_UNDECODABLE = "instasent-import-undecodable"
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How to read inputs; ``None`` means detect."""

    delimiter: str | None = None  # None = sniff among , ; \t |
    encoding: str | None = None  # None = BOM, else valid UTF-8, else best guess
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

    def describe(self) -> str:
        """How the file is read, for reports: ``crm.csv (csv, cp1252, ';'-separated)``."""
        parts: list[str] = [self.format]
        if self.compression:
            parts.append(self.compression)
        if self.encoding:
            parts.append(self.encoding)
        if self.delimiter:
            shown = "tab" if self.delimiter == "\t" else repr(self.delimiter)
            parts.append(f"{shown}-separated")
        return f"{self.path} ({', '.join(parts)})"


# ───────────────────────────── resolving inputs ─────────────────────────────


def resolve_inputs(
    patterns: Sequence[str], options: ReadOptions = ReadOptions()
) -> list[SourceFile]:
    """Expand paths, globs and directories, and inspect each file (header or schema only).

    Raises one :class:`InputError` naming every unusable input, before a row is read.
    """
    seen: set[str] = set()
    sources: list[SourceFile] = []
    errors: list[InputError] = []
    for pattern in patterns:
        try:
            paths = _expand(pattern)
        except InputError as exc:
            errors.append(exc)
            continue
        for path in paths:
            key = os.path.realpath(path)
            if key in seen:  # the same file twice in one run would import it twice
                continue
            seen.add(key)
            try:
                sources.append(inspect_file(path, options))
            except InputError as exc:
                errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        first, *others = errors
        listing = "\n".join(str(e) for e in others)
        raise InputError(first.path, f"{first.problem} — {first.remedy}\n{listing}")
    return sources


def iter_batches(source: SourceFile, options: ReadOptions = ReadOptions()) -> Iterator[SourceBatch]:
    """Stream one file as batches of about ``options.batch_rows`` rows."""
    if options.batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    if source.format == "parquet":
        return _iter_parquet(source, options)
    if source.format == "ndjson":
        return _iter_ndjson(source, options)
    return _iter_csv(source, options)


def iter_all(
    sources: Iterable[SourceFile], options: ReadOptions = ReadOptions()
) -> Iterator[SourceBatch]:
    """The batches of several files, one file after the other."""
    for source in sources:
        yield from iter_batches(source, options)


def _expand(pattern: str) -> list[str]:
    if glob.has_magic(pattern):
        found = [p for p in sorted(glob.glob(pattern, recursive=True)) if os.path.isfile(p)]
        files = [p for p in found if _wanted(p)]
        if not files:
            raise InputError(pattern, "the pattern matches no supported file",
                             f"check the pattern (supported: {SUPPORTED})")
        return files
    if os.path.isdir(pattern):
        try:
            names = sorted(os.listdir(pattern))
        except OSError as exc:
            raise InputError(pattern, f"cannot list the directory: {exc.strerror}",
                             "make it readable by this user") from None
        files = [os.path.join(pattern, n) for n in names]
        files = [p for p in files if os.path.isfile(p) and _wanted(p)]
        if not files:
            raise InputError(pattern, "the directory holds no supported file",
                             f"point at the export files (supported: {SUPPORTED})")
        return files
    if not os.path.exists(pattern):
        raise InputError(pattern, "no such file or directory", "check the path")
    return [pattern]


def _wanted(path: str) -> bool:
    """Supported, not hidden, and not one of our own rejects files (re-importing is explicit)."""
    name = os.path.basename(path)
    return _classify(path) is not None and not name.startswith(".") and ".rejects." not in name


def _classify(path: str) -> tuple[Format, str | None] | None:
    stem, ext = os.path.splitext(os.path.basename(path).lower())
    compression = _COMPRESSIONS.get(ext)
    if compression:
        ext = os.path.splitext(stem)[1]
    fmt = _EXTENSIONS.get(ext)
    if fmt is None or (fmt == "parquet" and compression):
        return None
    return fmt, compression


def inspect_file(path: str, options: ReadOptions = ReadOptions()) -> SourceFile:
    """Open one file and read just enough of it to describe it."""
    kind = _classify(path)
    if kind is None:
        ext = "".join(_suffixes(path)) or "(no extension)"
        raise InputError(path, f"unsupported file type {ext}",
                         f"export it as CSV, Parquet or NDJSON (supported: {SUPPORTED})")
    fmt, compression = kind
    _check_readable(path)
    if fmt == "parquet":
        return _inspect_parquet(path)
    if fmt == "ndjson":
        return _inspect_ndjson(path, compression, options)
    return _inspect_csv(path, compression, options)


def _suffixes(path: str) -> list[str]:
    name = os.path.basename(path)
    return ["." + part for part in name.split(".")[1:]][-2:]


def _check_readable(path: str) -> None:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except PermissionError:
        raise InputError(path, "permission denied",
                         "make the file readable by this user (chmod/chown)") from None
    except OSError as exc:
        raise InputError(path, f"cannot be read: {exc.strerror}", "check the path") from None


# ───────────────────────────── text streams ─────────────────────────────


def _mark_undecodable(err: UnicodeError) -> tuple[str, int]:
    # A lone surrogate survives transcoding (surrogatepass) as bytes that are not UTF-8, so the
    # fast path refuses the span and the reference parser rejects just the rows that hold them.
    if isinstance(err, UnicodeDecodeError):
        return "\udcff" * (err.end - err.start), err.end
    raise err


codecs.register_error(_UNDECODABLE, _mark_undecodable)


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...
    def readinto(self, buffer: memoryview, /) -> int: ...
    def close(self) -> None: ...


def _open_binary(path: str, compression: str | None) -> tuple[BinaryIO, _Readable]:
    """(raw file, decompressed stream); the raw file's position measures progress."""
    raw = open(path, "rb")  # noqa: SIM115 - closed by _TextStream.close
    if compression == "gzip":
        return raw, cast(_Readable, gzip.GzipFile(fileobj=raw, mode="rb"))
    if compression == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return raw, cast(_Readable, reader)
    return raw, cast(_Readable, raw)


def _corrupt(path: str, exc: BaseException) -> InputError:
    return InputError(path, f"the compressed data is damaged ({exc})",
                      "re-download or re-compress the file; nothing after this point was read")


def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")


class _TextStream:
    """The UTF-8 bytes of a text file, whatever its compression and encoding, block by block.

    UTF-8 passes through untouched (polars validates it); anything else goes through an
    incremental decoder, so memory stays bounded by the block size.
    """

    def __init__(self, path: str, compression: str | None, encoding: str) -> None:
        self.path = path
        try:
            self._raw, self._stream = _open_binary(path, compression)
        except OSError as exc:
            raise InputError(path, f"cannot be read: {exc.strerror}", "check the path") from None
        self._decoder = (
            None if _is_utf8(encoding) else codecs.getincrementaldecoder(encoding)(_UNDECODABLE)
        )
        self._pending = b""
        self._raw_eof = False
        self._started = encoding.startswith("utf-")  # those codecs handle their own BOM
        self.eof = False

    def __enter__(self) -> _TextStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stream.close()  # closing twice is harmless when it is the raw file itself
        self._raw.close()

    @property
    def position(self) -> int:
        """Bytes of the file on disk consumed so far."""
        return self._raw.tell()

    def readinto(self, view: memoryview) -> int:
        """Fill ``view`` with the next UTF-8 bytes; returns how many (0 only at the end)."""
        if self._decoder is None:
            count = self._guarded(lambda: self._stream.readinto(view))
        else:
            while not self._pending and not self._raw_eof:
                data = self._guarded(lambda: self._stream.read(len(view)))
                if not self._started:  # a UTF-8 BOM before text in another code page
                    self._started = True
                    data = data.removeprefix(codecs.BOM_UTF8)
                self._raw_eof = not data
                text = self._decoder.decode(data, final=self._raw_eof)
                self._pending = text.encode("utf-8", "surrogatepass")
            count = min(len(view), len(self._pending))
            view[:count] = self._pending[:count]
            self._pending = self._pending[count:]
        self.eof = count == 0
        return count

    def _guarded(self, read: Callable[[], _T]) -> _T:
        try:
            return read()
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
            raise _corrupt(self.path, exc) from None


def _read_raw_sample(path: str, compression: str | None, size: int) -> tuple[bytes, bool]:
    """The first ``size`` decompressed bytes, and whether that is the whole file."""
    raw, stream = _open_binary(path, compression)
    try:
        parts: list[bytes] = []
        have = 0
        while have < size:
            block = stream.read(size - have)
            if not block:
                return b"".join(parts), True
            parts.append(block)
            have += len(block)
        return b"".join(parts), not stream.read(1)
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
        raise _corrupt(path, exc) from None
    finally:
        stream.close()
        raw.close()


def detect_encoding(sample: bytes, complete: bool) -> str:
    """BOM, else UTF-8 if the sample is valid UTF-8, else charset-normalizer's best guess.

    On the short samples of a CSV, charset-normalizer often ranks many code pages alike
    (cp1250, even cp1006); when cp1252 fits as well as its best guess, cp1252 wins: that is
    what Spanish and Western European CRM exports are. Cyrillic, Greek, ... still win when
    they fit better. Anyone else passes ``--encoding``; the choice is reported either way.
    """
    boms = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
            (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # fmt: skip
    for bom, name in boms:
        if sample.startswith(bom):
            return name
    # A UTF-8 BOM is no proof: Excel writes one in front of cp1252 text too, and a rejects
    # file that went through a spreadsheet comes back exactly so.
    sample = sample.removeprefix(codecs.BOM_UTF8)
    if _mostly_utf8(sample if complete else sample[: len(sample) - 3]):
        return "utf-8"
    from charset_normalizer import from_bytes  # only for text that is not UTF-8 (start-up cost)

    matches = from_bytes(sample)
    best = matches.best()
    if best is None:
        return "cp1252" if _decodes(sample, "cp1252") else "latin-1"
    if _decodes(sample, "cp1252"):
        if "cp1252" in best.could_be_from_charset:  # decodes the sample identically
            return "cp1252"
        # On a short sample every code page scores alike: prefer the likeliest for a CRM.
        western = next((m for m in matches if "cp1252" in m.could_be_from_charset), None)
        if western and western.chaos <= best.chaos and western.coherence >= best.coherence:
            return "cp1252"
    return codecs.lookup(best.encoding).name


def _mostly_utf8(body: bytes) -> bool:
    """Valid UTF-8, or UTF-8 with fewer bad bytes than good non-ASCII characters.

    An export that is UTF-8 but for one row pasted from a cp1252 system must stay UTF-8
    (that row becomes a reject): guessing cp1252 would garble every other accent silently.
    A UTF-16 sample is valid UTF-8 too, but full of NULs.
    """
    if b"\x00" in body:
        return False
    text = body.decode("utf-8", "surrogateescape")
    bad = len(_SURROGATE.findall(text))
    return bad == 0 or bad <= sum(1 for ch in text if ord(ch) > 127) - bad


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _resolve_encoding(path: str, compression: str | None, given: str | None) -> str:
    if given is not None:
        try:
            return codecs.lookup(given).name
        except LookupError:
            raise InputError(path, f"unknown encoding {given!r}",
                             "use a name such as utf-8, cp1252, latin-1 or utf-16") from None
    sample, complete = _read_raw_sample(path, compression, _SAMPLE_BYTES)
    return detect_encoding(sample, complete)


def _report_encoding(encoding: str) -> str:
    return "utf-8" if encoding == "utf-8-sig" else encoding


# ───────────────────────────── sliding window ─────────────────────────────


class _RecordTooLong(Exception):
    """A record ran past :data:`MAX_RECORD_BYTES` (internal signal, never escapes)."""


class _Window:
    """A sliding window over a :class:`_TextStream`, addressed by absolute byte offsets.

    The stream reads straight into the window (no copy to join blocks); a leading BOM is
    dropped.
    """

    def __init__(self, stream: _TextStream) -> None:
        self.stream = stream
        self.data = bytearray()
        self.base = 0

    @property
    def end(self) -> int:
        return self.base + len(self.data)

    @property
    def eof(self) -> bool:
        return self.stream.eof

    def at_end(self, offset: int) -> bool:
        self.fill_to(offset + 1)
        return offset >= self.end and self.eof

    def fill_to(self, offset: int) -> None:
        """Read until the window reaches ``offset`` or the stream ends."""
        if self.end >= offset or self.eof:
            return
        kept = len(self.data)
        grown = bytearray(kept + max(_READ_BLOCK, offset - self.end))
        grown[:kept] = self.data
        filled = kept
        with memoryview(grown) as view:
            while filled < len(grown) and (count := self.stream.readinto(view[filled:])):
                filled += count
        del grown[filled:]
        if self.base == 0 and kept == 0 and grown.startswith(codecs.BOM_UTF8):
            del grown[:3]
        self.data = grown

    def drop_before(self, offset: int) -> None:
        if offset > self.base:
            del self.data[: offset - self.base]
            self.base = offset

    def slice(self, start: int, stop: int) -> bytes:
        with memoryview(self.data) as view:
            return bytes(view[max(start - self.base, 0) : max(stop - self.base, 0)])

    def count(self, sub: bytes, start: int, stop: int) -> int:
        return self.data.count(sub, start - self.base, stop - self.base)

    def rfind(self, sub: bytes, start: int, stop: int) -> int:
        found = self.data.rfind(sub, start - self.base, stop - self.base)
        return found + self.base if found >= 0 else -1

    def line_end(self, start: int, limit: int) -> int | None:
        """Offset just past the line starting at ``start`` (None at the very end).

        Raises :class:`_RecordTooLong` rather than read past ``limit``.
        """
        scan = start
        while True:
            found = self.data.find(b"\n", scan - self.base)
            if found >= 0:
                if found + self.base >= limit:
                    raise _RecordTooLong
                return found + self.base + 1
            if self.end >= limit:
                raise _RecordTooLong
            if self.eof:
                return self.end if self.end > start else None
            scan = self.end
            self.fill_to(self.end + _READ_BLOCK)

    def skip_line(self, start: int) -> tuple[int, bytes]:
        """Skip an over-long line without holding it: (offset past it, its first KiB)."""
        head = self.slice(start, start + 1024)
        while True:
            found = self.data.find(b"\n", max(start - self.base, 0))
            if found >= 0:
                return found + self.base + 1, head
            if self.eof:
                return self.end, head
            start = self.end
            self.drop_before(self.end)
            self.fill_to(self.end + _READ_BLOCK)


# ───────────────────────────── CSV: inspection ─────────────────────────────


def _inspect_csv(path: str, compression: str | None, options: ReadOptions) -> SourceFile:
    encoding = _resolve_encoding(path, compression, options.encoding)
    with _TextStream(path, compression, encoding) as stream:
        window = _Window(stream)
        window.fill_to(_SAMPLE_BYTES)
        sample = window.slice(0, _SAMPLE_BYTES)
        delimiter = _resolve_delimiter(path, options.delimiter, sample, window.eof)
        header = _read_header(window, path, delimiter, encoding)
    columns = header.columns if header else ()
    return SourceFile(path=path, format="csv", columns=columns,
                      encoding=_report_encoding(encoding), delimiter=delimiter,
                      compression=compression, total=os.path.getsize(path), total_unit="bytes")


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
        _check_header_text(path, record.text, encoding)
        columns = tuple(record.fields)
        _check_names(path, columns)
        return _Header(columns, record.end, record.line + record.lines - 1)
    return None


def _check_header_text(path: str, text: str, encoding: str) -> None:
    if "\x00" in text:
        raise InputError(path, "the header line contains NUL bytes (a UTF-16 file?)",
                         "try --encoding=utf-16")
    if _SURROGATE.search(text):
        remedy = "try --encoding=cp1252" if _is_utf8(encoding) else "check --encoding"
        raise InputError(path, f"the header line is not valid {_report_encoding(encoding)}", remedy)


def _check_names(path: str, columns: Sequence[str]) -> None:
    """Blank or duplicate column names, all named in one message."""
    problems: list[str] = []
    blank = [str(i + 1) for i, name in enumerate(columns) if not name.strip()]
    if blank:
        problems.append(f"blank column name at position {', '.join(blank)}")
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(columns):
        positions.setdefault(name, []).append(i + 1)
    for name, where in positions.items():
        if len(where) > 1 and name.strip():
            places = " and ".join(str(w) for w in where)
            problems.append(f"duplicate column name {name!r} at positions {places}")
    if problems:
        raise InputError(path, "; ".join(problems), "give every column a unique, non-blank name")


# ───────────────────────────── CSV: reference parser ─────────────────────────────


@dataclass(slots=True)
class _Record:
    fields: list[str] | None  # None: the line could not be split into fields
    start: int
    end: int
    line: int  # physical line (1-based) where the record starts
    lines: int  # physical lines it spans
    text: str  # the raw text, line ends included
    problem: str | None = None
    code: str | None = None


class _LineFeeder:
    """Hands csv.reader one physical line at a time and remembers where it got to.

    Lines before ``stop`` are split in one go (the reference parser is the slow path, it
    need not be slower than that); past ``stop`` they come from the window one by one. The
    lines of a record that failed can be given back, all but its first.
    """

    def __init__(self, window: _Window, pos: int, line: int, stop: int | None) -> None:
        self.window = window
        self.pos = pos
        self.line = line
        self.record_start = pos
        self.taken: list[bytes] = []
        region = window.slice(pos, stop) if stop is not None and stop > pos else b""
        self._ahead = [raw + b"\n" for raw in region.split(b"\n")[:-1]]  # complete lines
        self._ahead.reverse()  # the next line is popped from the end

    def __iter__(self) -> _LineFeeder:
        return self

    def __next__(self) -> str:
        limit = self.record_start + MAX_RECORD_BYTES
        if self._ahead:
            raw = self._ahead[-1]
            if self.pos + len(raw) - 1 >= limit:  # the same rule as _Window.line_end
                raise _RecordTooLong
            self._ahead.pop()
        else:
            end = self.window.line_end(self.pos, limit)
            if end is None:
                raise StopIteration
            raw = self.window.slice(self.pos, end)
        self.pos += len(raw)
        self.line += 1
        self.taken.append(raw)
        return raw.decode("utf-8", "surrogateescape")

    def begin(self) -> None:
        self.record_start = self.pos
        self.taken = []

    def text(self) -> str:
        return b"".join(self.taken).decode("utf-8", "surrogateescape")

    def give_back_all_but_first(self, first_line: int) -> None:
        """Rewind to just after the current record's first line."""
        self._ahead.extend(reversed(self.taken[1:]))
        self.pos = self.record_start + len(self.taken[0])
        self.line = first_line
        self.taken = self.taken[:1]

    def skip_first_line(self, first_line: int) -> bytes:
        """Skip the current record's first line, however long; returns its (head of) text."""
        self._ahead.clear()  # the window takes over from here
        self.pos, raw = self.window.skip_line(self.record_start)
        self.line = first_line
        return raw + "…".encode()


def _reference_records(
    window: _Window, pos: int, line: int, delimiter: str, stop: int | None, width: int | None
) -> Iterator[_Record]:
    """Records from ``pos`` (a record boundary) until one would start at or after ``stop``.

    Python's csv module in strict mode defines what a record is. A record it cannot split,
    or one spanning several lines with the wrong field count (an unterminated quote that
    swallowed the next lines), is reported as its first line alone, and reading resumes on
    the line after it.
    """
    csv.field_size_limit(max(csv.field_size_limit(), MAX_RECORD_BYTES))
    feeder = _LineFeeder(window, pos, line, stop)
    reader = csv.reader(feeder, delimiter=delimiter, strict=True)
    while stop is None or feeder.pos < stop:
        start, first = feeder.pos, feeder.line + 1
        feeder.begin()
        code = "unterminated_quote"
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problem = f"a quoted field is not closed ({exc})"
            if "end of data" not in str(exc) and feeder.line == first:
                code, problem = "malformed_csv", f"cannot be split into fields ({exc})"
        except _RecordTooLong:
            problem = f"a record longer than {MAX_RECORD_BYTES // 2**20} MiB (a quote not closed?)"
        else:
            spans = feeder.line - first + 1
            if not (width is not None and spans > 1 and fields and len(fields) != width):
                yield _Record(fields, start, feeder.pos, first, spans, feeder.text())
                continue
            problem = (f"a quoted field runs over {spans} lines and leaves {len(fields)} fields, "
                       f"the header has {width}")
        if feeder.taken:
            feeder.give_back_all_but_first(first)
            text = feeder.text()
        else:  # the first line alone is too long
            text = feeder.skip_first_line(first).decode("utf-8", "surrogateescape")
        yield _Record(None, start, feeder.pos, first, 1, text, problem, code)
        reader = csv.reader(feeder, delimiter=delimiter, strict=True)


# ───────────────────────────── CSV: reading ─────────────────────────────


@dataclass(slots=True)
class _Cursor:
    pos: int  # byte offset of the next record
    row: int  # last data-row number used
    line: int  # physical lines consumed


@dataclass(frozen=True, slots=True)
class _CsvContext:
    path: str
    columns: tuple[str, ...]
    delimiter: str
    encoding: str
    row_column: str  # private name for the row number while parsing
    grammar: str | None  # regex of a clean span (csv_grammar); None: too wide to compile
    schema: dict[str, pl.DataType]
    checker: Executor  # one thread that checks the grammar while polars parses

    @property
    def width(self) -> int:
        return len(self.columns)


def _iter_csv(source: SourceFile, options: ReadOptions) -> Iterator[SourceBatch]:
    encoding = source.encoding or "utf-8"
    delimiter = source.delimiter or ","
    with (_TextStream(source.path, source.compression, encoding) as stream,
          ThreadPoolExecutor(1, thread_name_prefix="instasent-import-csv") as checker):
        window = _Window(stream)
        header = _read_header(window, source.path, delimiter, encoding)
        if header is None:
            return
        if header.columns != source.columns:
            raise InputError(source.path, "the header changed since the file was inspected",
                             "do not modify input files during a run")
        ctx = _csv_context(source.path, header, delimiter, encoding, checker)
        cursor = _Cursor(header.end, 0, header.lines)
        # polars parses a few MiB at a time (cache-friendly, bounded memory); batches of
        # ``batch_rows`` are assembled from those spans.
        # A fast span stays well under MAX_RECORD_BYTES, so polars never accepts a record the
        # reference parser would refuse as too long.
        span = min(_span_bytes(window, header.end, options.batch_rows), _PARSE_SPAN_BYTES,
                   MAX_RECORD_BYTES // 2)
        gathered = _Gathered(options.batch_rows)
        while not window.at_end(cursor.pos):
            new_frames, new_rejects = _read_span(window, ctx, cursor, span)
            window.drop_before(cursor.pos)
            if gathered.add(new_frames, new_rejects):
                yield _csv_batch(*gathered.take(), ctx, stream.position)
        if gathered:
            yield _csv_batch(*gathered.take(), ctx, stream.position)


class _Gathered:
    """Parsed spans (frames and reject rows) gathered until a batch of ``batch_rows`` is due."""

    def __init__(self, batch_rows: int) -> None:
        self.batch_rows = batch_rows
        self.frames: list[pl.DataFrame] = []
        self.rejects: list[Reject] = []
        self.rows = 0  # rows (good or rejected) since the last batch

    def add(self, frames: list[pl.DataFrame], rejects: list[Reject]) -> bool:
        """Take a span; True when a batch is due."""
        self.frames += frames
        self.rejects += rejects
        self.rows += sum(f.height for f in frames) + len(rejects)
        return self.rows >= self.batch_rows

    def take(self) -> tuple[list[pl.DataFrame], list[Reject]]:
        out = (self.frames, self.rejects)
        self.frames, self.rejects, self.rows = [], [], 0
        return out

    def __bool__(self) -> bool:
        return self.rows > 0


def _csv_batch(
    frames: list[pl.DataFrame], rejects: list[Reject], ctx: _CsvContext, progress: int
) -> SourceBatch:
    return SourceBatch(ctx.path, _csv_frame(frames, ctx), tuple(rejects), progress)


def _csv_context(
    path: str, header: _Header, delimiter: str, encoding: str, checker: Executor
) -> _CsvContext:
    schema: dict[str, pl.DataType] = {name: pl.String() for name in header.columns}
    grammar = csv_grammar(delimiter, len(header.columns))
    return _CsvContext(path, header.columns, delimiter, encoding,
                       _unused_name("__row", header.columns),
                       grammar if _compiles(grammar) else None, schema, checker)


def _compiles(pattern: str) -> bool:
    """False for a grammar over the regex size limit (a file of thousands of columns): such a
    file has no fast path, rather than a failed compilation per span."""
    try:
        pl.Series([""]).str.contains(pattern)
    except pl.exceptions.PolarsError:
        return False
    return True


def _unused_name(name: str, taken: Sequence[str]) -> str:
    while name in taken:
        name += "_"
    return name


def _span_bytes(window: _Window, start: int, batch_rows: int) -> int:
    """Bytes for about ``batch_rows`` records, estimated from the lines after the header."""
    window.fill_to(start + _SAMPLE_BYTES)
    sample_end = min(window.end, start + _SAMPLE_BYTES)
    lines = window.count(b"\n", start, sample_end)
    per_row = (sample_end - start) / lines if lines else 100
    return int(min(max(batch_rows * per_row, 1), _MAX_SPAN_BYTES))


def _span_end(window: _Window, start: int, size: int) -> int:
    """Just past the last newline within ``size`` bytes, or the end of the file."""
    window.fill_to(start + size)
    limit = min(start + size, window.end)
    if window.eof and limit == window.end:
        return limit
    found = window.rfind(b"\n", start, limit)
    if found >= 0:
        return found + 1
    try:  # one line longer than the span
        end = window.line_end(start, start + MAX_RECORD_BYTES)
    except _RecordTooLong:
        return min(window.end, start + MAX_RECORD_BYTES)
    return window.end if end is None else end


def _read_span(
    window: _Window, ctx: _CsvContext, cursor: _Cursor, size: int
) -> tuple[list[pl.DataFrame], list[Reject]]:
    """Parse about ``size`` bytes from the cursor, fast where clean, by reference where not.

    A span that fails the fast path is halved: the clean half is parsed fast and the search
    goes on in the other, down to a few KiB for the reference parser. So one bad line in a
    2 GB file costs a few extra polars calls, not a slow pass over the file.
    """
    frames: list[pl.DataFrame] = []
    rejects: list[Reject] = []
    cut = _span_end(window, cursor.pos, size)
    end, pending, retried = cut, list[int](), False
    while cursor.pos < cut:
        final = end == window.end and window.eof
        parsed = _fast_parse(window.slice(cursor.pos, end), ctx, final)
        if parsed is not None:
            frames.append(_number_fast(parsed[0], cursor, parsed[1], ctx))
            cursor.pos = end
            end = pending.pop() if pending else cut
            continue
        if not retried:  # most often the span ends inside a quoted field: cut earlier
            retried = True
            earlier = _quote_balanced_end(window, cursor.pos, end)
            if cursor.pos < earlier < end:
                cut = end = earlier
                continue
        middle = window.rfind(b"\n", cursor.pos, (cursor.pos + end) // 2) + 1
        if end - cursor.pos > _SLOW_SPAN_BYTES and middle > cursor.pos:
            pending.append(end)
            end = middle
            continue
        frame, bad = _slow_span(window, ctx, cursor, end)
        frames.append(frame)
        rejects.extend(bad)
        pending = [p for p in pending if p > cursor.pos]
        end = pending.pop() if pending else cut
    return frames, rejects


def _quote_balanced_end(window: _Window, start: int, end: int) -> int:
    """The last line end in the span preceded by an even number of quotes."""
    quotes = window.count(b'"', start, end)
    while quotes % 2:
        newline = window.rfind(b"\n", start, end - 1)
        if newline < 0:
            return start
        quotes -= window.count(b'"', newline + 1, end)
        end = newline + 1
    return end


def _fast_parse(chunk: bytes, ctx: _CsvContext, final: bool) -> tuple[pl.DataFrame, int] | None:
    """Parse a span with polars, or None when it cannot be proved clean.

    polars is lenient (it pads short rows with nulls and reads ``"a"b""`` as ``ab``), so the
    span must first match the strict CSV grammar with exactly the header's field count
    (a finite-automaton regex, linear time). Returns the frame and the number of physical
    lines.
    """
    if not chunk.endswith(b"\n"):
        if not final:
            return None
        chunk += b"\n"
    if b"\x00" in chunk or ctx.grammar is None:
        return None
    # Both release the GIL: the check runs on a second core while polars parses.
    check = ctx.checker.submit(_check_span, chunk, ctx.grammar)
    # polars reads an unquoted empty cell as null but a quoted "" as "": null_values unifies
    # them (it costs, so only when "" occurs). One column: a blank line reads as null and a
    # quoted "" as "", which must stay apart until blank lines are dropped.
    nulls = [""] if ctx.width > 1 and b'""' in chunk else None
    try:
        frame: pl.DataFrame | None = pl.read_csv(
            chunk, has_header=False, separator=ctx.delimiter, schema=ctx.schema, quote_char='"',
            null_values=nulls, truncate_ragged_lines=False)
    except pl.exceptions.PolarsError:  # e.g. invalid UTF-8
        frame = None
    strict, lines = check.result()
    return (frame, lines) if frame is not None and strict else None


def _check_span(chunk: bytes, grammar: str) -> tuple[bool, int]:
    """(the span is strict CSV with the right field count, its physical lines).

    polars' regex engine (Rust ``regex``: finite automata, linear time, no backtracking) on
    the span as one string. It used to be RE2 through pyarrow.compute, which made every CSV
    run import pyarrow and numpy: ~0.15 CPU-s of start-up, for a check ~10% faster than this
    one. Text that is not UTF-8 cannot be proved clean (polars could not parse it either).
    """
    lines = chunk.count(b"\n")
    try:
        text = pl.Series([chunk], dtype=pl.Binary).cast(pl.String)
    except pl.exceptions.PolarsError:  # not UTF-8
        return False, lines
    return bool(text.str.contains(grammar).item()), lines


def csv_grammar(delimiter: str, width: int) -> str:
    """A regex matching whole lines of strict CSV with exactly ``width`` fields.

    Quoted fields may hold anything with quotes doubled; unquoted ones no quote, delimiter or
    line break; a record ends with LF or CRLF.
    """
    d = delimiter if delimiter.isalnum() else "\\t" if delimiter == "\t" else "\\" + delimiter
    field = f'(?:"(?:[^"]|"")*"|[^"{d}\\r\\n]*)'
    record = field + (f"(?:{d}{field}){{{width - 1}}}" if width > 1 else "") + "\\r?\\n"
    return f"^(?:{record})*$"


def _number_fast(
    frame: pl.DataFrame, cursor: _Cursor, lines: int, ctx: _CsvContext
) -> pl.DataFrame:
    first = cursor.row + 1
    cursor.row += frame.height
    cursor.line += lines
    numbered = frame.with_columns(
        pl.int_range(first, first + frame.height, dtype=pl.Int64).alias(ctx.row_column)
    )
    if ctx.width == 1:  # a one-column blank line parses as one null: it is a blank line
        numbered = _empty_to_null(numbered.filter(numbered.to_series(0).is_not_null()))
    return numbered


def _slow_span(
    window: _Window, ctx: _CsvContext, cursor: _Cursor, stop: int
) -> tuple[pl.DataFrame, list[Reject]]:
    """The reference parser over [cursor, stop), continuing to the end of the last record."""
    rows: list[list[str]] = []
    numbers: list[int] = []
    rejects: list[Reject] = []
    # Most damaged spans hold no NUL and no undecodable byte: then no record needs the check.
    region = window.slice(cursor.pos, stop)
    suspect = b"\x00" in region or not _decodes(region, "utf-8")
    records = _reference_records(window, cursor.pos, cursor.line, ctx.delimiter, stop, ctx.width)
    for record in records:
        cursor.row += 1  # every record consumes its number, good, bad or blank
        cursor.pos = record.end
        cursor.line = record.line + record.lines - 1
        if record.fields == []:
            continue
        # (a record running past ``stop`` was not part of the region checked above)
        if record.fields is None or len(record.fields) != ctx.width or suspect or (
            record.end > stop
        ):
            reject = _record_reject(record, cursor.row, ctx)
            if reject is not None:
                rejects.append(reject)
                continue
        rows.append(record.fields)  # type: ignore[arg-type]  # not None: rejected above
        numbers.append(cursor.row)
    columns = zip(*rows, strict=True) if rows else ([] for _ in ctx.columns)
    series = [pl.Series(n, v, dtype=pl.String) for n, v in zip(ctx.columns, columns, strict=True)]
    frame = pl.DataFrame([*series, pl.Series(ctx.row_column, numbers, dtype=pl.Int64)])
    return _empty_to_null(frame), rejects


def _record_reject(record: _Record, row: int, ctx: _CsvContext) -> Reject | None:
    code, problem = record.code, record.problem
    if record.fields is not None:
        code, problem = _field_problem(record.fields, record.text, ctx)
    if code is None or problem is None:
        return None
    raw = _clean_text(record.text.rstrip("\r\n"))
    where = f"{ctx.path} line {record.line} (data row {row})"
    remedy = _REMEDIES[code]
    if code == "bad_encoding" and not _is_utf8(ctx.encoding):
        remedy = f"the file is read as {ctx.encoding}: check --encoding, or re-export the file"
    return Reject(source_file=ctx.path, source_row=row, stage="read", code=code,
                  message=f"{where}: {problem} — {remedy}", raw_line=raw)


def _field_problem(
    fields: list[str], text: str, ctx: _CsvContext
) -> tuple[str | None, str | None]:
    if len(fields) != ctx.width:
        found = "1 field" if len(fields) == 1 else f"{len(fields)} fields"
        return "wrong_field_count", f"{found}, the header has {ctx.width}"
    if "\x00" not in text and not _SURROGATE.search(text):
        return None, None
    for name, value in zip(ctx.columns, fields, strict=True):
        if "\x00" in value:
            return "nul_byte", f"a NUL byte in column {name!r}, value {_clean_text(value)!r}"
        if _SURROGATE.search(value):
            return "bad_encoding", _encoding_problem(name, value, ctx.encoding)
    return None, None


def _encoding_problem(name: str, value: str, encoding: str) -> str:
    shown = _clean_text(value)
    found = _SURROGATE.search(value)
    if _is_utf8(encoding) and found:
        # surrogateescape keeps an undecodable byte b as the code point U+DC00 + b
        byte = ord(found.group()) - 0xDC00
        return f"a byte that is not UTF-8 (0x{byte:02X}) in column {name!r}, value {shown!r}"
    valid = _report_encoding(encoding)
    return f"bytes that are not valid {valid} in column {name!r}, value {shown!r}"


def _clean_text(text: str) -> str:
    """Text safe to write anywhere: each undecodable byte becomes U+FFFD."""
    # A byte the source codec could not decode arrives as the 3 bytes of U+DCFF.
    return _SURROGATE.sub("\ufffd", text.replace(_TRANSCODED_BAD_BYTE, "\ufffd"))


_TRANSCODED_BAD_BYTE = "\udcff".encode("utf-8", "surrogatepass").decode("utf-8", "surrogateescape")


_REMEDIES = {
    "wrong_field_count": "look for a missing or extra delimiter, or an unquoted one inside a "
                         "value; fix the line in the rejects file and re-run it",
    "unterminated_quote": "this line alone was set aside and reading resumed on the next "
                          "line; close the quote and re-run the rejects file",
    "malformed_csv": "fix the quoting of this line and re-run the rejects file",
    "nul_byte": "remove the NUL byte and re-run the rejects file",
    "bad_encoding": "the file mixes encodings: re-export it in one encoding, or try "
                    "--encoding=cp1252",
    "bad_json": "fix the JSON on this line and re-run the rejects file",
    "not_an_object": "each line must be one JSON object {...}",
    "unexpected_key": "every key must appear in the first lines of the file (they define the "
                      "columns); move such a line up, or convert the file to CSV/Parquet",
}  # fmt: skip


def _csv_frame(frames: list[pl.DataFrame], ctx: _CsvContext) -> pl.DataFrame:
    schema = {**{name: pl.String() for name in ctx.columns}, ctx.row_column: pl.Int64()}
    parts = [f for f in frames if f.height] or [pl.DataFrame(schema=schema)]
    frame = pl.concat(parts, how="vertical") if len(parts) > 1 else parts[0]
    numbers = frame.get_column(ctx.row_column)
    return _with_provenance(frame.drop(ctx.row_column), ctx.path, numbers)


def _with_provenance(frame: pl.DataFrame, path: str, numbers: pl.Series) -> pl.DataFrame:
    """Append ``_source_file`` and ``_source_row``, keeping values the file already has.

    Columns are taken by position: pl.col("*") or pl.col("^a$") would not mean a column
    named so, and a CRM header may well hold such names.
    """
    data = [pl.nth(i) for i, c in enumerate(frame.columns) if c not in (SOURCE_FILE, SOURCE_ROW)]
    generated = pl.lit(numbers.cast(pl.Int64))
    row = generated
    if SOURCE_ROW in frame.columns:  # a re-imported rejects file points at the original export
        row = pl.coalesce(pl.col(SOURCE_ROW).cast(pl.Int64, strict=False), generated)
    name = pl.lit(path, dtype=pl.String)
    if SOURCE_FILE in frame.columns:
        name = pl.coalesce(pl.col(SOURCE_FILE).cast(pl.String), name)
    return frame.select(*data, name.alias(SOURCE_FILE), row.alias(SOURCE_ROW))


# ───────────────────────────── NDJSON ─────────────────────────────


def _inspect_ndjson(path: str, compression: str | None, options: ReadOptions) -> SourceFile:
    encoding = _resolve_encoding(path, compression, options.encoding)
    with _TextStream(path, compression, encoding) as stream:
        window = _Window(stream)
        window.fill_to(_NDJSON_SAMPLE_BYTES)
        sample = window.slice(0, _NDJSON_SAMPLE_BYTES)
        if not window.eof:
            sample = sample[: sample.rfind(b"\n") + 1]
    keys: dict[str, None] = {}
    for line in sample.split(b"\n"):
        try:
            value = orjson.loads(line) if line.strip() else None
        except orjson.JSONDecodeError:
            continue  # a bad line is a reject later, not a reason to refuse the file
        if isinstance(value, dict):
            keys.update(dict.fromkeys(value))
    return SourceFile(path=path, format="ndjson", columns=tuple(keys),
                      encoding=_report_encoding(encoding), delimiter=None,
                      compression=compression, total=os.path.getsize(path), total_unit="bytes")


def _iter_ndjson(source: SourceFile, options: ReadOptions) -> Iterator[SourceBatch]:
    schema: dict[str, pl.DataType] = {name: pl.String() for name in source.columns}
    with _TextStream(source.path, source.compression, source.encoding or "utf-8") as stream:
        window = _Window(stream)
        span = min(_span_bytes(window, 0, options.batch_rows), _PARSE_SPAN_BYTES,
                   MAX_RECORD_BYTES // 2)
        pos, line = 0, 0
        gathered = _Gathered(options.batch_rows)
        while not window.at_end(pos):
            end = _span_end(window, pos, span)
            if window.slice(end - 1, end) != b"\n" and not (end == window.end and window.eof):
                end, head = window.skip_line(pos)  # a line longer than MAX_RECORD_BYTES
                line += 1
                text = head + "…".encode()
                problem = f"a line longer than {MAX_RECORD_BYTES // 2**20} MiB"
                new_frames, new_rejects = [], [_ndjson_reject(text, line, source, "bad_json",
                                                              problem)]
            else:
                frame, new_rejects, lines = _ndjson_chunk(window.slice(pos, end), line, source,
                                                          schema)
                new_frames, line = [frame], line + lines
            pos = end
            window.drop_before(pos)
            if gathered.add(new_frames, new_rejects):
                yield _ndjson_batch(*gathered.take(), source, stream.position)
        if gathered:
            yield _ndjson_batch(*gathered.take(), source, stream.position)


def _ndjson_batch(
    frames: list[pl.DataFrame], rejects: list[Reject], source: SourceFile, progress: int
) -> SourceBatch:
    if not frames:
        schema: dict[str, pl.DataType] = {name: pl.String() for name in source.columns}
        empty = pl.Series([], dtype=pl.Int64)
        frames = [_with_provenance(pl.DataFrame(schema=schema), source.path, empty)]
    return SourceBatch(source.path, pl.concat(frames), tuple(rejects), progress)


def _ndjson_chunk(
    chunk: bytes, line: int, source: SourceFile, schema: dict[str, pl.DataType]
) -> tuple[pl.DataFrame, list[Reject], int]:
    """One span of lines: polars when every line is a clean object with known keys."""
    lines = chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
    frame = _ndjson_fast(chunk, lines, source.columns, schema)
    if frame is not None:
        numbers = pl.int_range(line + 1, line + 1 + lines, dtype=pl.Int64, eager=True)
        return _with_provenance(_empty_to_null(frame), source.path, numbers), [], lines
    good: list[bytes] = []
    numbers_kept: list[int] = []
    rejects: list[Reject] = []
    for offset, text in enumerate(chunk.split(b"\n")[:lines]):
        number = line + offset + 1
        reject = _ndjson_line_problem(text, number, source)
        if reject is not None:
            rejects.append(reject)
        elif text.strip():
            good.append(text)
            numbers_kept.append(number)
    frame, more = _ndjson_frame(good, numbers_kept, source, schema)
    rejects = sorted([*rejects, *more], key=lambda r: r.source_row)
    return frame, rejects, lines


def _ndjson_fast(
    chunk: bytes, lines: int, columns: tuple[str, ...], schema: dict[str, pl.DataType]
) -> pl.DataFrame | None:
    try:
        frame = pl.read_ndjson(chunk, schema=schema)
        # Inference sees every key in the span: a key not among the columns (with a value)
        # would otherwise be dropped silently.
        found = pl.scan_ndjson(chunk, infer_schema_length=None).collect_schema()
    except pl.exceptions.PolarsError:
        return None
    extra = [k for k, dtype in found.items() if k not in columns and dtype != pl.Null]
    if frame.height != lines or extra:
        return None  # blank lines or unknown keys: the line-by-line path numbers them right
    return frame


def _ndjson_line_problem(text: bytes, number: int, source: SourceFile) -> Reject | None:
    if not text.strip():
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return _ndjson_reject(text, number, source, "bad_json", f"not valid JSON ({exc})")
    if not isinstance(value, dict):
        kind = type(value).__name__
        problem = f"a JSON {kind}, not an object"
        return _ndjson_reject(text, number, source, "not_an_object", problem)
    extra = [k for k, v in value.items() if k not in source.columns and v is not None]
    if extra:
        names = ", ".join(repr(k) for k in extra)
        return _ndjson_reject(text, number, source, "unexpected_key",
                              f"key {names} is not among the file's columns")
    return None


def _ndjson_frame(
    good: list[bytes], numbers: list[int], source: SourceFile, schema: dict[str, pl.DataType]
) -> tuple[pl.DataFrame, list[Reject]]:
    """Parse the lines that passed together, so values read exactly as on the fast path."""
    try:
        frame = pl.read_ndjson(b"\n".join(good), schema=schema) if good else None
        if frame is None or frame.height == len(good):
            kept = numbers
            rejects: list[Reject] = []
        else:
            raise pl.exceptions.ComputeError("row count differs")
    except pl.exceptions.PolarsError:  # find the lines polars refuses (huge numbers, ...)
        parts: list[pl.DataFrame] = []
        kept, rejects = [], []
        for text, number in zip(good, numbers, strict=True):
            try:
                parts.append(pl.read_ndjson(text, schema=schema))
                kept.append(number)
            except pl.exceptions.PolarsError as exc:
                problem = f"a value polars cannot read ({str(exc).splitlines()[0]})"
                rejects.append(_ndjson_reject(text, number, source, "bad_json", problem))
        frame = pl.concat(parts) if parts else None
    if frame is None:
        frame = pl.DataFrame(schema=schema)
    frame = _empty_to_null(frame)
    return _with_provenance(frame, source.path, pl.Series(kept, dtype=pl.Int64)), rejects


def _ndjson_reject(text: bytes, number: int, source: SourceFile, code: str, problem: str) -> Reject:
    raw = _clean_text(text.decode("utf-8", "surrogateescape").rstrip("\r\n"))
    return Reject(source_file=source.path, source_row=number, stage="read", code=code,
                  message=f"{source.path} line {number}: {problem} — {_REMEDIES[code]}",
                  raw_line=raw)


# ───────────────────────────── Parquet ─────────────────────────────


def _open_parquet(path: str) -> pq.ParquetFile:
    import pyarrow.parquet as pq  # only Parquet inputs need pyarrow (start-up cost)

    try:
        return pq.ParquetFile(path)
    except PermissionError:
        raise InputError(path, "permission denied", "make the file readable by this user") from None
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError with a low-level message
        raise InputError(path, f"is not a readable Parquet file ({exc})",
                         "check that it really is Parquet, or re-export it") from None


def _inspect_parquet(path: str) -> SourceFile:
    handle = _open_parquet(path)
    columns = tuple(handle.schema_arrow.names)
    _check_names(path, columns)
    return SourceFile(path=path, format="parquet", columns=columns, encoding=None, delimiter=None,
                      compression=None, total=handle.metadata.num_rows, total_unit="rows")


def _iter_parquet(source: SourceFile, options: ReadOptions) -> Iterator[SourceBatch]:
    import pyarrow as pa

    handle = _open_parquet(source.path)
    done = 0
    try:
        for batch in handle.iter_batches(batch_size=options.batch_rows):
            frame = pl.DataFrame(pl.from_arrow(batch))
            frame = _empty_to_null(_plain_strings(frame))
            numbers = pl.int_range(done + 1, done + 1 + frame.height, dtype=pl.Int64, eager=True)
            done += frame.height
            yield SourceBatch(source.path, _with_provenance(frame, source.path, numbers), (), done)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(source.path, f"is damaged after row {done} ({exc})",
                         "re-export the file") from None
    finally:
        handle.close()


def _plain_strings(frame: pl.DataFrame) -> pl.DataFrame:
    """Dictionary-encoded columns become plain strings, as the mapping expects text."""
    categorical = [i for i, t in enumerate(frame.dtypes) if isinstance(t, pl.Categorical | pl.Enum)]
    return frame.with_columns(pl.nth(i).cast(pl.String) for i in categorical)


def _empty_to_null(frame: pl.DataFrame) -> pl.DataFrame:
    """Empty strings become null, as empty CSV cells do."""
    strings = [i for i, t in enumerate(frame.dtypes) if t == pl.String]
    return frame.with_columns(pl.when(pl.nth(i) != "").then(pl.nth(i)) for i in strings)
