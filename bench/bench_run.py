"""``instasent-import run`` against the sandbox: the figures the run issue asks for.

1. rate-limited: ``--rate-limit 6000 --latency-ms 40:60``, 1M generated contact rows — wall
   time against the ideal (requests / 100 per second) and the share of 429s;
2. unthrottled: the importer's requests/s against a minimal client posting the same
   pre-built bodies at the same concurrency (bench/ceiling_client.py);
3. the importer's CPU (user + sys) per contact row on the 1M run; peak RSS for 5M rows;
4. mean batch fill on full runs.

Each importer and client is its own process, and so is the sandbox, so CPU and RSS are the
importer's alone. Loopback only; every child has a timeout.

    python -m bench.bench_run [--rows 1000000] [--big-rows 5000000] [--skip-big] [--repeat 3]
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


def unthrottled(rows: int, latency: str) -> dict[str, Any]:
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
        out: dict[str, Any] = {"rows": rows, "latency_ms": latency}
        for per_worker in (False, True):
            with sandbox("--latency-ms", latency) as box:
                flags = ["--per-worker"] if per_worker else []
                c = measure([sys.executable, "-m", "bench.ceiling_client", str(items),
                             "--concurrency", str(CONCURRENCY), *flags], env=box.env())
                assert c.returncode == 0, c.stderr[-2000:]
                result = json.loads(c.stdout)
            key = "ceiling_per_worker" if per_worker else "ceiling_shared"
            out[key + "_rps"] = result["requests_per_s"]
            out[key + "_cpu_us_per_req"] = result["cpu_s"] / result["requests"] * 1e6
        with sandbox("--latency-ms", latency) as box:
            report, m = importer(data, box.env(), "--concurrency", str(CONCURRENCY))
    # Like the ceiling client's own clock, the run's duration excludes interpreter start-up;
    # the process's wall time is reported beside it.
    out["importer_rps"] = report["requests"] / report["duration_s"]
    out["importer_rps_process_wall"] = report["requests"] / m.wall_s
    out["importer_wall_s"] = m.wall_s
    out["importer_cpu_us_per_row"] = m.cpu_s / rows * 1e6
    best = max(out["ceiling_shared_rps"], out["ceiling_per_worker_rps"])
    out["importer_vs_best_ceiling"] = out["importer_rps"] / best
    out["batch_fill"] = report["mean_batch_fill"]
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
    parser.add_argument("--repeat", type=int, default=3,
                        help="rate-limited runs; the median is reported (default 3)")
    args = parser.parse_args(argv)
    print(machine(), flush=True)
    results: dict[str, Any] = {}
    if args.only in (None, "rate"):
        results["rate_limited"] = rate_limited_runs(args.rows, max(args.repeat, 1))
        print(json.dumps(results["rate_limited"], indent=1), flush=True)
    if args.only in (None, "unthrottled"):
        for latency in ("0", "40:60"):
            results[f"unthrottled_{latency}"] = unthrottled(args.rows, latency)
            print(json.dumps(results[f"unthrottled_{latency}"], indent=1), flush=True)
    if args.only in (None, "big") and not args.skip_big:
        results["big"] = big(args.big_rows)
        print(json.dumps(results["big"], indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
