"""The script a user would write to load an export into Instasent themselves.

Deliberately plain, as a user would write it: pandas reads the whole file, a loop posts
100-row slices with ``requests`` one after the other, and a 5xx or a dropped connection is
retried a few times after a sleep. Its own simple field mapping, phone numbers sent as they
are. It is a benchmark peer, not part of the importer: do not "improve" it.

    python -m bench.peers.handwritten contacts FILE.csv      (INSTASENT_* set)
    python -m bench.peers.handwritten events FILE.parquet

Prints one JSON line: rows read, rows sent, requests, and the rows it knows failed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import pandas as pd  # type: ignore[import-untyped]  # bench-only, no stubs installed
import requests

BATCH = 100
ATTEMPTS = 4
RETRY_SLEEP_S = 0.5

API = os.environ["INSTASENT_API_URL"]
PROJECT = os.environ["INSTASENT_PROJECT"]
DATASOURCE = os.environ["INSTASENT_DATASOURCE"]
TOKEN = os.environ["INSTASENT_TOKEN"]
BASE = f"{API}/project/{PROJECT}/datasource/{DATASOURCE}/stream"


def contact(row: dict[str, Any]) -> dict[str, Any]:
    item = {
        "_user_id": row["customer_id"],
        "_first_name": row["first_name"],
        "_last_name": row["last_name"],
        "_email": row["email"],
        "_phone_mobile": row["phone"],
    }
    return {k: v for k, v in item.items() if v != ""}  # empty cells: leave them out


def event(row: dict[str, Any]) -> dict[str, Any]:
    when = row["ordered_at"].tz_convert("UTC")
    return {
        "_event_id": f"{row['order_id']}-{row['line_no']}",
        "_user_id": row["customer_id"],
        "_event_type": "purchase",
        "_event_date": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
        "_event_parameters": {
            "order_id": row["order_id"],
            "sku": row["sku"],
            "amount": float(row["amount"]),
            "currency": row["currency"],
        },
    }


def post(session: requests.Session, url: str, items: list[dict[str, Any]]) -> int:
    """POST one slice; returns how many of its rows failed (0 when all went in)."""
    for _ in range(ATTEMPTS):
        try:
            resp = session.post(url, json=items, timeout=30)
        except requests.ConnectionError:
            time.sleep(RETRY_SLEEP_S)
            continue
        if resp.status_code >= 500:
            time.sleep(RETRY_SLEEP_S)
            continue
        if resp.status_code >= 300:
            print(f"slice failed with {resp.status_code}: {resp.text[:200]}", file=sys.stderr)
            return len(items)
        failed = resp.json().get("entity", {}).get("failed", 0)
        return int(failed)
    print(f"slice failed after {ATTEMPTS} attempts", file=sys.stderr)
    return len(items)


def main() -> None:
    kind, path = sys.argv[1], sys.argv[2]
    if kind == "contacts":
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        to_item = contact
    else:
        df = pd.read_parquet(path)
        to_item = event
    rows = df.to_dict("records")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    url = f"{BASE}/{kind}"
    sent = requests_made = failed = 0
    for start in range(0, len(rows), BATCH):
        items = [to_item(r) for r in rows[start:start + BATCH]]
        failed += post(session, url, items)
        sent += len(items)
        requests_made += 1
    print(json.dumps({"rows": len(rows), "sent": sent, "requests": requests_made,
                      "failed": failed}))


if __name__ == "__main__":
    main()
