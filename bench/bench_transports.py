"""The two candidate transports under httpx, side by side: CPU per request of each.

Issue 14 asked to choose between httpx's own default transport (httpcore) and
``httpx-aiohttp`` (aiohttp's client under the httpx API) by measuring both. Each case posts
the same pre-built 100-contact bodies to a sandbox process with 40-60 ms latency, through:

- ``httpx``: one ``httpx.AsyncClient`` and its keep-alive pool, httpx's default transport;
- ``httpx-aiohttp``: one ``httpx_aiohttp.HttpxAiohttpClient`` (aiohttp's connector pool);
- ``importer``: the importer's own ``ApiClient`` — httpx's default transport, one client
  per connection, each lent to one request at a time.

Two loads:

- ``paced``: 100 requests per second, the Ingest API's rate limit — the CPU a run pays for
  HTTP at the ceiling it is held to (``cpu_share_of_core``);
- ``unthrottled``: 32 requests in flight, as fast as the sandbox answers.

Every case runs in a child process of its own (so imports and the other case don't count),
against a fresh sandbox process. Loopback only.

    python -m bench.bench_transports [--requests 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from typing import Any

import httpx
import orjson

from bench.harness import DATASOURCE, PROJECT, TOKEN, machine, measure, sandbox

TRANSPORTS = ("httpx", "httpx-aiohttp", "importer")
RATE = 100.0  # requests per second: 6000 per minute, the API's rate limit
CONCURRENCY = 32


def _bodies(n: int) -> list[bytes]:
    return [
        orjson.dumps([{"_user_id": f"U{i}-{k}", "_email": f"u{i}-{k}@example.com",
                       "first_name": "Ana", "city": "Madrid"} for k in range(100)])
        for i in range(n)
    ]


def _client(transport: str) -> httpx.AsyncClient:
    base = (f"{os.environ['INSTASENT_API_URL']}/project/{PROJECT}/datasource/{DATASOURCE}")
    kw: dict[str, Any] = {
        "base_url": base, "timeout": 60,
        "headers": {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        "limits": httpx.Limits(max_connections=CONCURRENCY,
                               max_keepalive_connections=CONCURRENCY),
    }
    if transport == "httpx-aiohttp":
        from httpx_aiohttp import HttpxAiohttpClient

        return HttpxAiohttpClient(**kw)
    return httpx.AsyncClient(**kw)


async def _post_all(transport: str, mode: str, n: int) -> dict[str, Any]:
    bodies = _bodies(n)
    statuses: dict[int, int] = {}
    async with contextlib.AsyncExitStack() as stack:
        if transport == "importer":
            from importer.client import ApiClient
            from importer.config import Credentials

            api = ApiClient(Credentials(os.environ["INSTASENT_API_URL"], PROJECT, DATASOURCE,
                                        TOKEN), max_connections=CONCURRENCY)
            stack.push_async_callback(api.aclose)

            async def post(body: bytes) -> int:
                return (await api.post_items("contacts", body)).status_code
        else:
            client = await stack.enter_async_context(_client(transport))

            async def post(body: bytes) -> int:
                return (await client.post("/stream/contacts", content=body)).status_code

        await post(bodies[0])  # connect outside the clock
        queue = list(reversed(bodies))
        start = time.perf_counter()
        cpu = time.process_time()

        async def one(body: bytes) -> None:
            status = await post(body)
            statuses[status] = statuses.get(status, 0) + 1

        if mode == "paced":
            pending = set()
            for i, body in enumerate(bodies):
                delay = start + i / RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(body))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending)
        else:
            async def worker() -> None:
                while queue:
                    await one(queue.pop())

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu
    return {"transport": transport, "mode": mode, "requests": n, "wall_s": wall,
            "requests_per_s": n / wall, "cpu_s": cpu, "cpu_us_per_request": cpu / n * 1e6,
            "cpu_share_of_core": cpu / wall, "statuses": statuses}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", nargs=2, metavar=("TRANSPORT", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(asyncio.run(_post_all(args.one[0], args.one[1], args.requests))))
        return 0
    print(machine(), flush=True)
    for mode in ("paced", "unthrottled"):
        for transport in TRANSPORTS:
            runs = []
            for _ in range(args.repeat):
                with sandbox("--latency-ms", "40:60") as box:
                    m = measure([sys.executable, "-m", "bench.bench_transports", "--requests",
                                 str(args.requests), "--one", transport, mode], env=box.env(),
                                timeout=600)
                if m.returncode != 0:
                    raise RuntimeError(m.stderr[-2000:])
                runs.append(json.loads(m.stdout))
            cpu = statistics.median(r["cpu_us_per_request"] for r in runs)
            print(json.dumps({
                "transport": transport, "mode": mode, "requests": args.requests,
                "cpu_us_per_request_median": round(cpu, 1),
                "cpu_us_per_request_each": [round(r["cpu_us_per_request"], 1) for r in runs],
                "requests_per_s_median": round(
                    statistics.median(r["requests_per_s"] for r in runs), 1),
                "cpu_share_of_core_at_rate_limit": round(cpu * RATE / 1e6, 4),
                "statuses": runs[-1]["statuses"],
            }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
