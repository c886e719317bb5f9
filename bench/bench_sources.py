"""Benchmark the streaming reader: throughput and peak memory on generated contacts CSVs.

    .venv/bin/python bench/bench_sources.py                 # 1M and 5M rows (~115/580 MB)
    .venv/bin/python bench/bench_sources.py --rows 1000000 --variants --check

Each measurement runs the reader in a fresh child process (resolve_inputs + iter_batches over
the whole file, batches dropped as they come), and the parent reads that child's own peak RSS
with os.wait4, so nothing of the parent or of earlier runs is counted. The data is generated
deterministically into bench/data/ (git-ignored) and reused.

Targets (the issue): >= 2M rows/s, peak RSS <= 400 MB and not growing with the file size.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
MAX_RSS_MB = 400
MIN_ROWS_PER_S = 2_000_000
MAX_RSS_GROWTH_MB = 32  # "flat": 5x the rows may not cost more than this


def _child(path: str, batch_rows: int, delimiter: str | None, encoding: str | None) -> None:
    """Read the whole file; print what it took (imports excluded) as JSON."""
    from importer.sources import ReadOptions, iter_batches, resolve_inputs

    start_cpu = time.process_time()
    start = time.perf_counter()
    options = ReadOptions(delimiter=delimiter, encoding=encoding, batch_rows=batch_rows)
    rows = rejects = batches = 0
    for source in resolve_inputs([path], options):
        for batch in iter_batches(source, options):
            rows += batch.frame.height
            rejects += len(batch.rejects)
            batches += 1
    print(json.dumps({
        "rows": rows, "rejects": rejects, "batches": batches,
        "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - start_cpu,
    }))  # fmt: skip


def _baseline() -> None:
    """Only the imports and one tiny read: what the interpreter and libraries cost."""
    import polars as pl

    import importer.sources  # noqa: F401

    pl.read_csv(b"a,b\n1,2\n")
    print(json.dumps({"rows": 0, "rejects": 0, "batches": 0, "seconds": 0.0, "cpu_seconds": 0.0}))


def measure(args: list[str]) -> dict[str, float]:
    """Run a child, return its JSON report plus its own peak RSS in MB.

    The parent imports nothing heavy, so what the forked child inherits does not inflate it.
    """
    command = [sys.executable, str(Path(__file__).resolve()), *args]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"child failed ({child.returncode}): {' '.join(command)}")
    report: dict[str, float] = json.loads(output)
    report["peak_rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    return report


def contacts(rows: int) -> Path:
    return DATA / f"contacts_{rows}.csv"


def variants(rows: int) -> list[tuple[str, Path, list[str]]]:
    """The same data gzipped, in cp1252 (transcoded on the fly), and quoted everywhere."""
    return [
        ("gzip", DATA / f"contacts_{rows}.csv.gz", []),
        ("cp1252", DATA / f"contacts_{rows}_cp1252.csv", ["--encoding", "cp1252"]),
        ("quote-all", DATA / f"contacts_{rows}_quoted.csv", []),
    ]


def _prepare(rows: int, with_variants: bool) -> None:
    """Generate missing inputs (in a child: the parent stays small, see measure())."""
    import polars as pl
    from gen import generate_contacts_csv

    plain = contacts(rows)
    if not plain.exists():
        print(f"generating {plain} ...", file=sys.stderr)
        generate_contacts_csv(plain, rows)
    if not with_variants:
        return
    gz, cp, quoted = (path for _, path, _ in variants(rows))
    if not gz.exists():
        with plain.open("rb") as src, gzip.open(gz, "wb", compresslevel=1) as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    if not cp.exists():
        with plain.open(encoding="utf-8") as src, cp.open("w", encoding="cp1252",
                                                         errors="replace") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    if not quoted.exists():
        pl.scan_csv(plain, infer_schema=False).sink_csv(quoted, quote_style="always")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per file (best is kept)")
    parser.add_argument("--variants", action="store_true",
                        help="also gzip, cp1252 and quote-all copies of the smallest size")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--delimiter", help=argparse.SUPPRESS)
    parser.add_argument("--encoding", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        _baseline()
        return 0
    if args.child:
        _child(args.child, args.batch_rows, args.delimiter, args.encoding)
        return 0
    if args.prepare:
        _prepare(args.prepare, args.variants)
        return 0

    for rows in args.rows:
        wanted = ["--variants"] if args.variants and rows == min(args.rows) else []
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--prepare", str(rows),
                        *wanted], check=True)
    runs = [(f"{rows:,} rows", contacts(rows), []) for rows in args.rows]
    if args.variants:
        runs += variants(min(args.rows))
    base = measure(["--baseline"])
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
          f"(figures under contention if above ~0.5); imports alone: "
          f"{base['peak_rss_mb']:.0f} MB peak RSS")
    print(f"{'input':>20} {'MB':>7} {'rows':>10} {'rejects':>8} {'s':>6} {'cpu s':>6} "
          f"{'rows/s':>10} {'peak RSS MB':>12}")
    results = []
    for label, path, extra in runs:
        best: dict[str, float] | None = None
        for _ in range(args.repeat):
            report = measure(["--child", str(path), "--batch-rows", str(args.batch_rows), *extra])
            if best is None or report["seconds"] < best["seconds"]:
                best = report
        assert best is not None
        rate = best["rows"] / best["seconds"]
        results.append((label, best, rate))
        print(f"{label:>20} {path.stat().st_size / 1e6:7.0f} {best['rows']:10,.0f} "
              f"{best['rejects']:8,.0f} {best['seconds']:6.2f} {best['cpu_seconds']:6.2f} "
              f"{rate:10,.0f} {best['peak_rss_mb']:12.0f}")
    return _verdict(results[: len(args.rows)], args.check)


def _verdict(results: list[tuple[str, dict[str, float], float]], check: bool) -> int:
    rss = [r["peak_rss_mb"] for _, r, _ in results]
    rates = [rate for _, _, rate in results]
    failures = []
    if max(rss) > MAX_RSS_MB:
        failures.append(f"peak RSS {max(rss):.0f} MB > {MAX_RSS_MB} MB")
    if len(rss) > 1 and rss[-1] - rss[0] > MAX_RSS_GROWTH_MB:
        failures.append(f"peak RSS grows with the file: {rss[0]:.0f} -> {rss[-1]:.0f} MB")
    if min(rates) < MIN_ROWS_PER_S:
        failures.append(f"throughput {min(rates):,.0f} rows/s < {MIN_ROWS_PER_S:,}")
    for failure in failures:
        print(f"MISSED: {failure}")
    if not failures:
        print("all targets met")
    return 1 if failures and check else 0


if __name__ == "__main__":
    sys.exit(main())
