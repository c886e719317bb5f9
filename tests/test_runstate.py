"""The producing side of a run (importer/runstate.py): how a read batch is cut for mapping."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from importer.records import SOURCE_FILE, SOURCE_ROW, Reject, SourceBatch
from importer.runstate import RAMP_ROWS, _ramp


@settings(max_examples=60, deadline=None)
@given(height=st.integers(0, 20 * RAMP_ROWS), n_rejects=st.integers(0, 3),
       progress=st.integers(0, 10**9))
def test_the_first_batch_is_mapped_in_growing_pieces_that_cover_it_once(
    height: int, n_rejects: int, progress: int
) -> None:
    """Every row once, in order; the read's rejects with the first piece; pieces of
    RAMP_ROWS, twice that, ... then the rest; progress never goes back and ends where the
    batch ends."""
    frame = pl.DataFrame({"id": [f"U{i}" for i in range(height)],
                          SOURCE_FILE: ["f.csv"] * height,
                          SOURCE_ROW: list(range(1, height + 1))})
    rejects = tuple(Reject("f.csv", height + i + 1, "read", "nul_byte", "NUL")
                    for i in range(n_rejects))
    batch = SourceBatch("f.csv", frame, rejects, progress)
    pieces = list(_ramp(batch))
    assert pl.concat([p.frame for p in pieces]).equals(frame)
    assert pieces[0].rejects == rejects and all(not p.rejects for p in pieces[1:])
    assert sum(p.rows_read for p in pieces) == batch.rows_read
    sizes = [p.frame.height for p in pieces]
    assert sizes[:-1] == [RAMP_ROWS * 2**i for i in range(len(sizes) - 1)]
    assert sizes[-1] <= max(RAMP_ROWS * 2 ** (len(sizes) - 1), 0) or len(sizes) == 1
    marks = [p.progress for p in pieces]
    assert marks == sorted(marks) and marks[-1] == progress
