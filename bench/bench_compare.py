"""The importer against its peers, same data, same sandbox settings, same run (issue 8).

Tools: ``importer`` (``instasent-import run``), ``handwritten`` (bench/peers/handwritten.py:
pandas + requests, sequential), ``dlt`` (bench/peers/dlt_sink.py: a ``@dlt.destination``
sink) and ``ceiling`` (bench/ceiling_client.py: the importer's own pre-built bodies posted
with httpx at the importer's concurrency — the physical limit, no retries).

Scenarios, each tool against a fresh sandbox process: (1) 50 ms latency; (2) 50 ms latency
and 6000 requests/minute; (3) 50 ms latency and 5% 5xx faults.

Every tool loads the generated contacts CSV and events Parquet (one process per file; wall,
CPU seconds and requests are summed, peak RSS is the larger). Landed rows are counted by the
sandbox (``/__sandbox/stats``: stored contacts + events); ``lost`` is the valid rows (those
the importer's dry run accepts) minus landed minus the rows the tool itself reported as
failed, floored at 0. Each figure is the median of ``--repeat`` runs.

The importer and the ceiling client always run alone: they are CPU-bound and the machine is
theirs. The two peers are sequential scripts that spend ~95% of their time waiting on the
sandbox's latency (~20 minutes per 1M+1M run), so ``--parallel N`` lets up to N peer runs go
at once, each against its own sandbox process — 18 peer runs one at a time would take ~6 hours.
Sharing the machine can only slow the peers, so it can only flatter the importer: the table
says when it was done, and a peer's median should be compared with a solo run of it.

Every outcome is appended to ``--raw`` (JSON lines) as it arrives, so a long run that dies
keeps what it measured; ``--from-raw FILE`` renders the table from such a file.

    python -m bench.bench_compare [--rows 1000000] [--repeat 3] [--scenarios 1,2,3]
        [--tools importer,handwritten,dlt,ceiling] [--parallel 1]
        [--out bench/results/latest.md] [--raw bench/results/latest.jsonl]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.bench_run import CONCURRENCY, dataset
from bench.gen import generate_events_parquet
from bench.harness import DATA, ROOT, Measured, Sandbox, machine, measure, sandbox
from importer.config import MAX_BATCH_ITEMS

TOOLS = ("importer", "handwritten", "dlt", "ceiling")
PEERS = ("handwritten", "dlt")  # latency-bound sequential scripts: may share the machine
KINDS = ("contacts", "events")
CONTACTS_MAPPING = ROOT / "bench" / "mappings" / "contacts.yaml"
# The importer's mapping for bench/gen.py's order lines: the same fields the peers send.
EVENTS_MAPPING = """\
version: 1
target: events
fields:
  _event_id:
    hash: [order_id, line_no]
  _user_id: customer_id
  _event_type:
    value: purchase
  _event_date:
    column: ordered_at
    type: datetime
  _event_parameters:
    order_id: order_id
    sku: sku
    amount: {column: amount, type: float}
    currency: currency
"""


@dataclass(frozen=True)
class Prepared:
    """What every run shares: the files, the importer's view of them, the ceiling's bodies."""

    files: dict[str, Path]  # kind -> data file
    mappings: dict[str, Path]  # kind -> importer mapping
    items: dict[str, Path]  # kind -> --dry-run-output NDJSON (the ceiling's bodies)
    rows: int  # rows in both files
    valid: int  # rows the importer's dry run accepts (should land)
    dry_rejected: dict[str, int]  # kind -> rows the dry run rejects (invalid, never sent)
    workdir: Path
    batches: int  # full requests the valid rows need: the least any tool can send


@dataclass(frozen=True)
class Outcome:
    """One tool, one scenario, one repetition."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    requests: int
    rate_limited: int
    landed: int
    reported_failed: int
    lost: int
    ok: bool


def scenario_flags(scenario: int, latency_ms: str, seed: int) -> list[str]:
    flags = ["--latency-ms", latency_ms]
    if scenario == 2:
        flags += ["--rate-limit", "6000"]
    if scenario == 3:
        flags += ["--fail-rate", "0.05", "--seed", str(seed)]
    return flags


def events_dataset(rows: int) -> Path:
    path = DATA / f"events_{rows}.parquet"
    if not path.exists():
        generate_events_parquet(path, rows)
    return path


def prepare(rows: int, workdir: Path, timeout: float) -> Prepared:
    """Generate (or reuse) the files and dry-run the importer on them, once for all runs."""
    files = {"contacts": dataset(rows), "events": events_dataset(rows)}
    events_mapping = workdir / "events.yaml"
    events_mapping.write_text(EVENTS_MAPPING, encoding="utf-8")
    mappings = {"contacts": CONTACTS_MAPPING, "events": events_mapping}
    items: dict[str, Path] = {}
    total = valid = batches = 0
    dry_rejected: dict[str, int] = {}
    for kind in KINDS:
        items[kind] = workdir / f"{kind}.items.ndjson"
        m = measure([sys.executable, "-m", "importer", "run", str(files[kind]), "--mapping",
                     str(mappings[kind]), "--dry-run", "--dry-run-output", str(items[kind]),
                     "--quiet", "--output", "json", "--rejects", str(workdir / "dry.csv"),
                     "--state-dir", str(workdir / "dry-state")], timeout=timeout)
        if m.returncode not in (0, 3):
            raise RuntimeError(f"dry run of {files[kind]} exited {m.returncode}: "
                               f"{m.stderr[-2000:]}")
        report = json.loads(m.stdout)
        total += report["rows_read"]
        valid += report["rows_read"] - report["rejected"]
        dry_rejected[kind] = report["rejected"]
        batches += -(-(report["rows_read"] - report["rejected"]) // MAX_BATCH_ITEMS)
    return Prepared(files, mappings, items, total, valid, dry_rejected, workdir, batches)


def command(tool: str, kind: str, prep: Prepared, run_dir: Path) -> list[str]:
    if tool == "importer":
        return [sys.executable, "-m", "importer", "run", str(prep.files[kind]), "--mapping",
                str(prep.mappings[kind]), "--concurrency", str(CONCURRENCY), "--quiet",
                "--output", "json", "--rejects", str(run_dir / f"{kind}.rejects.csv"),
                "--state-dir", str(run_dir / "state")]
    if tool == "ceiling":
        return [sys.executable, "-m", "bench.ceiling_client", str(prep.items[kind]),
                "--concurrency", str(CONCURRENCY), "--per-worker"]
    module = {"handwritten": "bench.peers.handwritten", "dlt": "bench.peers.dlt_sink"}[tool]
    return [sys.executable, "-m", module, kind, str(prep.files[kind])]


def reported_failed(tool: str, m: Measured, dry_rejected: int) -> tuple[int, bool]:
    """(valid rows the tool says did not go in, whether it finished), from its JSON line."""
    ok_codes = (0, 3) if tool == "importer" else (0,)
    if m.returncode not in ok_codes:
        return 0, False
    # The importer pretty-prints its report; the peers print one line.
    text = m.stdout if tool == "importer" else m.stdout.strip().splitlines()[-1]
    out: dict[str, Any] = json.loads(text)
    if tool == "importer":
        # Its rejects file holds the invalid rows too; only the rest were valid rows.
        return out["rejected"] + out["not_attempted"] - dry_rejected, True
    if tool == "ceiling":
        return 0, True  # it counts statuses, not rows: it reports no row as failed
    return int(out["failed"]), True


def run_once(tool: str, flags: Sequence[str], prep: Prepared, timeout: float) -> Outcome:
    """One measurement; a sandbox that fails to start (a port taken meanwhile) is retried."""
    for attempt in range(3):
        try:
            return _run_once(tool, flags, prep, timeout)
        except RuntimeError as exc:
            if "sandbox did not start" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _run_once(tool: str, flags: Sequence[str], prep: Prepared, timeout: float) -> Outcome:
    walls: list[float] = []
    cpus: list[float] = []
    rss: list[float] = []
    failed = 0
    ok = True
    with sandbox(*flags) as box, tempfile.TemporaryDirectory(dir=prep.workdir) as tmp:
        for kind in KINDS:
            m = measure(command(tool, kind, prep, Path(tmp)), env=box.env(), timeout=timeout)
            walls.append(m.wall_s)
            cpus.append(m.cpu_s)
            rss.append(m.peak_rss_mb)
            n, finished = reported_failed(tool, m, prep.dry_rejected[kind])
            if not finished:
                print(f"  {tool} {kind}: exit {m.returncode}: {m.stderr[-500:]}",
                      file=sys.stderr, flush=True)
            failed += n
            ok &= finished
        return _outcome(box, sum(walls), sum(cpus), max(rss), failed, ok, prep.valid)


def _outcome(box: Sandbox, wall: float, cpu: float, rss: float, failed: int, ok: bool,
             valid: int) -> Outcome:
    stats = box.stats()
    landed = int(stats["contacts"]) + int(stats["events"])
    return Outcome(wall, cpu, rss, int(stats["requests_total"]), int(stats["rate_limited"]),
                   landed, failed, max(0, valid - landed - failed), ok)


def median(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    fields = ("wall_s", "cpu_s", "peak_rss_mb", "requests", "rate_limited", "landed",
              "reported_failed", "lost")
    out: dict[str, Any] = {f: statistics.median(getattr(o, f) for o in outcomes)
                           for f in fields}
    out["ok"] = all(o.ok for o in outcomes)
    out["runs"] = len(outcomes)
    return out


def table(results: dict[int, dict[str, dict[str, Any]]], rows: int, valid: int, batches: int,
          heading: str, scenario_text: dict[int, str], parallel: int, machine_line: str) -> str:
    runs = sorted({r["runs"] for by in results.values() for r in by.values()})
    shared = (
        f" Peer runs (handwritten, dlt) went up to {parallel} at a time, each against its own "
        "sandbox process (they wait on latency ~95% of the time); the importer and the "
        "ceiling client ran alone. Sharing slows the peers, so compare them with solo runs "
        "too (bench/results/README.md)." if parallel > 1 else
        " Every run had the machine alone.")
    lines = [
        f"# {heading}", "",
        machine_line, "",
        f"{rows:,} rows ({rows // 2:,} contacts CSV + {rows // 2:,} events "
        f"Parquet), {valid:,} valid per the importer's dry run. Median of "
        f"{'/'.join(map(str, runs))} run(s) per cell; "
        "× importer is the tool's rows/s over the importer's; lost = valid − landed − "
        f"rows the tool reported as failed.{shared}", "",
        "| scenario | tool | wall s | rows/s | × importer | CPU s | peak RSS MB | requests "
        "| 429s | landed | reported failed | lost | finished |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| --- |",
    ]
    for scenario, by_tool in results.items():
        base = by_tool.get("importer")
        for tool, r in by_tool.items():
            rps = rows / r["wall_s"]
            ratio = f"{rps / (rows / base['wall_s']):.2f}" if base else "–"
            lines.append(
                f"| {scenario}: {scenario_text[scenario]} | {tool} | {r['wall_s']:.1f} "
                f"| {rps:,.0f} | {ratio} | {r['cpu_s']:.1f} | {r['peak_rss_mb']:.0f} "
                f"| {r['requests']:,.0f} | {r['rate_limited']:,.0f} | {r['landed']:,.0f} "
                f"| {r['reported_failed']:,.0f} | {r['lost']:,.0f} "
                f"| {'yes' if r['ok'] else 'NO'} |")
    lines += ["", *findings(results, batches)]
    return "\n".join(lines) + "\n"


RATE_PER_S = 6000 / 60  # scenario 2's limit


def findings(results: dict[int, dict[str, dict[str, Any]]], batches: int) -> list[str]:
    """The issue's targets, computed from the medians (only for what was measured)."""
    out = ["Targets (issue 8), from the medians above:", ""]

    def wall(scenario: int, tool: str) -> float | None:
        r = results.get(scenario, {}).get(tool)
        return float(r["wall_s"]) if r else None

    imp = wall(1, "importer")
    for tool, need in (("handwritten", 20.0), ("dlt", 5.0)):
        other = wall(1, tool)
        if imp and other:
            x = other / imp
            out.append(f"- scenario 1, importer vs {tool}: {x:.1f}× faster (target ≥ {need:g}×: "
                       f"{'met' if x >= need else 'NOT met'})")
    ceil = wall(1, "ceiling")
    if imp and ceil:
        share = ceil / imp
        out.append(f"- scenario 1, importer rows/s as a share of the ceiling client's: "
                   f"{share:.0%} (target ≥ 90%: {'met' if share >= 0.9 else 'NOT met'})")
    imp2 = wall(2, "importer")
    if imp2 and batches:
        ideal = batches / RATE_PER_S
        share = ideal / imp2
        out.append(f"- scenario 2, ideal = {batches:,} full requests at {RATE_PER_S:g}/s = "
                   f"{ideal:.1f} s; importer {imp2:.1f} s = {share:.1%} of the ideal "
                   f"(target ≥ 95%: {'met' if share >= 0.95 else 'NOT met'})")
    r3 = results.get(3, {}).get("importer")
    if r3:
        out.append(f"- scenario 3, importer rows lost: {r3['lost']:,.0f} (target 0: "
                   f"{'met' if r3['lost'] == 0 else 'NOT met'})")
    for tool in ("handwritten", "dlt", "ceiling"):
        r = results.get(3, {}).get(tool)
        if r:
            out.append(f"- scenario 3, {tool} rows lost: {r['lost']:,.0f}")
    return out


class RawLog:
    """Outcomes appended as JSON lines as they arrive (thread-safe), and read back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        with self.lock, self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def collect(records: Sequence[dict[str, Any]], scenarios: Sequence[int],
            tools: Sequence[str]) -> dict[int, dict[str, dict[str, Any]]]:
    """Median per scenario and tool, in the order asked for, from outcome records."""
    results: dict[int, dict[str, dict[str, Any]]] = {}
    for scenario in scenarios:
        for tool in tools:
            runs = [Outcome(**r["outcome"]) for r in records
                    if r.get("scenario") == scenario and r.get("tool") == tool]
            if runs:
                results.setdefault(scenario, {})[tool] = median(runs)
    return results


def merge_raw(paths: Sequence[Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Headers and outcomes of --raw files; a later file's (scenario, tool) cells win."""
    heads: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    for path in paths:
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
        head = dict(next(r for r in lines if "prepared" in r)["prepared"])
        mine = [r for r in lines if "outcome" in r]
        if heads and (head["rows"], head["valid"]) != (heads[0]["rows"], heads[0]["valid"]):
            raise SystemExit(f"{path}: measured on other data than {paths[0]}")
        cells = {(r["scenario"], r["tool"]) for r in mine}
        records = [r for r in records if (r["scenario"], r["tool"]) not in cells] + mine
        head["tools"] = [tool for _, tool in cells]
        heads.append(head)
    return heads, records


def measure_all(scenarios: Sequence[int], tools: Sequence[str], args: argparse.Namespace,
                prep: Prepared, log: RawLog) -> list[dict[str, Any]]:
    """The importer and the ceiling one at a time, alone; then the peers, --parallel at once."""
    records: list[dict[str, Any]] = []

    def one(scenario: int, tool: str, rep: int) -> None:
        flags = scenario_flags(scenario, args.latency_ms, args.seed)
        outcome = run_once(tool, flags, prep, args.timeout)
        record = {"scenario": scenario, "tool": tool, "rep": rep, "outcome": asdict(outcome)}
        log.write(record)
        records.append(record)
        print(f"scenario {scenario} {tool} #{rep + 1}: {json.dumps(asdict(outcome))}",
              flush=True)

    alone = [(s, t, r) for s in scenarios for t in tools if t not in PEERS
             for r in range(args.repeat)]
    # Interleave scenarios and tools so the runs sharing the machine are a mix.
    shared = [(s, t, r) for r in range(args.repeat) for s in scenarios for t in tools
              if t in PEERS]
    for job in alone:
        one(*job)
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        for future in [pool.submit(one, *job) for job in shared]:
            future.result()
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per file")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scenarios", default="1,2,3")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--parallel", type=int, default=1,
                        help="peer runs (handwritten, dlt) allowed at once")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.md")
    parser.add_argument("--raw", type=Path, default=None,
                        help="append every outcome here as JSON lines (default: --out "
                             "with .jsonl)")
    parser.add_argument("--from-raw", type=Path, nargs="+", default=None,
                        help="only render the table from --raw file(s); a later file's "
                             "outcomes replace an earlier one's for the same scenario+tool")
    parser.add_argument("--latency-ms", default="50", help="sandbox latency (smoke: 1)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the sandbox's faults")
    parser.add_argument("--timeout", type=float, default=7200.0, help="per child, seconds")
    parser.add_argument("--heading", default="Importer against its peers")
    args = parser.parse_args(argv)
    scenarios = [int(s) for s in args.scenarios.split(",")]
    tools = args.tools.split(",")
    unknown = [t for t in tools if t not in TOOLS] + [str(s) for s in scenarios
                                                       if s not in (1, 2, 3)]
    if unknown:
        parser.error(f"unknown tool/scenario {', '.join(unknown)}: tools are "
                     f"{', '.join(TOOLS)}, scenarios 1,2,3")
    text = {1: f"{args.latency_ms} ms", 2: f"{args.latency_ms} ms, 6000/min",
            3: f"{args.latency_ms} ms, 5% 5xx"}
    if args.from_raw:
        heads, records = merge_raw(args.from_raw)
        head = heads[0]
        args.parallel = head["parallel"]
        later = "; ".join(f"{', '.join(sorted(set(h['tools'])))} re-measured from "
                          f"{h['started']}" for h in heads[1:])
        machine_line = (f"{head.get('machine', platform.node())} (started {head['started']}"
                        f"{'; ' + later if later else ''}; rendered from "
                        f"{', '.join(f.name for f in args.from_raw)})")
        rows, valid, batches = head["rows"], head["valid"], head.get("batches", 0)
    else:
        raw = args.raw or args.out.with_suffix(".jsonl")
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_text("", encoding="utf-8")
        log = RawLog(raw)
        started = machine().rsplit(" · ", 1)[-1]
        with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
            prep = prepare(args.rows, Path(tmp), args.timeout)
            rows, valid, batches = prep.rows, prep.valid, prep.batches
            log.write({"prepared": {"rows": rows, "valid": valid, "batches": batches,
                                    "parallel": args.parallel, "machine": machine(),
                                    "started": started, "repeat": args.repeat,
                                    "latency_ms": args.latency_ms}})
            records = measure_all(scenarios, tools, args, prep, log)
        machine_line = f"{machine()} (started {started})"
    results = collect(records, scenarios, tools)
    report = table(results, rows, valid, batches, args.heading, text, args.parallel,
                   machine_line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(report)
    return 0 if all(r["ok"] for by in results.values() for r in by.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
