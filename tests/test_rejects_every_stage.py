"""One rejects file whatever the stage: read, map, API and transport rejects of one run, in
every input format, through an aborted run, its ``--resume`` and a ``retry`` (issue 18 §1).

Map rejects once wrote ``_reject_http_status``/``_reject_attempts``/``_reject_retryable`` as
text and API rejects as numbers: the Parquet writer raised, an upload worker died and the run
hung. Every invocation here is a subprocess with a timeout, so a hang fails the test.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from importer.sandbox.faults import FaultInjector
from importer.sandbox.server import RunningSandbox
from importer.sandbox.settings import FaultSettings

MAPPING = """\
version: 1
target: contacts
fields:
  _user_id: customer_id
  _email: {column: email, type: email}
  _birthdate: birth
"""
N = 40  # rows of the main input
FAULTS = FaultSettings(fail_rate=0.3, fail_statuses=(500,))


def _row(i: int) -> tuple[str, str, str]:
    """Row 1 is refused by the API (a date it does not take), row 2 by the mapping."""
    email = "not-an-email" if i == 2 else f"u{i}@x.es"
    birth = "31/12/1990" if i == 1 else "1990-12-31"
    return f"U{i}", email, birth


def _inputs(tmp_path: Path, fmt: str) -> tuple[list[Path], set[str], int]:
    """The inputs, the user ids that should land, and ``--max-rejects`` for the first run
    (one more than the read and map rejects met first: the run stops after an API reject)."""
    rows = [_row(i) for i in range(1, N + 1)]
    valid = {r[0] for i, r in enumerate(rows, 1) if i not in (1, 2, 3)}
    header = ("customer_id", "email", "birth")
    if fmt == "csv":
        path = tmp_path / "crm.csv"
        lines = [",".join(header)] + [",".join(r) for r in rows]
        lines[3] = "U3,u3@x.es,1990-12-31,one field too many"  # a read reject
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return [path], valid, 3
    if fmt == "ndjson":
        path = tmp_path / "crm.ndjson"
        lines = [json.dumps(dict(zip(header, r, strict=True))) for r in rows]
        lines[2] = '{"customer_id": "U3", "email": '  # a read reject
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return [path], valid, 3
    # Parquet has no unreadable rows of its own: a second (CSV) input brings the read reject
    # into the Parquet rejects file, as a run over mixed inputs does.
    path = tmp_path / "crm.parquet"
    pl.DataFrame(rows, schema=list(header), orient="row").write_parquet(path)
    valid.add("U3")
    extra = tmp_path / "extra.csv"
    extra.write_text("customer_id,email,birth\nX1,x1@x.es,1990-12-31,too many\n"
                     "X2,x2@x.es,1990-12-31\nX3,x3@x.es,1990-12-31\n", encoding="utf-8")
    valid |= {"X2", "X3"}
    return [path, extra], valid, 2


def _seed_letting_the_credential_check_through() -> int:
    for seed in range(100):
        if FaultInjector(FAULTS, seed).draw().fail_status is None:
            return seed
    raise AssertionError("no seed")


def _cli(args: list[str], box: RunningSandbox, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **box.env(), "INSTASENT_STATE_DIR": str(state)}
    return subprocess.run([sys.executable, "-m", "importer", *args], env=env,
                          capture_output=True, text=True, timeout=90, check=False)


def _read_rejects(path: Path, fmt: str) -> pl.DataFrame:
    if fmt == "parquet":
        return pl.read_parquet(path)
    if fmt == "ndjson":
        return pl.read_ndjson(path, infer_schema_length=None)
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return pl.DataFrame(list(csv.DictReader(fh)), infer_schema_length=None)


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
def test_read_map_api_and_transport_rejects_share_one_file_through_resume_and_retry(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox], fmt: str
) -> None:
    inputs, valid, max_rejects = _inputs(tmp_path, fmt)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    rejects = tmp_path / f"crm.rejects.{fmt}"
    state = tmp_path / "state"
    box = make_sandbox()
    common = ["--mapping", str(mapping), "--rejects", str(rejects), "--quiet",
              "--concurrency", "1", "--batch-size", "1"]
    files = [str(p) for p in inputs]

    # 1. Stopped by --max-rejects after the read, map and first API rejects: exit 1.
    first = _cli(["run", *files, *common, "--max-rejects", str(max_rejects)], box, state)
    assert first.returncode == 1, first.stderr
    assert "Traceback" not in first.stderr
    # (Parquet: the read reject is in the second input, which the stopped run never reached)
    first_stages = {"map", "api"} if fmt == "parquet" else {"read", "map", "api"}
    assert set(_read_rejects(rejects, fmt)["_reject_stage"]) == first_stages

    # 2. Resumed while the API fails 30% of requests, one attempt each: transport rejects
    #    are appended to (for Parquet: rewritten with) the same file.
    box.app.set_faults(FAULTS, seed=_seed_letting_the_credential_check_through())
    second = _cli(["run", *files, *common, "--resume", "--max-attempts", "1",
                   "--output", "json"], box, state)
    assert second.returncode == 4, second.stderr
    assert "Traceback" not in second.stderr
    report = json.loads(second.stdout)
    assert report["resumed"] is True
    frame = _read_rejects(rejects, fmt)
    assert set(frame["_reject_stage"]) == {"read", "map", "api", "transport"}
    keys = list(zip(frame["_source_file"], frame["_source_row"].cast(pl.Int64), strict=True))
    assert len(keys) == len(set(keys)), "a row is in the rejects file twice"
    if fmt == "parquet":  # one schema, whatever the stage
        assert frame.schema["_reject_http_status"] == pl.Int64
        assert frame.schema["_reject_attempts"] == pl.Int64
        assert frame.schema["_reject_retryable"] == pl.Boolean
    transport = frame.filter(pl.col("_reject_stage") == "transport")
    landed = {c["_user_id"] for c in _contacts(box)}
    assert landed | set(transport["customer_id"]) == valid
    assert not landed & set(transport["customer_id"])

    # 3. The retryable rows retried, the API healthy again: every valid row lands.
    box.app.set_faults(FaultSettings())
    third = _cli(["retry", str(rejects), "--quiet", "--concurrency", "1"], box, state)
    assert third.returncode == 0, third.stderr
    assert {c["_user_id"] for c in _contacts(box)} == valid


def _contacts(box: RunningSandbox) -> list[dict[str, str]]:
    store = box.app
    found = []
    for i in range(1, N + 1):
        for uid in (f"U{i}", f"X{i}"):
            contact = store.get_contact(uid)
            if contact is not None:
                found.append({"_user_id": uid})
    return found
