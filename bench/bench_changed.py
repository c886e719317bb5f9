"""``run --changed-only``: two nights of a nightly CRM export (the changed-only issue's figures).

1. Night 1: N generated contacts (bench/gen.py), sent in full at the rate limit
   (``--rate-limit 6000 --latency-ms 40:60``), recording the state.
2. Night 2: the same export with 1% of the rows changed, 0.5% new and 0.2% removed (picked
   among the contacts night 1 recorded, deterministically), run with ``--changed-only
   --delete-missing --yes`` against the same sandbox. Checked: exactly the changed + new
   items are sent, in ceil((changed + new) / 100) requests, exactly the removed contacts are
   deleted; timed against the ideal (those requests at the rate limit, the POSTs and the
   DELETEs each on their own endpoint's budget, added up) plus the local read/map time of the
   file (a ``--dry-run`` of night 2, which reads, maps and chunks everything).
3. The comparison alone: a state of K recorded keys (default 10M) loaded in a fresh process,
   then K items compared in 25k-row batches (hashing included): rows/s and peak RSS.
4. The state on disk per million keys.

    python -m bench.bench_changed [--rows 2000000] [--keys 10000000] [--only nights|compare]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

from bench.gen import generate_contacts_csv
from bench.harness import DATA, ROOT, machine, measure, sandbox

MAPPING = ROOT / "bench" / "mappings" / "contacts.yaml"
CHANGED, NEW, REMOVED = 0.01, 0.005, 0.002


def night1_data(rows: int) -> Path:
    path = DATA / f"contacts_{rows}.csv"
    if not path.exists():
        _in_child("generate", str(path), rows)
    return path


def generate(path: str, rows: int) -> str:
    return str(generate_contacts_csv(path, rows))


def _snapshot(state: Path) -> Path:
    (manifest,) = state.glob("changed/*/contacts/*/*/state.json")
    return manifest.parent / json.loads(manifest.read_text())["snapshot"]


def night2_data(night1: str, state: str, out: str, rows: int) -> dict[str, int]:
    """Night 1's file with changes; returns how many rows of each kind."""
    recorded = pl.read_parquet(_snapshot(Path(state)), columns=["key"])["key"]  # key-hash order
    n_changed, n_new, n_removed = (round(rows * CHANGED), round(rows * NEW),
                                   round(rows * REMOVED))
    changed = recorded[:n_changed]
    removed = recorded[n_changed:n_changed + n_removed]
    template = recorded[n_changed + n_removed:n_changed + n_removed + n_new]
    frame = pl.read_csv(night1, infer_schema=False)
    today = frame.filter(~pl.col("customer_id").is_in(removed.implode())).with_columns(
        pl.when(pl.col("customer_id").is_in(changed.implode()))
        .then(pl.coalesce(pl.col("city"), pl.lit("")) + " Norte")
        .otherwise(pl.col("city")).alias("city"))
    new = (frame.filter(pl.col("customer_id").is_in(template.implode()))
           .with_columns(("NEW" + pl.col("customer_id")).alias("customer_id")))
    pl.concat([today, new]).write_csv(out)
    return {"changed": n_changed, "new": n_new, "removed": n_removed}


def _in_child(function: str, *args: Any) -> Any:
    """Call a function of this module in a child process and return its JSON result.

    Why: a child's peak RSS (``ru_maxrss``) starts from its parent's at spawn on Linux, so
    the benchmark's own process stays small by building its data in children.
    """
    code = ("import json, sys; import bench.bench_changed as b; "
            f"print(json.dumps(b.{function}(*json.loads(sys.argv[1]))))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps([str(a) if isinstance(a, Path)
                                                                   else a for a in args])],
                          cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode:
        raise RuntimeError(f"{function} failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout)


def _run(data: Path, env: dict[str, str], state: Path, tmp: Path, *extra: str
         ) -> tuple[dict[str, Any], Any]:
    cmd = [sys.executable, "-m", "importer", "run", str(data), "--mapping", str(MAPPING),
           "--quiet", "--output", "json", "--rejects", str(tmp / "rejects.csv"),
           "--state-dir", str(state), *extra]
    m = measure(cmd, env=env, timeout=3600)
    if m.returncode not in (0, 3):
        raise RuntimeError(f"importer exited {m.returncode}: {m.stderr[-3000:]}")
    return json.loads(m.stdout), m


def nights(rows: int, rate_limit: int = 6000, pause: float = 61.0) -> dict[str, Any]:
    night1 = night1_data(rows)
    tmp = Path(tempfile.mkdtemp(prefix="bench-changed-"))
    try:
        state = tmp / "state"
        limits = ("--rate-limit", str(rate_limit), "--latency-ms", "40:60") if rate_limit else ()
        with sandbox(*limits) as box:
            r1, m1 = _run(night1, box.env(), state, tmp, "--changed-only")
            snapshot = _snapshot(state)
            state_bytes = snapshot.stat().st_size
            night2 = tmp / "night2.csv"
            kinds = _in_child("night2_data", night1, state, night2, rows)
            dry = measure([sys.executable, "-m", "importer", "run", str(night2), "--mapping",
                           str(MAPPING), "--dry-run", "--quiet", "--rejects",
                           str(tmp / "dry.csv"), "--state-dir", str(tmp / "dry")],
                          env=box.env(), timeout=1800)
            assert dry.returncode in (0, 3), dry.stderr[-2000:]
            deletes_before = box.stats()["contacts_deleted"]
            # the rate window of night 1's last minute must not cut into night 2's
            time.sleep(pause)
            r2, m2 = _run(night2, box.env(), state, tmp, "--changed-only", "--delete-missing",
                          "--yes")
            deleted = box.stats()["contacts_deleted"] - deletes_before
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    to_send = kinds["changed"] + kinds["new"]
    deletion = r2["deletion"] or {}
    per_s = (rate_limit or 6000) / 60.0
    ideal_posts = r2["requests"] / per_s
    ideal_deletes = deletion.get("requests", 0) / per_s
    budget = 1.05 * (ideal_posts + ideal_deletes + dry.wall_s)
    return {
        "rows": rows,
        "night1": {"wall_s": m1.wall_s, "requests": r1["requests"],
                   "accepted": r1["accepted"], "rejected": r1["rejected"],
                   "cpu_s": m1.cpu_s, "peak_rss_mb": m1.peak_rss_mb,
                   "batch_fill": r1["mean_batch_fill"]},
        "night2_input": kinds,
        "night2": {
            "wall_s": m2.wall_s, "cpu_s": m2.cpu_s, "peak_rss_mb": m2.peak_rss_mb,
            "rows_read": r2["rows_read"], "accepted": r2["accepted"],
            "unchanged": r2["unchanged"], "rejected": r2["rejected"],
            "requests": r2["requests"], "expected_requests": math.ceil(to_send / 100),
            "items_sent": r2["items_sent"], "expected_items": to_send,
            "batch_fill": r2["mean_batch_fill"], "429s": r2["rate_limited"],
            "deleted": deletion.get("deleted"), "deleted_in_sandbox": deleted,
            "expected_deleted": kinds["removed"], "delete_requests": deletion.get("requests"),
        },
        "read_map_s": dry.wall_s,
        "ideal_posts_s": ideal_posts,
        "ideal_deletes_s": ideal_deletes,
        "budget_s": budget,
        "night2_vs_budget": m2.wall_s / budget,
        "night2_vs_ideal_plus_read": m2.wall_s / (ideal_posts + ideal_deletes + dry.wall_s),
        "state_bytes": state_bytes,
        "state_mb_per_million_keys": state_bytes / 1e6 / (r1["accepted"] / 1e6),
    }


_COMPARE = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
from importer.changes import StateKey, load_state

root, keys = Path(sys.argv[1]), int(sys.argv[2])
key = StateKey("http://127.0.0.1/v1", "p", "d", "contacts", "0" * 64)
t = time.perf_counter()
state = load_state(root, key, write=False)
load_s = time.perf_counter() - t
batch, spent, cpu, n = 25_000, 0.0, 0.0, 0
for start in range(0, keys, batch):
    ids = [f"C{i:09d}" for i in range(start, min(keys, start + batch))]
    bodies = [b'{"_user_id":"%s","_email":"user%d@example.com","city":"Madrid"}' % (k.encode(), i)
              for i, k in enumerate(ids, start)]
    t, c = time.perf_counter(), time.process_time()
    keep = state.compare(ids, bodies)
    spent += time.perf_counter() - t
    cpu += time.process_time() - c
    n += len(ids)
print(json.dumps({"keys": keys, "load_s": load_s, "compare_s": spent, "rows_per_s": n / spent,
                  "compare_cpu_s": cpu, "rows_per_cpu_s": n / cpu,
                  "sent": state.sent, "unchanged": state.unchanged,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def build_state(root: str, keys: int) -> dict[str, Any]:
    """A K-key state written through the real log and compaction (in a child process)."""
    from importer.changes import AckLog, StateKey, compact

    key = StateKey("http://127.0.0.1/v1", "p", "d", "contacts", "0" * 64)
    directory = key.dir(root)
    directory.mkdir(parents=True)
    log = AckLog(directory / "acks-bench.log")
    for start in range(0, keys, 100_000):
        ids = [f"C{i:09d}" for i in range(start, min(keys, start + 100_000))]
        # 1 in 100 differs from what the comparison will see: those are "changed"
        bodies = [b'{"_user_id":"%s","_email":"user%d@example.com","city":"%s"}'
                  % (k.encode(), i, b"Madrid" if i % 100 else b"Sevilla")
                  for i, k in enumerate(ids, start)]
        log.append(ids, bodies)
    log.close()
    t = time.perf_counter()
    compact(directory, {"bench": True})
    size = next(directory.glob("snapshot-*.parquet")).stat().st_size
    return {"compact_s": time.perf_counter() - t, "state_bytes": size}


def compare(keys: int) -> dict[str, Any]:
    """A fresh process loads a K-key state and compares K items against it."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    try:
        built = _in_child("build_state", str(tmp), keys)
        m = measure([sys.executable, "-c", _COMPARE, str(tmp), str(keys)], timeout=1800)
        assert m.returncode == 0, m.stderr[-2000:]
        out: dict[str, Any] = json.loads(m.stdout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out.update(process_peak_rss_mb=m.peak_rss_mb, **built,
               state_mb_per_million_keys=built["state_bytes"] / 1e6 / (keys / 1e6))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--keys", type=int, default=10_000_000)
    parser.add_argument("--only", choices=("nights", "compare"), default=None)
    parser.add_argument("--rate-limit", type=int, default=6000,
                        help="requests per minute of the sandbox (0: none, for a smoke run)")
    parser.add_argument("--pause", type=float, default=61.0,
                        help="seconds between the nights (night 1's rate window must end)")
    args = parser.parse_args(argv)
    print(machine(), flush=True)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    if args.only in (None, "compare"):
        print(json.dumps({"compare": compare(args.keys)}, indent=1), flush=True)
    if args.only in (None, "nights"):
        print(json.dumps({"nights": nights(args.rows, args.rate_limit, args.pause)}, indent=1),
              flush=True)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
