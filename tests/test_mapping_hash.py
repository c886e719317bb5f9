"""hash: ids are deterministic everywhere: across processes, hash seeds and runs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl

from importer.mapping import compile_mapping, parse_mapping
from importer.records import SourceBatch

MAPPING = """\
target: events
fields:
  _event_id: {hash: [order, line]}
  _user_id: customer
  _event_type: {value: purchase}
  _event_date: {column: at, type: datetime}
"""

ROWS = {
    "order": ["A-100", "A-100", "a|b", "a", None, "", None, "é"],
    "line": ["1", "2", "c", "b|c", "1", "1", None, "ñ"],
}


def event_ids() -> list[str | None]:
    n = len(ROWS["order"])
    data = pl.DataFrame(
        {**ROWS, "customer": ["C"] * n, "at": ["2024-01-01T00:00:00Z"] * n,
         "_source_file": ["f"] * n, "_source_row": list(range(1, n + 1))},
        schema_overrides={"order": pl.String, "line": pl.String},
    )
    mapped = compile_mapping(parse_mapping(MAPPING), data.columns).map_batch(
        SourceBatch("f", data)
    )
    ids: list[str | None] = [None] * n
    for row, key in zip(mapped.items["events"].source_rows, mapped.items["events"].keys,
                        strict=True):
        ids[row - 1] = key
    return ids


def reference(*values: str | None) -> str:
    """The documented encoding: <utf-8 length>:<text> per value, ~ for null, joined by |,
    BLAKE2b-128 in hex."""
    parts = ["~" if v is None else f"{len(v.encode())}:{v}" for v in values]
    return hashlib.blake2b("|".join(parts).encode(), digest_size=16).hexdigest()


def test_ids_follow_the_documented_encoding() -> None:
    ids = event_ids()
    expected: list[str | None] = [
        reference(o, line) for o, line in zip(ROWS["order"], ROWS["line"], strict=True)
    ]
    expected[6] = None  # every value missing: no id (the row is rejected, not given a shared id)
    assert ids == expected
    assert ids[0] == reference("A-100", "1") and len(ids[0] or "") == 32


def test_values_that_only_differ_by_separator_or_null_do_not_collide() -> None:
    ids = event_ids()
    assert ids[2] != ids[3]  # ("a|b", "c") vs ("a", "b|c")
    assert ids[4] != ids[5]  # (None, "1") vs ("", "1")
    assert len({i for i in ids if i is not None}) == 7


def test_ids_are_identical_in_another_process_with_another_hash_seed() -> None:
    here = str(Path(__file__).resolve().parent)
    script = (
        f"import json, sys; sys.path.insert(0, {here!r});"
        "from test_mapping_hash import event_ids; print(json.dumps(event_ids()))"
    )
    runs = []
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, check=True, timeout=120)
        runs.append(json.loads(done.stdout))
    assert runs[0] == runs[1] == event_ids()
