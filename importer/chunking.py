"""Pack serialised items into request bodies: ≤ ``max_items`` and ≤ ``max_bytes`` each.

Pure: no I/O. Every request costs one unit of the rate limit whatever its size, so batches are
full except the last one of a target (items carry over between source batches and files).
A single item larger than ``max_bytes`` travels alone; the API is the judge of it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import polars as pl

from importer.config import DEFAULT_MAX_BATCH_BYTES, MAX_BATCH_ITEMS

Target = Literal["contacts", "events"]


@dataclass(frozen=True, slots=True)
class Chunk:
    """One request's worth of items, with what is needed to trace each back to its row.

    ``frames`` are the source frames the items came from: kept so that a row the API rejects
    can be written to the rejects file with its original columns, without a second read.
    """

    target: Target
    files: tuple[str, ...]
    rows: tuple[int, ...]
    keys: tuple[str, ...]
    bodies: tuple[bytes, ...]
    frames: tuple[pl.DataFrame, ...] = ()
    # The JSON array, joined once where the chunk is made (the reading thread), not in the
    # event loop; None: joined when asked.
    joined: bytes | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def body(self) -> bytes:
        """The JSON array exactly as posted."""
        if self.joined is not None:
            return self.joined
        return json_array(self.bodies)

    def split(self) -> tuple[Chunk, Chunk]:
        """Two halves, to isolate the item that made the API refuse the whole batch."""
        mid = len(self) // 2
        return self._slice(0, mid), self._slice(mid, len(self))

    def _slice(self, start: int, stop: int) -> Chunk:
        return Chunk(
            self.target,
            self.files[start:stop],
            self.rows[start:stop],
            self.keys[start:stop],
            self.bodies[start:stop],
            self.frames,
        )


def json_array(bodies: Sequence[bytes]) -> bytes:
    """``[a,b,…]`` in one copy of the items (the brackets go on the first and last item,
    not around a joined copy: a 40 KB request body is copied once, not twice)."""
    if len(bodies) < 2:
        return b"[" + b"".join(bodies) + b"]"
    return b",".join([b"[" + bodies[0], *bodies[1:-1], bodies[-1] + b"]"])


def body_size(bodies: Sequence[bytes]) -> int:
    """Bytes of ``[a,b,…]`` for these items."""
    return 2 + sum(map(len, bodies)) + max(len(bodies) - 1, 0)


class Chunker:
    """Accumulates items across source batches and emits full chunks as they fill."""

    def __init__(
        self,
        target: Target,
        *,
        max_items: int = MAX_BATCH_ITEMS,
        max_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    ) -> None:
        if not 1 <= max_items <= MAX_BATCH_ITEMS:
            raise ValueError(f"max_items must be 1..{MAX_BATCH_ITEMS}")
        self.target: Target = target
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._files: list[str] = []
        self._rows: list[int] = []
        self._keys: list[str] = []
        self._bodies: list[bytes] = []
        self._frames: list[pl.DataFrame] = []
        self._size = 2

    def add(
        self,
        source_file: str,
        rows: Sequence[int],
        keys: Sequence[str],
        bodies: Sequence[bytes],
        frame: pl.DataFrame | None = None,
    ) -> Iterator[Chunk]:
        """Take one source batch's items; yield every chunk that fills up."""
        if frame is not None and rows:
            self._frames.append(frame)
        more_of_this_frame = frame is not None
        lens = list(map(len, bodies))
        i, n = 0, len(bodies)
        while i < n:
            if len(self._bodies) >= self.max_items:
                yield self._emit(keep_last_frame=more_of_this_frame)
            # The common case: the items that complete this chunk fit its byte cap too —
            # take them as one slice rather than one by one (this loop sees every row).
            j = min(n, i + self.max_items - len(self._bodies))
            grow = sum(lens[i:j]) + (j - i) - (0 if self._bodies else 1)
            if self._size + grow <= self.max_bytes:
                self._files.extend(itertools.repeat(source_file, j - i))
                self._rows.extend(rows[i:j])
                self._keys.extend(keys[i:j])
                self._bodies.extend(bodies[i:j])
                self._size += grow
                i = j
                continue
            # Near the byte cap: item by item until this chunk closes.
            while i < n:
                extra = lens[i] + (1 if self._bodies else 0)
                if self._bodies and (
                    len(self._bodies) >= self.max_items or self._size + extra > self.max_bytes
                ):
                    yield self._emit(keep_last_frame=more_of_this_frame)
                    break  # the next chunk starts with the quick check again
                self._files.append(source_file)
                self._rows.append(rows[i])
                self._keys.append(keys[i])
                self._bodies.append(bodies[i])
                self._size += extra
                i += 1
        if len(self._bodies) >= self.max_items:
            yield self._emit(keep_last_frame=False)

    def flush(self) -> Iterator[Chunk]:
        """The last, possibly partial, chunk."""
        if self._bodies:
            yield self._emit(keep_last_frame=False)

    def _emit(self, *, keep_last_frame: bool) -> Chunk:
        chunk = Chunk(
            self.target,
            tuple(self._files),
            tuple(self._rows),
            tuple(self._keys),
            tuple(self._bodies),
            tuple(self._frames),
            json_array(self._bodies),
        )
        # The current source frame still feeds the next chunk; older ones are done.
        self._frames = self._frames[-1:] if keep_last_frame and self._frames else []
        self._files, self._rows, self._keys, self._bodies = [], [], [], []
        self._size = 2
        return chunk
