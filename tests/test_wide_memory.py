"""A run's memory past the reader is bounded by bytes, not chunks (issue 15, issue 18 item 14).

Wide rows make big request bodies (100 items of 1,000 columns are 1.6 MB): what the uploader
holds — queued for the workers, being sent, or left behind by an idle worker — must not grow
with the row width times a count of chunks.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import polars as pl
import pytest

from importer.chunking import Chunk, json_array
from importer.client import ApiClient
from importer.config import Credentials
from importer.sandbox.app import SandboxApp
from importer.sandbox.server import RunningSandbox
from importer.upload import ChunkResult, Uploader, UploadSettings, _Handoff

ROOT = Path(__file__).resolve().parent.parent


def _chunk(i: int, body_bytes: int = 10, frame: pl.DataFrame | None = None) -> Chunk:
    body = b'{"_user_id":"U%d","pad":"%s"}' % (i, b"x" * body_bytes)
    return Chunk("contacts", ("f.csv",), (i,), (f"U{i}",), (body,),
                 (frame,) if frame is not None else (), json_array([body]))


def test_the_handoff_holds_at_most_its_byte_budget_and_always_lets_one_through() -> None:
    """Queued plus taken-and-not-done chunks stay within the byte budget (the count alone let
    ~100 chunks of 1.6 MB wait); a chunk bigger than the whole budget still goes, alone."""

    async def go() -> tuple[int, int, list[int]]:
        handoff = _Handoff(high=64, low=32, budget=1000)
        most_bytes = most_held = 0

        async def produce() -> None:
            nonlocal most_bytes, most_held
            for i in range(30):
                size = 5000 if i == 7 else 300  # one chunk alone over the budget
                await handoff.put(i, size)  # type: ignore[arg-type]
                most_bytes = max(most_bytes, handoff._bytes)
                most_held = max(most_held, handoff._held)
            handoff.close()

        got: list[int] = []

        async def work() -> None:
            while (item := await handoff.get()) is not None:
                got.append(item)  # type: ignore[arg-type]
                await asyncio.sleep(0)
                handoff.done(5000 if item == 7 else 300)  # type: ignore[comparison-overlap]

        await asyncio.gather(produce(), *(work() for _ in range(8)))
        assert handoff._held == 0 and handoff._bytes == 0
        return most_bytes, most_held, got

    most_bytes, most_held, got = asyncio.run(go())
    assert sorted(got) == list(range(30))
    assert most_held <= 4  # 3 x 300 bytes, plus the one that crossed 1,000 bytes
    assert most_bytes <= 1000 + 5000  # never more than the budget plus one chunk


@pytest.mark.anyio
async def test_an_idle_worker_does_not_keep_its_last_chunk_alive(asgi_app: SandboxApp) -> None:
    """Once a chunk is answered nothing in the uploader refers to it, even while its worker
    waits for the next one: 32 idle workers held 32 chunks (~100 MB of 1,000-column rows)."""
    creds = Credentials(api_url="http://127.0.0.1/v1", project="sandbox-project",
                        datasource="sandbox-datasource", token="sandbox-token")
    client = ApiClient(creds, transport=httpx.ASGITransport(app=asgi_app))
    refs: list[weakref.ref[pl.DataFrame]] = []
    answered = asyncio.Event()
    results = 0

    def on_result(result: ChunkResult) -> None:
        nonlocal results
        results += 1
        if results == 6:
            answered.set()

    async def chunks() -> AsyncIterator[Chunk]:
        for i in range(6):
            frame = pl.DataFrame({"i": [i]})
            refs.append(weakref.ref(frame))
            yield _chunk(i, frame=frame)
            del frame
        await answered.wait()  # every chunk answered; the workers idle, the run not over
        gc.collect()
        alive.extend(ref() is not None for ref in refs)

    alive: list[bool] = []
    uploader = Uploader(client, UploadSettings(concurrency=4), on_result=on_result,
                        on_unsent=lambda chunk: None)
    try:
        await asyncio.wait_for(uploader.run(chunks()), timeout=30)
    finally:
        await client.aclose()
    assert results == 6 and len(alive) == 6
    assert not any(alive), f"{sum(alive)} answered chunks still held"


def _wide_csv(path: Path, columns: int, rows: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write(",".join(f"c{i}" for i in range(columns)) + "\n")
        tail = ",".join(f"v{i:05d}" for i in range(1, columns))
        fh.writelines(f"U{r:07d},{tail}\n" for r in range(rows))


@pytest.mark.slow
def test_a_run_of_a_1000_column_file_stays_within_its_memory_bound(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    """``run`` of 1,000 columns against a rate-limited API (the queue fills up): the peak is
    the reader's and the mapping's, plus a bounded uploader."""
    box = make_sandbox(rate_limit=60, rate_window_s=1.0)
    data = tmp_path / "wide.csv"
    _wide_csv(data, 1000, 6000)  # 42 MB, 60 requests of 1.6 MB
    mapping = tmp_path / "wide.yaml"
    mapping.write_text("version: 1\ntarget: contacts\nfields:\n  _user_id: c0\n"
                       "custom_attributes: all_other_columns\n")
    # VmHWM, not ru_maxrss: the latter keeps the forked pytest's own size across exec
    script = textwrap.dedent(f"""
        import re, sys
        from importer.cli import main
        sys.argv = ["instasent-import", "run", {str(data)!r}, "--mapping", {str(mapping)!r},
                    "--quiet", "--rejects", {str(tmp_path / "rejects.csv")!r}]
        try:
            main()
        except SystemExit as exc:
            code = exc.code
        status = open("/proc/self/status").read()
        print(code, int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1)) // 1024)
    """)
    env = {**os.environ, "INSTASENT_API_URL": box.api_url,
           "INSTASENT_PROJECT": box.settings.project,
           "INSTASENT_DATASOURCE": box.settings.datasource,
           "INSTASENT_TOKEN": box.settings.token}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    code, peak_mb = map(int, done.stdout.split()[-2:])
    assert code == 0, done.stdout
    assert box.app.stats()["contacts"] == 6000
    assert peak_mb < 330, f"peak RSS {peak_mb} MB"  # ~285 MB here; 426 MB before


@pytest.mark.parametrize("send_nulls", [False, True])
@pytest.mark.parametrize("first", ["_user_id: id\n  _email: {column: email, type: email}",
                                   "_email: {column: email, type: email}\n  _user_id: id"])
def test_wide_pass_through_is_joined_in_groups_with_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch, first: str, send_nulls: bool
) -> None:
    """Past PASS_THROUGH_GROUP columns the members are joined group by group (a bounded
    plan per expression); the items are byte for byte those of one expression: every value,
    escaped where needed, nulls left out (or sent as null), no stray or missing comma when
    a whole group is empty — whether members carry their comma (a required first field) or
    are joined by a separator."""
    import orjson

    from importer.mapping import compile_mapping, engine, parse_mapping
    from importer.records import SourceBatch

    group = engine.PASS_THROUGH_GROUP
    width = 2 * group + 37
    columns: dict[str, list[str | None]] = {"id": ["1", "2", "3", "4"],
                                            "email": ["a@b.es", None, "c@d.es", None]}
    for i in range(width):
        columns[f"a{i}"] = [
            f"v{i}",
            None if group <= i < 2 * group else "x",  # a whole group empty
            'say "hi"\n' if i % 97 == 0 else None,  # escapes; mostly empty
            None,  # nothing passed through at all
        ]
    data = pl.DataFrame(columns).with_columns(
        pl.lit("in.csv").alias("_source_file"),
        pl.int_range(1, 5, dtype=pl.Int64).alias("_source_row"))
    mapping = (("send_nulls: true\n" if send_nulls else "") + "target: contacts\nfields:\n  "
               + first + "\ncustom_attributes: all_other_columns\n")
    compiled = compile_mapping(parse_mapping(mapping), data.columns)
    grouped = compiled.map_batch(SourceBatch("in.csv", data)).items["contacts"].bodies
    monkeypatch.setattr(engine, "PASS_THROUGH_GROUP", 10 * width)
    whole = compiled.map_batch(SourceBatch("in.csv", data)).items["contacts"].bodies
    assert grouped == whole
    items = [orjson.loads(b) for b in grouped]
    assert len(items) == 4
    assert items[0]["a0"] == "v0" and items[0][f"a{width - 1}"] == f"v{width - 1}"
    assert items[2]["a97"] == 'say "hi"\n'
    if not send_nulls:
        assert len(items[1]) == 1 + width - group  # _user_id, no _email, one group empty
        assert set(items[3]) == {"_user_id"}


@pytest.mark.slow
def test_mapping_a_20000_column_batch_stays_within_its_memory_bound() -> None:
    """all_other_columns over 20,000 columns (a Parquet batch of 37 rows, issue 18 item 14):
    one expression of 20,000 members cost ~450 MB to plan and evaluate; in groups, ~75 MB."""
    script = textwrap.dedent("""
        import re
        import polars as pl
        from importer.mapping import compile_mapping, parse_mapping
        from importer.records import SourceBatch

        def peak():
            status = open("/proc/self/status").read()
            return int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1)) // 1024

        rows, width = 37, 20_000
        data = pl.DataFrame({f"c{i}": [f"v{(r * 7 + i) % 100_000:05d}" for r in range(rows)]
                             for i in range(width)})
        data = data.with_columns(pl.lit("in.parquet").alias("_source_file"),
                                 pl.int_range(1, rows + 1, dtype=pl.Int64).alias("_source_row"))
        spec = parse_mapping("target: contacts\\nfields:\\n  _user_id: c0\\n"
                             "custom_attributes: all_other_columns\\n")
        compiled = compile_mapping(spec, data.columns)
        before = peak()
        items = compiled.map_batch(SourceBatch("in.parquet", data)).items["contacts"]
        print(len(items.bodies), len(items.bodies[-1]), peak() - before)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    count, size, grew_mb = map(int, done.stdout.split())
    assert count == 37 and size > 20_000 * 15
    assert grew_mb < 200, f"mapping one batch grew the peak by {grew_mb} MB"
