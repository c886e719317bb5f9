"""Streaming sources: CSV, Parquet and NDJSON files in, :class:`SourceBatch` slices out.

The only package that touches polars/pyarrow file I/O. Memory stays flat whatever the file
size: text files are read through a sliding window of about ``batch_rows`` rows, Parquet one
record batch at a time.

Every batch frame holds the file's columns plus ``_source_file`` and ``_source_row`` (Int64,
1-based data-row number: row 1 is the first record after the header). Empty cells are null,
quoted or not. A file that already has ``_source_file``/``_source_row`` columns (a re-imported
rejects file) keeps its own values, so a row keeps its provenance through any number of re-runs.

Where things are:

- ``inputs``: paths, globs and directories → :class:`SourceFile`; ``iter_batches`` per format
- ``model``: :class:`ReadOptions`, :class:`SourceFile`; ``limits``: the byte limits
- ``encoding``: which codec a text file is read with, and why
- ``textstream``: decompression, transcoding to UTF-8, the sliding byte window
- ``csv_read`` (with the CSV diagram), ``csv_header``, ``csv_grammar`` (fast path),
  ``csv_reference`` (the reference parser)
- ``ndjson``, ``parquet``; ``batches``: provenance, empty → null, reject remedies
"""

from importer.sources.csv_header import DELIMITERS, sniff_delimiter
from importer.sources.encoding import detect_encoding
from importer.sources.inputs import SUPPORTED, inspect_file, iter_all, iter_batches, resolve_inputs
from importer.sources.model import Format, ReadOptions, SourceFile

__all__ = [
    "DELIMITERS",
    "SUPPORTED",
    "Format",
    "ReadOptions",
    "SourceFile",
    "detect_encoding",
    "inspect_file",
    "iter_all",
    "iter_batches",
    "resolve_inputs",
    "sniff_delimiter",
]
