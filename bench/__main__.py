"""``make bench``: every benchmark, one after the other (minutes; not part of make test).

    python -m bench            # all of them
    python -m bench run        # one of: sources mapping sandbox transports run changed compare
    #                            ordering

Each prints its own figures; generated data lives in bench/data/ (git-ignored).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = {
    "sources": [sys.executable, "bench/bench_sources.py", "--repeat", "2"],
    "mapping": [sys.executable, "-m", "bench.bench_mapping", "--runs", "3"],
    "sandbox": [sys.executable, "bench/sandbox_load.py", "--requests", "3000"],
    "transports": [sys.executable, "-m", "bench.bench_transports"],
    "run": [sys.executable, "-m", "bench.bench_run"],
    # --changed-only: two nights of a 2M-contact export, and the comparison on 10M keys
    "changed": [sys.executable, "-m", "bench.bench_changed"],
    # peers 3 at a time: ~2 h and ~5 GB instead of ~6 h (bench/results/README.md)
    "compare": [sys.executable, "-m", "bench.bench_compare", "--parallel", "3"],
    # same-key ordering: stale contacts, and requests/s with repeated ids (issue 15)
    "ordering": [sys.executable, "-m", "bench.bench_ordering", "--unique", "200000"],
}


def main(argv: list[str]) -> int:
    chosen = argv or list(STEPS)
    unknown = [name for name in chosen if name not in STEPS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(STEPS)}")
        return 2
    failed = 0
    for name in chosen:
        print(f"\n=== {name}: {' '.join(STEPS[name][1:])}", flush=True)
        failed |= subprocess.call(STEPS[name], cwd=ROOT)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
