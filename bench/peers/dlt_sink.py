"""A data engineer's "load this file into Instasent" with dlt: a resource, a destination sink.

The resource reads the export with pandas and yields rows mapped to Instasent items (the same
simple mapping as the hand-written script); ``@dlt.destination(batch_size=100)`` receives them
100 at a time and posts each batch with ``requests``, retrying a 5xx a few times. dlt's own
state lives in a temporary directory and its telemetry is off: no network but 127.0.0.1.

    python -m bench.peers.dlt_sink contacts FILE.csv      (INSTASENT_* set)
    python -m bench.peers.dlt_sink events FILE.parquet

Prints one JSON line: rows read, rows sent, requests, and the rows it knows failed.
"""

from __future__ import annotations

import os
import sys
import tempfile

# Before dlt is imported: no telemetry, no home-directory state.
os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
_STATE = tempfile.TemporaryDirectory(prefix="bench-dlt-")
os.environ["DLT_DATA_DIR"] = _STATE.name

import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import dlt  # noqa: E402
import pandas as pd  # type: ignore[import-untyped]  # noqa: E402
import requests  # noqa: E402
from dlt.common import json as dlt_json  # noqa: E402
from dlt.common.schema import TTableSchema  # noqa: E402
from dlt.common.typing import TDataItems  # noqa: E402

from bench.peers.handwritten import contact, event  # noqa: E402

ATTEMPTS = 4
RETRY_SLEEP_S = 0.5
CHUNK_ROWS = 10_000

BASE = (
    f"{os.environ['INSTASENT_API_URL']}/project/{os.environ['INSTASENT_PROJECT']}"
    f"/datasource/{os.environ['INSTASENT_DATASOURCE']}/stream"
)
_session = requests.Session()
_session.headers["Authorization"] = f"Bearer {os.environ['INSTASENT_TOKEN']}"
_session.headers["Content-Type"] = "application/json"
_lock = threading.Lock()
counts = {"rows": 0, "sent": 0, "requests": 0, "failed": 0}


def _add(**delta: int) -> None:
    # dlt's loader may call the sink from worker threads.
    with _lock:
        for key, value in delta.items():
            counts[key] += value


def rows(kind: str, path: str) -> Iterator[list[dict[str, Any]]]:
    if kind == "contacts":
        chunks = pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=CHUNK_ROWS)
        for chunk in chunks:
            _add(rows=len(chunk))
            yield [contact(r) for r in chunk.to_dict("records")]
    else:
        df = pd.read_parquet(path)
        for start in range(0, len(df), CHUNK_ROWS):
            part = df.iloc[start:start + CHUNK_ROWS]
            _add(rows=len(part))
            yield [event(r) for r in part.to_dict("records")]


@dlt.destination(batch_size=100, name="instasent", naming_convention="direct",
                 max_table_nesting=0)
def instasent(items: TDataItems, table: TTableSchema) -> None:
    """One POST per batch; the table name is the endpoint (contacts or events)."""
    url = f"{BASE}/{table['name']}"
    # dlt has turned ISO date strings into datetimes: its own encoder writes them back.
    body = [dict(item) for item in items]
    data = dlt_json.dumps(body)
    for _ in range(ATTEMPTS):
        _add(requests=1)
        try:
            resp = _session.post(url, data=data, timeout=30)
        except requests.ConnectionError:
            time.sleep(RETRY_SLEEP_S)
            continue
        if resp.status_code >= 500:
            time.sleep(RETRY_SLEEP_S)
            continue
        resp.raise_for_status()
        _add(sent=len(body), failed=int(resp.json().get("entity", {}).get("failed", 0)))
        return
    _add(sent=len(body), failed=len(body))
    print(f"batch of {len(body)} failed after {ATTEMPTS} attempts", file=sys.stderr)


def main() -> None:
    kind, path = sys.argv[1], sys.argv[2]
    resource = dlt.resource(rows(kind, path), name=kind, write_disposition="append")
    pipeline = dlt.pipeline(
        pipeline_name=f"instasent_{kind}",
        destination=instasent,
        pipelines_dir=os.path.join(_STATE.name, "pipelines"),
        dataset_name="bench",
    )
    try:
        pipeline.run(resource)
    finally:
        _STATE.cleanup()
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
