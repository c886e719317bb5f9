"""Same-key ordering (issue 15): stale contacts, and what the ordering costs in requests/s.

    python -m bench.bench_ordering [--rows 60000] [--runs 5]

1. Stale contacts: ``U0..Un, version=1`` then ``U0..Un, version=2`` (the issue's case, n = 100
   and n = 3,000), sandbox latency 40-60 ms, ``--concurrency 32``: contacts whose stored
   version is not 2, per run.
2. Throughput, unthrottled (no rate limit): an orders-like export where every customer has
   3 lines, sent as contacts (``_user_id: customer_id``) and as events carrying
   ``_user_data``; lines of one customer adjacent (sorted by customer) or at random
   positions; sandbox latency 0 and 20-40 ms. Requests/s and batch fill.

Runs against the sandbox on 127.0.0.1 (uvicorn in a thread of this process).
"""

from __future__ import annotations

import argparse
import csv
import random
import tempfile
import time
from pathlib import Path

from importer.config import Credentials
from importer.pipeline import RunOptions, run_import
from importer.sandbox.server import running_sandbox
from importer.sandbox.settings import SandboxSettings
from importer.upload import UploadSettings

CONTACTS = """\
version: 1
target: contacts
fields:
  _user_id: customer_id
  version: version
  amount: amount
"""

EVENTS = """\
version: 1
target: events
fields:
  _event_id: order_id
  _user_id: customer_id
  _event_type: {value: purchase}
  _event_parameters:
    amount: {column: amount, type: float}
    currency: {value: EUR}
  _user_data:
    version: version
"""


def _write(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["order_id", "customer_id", "version", "amount"])
        out.writerows(rows)


def _credentials(box: object) -> Credentials:
    s = box.settings  # type: ignore[attr-defined]
    return Credentials(box.api_url, s.project, s.datasource, s.token)  # type: ignore[attr-defined]


def stale_runs(folder: Path, n: int, runs: int) -> list[int]:
    rows = [(f"O{i}", f"U{i}", "1", "1") for i in range(n)]
    rows += [(f"O{n + i}", f"U{i}", "2", "1") for i in range(n)]
    data = folder / f"twice_{n}.csv"
    _write(data, rows)
    mapping = folder / "contacts.yaml"
    mapping.write_text(CONTACTS)
    found = []
    for run in range(runs):
        settings = SandboxSettings(latency_ms=(40, 60), seed=run)
        with running_sandbox(settings) as box:
            report = run_import([str(data)], mapping, _credentials(box),
                                RunOptions(upload=UploadSettings(concurrency=32)))
            assert report.accepted == 2 * n, report
            found.append(sum(
                1 for i in range(n)
                if (box.app.get_contact(f"U{i}") or {}).get("version") != "2"
            ))
    return found


def orders(
    n_rows: int, *, adjacent: bool, seed: int = 1, per_customer: int = 3
) -> list[tuple[str, str, str, str]]:
    customers = n_rows // per_customer
    keys = [f"C{i % customers:06d}" for i in range(n_rows)]
    if adjacent:
        keys.sort()
    else:
        random.Random(seed).shuffle(keys)
    return [(f"O{i}", k, str(i), f"{i % 500}.5") for i, k in enumerate(keys)]


def throughput(folder: Path, n_rows: int, latency: tuple[int, int]) -> None:
    for target, mapping_text in (("contacts", CONTACTS), ("events", EVENTS)):
        mapping = folder / f"{target}.yaml"
        mapping.write_text(mapping_text)
        for adjacent in (True, False):
            data = folder / f"orders_{adjacent}.csv"
            _write(data, orders(n_rows, adjacent=adjacent))
            with running_sandbox(SandboxSettings(latency_ms=latency)) as box:
                cpu = time.process_time()
                report = run_import([str(data)], mapping, _credentials(box), RunOptions())
                cpu = time.process_time() - cpu
            per_s = report.requests / report.duration_s
            where = "adjacent" if adjacent else "random  "
            print(f"  {target:<8} {where} latency {latency[0]:>2}-{latency[1]:<2} ms: "
                  f"{report.requests:>5} requests in {report.duration_s:6.2f} s = "
                  f"{per_s:7.1f} req/s, fill {report.mean_batch_fill:5.1f}, "
                  f"CPU {cpu / n_rows * 1e6:.2f} µs/row, accepted {report.accepted}",
                  flush=True)


def unique(folder: Path, n_rows: int, runs: int) -> None:
    """The hot path: unique keys (what most exports are), no latency, no rate limit."""
    mapping = folder / "contacts.yaml"
    mapping.write_text(CONTACTS)
    data = folder / "unique.csv"
    _write(data, orders(n_rows, adjacent=False, per_customer=1))
    for _ in range(runs):
        with running_sandbox(SandboxSettings()) as box:
            cpu = time.process_time()  # this process: importer and sandbox, every thread
            report = run_import([str(data)], mapping, _credentials(box), RunOptions())
            cpu = time.process_time() - cpu
        print(f"  unique keys, {n_rows:,} contacts: {report.duration_s:6.2f} s = "
              f"{report.rows_per_s:9,.0f} rows/s, {report.requests / report.duration_s:7.1f} "
              f"req/s, CPU (importer + sandbox) {cpu / n_rows * 1e6:.2f} µs/row", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-stale", action="store_true")
    parser.add_argument("--unique", type=int, default=0, help="rows of the unique-key run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if not args.skip_stale:
            for n in (100, 3000):
                print(f"stale contacts, U0..U{n - 1} twice, 40-60 ms, concurrency 32: "
                      f"{stale_runs(folder, n, args.runs)}", flush=True)
        if args.unique:
            unique(folder, args.unique, args.runs)
        print(f"throughput, {args.rows:,} rows, 3 lines per customer, no rate limit:")
        for latency in ((0, 0), (20, 40)):
            throughput(folder, args.rows, latency)


if __name__ == "__main__":
    main()
