"""How many 100-item batches per second the sandbox accepts on loopback.

    .venv/bin/python bench/sandbox_load.py                 # contacts, server in a subprocess
    .venv/bin/python bench/sandbox_load.py --kind events --requests 2000 --concurrency 8
    .venv/bin/python bench/sandbox_load.py --url http://127.0.0.1:8790/v1   # a running one

By default the sandbox is started as a separate process (``serve(port=0)``) so the load
generator and the server do not share one GIL; ``--in-process``
serves it from a thread of this process instead. Bodies are built before the clock starts,
so the figure is the server's (plus httpx's) cost, not JSON encoding. Bounded: at most
``--requests`` requests and ``--duration`` seconds. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import psutil

from importer.network import is_loopback
from importer.sandbox.server import running_sandbox
from importer.sandbox.settings import (
    DEFAULT_DATASOURCE,
    DEFAULT_PROJECT,
    DEFAULT_TOKEN,
    SandboxSettings,
)

ROOT = Path(__file__).resolve().parent.parent

MAX_POOL = 1000  # distinct bodies; beyond that they repeat (contacts upsert the same ids)


@dataclass
class Result:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)


def build_bodies(kind: str, count: int, items: int) -> list[bytes]:
    bodies = []
    for b in range(min(count, MAX_POOL)):
        batch: list[dict[str, Any]]
        if kind == "contacts":
            batch = [
                {"_user_id": f"U{b}-{i}", "_first_name": "Ada", "_last_name": "Lovelace",
                 "_email": f"ada{b}.{i}@example.com", "_phone_mobile": f"+346{b:04d}{i:04d}",
                 "plan": "pro", "signup_source": "landing-a"}
                for i in range(items)
            ]
        else:
            batch = [
                {"_user_id": f"U{b}-{i}", "_event_id": f"E{b}-{i}", "_event_type": "purchase",
                 "_event_date": "2024-11-17T10:00:00.000Z",
                 "_event_parameters": {"amount": 49.9, "currency": "EUR", "sku": "SKU-42"}}
                for i in range(items)
            ]
        bodies.append(orjson.dumps(batch))
    return bodies


async def load(url: str, kind: str, bodies: list[bytes], requests: int, duration: float,
               concurrency: int) -> tuple[Result, float]:
    """``concurrency`` workers, each with its own one-connection ``httpx.AsyncClient``.

    One client per worker rather than one shared pool: httpcore's pool bookkeeping grows
    with the number of connections and would make the *client* the bottleneck.
    """
    base = f"{url}/project/{DEFAULT_PROJECT}/datasource/{DEFAULT_DATASOURCE}/stream/{kind}"
    headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}", "Content-Type": "application/json"}
    result = Result()
    sent = 0
    started = time.perf_counter()
    deadline = started + duration

    async def worker() -> None:
        nonlocal sent
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:
            while sent < requests and time.perf_counter() < deadline:
                body = bodies[sent % len(bodies)]
                sent += 1
                t0 = time.perf_counter()
                try:
                    response = await client.post(base, content=body)
                    result.statuses[response.status_code] += 1
                except httpx.HTTPError as exc:
                    result.errors[type(exc).__name__] += 1
                result.latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result, time.perf_counter() - started


async def load_raw(url: str, kind: str, bodies: list[bytes], requests: int, duration: float,
                   concurrency: int) -> tuple[Result, float]:
    """The same load over bare asyncio streams: shows the server's ceiling without httpx."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = f"{parts.path}/project/{DEFAULT_PROJECT}/datasource/{DEFAULT_DATASOURCE}/stream/{kind}"
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {DEFAULT_TOKEN}\r\nContent-Type: application/json\r\n")
    wires = [f"{head}Content-Length: {len(b)}\r\n\r\n".encode() + b for b in bodies]
    result = Result()
    sent = 0
    started = time.perf_counter()
    deadline = started + duration

    async def worker() -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while sent < requests and time.perf_counter() < deadline:
                wire = wires[sent % len(wires)]
                sent += 1
                t0 = time.perf_counter()
                writer.write(wire)
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                result.statuses[int(status_line.split()[1])] += 1
                result.latencies.append(time.perf_counter() - t0)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result, time.perf_counter() - started


@dataclass
class ServerProcess:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)


@contextlib.contextmanager
def sandbox_process(db_path: str | None) -> Iterator[ServerProcess]:
    """The sandbox served by another process on a free port."""
    # serve() directly rather than the CLI, so the benchmark does not depend on the rest
    # of the package importing cleanly.
    code = ("from importer.sandbox.server import serve; from importer.sandbox.settings "
            f"import SandboxSettings; serve(SandboxSettings(db_path={db_path!r}), port=0)")
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        for line in proc.stdout:  # the banner prints the URL before serving
            if "INSTASENT_API_URL=" in line:
                yield ServerProcess(line.split("=", 1)[1].strip(), proc.pid)
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the sandbox did not print its URL within 20 s")
        else:
            raise RuntimeError("the sandbox exited before printing its URL")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def report(kind: str, items: int, result: Result, elapsed: float, concurrency: int) -> None:
    done = sum(result.statuses.values()) + sum(result.errors.values())
    lat = sorted(result.latencies) or [0.0]
    p50, p95 = lat[len(lat) // 2], lat[int(len(lat) * 0.95)]
    accepted = result.statuses.get(202, 0)
    print(f"{kind}: {done} requests of {items} items in {elapsed:.2f} s, "
          f"concurrency {concurrency}")
    print(f"  statuses {dict(result.statuses)} transport errors {dict(result.errors)}")
    print(f"  {done / elapsed:,.0f} requests/s  {accepted * items / elapsed:,.0f} items/s  "
          f"latency p50 {p50 * 1000:.1f} ms p95 {p95 * 1000:.1f} ms")
    print(f"  load average {os.getloadavg()[0]:.2f} (2-core machine, shared)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=("contacts", "events"), default="contacts")
    parser.add_argument("--requests", type=int, default=3000, help="at most this many")
    parser.add_argument("--duration", type=float, default=20.0, help="at most this many s")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--client", choices=("httpx", "raw"), default="httpx",
                        help="raw: bare asyncio streams, to see the server's own ceiling")
    parser.add_argument("--db", help="serve with --db PATH (SQLite) instead of in memory")
    parser.add_argument("--url", help="an already running sandbox's API URL (loopback)")
    parser.add_argument("--in-process", action="store_true",
                        help="serve from a thread of this process (shares the GIL)")
    args = parser.parse_args(argv)
    if args.url and not is_loopback(urlsplit(args.url).hostname or ""):
        parser.error("--url must be a loopback address: this is a load generator")
    bodies = build_bodies(args.kind, args.requests, args.items)
    server: ServerProcess | None = None
    with contextlib.ExitStack() as stack:
        if args.url:
            url = args.url.rstrip("/")
        elif args.in_process:
            url = stack.enter_context(running_sandbox(SandboxSettings(db_path=args.db))).api_url
        else:
            server = stack.enter_context(sandbox_process(args.db))
            url = server.url
        run = load_raw if args.client == "raw" else load
        cpu_before = server.cpu_seconds() if server else 0.0
        result, elapsed = asyncio.run(
            run(url, args.kind, bodies, args.requests, args.duration, args.concurrency)
        )
        server_cpu = server.cpu_seconds() - cpu_before if server else None
    where = "in-process" if args.in_process else args.url or "subprocess"
    print(f"client {args.client}, server {where}")
    report(args.kind, args.items, result, elapsed, args.concurrency)
    if server_cpu is not None:
        done = sum(result.statuses.values())
        print(f"  server CPU {server_cpu:.2f} s = {server_cpu / elapsed:.0%} of one core, "
              f"{server_cpu / max(done, 1) * 1e6:.0f} us per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
