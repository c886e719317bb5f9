"""Chaos (issue 18, "must be shown"): random sandbox faults and outages, random SIGKILLs of the
importer, runs and retries resumed until done, over CSV, NDJSON and Parquet inputs with read,
map, API and transport rejects. At the end:

- every valid row is in the sandbox (contacts are keyed by ``_user_id``: once);
- every invalid row is in the rejects files exactly once, as a read, map or API reject;
- every rejects file reads back whole (no half record);
- the token is nowhere on disk;
- every invocation ended with a documented exit code and message, never a traceback.

Some invocations also run on a "full disk": the size of the files they may write is capped
(``RLIMIT_FSIZE`` a little above the largest file of the job, SIGXFSZ ignored, so a write past
it fails with EFBIG); ``CHAOS_DISK_FULL=0`` turns that off. Bounded: about two minutes.
``CHAOS_SEED`` replays the random choices (the seed is printed; timings still vary).
Permission flips are not played: the tests run as root, whom a chmod does not stop.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest

from importer.retry import next_rejects_path
from importer.sandbox.server import RunningSandbox
from importer.sandbox.settings import FaultSettings

TOKEN = "chaos-T0KEN-that-must-never-reach-the-disk"
MAPPING = """\
version: 1
target: contacts
fields:
  _user_id: customer_id
  _email: {column: email, type: email}
  _birthdate: birth
"""
HEADER = ["customer_id", "email", "birth"]
ROWS = 1200
ROUNDS_S = 75.0  # new rounds of jobs start until this many seconds have passed
CALM_S = 100.0  # chaos stops after this; what is left then runs to the end without faults

# Runs the CLI with an optional cap on the size of written files (a disk that fills up).
LAUNCHER = """\
import os, resource, signal, sys
cap = int(os.environ.get("CHAOS_FSIZE") or 0)
if cap:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))
from importer.cli import main
sys.argv[0] = "instasent-import"
main()
"""

#: What a refused or stopped invocation may say (exit 1 and 2); anything else is a defect.
EXPECTED_ERRORS = (
    "ABORTED:",  # a report: --outage-wait exceeded, --max-rejects, 401/404
    "error: the run stopped on an unexpected error",  # one line naming the crash log
    "nothing to resume",
    "error: --resume: ",
    "error: the API",  # the credential check could not reach it
    "error: ",
)


def _kind(i: int) -> str:
    if i % 37 == 0:
        return "map"
    if i % 53 == 0:
        return "api"
    if i % 101 == 0:
        return "read"
    return "valid"


def _values(prefix: str, i: int) -> list[str]:
    kind = _kind(i)
    return [f"{prefix}{i}", "not-an-email" if kind == "map" else f"{prefix.lower()}{i}@x.es",
            "31/12/1990" if kind == "api" else "1990-12-31"]


@dataclass
class Job:
    name: str
    fmt: str
    files: list[Path]
    rejects: Path
    state: Path
    valid: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)  # ids the API must never have stored
    invalid: set[tuple[str, int]] = field(default_factory=set)  # (file name, row)


def _make_job(root: Path, fmt: str, round_: int) -> Job:
    folder = root / f"{fmt}{round_}"
    folder.mkdir()
    prefix = f"{fmt[0].upper()}{round_}_"
    main = folder / f"crm.{fmt}"
    job = Job(folder.name, fmt, [main], folder / f"crm.rejects.{fmt}", folder / "state")
    rows = [_values(prefix, i) for i in range(1, ROWS + 1)]
    for i in range(1, ROWS + 1):
        kind = _kind(i)
        if kind == "valid" or (kind == "read" and fmt == "parquet"):
            job.valid.add(f"{prefix}{i}")
        else:
            job.invalid.add((main.name, i))
            job.refused.add(f"{prefix}{i}")
    if fmt == "csv":
        lines = [",".join(HEADER)]
        for i, r in enumerate(rows, 1):
            lines.append(",".join(r) + (",extra" if _kind(i) == "read" else ""))
        main.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif fmt == "ndjson":
        lines = []
        for i, r in enumerate(rows, 1):
            text = json.dumps(dict(zip(HEADER, r, strict=True)))
            lines.append(text[:-3] if _kind(i) == "read" else text)
        main.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        pl.DataFrame(rows, schema=HEADER, orient="row").write_parquet(main)
        # Parquet rows are never unreadable: a second input, CSV, brings read rejects.
        extra = folder / "extra.csv"
        lines = [",".join(HEADER)]
        for i in range(1, 201):
            bad = i % 41 == 0
            lines.append(f"X{round_}_{i},x{i}@x.es,1990-12-31" + (",extra" if bad else ""))
            if bad:
                job.invalid.add((extra.name, i))
            else:
                job.valid.add(f"X{round_}_{i}")
        extra.write_text("\n".join(lines) + "\n", encoding="utf-8")
        job.files.append(extra)
    return job


@dataclass
class Tally:
    invocations: int = 0
    kills: int = 0
    fault_settings: int = 0
    outages: int = 0
    disk_caps: int = 0
    disk_full_hits: int = 0  # capped invocations that met the cap (EFBIG)
    exits: Counter[int] = field(default_factory=Counter)


class Chaos:
    def __init__(self, box: RunningSandbox, rng: random.Random, mapping: Path,
                 disk_full: bool) -> None:
        self.box = box
        self.rng = rng
        self.mapping = mapping
        self.disk_full = disk_full
        self.tally = Tally()
        self.started = time.monotonic()

    @property
    def calm(self) -> bool:
        """Past the budget: no more faults, so every job can finish."""
        return time.monotonic() - self.started > CALM_S

    def _faults(self) -> None:
        if self.calm:
            self.box.app.set_faults(FaultSettings())
            return
        r = self.rng
        self.box.app.set_faults(FaultSettings(
            fail_rate=r.choice([0.0, 0.05, 0.2]), fail_statuses=(500, 502, 503),
            drop_before_rate=r.choice([0.0, 0.05]), drop_after_rate=r.choice([0.0, 0.05]),
            slow_rate=r.choice([0.0, 0.05]), slow_ms=300,
        ), seed=r.randrange(1 << 30))
        self.tally.fault_settings += 1

    def invoke(self, job: Job, args: list[str]) -> tuple[int, str, str]:
        """One invocation under random chaos; returns (exit code, stdout, stderr)."""
        self._faults()
        env = {**os.environ, **self.box.env(), "INSTASENT_STATE_DIR": str(job.state)}
        r = self.rng
        capped = self.disk_full and not self.calm and r.random() < 0.25
        if capped:
            # Room for a few more records in the largest file written so far.
            largest = max((p.stat().st_size for p in job.rejects.parent.rglob("*")
                           if p.is_file()), default=0)
            env["CHAOS_FSIZE"] = str(largest + r.randrange(256, 16384))
            self.tally.disk_caps += 1
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, *args], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.tally.invocations += 1
        timers = []
        if not self.calm and r.random() < 0.5:
            timers.append(threading.Timer(r.uniform(0.5, 2.5), self._kill, (proc,)))
        if not self.calm and r.random() < 0.25:
            timers.append(threading.Timer(r.uniform(0.5, 2.0), self._outage,
                                          (r.uniform(1.0, 5.0),)))
        for t in timers:
            t.start()
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            for t in timers:
                t.cancel()
            proc.kill()
            self.box.app.go_down(0)
        self.tally.exits[proc.returncode] += 1
        if capped and proc.returncode == 1 and "ABORTED" not in err:
            self.tally.disk_full_hits += 1
            print(f"disk full: {err.strip()}")
        return proc.returncode, out, err

    def _kill(self, proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            self.tally.kills += 1

    def _outage(self, seconds: float) -> None:
        self.box.app.go_down(seconds, self.rng.choice([None, 503]))
        self.tally.outages += 1


def _check_ending(code: int, err: str) -> None:
    assert "Traceback" not in err, err
    assert code in (-signal.SIGKILL, 0, 1, 2, 3, 4), (code, err)
    if code in (1, 2):
        assert any(m in err for m in EXPECTED_ERRORS), err
        if code == 1 and "error:" in err:
            assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1, err


def _drive(chaos: Chaos, job: Job) -> None:
    """Run, then retry, resuming after every kill or stop, until nothing retryable is left."""
    common = ["--quiet", "--output", "json", "--concurrency", "2", "--batch-size", "20",
              "--max-attempts", "2", "--timeout", "2", "--outage-wait", "3"]
    phase, target, expected_out = "run", job.rejects, job.rejects
    resume = False
    for _ in range(60):
        if phase == "run":
            args = ["run", *map(str, job.files), "--mapping", str(chaos.mapping),
                    "--rejects", str(job.rejects), *common]
        else:
            args = ["retry", str(target), *common]
            if not resume:
                expected_out = Path(next_rejects_path(str(target)))
        code, out, err = chaos.invoke(job, [*args, *(["--resume"] if resume else [])])
        _check_ending(code, err)
        if code == -signal.SIGKILL or code == 1:
            resume = True  # killed or stopped: continue it
            continue
        if code == 2:
            if "finished at" in err:  # it had finished when it was killed
                resume = False
                if phase == "run" or expected_out.exists():
                    phase, target = "retry", expected_out
                    continue
                return
            if "cannot write" in err and "nothing was sent" in err:
                continue  # the disk cap hit before the first request: the same call again
            assert "nothing to resume" in err or "no earlier run" in err, err
            resume = False
            continue
        resume = False
        if code == 4:
            phase, target = "retry", Path(json.loads(out)["rejects_path"])
            continue
        return  # 0 or 3: nothing retryable left
    raise AssertionError(f"{job.name}: not done after 60 invocations")


def _rejects_rows(path: Path) -> list[dict[str, object]]:
    """Every record of a rejects file; raises on a half record."""
    if path.suffix == ".parquet":
        return pl.read_parquet(path).to_dicts()
    if path.suffix == ".ndjson":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    assert all(len(r) == len(header) for r in rows), f"{path}: a half record"
    return [dict(zip(header, r, strict=True)) for r in rows]


@pytest.mark.slow
def test_chaos(tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or time.time_ns() % 1_000_000)
    disk_full = os.environ.get("CHAOS_DISK_FULL", "1") != "0"
    print(f"CHAOS_SEED={seed} CHAOS_DISK_FULL={int(disk_full)}")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    box = make_sandbox(token=TOKEN, latency_ms=(15, 30))
    chaos = Chaos(box, random.Random(seed), mapping, disk_full)
    jobs: list[Job] = []
    round_ = 0
    while round_ == 0 or time.monotonic() - chaos.started < ROUNDS_S:
        round_ += 1
        for fmt in ("csv", "ndjson", "parquet"):
            jobs.append(_make_job(tmp_path, fmt, round_))
            _drive(chaos, jobs[-1])
    elapsed = time.monotonic() - chaos.started
    t = chaos.tally
    print(f"chaos: {round_} rounds of 3 jobs, {t.invocations} invocations, {t.kills} SIGKILLs, "
          f"{t.fault_settings} random fault settings, {t.outages} outages, "
          f"{t.disk_caps} disk caps ({t.disk_full_hits} hit), "
          f"exits {dict(sorted(t.exits.items()))}, {elapsed:.0f} s")

    for job in jobs:
        missing = {u for u in job.valid if box.app.get_contact(u) is None}
        assert not missing, f"{job.name}: {len(missing)} valid rows missing"
        assert not any(box.app.get_contact(u) is not None for u in job.refused), job.name
        permanent: Counter[tuple[str, int]] = Counter()
        files = [job.rejects, *job.rejects.parent.glob(f"crm.rejects.retry*.{job.fmt}")]
        for path in files:
            if not path.exists():
                continue
            for row in _rejects_rows(path):
                if row["_reject_stage"] in ("read", "map", "api"):
                    name = Path(str(row["_source_file"])).name
                    permanent[(name, int(str(row["_source_row"])))] += 1
        assert set(permanent) == job.invalid, job.name
        assert max(permanent.values()) == 1, f"{job.name}: an invalid row rejected twice"

    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert t.invocations >= 9
