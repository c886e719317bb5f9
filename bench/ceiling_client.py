"""The ceiling: pre-built request bodies posted with httpx, nothing else.

It posts through httpx's own default transport, the one the importer sends with
(``importer.client.ApiClient``), so the comparison is of the importer's work, not of HTTP
clients.

No reading, no mapping, no reconciliation: the physical limit of this machine and sandbox at a
given concurrency, to compare the importer against. Bodies come from the importer's own
``--dry-run-output`` (one item per line), packed 100 to a request.

    python -m bench.ceiling_client ITEMS.ndjson --concurrency 32   (INSTASENT_* set)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx
import orjson


def load_bodies(path: Path, per_request: int = 100) -> list[tuple[str, bytes]]:
    """(target, body) per request, in file order."""
    out: list[tuple[str, bytes]] = []
    items: list[bytes] = []
    target = ""
    with path.open("rb") as fh:
        for line in fh:
            record = orjson.loads(line)
            if items and (record["target"] != target or len(items) == per_request):
                out.append((target, b"[" + b",".join(items) + b"]"))
                items = []
            target = record["target"]
            items.append(orjson.dumps(record["item"]))
    if items:
        out.append((target, b"[" + b",".join(items) + b"]"))
    return out


async def post_all(
    bodies: list[tuple[str, bytes]], concurrency: int, per_worker: bool
) -> dict[str, object]:
    """``per_worker``: one client (one connection) per worker, which sidesteps httpcore's
    pool bookkeeping and is the faster way to drive httpx; otherwise one shared client."""
    base = (
        f"{os.environ['INSTASENT_API_URL']}/project/{os.environ['INSTASENT_PROJECT']}"
        f"/datasource/{os.environ['INSTASENT_DATASOURCE']}"
    )
    headers = {
        "Authorization": f"Bearer {os.environ['INSTASENT_TOKEN']}",
        "Content-Type": "application/json",
    }
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    queue = list(reversed(bodies))
    statuses: dict[int, int] = {}
    n_clients = concurrency if per_worker else 1
    clients = [
        httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60)
        for _ in range(n_clients)
    ]

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            target, body = queue.pop()
            response = await client.post(f"/stream/{target}", content=body)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    start = time.perf_counter()
    cpu = time.process_time()
    await asyncio.gather(*(worker(clients[i % n_clients]) for i in range(concurrency)))
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    for client in clients:
        await client.aclose()
    return {"requests": len(bodies), "wall_s": wall, "requests_per_s": len(bodies) / wall,
            "cpu_s": cpu, "statuses": statuses, "per_worker": per_worker}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("items", type=Path)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--per-worker", action="store_true",
                        help="one client per worker instead of one shared client")
    args = parser.parse_args(argv)
    bodies = load_bodies(args.items)
    result = asyncio.run(post_all(bodies, args.concurrency, args.per_worker))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
