"""The run's reading thread and its read-ahead (importer/readahead.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from importer.exceptions import AuthError, InputError
from importer.pipeline import RunOptions, plan_import, run_import
from importer.readahead import Reader
from importer.sandbox.server import RunningSandbox
from importer.sources import ReadOptions, iter_batches
from tests.test_run import CONTACTS_MAPPING, creds

READ = ReadOptions(batch_rows=40)


def _contacts(path: Path, n: int) -> Path:
    path.write_text("customer_id,email\n" + "".join(f"U{i},u{i}@x.es\n" for i in range(n)),
                    encoding="utf-8")
    return path


def _mapping(tmp_path: Path) -> Path:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(CONTACTS_MAPPING)
    return mapping


def _reading_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("instasent-import-read")]


def _wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_the_first_batch_is_read_before_the_run_asks_and_the_run_sees_every_batch_once(
    tmp_path: Path,
) -> None:
    data = _contacts(tmp_path / "c.csv", 100)
    plan = plan_import([str(data)], _mapping(tmp_path), READ)
    expected = [b.frame for b in iter_batches(plan.sources[0], READ)]
    assert len(expected) > 1

    async def main() -> list[pl.DataFrame]:
        reader = Reader(plan.sources[0], READ, plan.compiled[0])
        try:
            # read ahead: the file's first 40 rows were read, with nobody asking yet
            _wait_until(lambda: reader._first.done())
            assert reader._first.result() is not None
            assert reader._first.result().frame.equals(expected[0])  # type: ignore[union-attr]
            batches = reader.first_input(plan.sources[0])
            assert batches is not None
            assert reader.first_input(plan.sources[0]) is None  # once
            # the run takes the batches in the reading thread, as it does in runstate.py
            frames = []
            while (batch := await reader.run(next, batches, None)) is not None:
                frames.append(batch.frame)
            return frames
        finally:
            await reader.aclose()

    frames = asyncio.run(main())
    assert len(frames) == len(expected)
    assert all(got.equals(want) for got, want in zip(frames, expected, strict=True))
    _wait_until(lambda: not _reading_threads())
    assert not _reading_threads()


def test_a_read_error_of_the_first_batch_is_raised_where_the_run_takes_the_batch(
    tmp_path: Path,
) -> None:
    data = _contacts(tmp_path / "c.csv", 10)
    plan = plan_import([str(data)], _mapping(tmp_path), READ)
    data.write_text("id,mail\nU1,a@x.es\n", encoding="utf-8")  # changed after planning

    async def main() -> None:
        reader = Reader(plan.sources[0], READ, plan.compiled[0])  # no error yet
        try:
            _wait_until(lambda: reader._first.done())
            batches = reader.first_input(plan.sources[0])
            assert batches is not None
            with pytest.raises(InputError, match="header changed"):
                await reader.run(next, batches, None)
        finally:
            await reader.aclose()

    asyncio.run(main())


def test_a_read_error_never_taken_is_not_raised_by_closing(tmp_path: Path) -> None:
    data = _contacts(tmp_path / "c.csv", 10)
    plan = plan_import([str(data)], _mapping(tmp_path), READ)
    data.write_text("id,mail\nU1,a@x.es\n", encoding="utf-8")

    async def main() -> None:
        reader = Reader(plan.sources[0], READ, plan.compiled[0])
        await reader.aclose()  # a run that stopped before reading: nothing to report

    asyncio.run(main())
    _wait_until(lambda: not _reading_threads())
    assert not _reading_threads()


def test_another_input_is_read_from_its_start(tmp_path: Path) -> None:
    first, second = _contacts(tmp_path / "a.csv", 5), _contacts(tmp_path / "b.csv", 5)
    plan = plan_import([str(first), str(second)], _mapping(tmp_path), READ)

    async def main() -> None:
        reader = Reader(plan.sources[0], READ, plan.compiled[0])
        try:
            assert reader.first_input(plan.sources[1]) is None
            assert reader.first_input(plan.sources[0]) is not None
        finally:
            await reader.aclose()

    asyncio.run(main())


def test_a_run_stopped_by_the_credential_check_reads_nothing_and_leaves_no_thread(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    data = _contacts(tmp_path / "c.csv", 200)
    options = RunOptions(read=READ, state_dir=str(tmp_path / "state"))
    with pytest.raises(AuthError, match="401"):
        run_import([str(data)], _mapping(tmp_path), creds(sandbox_server, token="wrong"),
                   options)
    assert sandbox_server.app.stats()["items_received"] == 0
    _wait_until(lambda: not _reading_threads())
    assert not _reading_threads()
    # and nothing of it is left to resume: the same command with the right token runs whole
    report = run_import([str(data)], _mapping(tmp_path), creds(sandbox_server), options)
    assert (report.rows_read, report.accepted, report.resumed) == (200, 200, False)
