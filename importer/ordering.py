"""Rows that share a key reach the API in file order, whatever the concurrency.

An upsert stores what it is sent: when the rows ``U0,version=1`` and ``U0,version=2`` travel in
two requests at once, the one answered last wins, and that may be the older row. The
guarantee: the stored contact equals the file's rows applied in order.

How: every chunk is registered with the :class:`KeyGate` in the order it was made (file
order), before a worker can take it. A chunk whose ordering keys (:attr:`Chunk.order_keys`)
overlap an earlier chunk that is not settled yet waits for that chunk — its retries, its
429 pauses and its 400 splits (the halves are sent one after the other, in order) — before it
is sent. Chunks without a shared key go out concurrently as before: the gate costs one dict
look-up per item, and a wait only where a key really repeats within the requests in flight.
Items of one chunk are sent in file order in one array, which the API applies in order
(API.md §4: ``items[]`` is request order; the sandbox applies them one by one).

A row that ends as a *retryable* failure (transport, 429 storm) is sent again later by
``retry``; a later row of the same key sent now would be overwritten by it then. So the later
rows of that key are held back: they become retryable rejects too ("held back behind row N"),
and ``retry`` sends them all, in file order. A *permanent* reject (the API refused the row)
does not hold anything back: the file applied in order skips that row as well.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import polars as pl

from importer.chunking import Chunk
from importer.client import ItemOutcome

#: The reject code of a row held back behind an earlier retryable failure of its key.
HELD_BACK = "held_back"

Held = Callable[[Chunk, tuple[ItemOutcome, ...]], None]


class _Ticket:
    __slots__ = ("done", "order", "settled", "waits")

    def __init__(self, order: tuple[str, ...], waits: list[asyncio.Future[None]]) -> None:
        self.order = order
        self.waits = waits
        self.settled = False
        self.done: asyncio.Future[None] | None = None


#: ``_last`` is rebuilt from the chunks not settled yet once it holds this many keys
#: (bounded memory; settling a chunk then costs nothing per key).
_SWEEP = 50_000


class KeyGate:
    """Orders the chunks that share a key; all of it runs on the event loop's thread.

    Per chunk: one set intersection and one dict update, both in C (the event loop's thread
    is the one that posts every request).
    """

    def __init__(self) -> None:
        # key -> the latest registered chunk holding it (settled ones are swept now and then)
        self._last: dict[str, _Ticket] = {}
        self._tickets: dict[int, _Ticket] = {}  # id(chunk) -> its ticket, until settled
        # key -> "file row N": the first row of the key that failed retryably
        self.blocked: dict[str, str] = {}

    def register(self, chunk: Chunk) -> None:
        """Called in file order, before any worker may take ``chunk``."""
        order = chunk.order_keys
        if not order:
            return
        last = self._last
        waits: list[asyncio.Future[None]] = []
        for key in last.keys() & order:
            earlier = last[key]
            if earlier.settled:
                continue
            if earlier.done is None:
                earlier.done = asyncio.get_running_loop().create_future()
            if earlier.done not in waits:
                waits.append(earlier.done)
        ticket = _Ticket(order, waits)
        if len(last) > _SWEEP:
            # registration order: a later chunk's ticket overwrites an earlier one's
            self._last = last = {}
            for unsettled in self._tickets.values():
                last.update(dict.fromkeys(unsettled.order, unsettled))
        last.update(dict.fromkeys(order, ticket))
        self._tickets[id(chunk)] = ticket

    async def wait(self, chunk: Chunk) -> None:
        """Until every earlier chunk sharing a key with ``chunk`` is settled."""
        ticket = self._tickets.get(id(chunk))
        if ticket is None or not ticket.waits:
            return
        for done in ticket.waits:
            if not done.done():
                await asyncio.shield(done)
        ticket.waits.clear()

    def settle(self, chunk: Chunk) -> None:
        """``chunk`` has an outcome for every item (or will never be sent)."""
        ticket = self._tickets.pop(id(chunk), None)
        if ticket is None:
            return
        ticket.settled = True
        if ticket.done is not None and not ticket.done.done():
            ticket.done.set_result(None)

    def observe(self, chunk: Chunk, outcomes: tuple[ItemOutcome, ...]) -> None:
        """Learn the keys of rows that failed retryably (their later rows are held back)."""
        order = chunk.order_keys
        if not order:
            return
        for i, outcome in enumerate(outcomes):
            if not outcome.ok and outcome.retryable:
                where = f"{chunk.files[i]} row {chunk.rows[i]}"
                self.blocked.setdefault(order[i], where)

    def hold_back(self, chunk: Chunk, held: Held) -> Chunk | None:
        """``chunk`` without the rows whose key failed retryably before; those are handed to
        ``held`` as retryable rejects. None when nothing is left to send."""
        blocked = self.blocked
        order = chunk.order_keys
        if not blocked or not order or blocked.keys().isdisjoint(order):
            return chunk
        keep = [key not in blocked for key in order]
        back = chunk.select([not k for k in keep])
        held(back, tuple(
            ItemOutcome(
                ok=False,
                code=HELD_BACK,
                message=f"not sent: an earlier row with this key ({blocked[key]}) failed and "
                "must be sent first; `retry` sends them in file order",
                retryable=True,
            )
            for key in back.order_keys
        ))
        return chunk.select(keep) if any(keep) else None


def user_ids_of(bodies: Sequence[bytes]) -> list[str]:
    """Each event body's ``_user_id`` (the contact its ``_user_data`` upserts), vectorised."""
    found = pl.Series(bodies, dtype=pl.Binary).cast(pl.String).str.json_path_match("$._user_id")
    return found.fill_null("").to_list()
