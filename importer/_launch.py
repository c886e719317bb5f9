"""The command's entry point: process-wide settings that must come before polars is loaded.

One polars thread: the importer already overlaps reading and mapping (a worker thread) with
uploading (the event loop), and mapping on one thread runs ~4x faster than the API can take
rows even unthrottled on loopback. Polars' second pool thread added ~15% CPU (work-stealing
handoffs and spinning) and made the 1M-row dry run no faster. A POLARS_MAX_THREADS set by
the user wins.
"""

from __future__ import annotations

import os


def main() -> None:
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from importer.cli import main as cli_main

    cli_main()
