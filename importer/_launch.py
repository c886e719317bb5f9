"""The command's entry point: process-wide settings that must come before polars is loaded.

One polars thread: the importer already overlaps reading and mapping (a worker thread) with
uploading (the event loop), and mapping on one thread runs ~4x faster than the API can take
rows even unthrottled on loopback. Polars' second pool thread added ~15% CPU (work-stealing
handoffs and spinning) and made the 1M-row dry run no faster. A POLARS_MAX_THREADS set by
the user wins.

Polars' allocator (jemalloc) keeps the pages it freed instead of handing them back to the
system a few seconds later: a paced run reads a source batch every ~2.5 s, and faulting the
same pages back in cost ~0.3 CPU-s per million rows, for ~10 MB more peak RSS. A
_RJEM_MALLOC_CONF set by the user wins; polars' own default, which ``import polars`` writes
into the environment of any Python process that loads it (a scheduler's task, our own
benchmark harness) and which its children inherit, does not count as the user's.
"""

from __future__ import annotations

import gc
import os

#: What ``import polars`` puts in ``os.environ`` when nothing is set (polars/__init__.py).
_POLARS_WRITES = ("", "dirty_decay_ms:500,muzzy_decay_ms:1000",
                  "dirty_decay_ms:500,muzzy_decay_ms:1000,thp:always,metadata_thp:always")


def main() -> None:
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    if os.environ.get("_RJEM_MALLOC_CONF", "") in _POLARS_WRITES:
        os.environ["_RJEM_MALLOC_CONF"] = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from importer.cli import main as cli_main

    gc.freeze()
    cli_main()
