"""``instasent-import run`` against the sandbox: the figures the run issue asks for.

1. rate-limited: ``--rate-limit 6000 --latency-ms 40:60``, 1M generated contact rows — wall
   time against the ideal (requests / 100 per second) and the share of 429s;
2. unthrottled: the importer's requests/s against a minimal client posting the same
   pre-built bodies at the same concurrency (bench/ceiling_client.py), in alternate rounds,
   the median round reported;
3. the importer's CPU (user + sys) per contact row on the 1M run; peak RSS for 5M rows;
4. mean batch fill on full runs.

Each importer and client is its own process, and so is the sandbox, so CPU and RSS are the
importer's alone. Loopback only; every child has a timeout.

    python -m bench.bench_run [--rows 1000000] [--big-rows 5000000] [--skip-big] [--repeat 3]
                              [--only rate|unthrottled|big] [--latency 0|40:60 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.gen import generate_contacts_csv
from bench.harness import DATA, ROOT, machine, measure, sandbox

MAPPING = ROOT / "bench" / "mappings" / "contacts.yaml"
CONCURRENCY = 32


def dataset(rows: int) -> Path:
    path = DATA / f"contacts_{rows}.csv"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        generate_contacts_csv(path, rows)
    return path


def importer(data: Path, env: dict[str, str], *extra: str) -> tuple[dict[str, Any], Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "importer", "run", str(data), "--mapping", str(MAPPING),
               "--quiet", "--output", "json", "--rejects", f"{tmp}/rejects.csv",
               "--state-dir", f"{tmp}/state", *extra]
        m = measure(cmd, env=env, timeout=1800)
    if m.returncode not in (0, 3):
        raise RuntimeError(f"importer exited {m.returncode}: {m.stderr[-2000:]}")
    return json.loads(m.stdout), m


def rate_limited(rows: int) -> dict[str, Any]:
    data = dataset(rows)
    with sandbox("--rate-limit", "6000", "--latency-ms", "40:60") as box:
        report, m = importer(data, box.env())
    ideal = report["requests"] / 100.0  # 6000 per minute
    return {
        "rows": rows, "wall_s": m.wall_s, "ideal_s": ideal, "ratio_to_ideal": m.wall_s / ideal,
        # the run itself, without interpreter start-up and exit (seconds on a loaded machine)
        "run_duration_s": report["duration_s"], "run_ratio_to_ideal": report["duration_s"] / ideal,
        "requests": report["requests"], "429s": report["rate_limited"],
        "share_429": report["rate_limited"] / max(report["requests"], 1),
        "cpu_s": m.cpu_s, "cpu_us_per_row": m.cpu_s / rows * 1e6, "peak_rss_mb": m.peak_rss_mb,
        "batch_fill": report["mean_batch_fill"], "accepted": report["accepted"],
        "rejected": report["rejected"],
    }  # fmt: skip


def rate_limited_runs(rows: int, repeat: int) -> dict[str, Any]:
    """The rate-limited run ``repeat`` times: its CPU moves ±10% between identical runs on
    this VM (the sandbox shares the two cores), so the median run is reported in full and
    every run's CPU, wall ratio and 429 share beside it."""
    runs = [rate_limited(rows) for _ in range(repeat)]
    median = sorted(runs, key=lambda r: r["cpu_us_per_row"])[len(runs) // 2]
    return {
        **median,
        "runs": len(runs),
        "cpu_us_per_row_each": [round(r["cpu_us_per_row"], 2) for r in runs],
        "ratio_to_ideal_each": [round(r["ratio_to_ideal"], 3) for r in runs],
        "run_ratio_to_ideal_each": [round(r["run_ratio_to_ideal"], 3) for r in runs],
        "share_429_max": max(r["share_429"] for r in runs),
        "peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs),
    }


def _ceiling(items: Path, latency: str, per_worker: bool) -> dict[str, Any]:
    with sandbox("--latency-ms", latency) as box:
        flags = ["--per-worker"] if per_worker else []
        c = measure([sys.executable, "-m", "bench.ceiling_client", str(items),
                     "--concurrency", str(CONCURRENCY), *flags], env=box.env())
    assert c.returncode == 0, c.stderr[-2000:]
    result: dict[str, Any] = json.loads(c.stdout)
    return result


def unthrottled(rows: int, latency: str, rounds: int = 3) -> dict[str, Any]:
    """The importer against the ceiling client, ``rounds`` times each, alternately.

    The two share the two cores with the sandbox, so a run's figure moves ±1.5% with what
    the machine does meanwhile (bench/results/transport.md): each round times the ceiling
    (one client per worker, the faster) and then the importer back to back, and the median
    of the rounds' ratios is reported beside every round's figures.
    """
    data = dataset(rows)
    with tempfile.TemporaryDirectory() as tmp:
        items = Path(tmp) / "items.ndjson"
        dry = measure([sys.executable, "-m", "importer", "run", str(data), "--mapping",
                       str(MAPPING), "--dry-run", "--dry-run-output", str(items), "--quiet",
                       "--rejects", f"{tmp}/r.csv"], timeout=1800)
        assert dry.returncode in (0, 3), dry.stderr[-2000:]
        # The dry run leaves ~250 MB of dirty pages; their write-back during the next minute
        # cost the importer's run 2-4% (bench/results/transport.md): flushed before timing.
        os.sync()
        out: dict[str, Any] = {"rows": rows, "latency_ms": latency, "rounds": rounds}
        shared = _ceiling(items, latency, per_worker=False)  # once, for the record
        out["ceiling_shared_rps"] = shared["requests_per_s"]
        out["ceiling_shared_cpu_us_per_req"] = shared["cpu_s"] / shared["requests"] * 1e6
        each: list[dict[str, float]] = []
        for _ in range(rounds):
            ceiling = _ceiling(items, latency, per_worker=True)
            with sandbox("--latency-ms", latency) as box:
                report, m = importer(data, box.env(), "--concurrency", str(CONCURRENCY))
            # Like the ceiling client's own clock, the run's duration excludes interpreter
            # start-up; the process's wall time is reported beside it.
            rps = report["requests"] / report["duration_s"]
            each.append({
                "ceiling_rps": ceiling["requests_per_s"],
                "ceiling_cpu_us_per_req": ceiling["cpu_s"] / ceiling["requests"] * 1e6,
                "importer_rps": rps,
                "importer_rps_process_wall": report["requests"] / m.wall_s,
                "importer_cpu_us_per_row": m.cpu_s / rows * 1e6,
                "ratio": rps / ceiling["requests_per_s"],
                "batch_fill": report["mean_batch_fill"],
            })  # fmt: skip
    median = sorted(each, key=lambda r: r["ratio"])[len(each) // 2]
    out.update({
        "ceiling_per_worker_rps": median["ceiling_rps"],
        "ceiling_per_worker_cpu_us_per_req": median["ceiling_cpu_us_per_req"],
        "importer_rps": median["importer_rps"],
        "importer_rps_process_wall": median["importer_rps_process_wall"],
        "importer_cpu_us_per_row": median["importer_cpu_us_per_row"],
        "importer_vs_best_ceiling": median["ratio"],
        "batch_fill": median["batch_fill"],
        "ratio_each": [round(r["ratio"], 3) for r in each],
        "ceiling_rps_each": [round(r["ceiling_rps"], 1) for r in each],
        "importer_rps_each": [round(r["importer_rps"], 1) for r in each],
    })  # fmt: skip
    return out


def big(rows: int) -> dict[str, Any]:
    data = dataset(rows)
    with sandbox() as box:
        report, m = importer(data, box.env())
    return {"rows": rows, "wall_s": m.wall_s, "peak_rss_mb": m.peak_rss_mb,
            "cpu_us_per_row": m.cpu_s / rows * 1e6, "batch_fill": report["mean_batch_fill"],
            "rows_per_s": rows / m.wall_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=5_000_000)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--only", choices=("rate", "unthrottled", "big"), default=None)
    parser.add_argument("--latency", action="append", choices=("0", "40:60"), default=None,
                        help="the unthrottled runs' sandbox latency, ms (repeatable; default "
                             "both)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rate-limited runs, and unthrottled rounds (ceiling, then "
                             "importer); the median is reported (default 3)")
    args = parser.parse_args(argv)
    print(machine(), flush=True)
    results: dict[str, Any] = {}
    if args.only in (None, "rate"):
        results["rate_limited"] = rate_limited_runs(args.rows, max(args.repeat, 1))
        print(json.dumps(results["rate_limited"], indent=1), flush=True)
    if args.only in (None, "unthrottled"):
        for latency in args.latency or ("0", "40:60"):
            results[f"unthrottled_{latency}"] = unthrottled(args.rows, latency,
                                                            max(args.repeat, 1))
            print(json.dumps(results[f"unthrottled_{latency}"], indent=1), flush=True)
    if args.only in (None, "big") and not args.skip_big:
        results["big"] = big(args.big_rows)
        print(json.dumps(results["big"], indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
