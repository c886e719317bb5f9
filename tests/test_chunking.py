"""Chunking is pure: the chunks concatenate back to the input and respect both caps."""

from __future__ import annotations

import itertools

import orjson
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importer.chunking import Chunk, Chunker, body_size


def _feed(
    batches: list[list[bytes]], max_items: int, max_bytes: int, frames: bool = False
) -> list[Chunk]:
    chunker = Chunker("contacts", max_items=max_items, max_bytes=max_bytes)
    out: list[Chunk] = []
    row = 0
    for n, bodies in enumerate(batches):
        rows = list(range(row + 1, row + 1 + len(bodies)))
        row += len(bodies)
        keys = [f"k{r}" for r in rows]
        frame = pl.DataFrame({"batch": [n]}) if frames else None
        out += chunker.add(f"file{n % 2}.csv", rows, keys, bodies, frame)
    out += chunker.flush()
    return out


item = st.binary(min_size=1, max_size=300)


@settings(max_examples=150, deadline=None)
@given(
    batches=st.lists(st.lists(item, max_size=250), max_size=6),
    max_items=st.integers(1, 100),
    max_bytes=st.integers(64, 5000),
)
def test_chunks_concatenate_back_and_respect_caps(
    batches: list[list[bytes]], max_items: int, max_bytes: int
) -> None:
    chunks = _feed(batches, max_items, max_bytes, frames=True)
    flat = [b for batch in batches for b in batch]
    batch_of = [n for n, batch in enumerate(batches) for _ in batch]
    assert [b for c in chunks for b in c.bodies] == flat
    assert [r for c in chunks for r in c.rows] == list(range(1, len(flat) + 1))
    for c in chunks:
        assert 1 <= len(c) <= max_items
        assert len(c.rows) == len(c.keys) == len(c.bodies) == len(c.files)
        # Only a lone oversized item may exceed the byte cap.
        assert body_size(c.bodies) <= max_bytes or len(c) == 1
        assert len(c.body) == body_size(c.bodies)
    # Each item keeps its file, and its chunk the source frame it came from (the rejects file
    # takes a refused row's original columns from there).
    done = 0
    for c in chunks:
        mine = batch_of[done:done + len(c)]
        done += len(c)
        assert list(c.files) == [f"file{n % 2}.csv" for n in mine]
        assert {f["batch"][0] for f in c.frames} >= set(mine)
    # Full except the last: a chunk closes early only because the next item would not fit.
    for c, nxt in itertools.pairwise(chunks):
        assert len(c) == max_items or body_size([*c.bodies, nxt.bodies[0]]) > max_bytes


def test_batches_fill_across_source_batches_and_files() -> None:
    bodies = [b'{"_user_id":"%d"}' % i for i in range(250)]
    chunks = _feed([bodies[:30], bodies[30:170], bodies[170:]], 100, 10**6)
    assert [len(c) for c in chunks] == [100, 100, 50]
    assert set(chunks[0].files) == {"file0.csv", "file1.csv"}


def test_body_is_a_json_array_of_the_items() -> None:
    items = [{"_user_id": f"U{i}", "n": "ñ"} for i in range(3)]
    bodies = [orjson.dumps(i) for i in items]
    (chunk,) = _feed([bodies], 100, 10**6)
    assert orjson.loads(chunk.body) == items


def test_split_halves_keep_everything_in_order() -> None:
    (chunk,) = _feed([[b"%d" % i for i in range(7)]], 100, 10**6)
    left, right = chunk.split()
    assert (len(left), len(right)) == (3, 4)
    assert left.rows + right.rows == chunk.rows
    assert left.bodies + right.bodies == chunk.bodies


def test_more_than_the_api_allows_is_refused() -> None:
    with pytest.raises(ValueError, match="max_items"):
        Chunker("events", max_items=101)


def test_json_array_is_the_items_between_brackets() -> None:
    from importer.chunking import json_array

    for items in ([], [b"{}"], [b'{"a":1}', b"{}"], [b"1", b"2", b"3", b'"x"']):
        assert json_array(items) == b"[" + b",".join(items) + b"]"
