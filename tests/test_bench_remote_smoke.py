"""The 20k-row smoke of bench/bench_remote.py: a moto server child, the upload, and both
reads in their own processes, ending in the figures table."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_remote_bench_reads_every_row_from_disk_and_from_the_bucket(tmp_path: Path) -> None:
    out = tmp_path / "remote.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bench_remote", "--rows", "20000", "--repeat", "1",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = out.read_text()
    assert "load average" in table
    rows = re.findall(r"^\| (disk|local S3 \(moto\)) \| \d+ \| 20,000 \| .* \| (\d+) \|$", table,
                      re.MULTILINE)
    assert [name for name, _ in rows] == ["disk", "local S3 (moto)"]
    assert all(int(rss) > 0 for _, rss in rows)
