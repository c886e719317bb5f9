"""The 10k-row smoke of ``make bench``'s peer comparison (bench/bench_compare.py).

5,000 contacts + 5,000 events, every tool (importer, hand-written script, dlt, ceiling), the
faults scenario and the unthrottled one with 1 ms latency instead of 50 (to stay fast), one
repetition. Each tool and each sandbox is a real child process on 127.0.0.1; the runner is
bounded by a timeout.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("importer", "handwritten", "dlt", "ceiling")
ROWS = 5000


def per_tool(stdout: str) -> dict[tuple[int, str], dict[str, Any]]:
    """The runner's ``scenario N tool #K: {json}`` progress lines (one repetition here)."""
    found: dict[tuple[int, str], dict[str, Any]] = {}
    for match in re.finditer(r"^scenario (\d) (\w+) #1: (\{.*\})$", stdout, re.MULTILINE):
        found[(int(match[1]), match[2])] = json.loads(match[3])
    return found


@pytest.mark.slow
def test_every_tool_finishes_and_the_importer_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "latest.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bench_compare", "--rows", str(ROWS), "--repeat", "1",
         "--scenarios", "3,1", "--latency-ms", "1", "--timeout", "120", "--out", str(out),
         "--heading", "Smoke", "--parallel", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = per_tool(proc.stdout)
    assert set(results) == {(s, t) for s in (3, 1) for t in TOOLS}
    assert all(r["ok"] for r in results.values())
    valid = int(re.search(r"([\d,]+) valid per the importer", proc.stdout)[1].replace(",", ""))
    assert 0.9 * 2 * ROWS < valid < 2 * ROWS  # a few percent of generated contacts are bad
    for scenario in (3, 1):
        importer = results[(scenario, "importer")]
        assert importer["lost"] == 0
        assert importer["landed"] == valid
        assert importer["requests"] >= valid / 100
    # Faults were injected: the importer needed more requests than the unfaulted run.
    assert results[(3, "importer")]["requests"] > results[(1, "importer")]["requests"]
    for tool in TOOLS:
        assert results[(1, tool)]["landed"] <= valid
    table = out.read_text(encoding="utf-8")
    assert table.startswith("# Smoke")
    rows = [line for line in table.splitlines() if line.startswith("| 3:") or
            line.startswith("| 1:")]
    assert sorted(line.split(" | ")[1] for line in rows) == sorted(TOOLS * 2)


def test_the_changed_only_benchmark_runs_small() -> None:
    """bench/bench_changed.py end to end on 3,000 rows and 50,000 keys, unthrottled."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_changed", "--rows", "3000", "--keys", "50000",
         "--rate-limit", "0", "--pause", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    blocks = re.findall(r"^\{.*?^\}", done.stdout, re.MULTILINE | re.DOTALL)
    compare = json.loads(blocks[0])["compare"]
    assert compare["unchanged"] == 49_500 and compare["sent"] == 500
    nights = json.loads(blocks[1])["nights"]["night2"]
    assert nights["items_sent"] == nights["expected_items"] == 45
    assert nights["requests"] == nights["expected_requests"] == 1
    assert nights["deleted"] == nights["deleted_in_sandbox"] == nights["expected_deleted"] == 6
