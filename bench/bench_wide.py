"""Peak memory on wide files: bounded by bytes, not rows (issue 15 Resources, issue 18 item 14).

    .venv/bin/python bench/bench_wide.py                       # CSV 300 and 1,000 columns
    .venv/bin/python bench/bench_wide.py --parquet             # + Parquet, 20,000 columns
    .venv/bin/python bench/bench_wide.py --columns 300 --rows 20000 --check

Each file is a contacts export (``c0`` the id, the other columns passed through with
``custom_attributes: all_other_columns``) and is measured twice, each in a fresh child
process whose own peak RSS the parent reads with os.wait4:

- ``read``: the sources alone (resolve_inputs + iter_batches with the pipeline's batch size);
- ``validate``: ``instasent-import validate`` — sources and mapping, every row mapped to the
  JSON it would send (the run's code path up to the upload);
- ``run`` (with ``--run``): ``instasent-import run`` against a sandbox in its own process.

Target: peak RSS <= 400 MB whatever the width. Data goes to bench/data/ (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
MAX_RSS_MB = 400
PIPELINE_BATCH_ROWS = 25_000  # importer/pipeline.py's ReadOptions(batch_rows=25_000)


def csv_file(columns: int, rows: int) -> Path:
    return DATA / f"wide_{columns}x{rows}.csv"


def parquet_file(columns: int, rows: int, group_rows: int = 500) -> Path:
    suffix = "" if group_rows == 500 else f"_rg{group_rows}"
    return DATA / f"wide_{columns}x{rows}{suffix}.parquet"


def mapping_file() -> Path:
    return DATA / "wide_mapping.yaml"


def _prepare_csv(columns: int, rows: int) -> None:
    path = csv_file(columns, rows)
    if path.exists():
        return
    DATA.mkdir(exist_ok=True)
    header = ",".join(f"c{i}" for i in range(columns)) + "\n"
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(header)
        block: list[str] = []
        for r in range(rows):
            cells = [f"U{r:07d}"] + [f"v{(r * 7 + i) % 100_000:05d}" for i in range(1, columns)]
            block.append(",".join(cells) + "\n")
            if len(block) == 1000:
                fh.write("".join(block))
                block = []
        fh.write("".join(block))
    tmp.rename(path)


def _prepare_parquet(columns: int, rows: int, group_rows: int = 500) -> None:
    path = parquet_file(columns, rows, group_rows)
    if path.exists():
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    DATA.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    names = [f"c{i}" for i in range(columns)]
    writer = pq.ParquetWriter(tmp, pa.schema([(n, pa.string()) for n in names]))
    step = group_rows
    for start in range(0, rows, step):
        count = min(step, rows - start)
        arrays = [pa.array([f"U{r:07d}" for r in range(start, start + count)])]
        arrays += [pa.array([f"v{(r * 7 + i) % 100_000:05d}" for r in range(start, start + count)])
                   for i in range(1, columns)]
        writer.write_table(pa.Table.from_arrays(arrays, names=names), row_group_size=step)
    writer.close()
    tmp.rename(path)


def _prepare_mapping() -> None:
    DATA.mkdir(exist_ok=True)
    mapping_file().write_text("version: 1\ntarget: contacts\nfields:\n  _user_id: c0\n"
                              "custom_attributes: all_other_columns\n")


def _child_read(path: str) -> None:
    from importer.sources import ReadOptions, iter_batches, resolve_inputs

    start = time.perf_counter()
    options = ReadOptions(batch_rows=PIPELINE_BATCH_ROWS)
    rows = batches = largest = 0
    for source in resolve_inputs([path], options):
        for batch in iter_batches(source, options):
            rows += batch.frame.height
            largest = max(largest, batch.frame.height)
            batches += 1
    print(json.dumps({"rows": rows, "batches": batches, "largest_batch": largest,
                      "seconds": time.perf_counter() - start}))


def _run_one(kind: str, path: Path, env: dict[str, str] | None = None) -> tuple[str, float,
                                                                             float, str]:
    me = str(Path(__file__).resolve())
    if kind == "read":
        command = [sys.executable, me, "--child-read", str(path)]
    elif kind == "validate":
        command = [sys.executable, "-m", "importer", "validate", str(path), "--mapping",
                   str(mapping_file())]
    else:
        command = [sys.executable, "-m", "importer", "run", str(path), "--mapping",
                   str(mapping_file()), "--quiet", "--restart", "--rejects",
                   str(DATA / "wide.rejects.csv"), "--state-dir", str(DATA / "wide-state")]
    # One child at a time, each measured alone: RUSAGE_CHILDREN's maximum is over all children
    # so far, hence each measurement runs in its own grandchild via --measure.
    wrapped = [sys.executable, me, "--measure", json.dumps(command)]
    done = subprocess.run(wrapped, capture_output=True, text=True, check=True, timeout=3600,
                          env={**(env or os.environ), "PYTHONPATH": str(HERE.parent)})
    result = json.loads(done.stdout)
    return kind, result["peak_rss_mb"], result["wall_s"], json.dumps(result["report"])


def _measure_main(command: list[str]) -> None:
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    out, err = child.communicate(timeout=3600)
    wall = time.perf_counter() - start
    import resource

    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # this one child
    if child.returncode not in (0, 3):
        raise SystemExit(f"child failed ({child.returncode}): {' '.join(command)}\n{err[-2000:]}")
    lines = out.strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        report = {"last_line": lines[-1][:200]}
    print(json.dumps({"peak_rss_mb": peak, "wall_s": wall, "report": report}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", type=int, nargs="*", default=[300, 1000],
                        help="CSV files of this many columns (none: `--columns` alone)")
    parser.add_argument("--rows", type=int, nargs="+", default=[120_000, 40_000],
                        help="rows per --columns entry (the last one repeats)")
    parser.add_argument("--parquet", action="store_true",
                        help="also a 20,000-column Parquet file of 3,000 rows")
    parser.add_argument("--row-group-rows", type=int, nargs="+", default=[500],
                        help="rows per row group of the Parquet file (one file each)")
    parser.add_argument("--run", action="store_true",
                        help="also `run` against a sandbox in its own process (SQLite store)")
    parser.add_argument("--check", action="store_true", help="exit 1 above the target")
    parser.add_argument("--stages", nargs="+", choices=("read", "validate", "run"),
                        help="only these stages (default: read, validate, and run with --run)")
    parser.add_argument("--child-read", help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_read:
        _child_read(args.child_read)
        return 0
    if args.measure:
        _measure_main(json.loads(args.measure))
        return 0
    _prepare_mapping()
    files: list[tuple[str, Path]] = []
    for i, columns in enumerate(args.columns):
        rows = args.rows[min(i, len(args.rows) - 1)]
        _prepare_csv(columns, rows)
        files.append((f"csv {columns:,} cols x {rows:,}", csv_file(columns, rows)))
    if args.parquet:
        for group_rows in args.row_group_rows:
            _prepare_parquet(20_000, 3_000, group_rows)
            files.append((f"parquet 20,000 x 3,000 (groups {group_rows:,})",
                          parquet_file(20_000, 3_000, group_rows)))
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'input':>30} {'MB':>6} {'stage':>9} {'peak RSS MB':>12} {'wall s':>7}  detail")
    worst = 0.0
    with contextlib.ExitStack() as stack:
        env = None
        if args.run or "run" in (args.stages or ()):
            from harness import sandbox  # the sandbox in its own process: not measured

            db = DATA / "wide-sandbox.db"
            db.unlink(missing_ok=True)
            env = stack.enter_context(sandbox("--rate-limit", "100000", "--db", str(db))).env()
        for label, path in files:
            for kind in args.stages or ("read", "validate", *(["run"] if args.run else [])):
                _, peak, wall, detail = _run_one(kind, path, env)
                worst = max(worst, peak)
                print(f"{label:>30} {path.stat().st_size / 1e6:6.0f} {kind:>9} {peak:12.0f} "
                      f"{wall:7.1f}  {detail}")
    verdict = "met" if worst <= MAX_RSS_MB else "MISSED"
    print(f"target peak RSS <= {MAX_RSS_MB} MB: {verdict} (worst {worst:.0f} MB)")
    return 1 if args.check and worst > MAX_RSS_MB else 0


if __name__ == "__main__":
    sys.exit(main())
