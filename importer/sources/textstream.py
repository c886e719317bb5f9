"""Text files as UTF-8 bytes: decompression, transcoding, and a sliding window over them.

Every text format (CSV, NDJSON) reads through :class:`_TextStream` (gunzip/unzstd, then
transcode to UTF-8 unless the file already is) and addresses it through :class:`_Window`, a
buffer of absolute byte offsets that only ever holds the part being parsed.
"""

from __future__ import annotations

import codecs
import gzip
import re
import zlib
from collections.abc import Callable
from typing import BinaryIO, Protocol, TypeVar, cast

import zstandard

from importer.exceptions import InputError
from importer.remote import ReadFailed, RemoteFile
from importer.sources import limits

_T = TypeVar("_T")


_UNDECODABLE = "instasent-import-undecodable"


_SURROGATE = re.compile("[\ud800-\udfff]")


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


def _open_binary(
    path: str, compression: str | None, origin: RemoteFile | None = None
) -> tuple[BinaryIO, _Readable]:
    """(raw file, decompressed stream); the raw file's position measures progress.

    An object in storage is streamed by ranges (:meth:`RemoteFile.open`), never copied."""
    raw = origin.open() if origin else open(path, "rb")  # noqa: SIM115 - closed by the caller
    if compression == "gzip":
        return raw, cast(_Readable, gzip.GzipFile(fileobj=raw, mode="rb"))
    if compression == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return raw, cast(_Readable, reader)
    return raw, cast(_Readable, raw)


def _corrupt(path: str, exc: BaseException) -> InputError:
    if isinstance(exc, ReadFailed):  # the storage service failed, not the data
        return InputError(path, f"cannot be read: {exc.what}", exc.remedy)
    return InputError(path, f"the compressed data is damaged ({exc})",
                      "re-download or re-compress the file; nothing after this point was read")


def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")


class _TextStream:
    """The UTF-8 bytes of a text file, whatever its compression and encoding, block by block.

    UTF-8 passes through untouched (polars validates it); anything else goes through an
    incremental decoder, so memory stays bounded by the block size.
    """

    def __init__(self, path: str, compression: str | None, encoding: str,
                 origin: RemoteFile | None = None) -> None:
        self.path = path
        try:
            self._raw, self._stream = _open_binary(path, compression, origin)
        except OSError as exc:  # (an object's failure to open is an InputError already)
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


def _read_raw_sample(
    path: str, compression: str | None, size: int, origin: RemoteFile | None = None
) -> tuple[bytes, bool]:
    """The first ``size`` decompressed bytes, and whether that is the whole file."""
    raw, stream = _open_binary(path, compression, origin)
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


def _clean_text(text: str) -> str:
    """Text safe to write anywhere: each undecodable byte becomes U+FFFD."""
    # A byte the source codec could not decode arrives as the 3 bytes of U+DCFF.
    return _SURROGATE.sub("\ufffd", text.replace(_TRANSCODED_BAD_BYTE, "\ufffd"))


_TRANSCODED_BAD_BYTE = "\udcff".encode("utf-8", "surrogatepass").decode("utf-8", "surrogateescape")


class _RecordTooLong(Exception):
    """A record ran past :data:`limits.MAX_RECORD_BYTES` (internal signal, never escapes)."""


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
        grown = bytearray(kept + max(limits.READ_BLOCK, offset - self.end))
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
            self.fill_to(self.end + limits.READ_BLOCK)

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
            self.fill_to(self.end + limits.READ_BLOCK)


def _span_bytes(window: _Window, start: int, batch_rows: int) -> int:
    """Bytes for about ``batch_rows`` records, estimated from the lines after the header."""
    window.fill_to(start + limits.SAMPLE_BYTES)
    sample_end = min(window.end, start + limits.SAMPLE_BYTES)
    lines = window.count(b"\n", start, sample_end)
    per_row = (sample_end - start) / lines if lines else 100
    return int(min(max(batch_rows * per_row, 1), limits.MAX_SPAN_BYTES))


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
        end = window.line_end(start, start + limits.MAX_RECORD_BYTES)
    except _RecordTooLong:
        return min(window.end, start + limits.MAX_RECORD_BYTES)
    return window.end if end is None else end
