"""The run's reading thread, started before the run's first request so the first batch is
ready when the credential check answers.

Every source batch of a run is read, mapped and chunked in one thread of its own
(:class:`Reader`; polars keeps its compiled regular expressions per thread). The run starts it
before ``GET /stream``; while that round trip and the first use of the HTTP stack take their
~0.1 s, the thread reads the first batch of the first input and maps its first WARM_ROWS rows,
which builds what mapping builds on first use (the phone plans, polars' regexes). The first
POST then leaves 0.04–0.06 s sooner (bench/results/transport.md).

Reading ahead changes no outcome:

* the batch read ahead is only counted, mapped for real and sent once the run takes it: a run
  that stops before (a 401 from ``GET /stream``, an unfinished run) closes the file unread
  as far as the report is concerned;
* an error reading it (an unreadable file, a broken first record) is raised where the run
  takes the batch, as it was without the read-ahead: after the credential check;
* the warm-up's own mapping is thrown away, and an error in it is left for the real mapping
  of the same rows to report.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from importer.mapping import CompiledMapping
from importer.records import SourceBatch
from importer.sources import ReadOptions, SourceFile, iter_batches

T = TypeVar("T")

#: Rows of the first batch mapped to warm the mapping up: as many as the first piece the run
#: maps (``runstate.RAMP_ROWS``). Fewer meet fewer of the phone plans built per country code
#: on first use: after 50, the first piece still took 30 ms to map; after 500, 18 ms.
WARM_ROWS = 500


class Reader:
    """One thread for all of a run's reading and mapping, with the first input's first batch
    read ahead (:meth:`first_input`). Closed with :meth:`aclose`."""

    def __init__(self, source: SourceFile, read: ReadOptions, compiled: CompiledMapping) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="instasent-import-read")
        self._source = source
        self._batches = iter_batches(source, read)
        self._taken = False
        self._first: Future[SourceBatch | None] = self._executor.submit(
            contextvars.copy_context().run, self._read_first, compiled)

    def _read_first(self, compiled: CompiledMapping) -> SourceBatch | None:
        batch = next(self._batches, None)
        if batch is not None and batch.frame.height:
            warm = dataclasses.replace(batch, frame=batch.frame.head(WARM_ROWS), rejects=())
            with contextlib.suppress(Exception):  # the real mapping of these rows reports it
                compiled.map_batch(warm)
        return batch

    def run(self, fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
        """``fn(*args)`` in the reading thread, in the caller's context (as
        ``asyncio.to_thread`` runs it)."""
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return asyncio.get_running_loop().run_in_executor(self._executor, call)

    def first_input(self, source: SourceFile) -> Iterator[SourceBatch] | None:
        """The batches of the first input, the first one as read ahead; None once taken, or
        for another source (then it is read from its start)."""
        if self._taken or source is not self._source:
            return None
        self._taken = True
        return self._continue()

    def _continue(self) -> Iterator[SourceBatch]:
        first = self._first.result()  # (an error reading it is raised here)
        if first is None:
            return
        yield first
        yield from self._batches

    async def aclose(self) -> None:
        """Wait for the read ahead if it is under way, close the file, end the thread."""
        if not self._first.done():
            with contextlib.suppress(Exception):  # an error of a batch never taken: unread
                await asyncio.wrap_future(self._first)
        # (the run's own iteration is over: the pipeline closes the reader after the run)
        await self.run(self._close)
        self._executor.shutdown(wait=False)

    def _close(self) -> None:
        close = getattr(self._batches, "close", None)
        if close is not None:
            close()
