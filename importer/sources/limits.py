"""Byte limits of the readers: what bounds their memory, in one place.

Modules read them as ``limits.NAME`` (not imported by value), so a test can shrink one limit
for every reader at once.
"""

SAMPLE_BYTES = 64 * 1024  # sniffing encoding and delimiter
NDJSON_SAMPLE_BYTES = 1024 * 1024  # discovering NDJSON keys
READ_BLOCK = 1024 * 1024
MAX_SPAN_BYTES = 256 * 1024 * 1024
PARSE_SPAN_BYTES = 4 * 1024 * 1024
#: A batch holds at most ``batch_rows`` rows and about this many bytes of input text
#: (Parquet: 4x this of uncompressed data), so memory is bounded by bytes whatever the width:
#: 25,000 rows of 300 columns peaked at 1.3 GB in ``validate``, 2 MiB batches at ~200 MB
#: (bench/bench_wide.py; 1 MiB saved nothing more and made validate 2x slower).
BATCH_BYTES = 2 * 1024 * 1024
#: A Parquet row group bigger than this (uncompressed) is read this much at a time, in whole
#: batches: a 20,000-column file's 107 MiB row groups cost ~340 MB each read whole.
PARQUET_WINDOW_BYTES = 32 * 1024 * 1024
#: Parquet columns decoded at a time. Streaming a row group (pyarrow's ``iter_batches``) holds
#: a decoded page of every column: fine for this many, 441 MB for 20,000 columns of 500-row
#: pages; a wider file's window is read this many columns at a time.
PARQUET_COLUMN_SLICE = 1000
#: A record longer than this is rejected (almost always an unterminated quote); it bounds the
#: look-ahead of the reference parser, hence memory.
MAX_RECORD_BYTES = 8 * 1024 * 1024
#: Below this size a span that failed the fast path goes to the reference parser.
SLOW_SPAN_BYTES = 64 * 1024
#: A reject's ``_raw_line`` keeps at most this many characters of the line (then a marker):
#: 200 one-MiB lines after an unterminated quote made a 210 MB rejects file.
MAX_RAW_LINE_CHARS = 64 * 1024
#: A value quoted in a reject message is cut to this many characters.
MAX_SHOWN_VALUE_CHARS = 200
