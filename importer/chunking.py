"""Pack serialised items into request bodies: ≤ ``max_items`` and ≤ ``max_bytes`` each.

Pure: no I/O. Every request costs one unit of the rate limit whatever its size, so batches are
full except the last one of a target (items carry over between source batches and files).
A single item larger than ``max_bytes`` travels alone; the API is the judge of it.

Rows that share an ordering key (a contact's ``_user_id``; an event's ``_user_id`` when it
carries ``_user_data``) must reach the API in file order, so a chunk whose keys overlap an
earlier unsettled chunk waits for it (:mod:`importer.ordering`). If chunks in flight often
shared a key, the run would go one request at a time; so the chunker keeps a key's rows
apart from its recent chunks (``Chunker(spread=…)``):

- a source batch with unique keys, none sent in the last ``spread`` chunks: as is (the
  common case; one ``set()`` per batch and ~100 look-ups per recent chunk);
- a batch that repeats keys: regrouped, vectorised — each key's rows together in their file
  order, keys sent recently last (behind ≥ ``spread`` chunks of the others); a chunk never
  ends inside a key's rows when it can end before them;
- a batch too small for that, or while rows are parked: row by row, a row whose key went
  out recently parked until ``spread`` chunks after that.
"""

from __future__ import annotations

import collections
import heapq
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
    # Events carrying ``_user_data``: each item's ``_user_id`` (the contact it upserts).
    user_ids: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def order_keys(self) -> tuple[str, ...]:
        """The keys whose rows must reach the API in file order: a contact's ``_user_id``;
        for events, the ``_user_id`` of those that upsert a contact (none otherwise: an
        event is stored once per ``_event_id``, whatever the order)."""
        return self.keys if self.target == "contacts" else self.user_ids

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
            user_ids=self.user_ids[start:stop],
        )

    def select(self, keep: Sequence[bool]) -> Chunk:
        """The items where ``keep`` is true, in order."""
        pick = itertools.compress
        return Chunk(
            self.target,
            tuple(pick(self.files, keep)),
            tuple(pick(self.rows, keep)),
            tuple(pick(self.keys, keep)),
            tuple(pick(self.bodies, keep)),
            self.frames,
            user_ids=tuple(pick(self.user_ids, keep)),
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


_Item = tuple[str, int, str, bytes, str, "pl.DataFrame | None"]  # file, row, key, body, user, frame


class Chunker:
    """Accumulates items across source batches and emits full chunks as they fill.

    ``spread`` (chunks; 0 = off): rows of a key are placed at least ``spread`` chunks after
    the last chunk holding that key (see the module docstring), so that by the time they are
    sent that chunk has most likely been answered and the key gate (:mod:`importer.ordering`)
    lets them through without a wait. Rows of one key inside one chunk need no spreading:
    one request applies them in order.
    """

    def __init__(
        self,
        target: Target,
        *,
        max_items: int = MAX_BATCH_ITEMS,
        max_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        spread: int = 0,
    ) -> None:
        if not 1 <= max_items <= MAX_BATCH_ITEMS:
            raise ValueError(f"max_items must be 1..{MAX_BATCH_ITEMS}")
        self.target: Target = target
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.spread = spread
        self._files: list[str] = []
        self._rows: list[int] = []
        self._keys: list[str] = []
        self._bodies: list[bytes] = []
        self._users: list[str] = []
        self._frames: list[pl.DataFrame] = []
        self._size = 2
        self._ordered = target == "contacts"  # events: once given user ids
        # spreading: the ordering keys of the last ``spread`` chunks; while batches need it
        # (``_slow``), the chunk number each recent key last went out in; parked rows per
        # key, and when each key's parked rows are due (chunk number, tie-break, key)
        self._seq = 0
        self._ring: collections.deque[tuple[str, ...]] = collections.deque(maxlen=spread)
        self._slow = False
        self._last: dict[str, int] = {}
        self._parked: dict[str, list[_Item]] = {}
        self._due: list[tuple[int, int, str]] = []
        self._n_parked = 0
        self.parked_max = 0  # the most rows parked at once (a figure for tests and benches)

    @property
    def _order(self) -> list[str] | None:
        """The ordering keys of the chunk being filled (see :attr:`Chunk.order_keys`)."""
        if not self._ordered:
            return None
        return self._keys if self.target == "contacts" else self._users

    def add(
        self,
        source_file: str,
        rows: Sequence[int],
        keys: Sequence[str],
        bodies: Sequence[bytes],
        frame: pl.DataFrame | None = None,
        user_ids: Sequence[str] | None = None,
    ) -> Iterator[Chunk]:
        """Take one source batch's items; yield every chunk that fills up.

        ``user_ids``: for events that upsert a contact (``_user_data``), each one's
        ``_user_id``; give it for every batch of a chunker or for none.
        """
        if user_ids is not None:
            self._ordered = True
        order = keys if self.target == "contacts" else user_ids
        if order is not None and self.spread and rows:
            spreading = self._needs_spreading(order)
            perm = self._grouping(order) if spreading else None
            if perm is not None:
                # the batch, its rows of one key together (see _grouping): the fast path
                rows = [rows[i] for i in perm]
                keys = [keys[i] for i in perm]
                bodies = [bodies[i] for i in perm]
                if user_ids is not None:
                    user_ids = [user_ids[i] for i in perm]
                order = keys if self.target == "contacts" else user_ids
            elif spreading:
                if not self._slow:
                    self._slow = True
                    first = self._seq - len(self._ring)
                    for seq, recent in enumerate(self._ring, first):
                        self._last.update(dict.fromkeys(recent, seq))
                yield from self._add_spread(
                    source_file, rows, keys, bodies, frame, user_ids, order
                )
                return
            if self._slow:
                self._slow = False
                self._last = {}
        if frame is not None and rows:
            self._frames.append(frame)
        more_of_this_frame = frame is not None
        lens = list(map(len, bodies))
        i, n = 0, len(bodies)
        while i < n:
            if len(self._bodies) >= self.max_items:
                yield self._emit(keep_last_frame=more_of_this_frame, next_key=order, at=i)
            # The common case: the items that complete this chunk fit its byte cap too —
            # take them as one slice rather than one by one (this loop sees every row).
            j = min(n, i + self.max_items - len(self._bodies))
            grow = sum(lens[i:j]) + (j - i) - (0 if self._bodies else 1)
            if self._size + grow <= self.max_bytes:
                self._take(source_file, rows, keys, bodies, user_ids, i, j)
                self._size += grow
                i = j
                continue
            # Near the byte cap: item by item until this chunk closes.
            while i < n:
                extra = lens[i] + (1 if self._bodies else 0)
                if self._bodies and (
                    len(self._bodies) >= self.max_items or self._size + extra > self.max_bytes
                ):
                    yield self._emit(keep_last_frame=more_of_this_frame, next_key=order, at=i)
                    break  # the next chunk starts with the quick check again
                self._take(source_file, rows, keys, bodies, user_ids, i, i + 1)
                self._size += extra
                i += 1
        # A full chunk waits for the next item when rows are ordered by key: the next batch
        # may continue its last key's run (see the module docstring).
        if len(self._bodies) >= self.max_items and self._order is None:
            yield self._emit(keep_last_frame=False)

    def _take(
        self,
        source_file: str,
        rows: Sequence[int],
        keys: Sequence[str],
        bodies: Sequence[bytes],
        user_ids: Sequence[str] | None,
        i: int,
        j: int,
    ) -> None:
        self._files.extend(itertools.repeat(source_file, j - i))
        self._rows.extend(rows[i:j])
        self._keys.extend(keys[i:j])
        self._bodies.extend(bodies[i:j])
        if user_ids is not None:
            self._users.extend(user_ids[i:j])

    # -- spreading rows of one key over chunks ----------------------------------------------
    def _needs_spreading(self, order: Sequence[str]) -> bool:
        """Whether a batch has a key repeated within itself, parked, or in a recent chunk
        (set operations in C, ~100 look-ups per recent chunk; the batch then goes row by
        row)."""
        if self._parked:
            return True
        # (the strings' hashes computed here are cached on them: the key gate, in the event
        # loop's thread, finds them computed)
        distinct = set(order)
        if len(distinct) < len(order) or not distinct.isdisjoint(self._order or ()):
            return True
        return not all(map(distinct.isdisjoint, self._ring))

    def _grouping(self, order: Sequence[str]) -> list[int] | None:
        """A new order for a batch that repeats keys, or None to go row by row.

        Rows of one key go together (they then share a chunk: one request applies them in
        order), in the order the keys first appear; the keys that went out in one of the
        last ``spread`` chunks go last, after at least ``spread`` chunks' worth of the
        others, so they too are far from their earlier rows. Rows of one key keep their
        order; the order between keys does not matter to the API. Vectorised (polars);
        None when rows are parked, or when too few rows come before the recent keys.
        """
        if self._parked:
            return None
        recent = set(self._order or ()).union(*self._ring)
        frame = pl.DataFrame({"k": pl.Series(order, dtype=pl.String)}).with_row_index("i")
        frame = frame.with_columns(
            recent=pl.col("k").is_in(pl.Series(list(recent), dtype=pl.String).implode()),
            first=pl.col("i").min().over("k"),
        )
        late = int(frame["recent"].sum())
        if late and len(order) - late < self.spread * self.max_items:
            return None
        return frame.sort("recent", "first", "i")["i"].to_list()

    def _add_spread(
        self,
        source_file: str,
        rows: Sequence[int],
        keys: Sequence[str],
        bodies: Sequence[bytes],
        frame: pl.DataFrame | None,
        user_ids: Sequence[str] | None,
        order: Sequence[str],
    ) -> Iterator[Chunk]:
        users = user_ids if user_ids is not None else itertools.repeat("")
        items = zip(itertools.repeat(source_file), rows, order, bodies, users,
                    itertools.repeat(frame), keys, strict=False)
        released: collections.deque[_Item] = collections.deque()
        parked, spread = self._parked, self.spread
        max_items, max_bytes = self.max_items, self.max_bytes
        events = self.target == "events"
        stale = True  # the chunk being filled changed: refresh the local names below
        for file, row, key, body, user, _, item_key in items:
            if stale:
                files, rows_, keys_, bodies_, users_ = (
                    self._files, self._rows, self._keys, self._bodies, self._users)
                last_of, seq = self._last, self._seq
                if frame is not None:
                    self._add_frame(frame)
                stale = False
            # Most rows: the key is not waiting and not recent, and the chunk has room.
            size = len(body) + 1
            if key not in parked and len(bodies_) < max_items and self._size + size <= max_bytes:
                last = last_of.get(key)
                if last is None or seq - last >= spread:
                    files.append(file)
                    rows_.append(row)
                    keys_.append(item_key)
                    bodies_.append(body)
                    if events:
                        users_.append(user)
                    self._size += size if len(bodies_) > 1 else size - 1
                    continue
            stale = True
            chunk = self._offer((file, row, item_key, body, user, frame), released)
            if chunk is not None:
                yield chunk
            while released:  # rows whose wait ended with the chunk just emitted
                chunk = self._offer(released.popleft(), released, placed=True)
                if chunk is not None:
                    yield chunk

    def _offer(
        self, item: _Item, released: collections.deque[_Item], *, placed: bool = False
    ) -> Chunk | None:
        """Park ``item`` or put it in the chunk being filled; returns the chunk emitted to
        make room, if any. ``placed``: a parked row whose wait is over goes in now, even
        where its key's rows fill several chunks in a row (they then wait for each other at
        the gate; parking them again and again would cost a pass over the parked rows per
        chunk)."""
        key = item[2] if self.target == "contacts" else item[4]
        waiting = None if placed else self._parked.get(key)
        if waiting is not None:
            waiting.append(item)  # behind the earlier rows of its key
            self._count_parked(1, released)
            return None
        emitted = None
        extra = len(item[3]) + (1 if self._bodies else 0)
        if self._bodies and (
            len(self._bodies) >= self.max_items or self._size + extra > self.max_bytes
        ):
            emitted = self._emit(keep_last_frame=False)
            self._release(released, due=self._seq)
            extra = len(item[3])
        last = None if placed else self._last.get(key)
        if last is not None and self._seq - last < self.spread:
            self._parked[key] = [item]
            heapq.heappush(self._due, (last + self.spread, self._n_parked, key))
            self._count_parked(1, released)
            return emitted
        self._append(item)
        self._size += extra
        return emitted

    def _count_parked(self, n: int, released: collections.deque[_Item]) -> None:
        self._n_parked += n
        self.parked_max = max(self.parked_max, self._n_parked)
        # Bounded memory: a file that is one key over and over cannot be spread; past this
        # many parked rows the earliest due go out now and the gate orders them.
        if self._n_parked > self.spread * self.max_items:
            self._release(released, due=None)

    def _release(self, released: collections.deque[_Item], due: int | None) -> None:
        """Hand back the parked rows of every key due by chunk ``due`` (None: the first)."""
        while self._due and (due is None or self._due[0][0] <= due):
            _, _, key = heapq.heappop(self._due)
            rows = self._parked.pop(key)
            self._n_parked -= len(rows)
            released.extend(rows)
            if due is None:
                return

    def _append(self, item: _Item) -> None:
        source_file, row, key, body, user, frame = item
        self._files.append(source_file)
        self._rows.append(row)
        self._keys.append(key)
        self._bodies.append(body)
        if self.target == "events":
            self._users.append(user)
        if frame is not None:
            self._add_frame(frame)

    def _add_frame(self, frame: pl.DataFrame) -> None:
        """The chunk being filled keeps the frames its rows come from (for rejects)."""
        frames = self._frames
        if not (frames and frames[-1] is frame) and not any(f is frame for f in frames):
            frames.append(frame)

    def flush(self) -> Iterator[Chunk]:
        """The last, possibly partial, chunks: parked rows go out now (the gate orders them)."""
        released: collections.deque[_Item] = collections.deque()
        while self._due:
            self._release(released, due=None)
            while released:
                chunk = self._offer(released.popleft(), released, placed=True)
                if chunk is not None:
                    yield chunk
        while self._bodies:
            yield self._emit(keep_last_frame=False)

    def _cut(self, next_key: Sequence[str] | None, at: int) -> int:
        """Where the chunk being emitted ends: before the trailing run of rows that share
        the next item's key, when there is one and it is not the whole chunk."""
        order = self._order
        n = len(self._bodies)
        if next_key is None or not order or order[-1] != next_key[at]:
            return n
        key, j = order[-1], n - 1
        while j > 0 and order[j - 1] == key:
            j -= 1
        return j if j > 0 else n

    def _emit(
        self,
        *,
        keep_last_frame: bool,
        next_key: Sequence[str] | None = None,
        at: int = 0,
    ) -> Chunk:
        cut = self._cut(next_key, at)
        chunk = Chunk(
            self.target,
            tuple(self._files[:cut]),
            tuple(self._rows[:cut]),
            tuple(self._keys[:cut]),
            tuple(self._bodies[:cut]),
            tuple(self._frames),
            json_array(self._bodies[:cut]),
            tuple(self._users[:cut]),
        )
        if self.spread and self._ordered:
            self._remember(chunk.order_keys)
        if cut < len(self._bodies):
            # The run carried over may come from an older frame: keep them all (a few rows).
            del self._files[:cut], self._rows[:cut], self._keys[:cut], self._bodies[:cut]
            del self._users[:cut]
            self._size = body_size(self._bodies)
            return chunk
        # The current source frame still feeds the next chunk; older ones are done.
        self._frames = self._frames[-1:] if keep_last_frame and self._frames else []
        self._files, self._rows, self._keys, self._bodies = [], [], [], []
        self._users = []
        self._size = 2
        return chunk

    def _remember(self, order: tuple[str, ...]) -> None:
        """The keys of the chunk just emitted; while spreading, as last seen in it, and keys
        not seen for ``spread`` chunks are forgotten now and then (bounded memory)."""
        self._ring.append(order)
        if self._slow:
            self._last.update(dict.fromkeys(order, self._seq))
        self._seq += 1
        if len(self._last) > 4 * self.spread * self.max_items:
            oldest = self._seq - self.spread
            self._last = {k: s for k, s in self._last.items() if s >= oldest}
