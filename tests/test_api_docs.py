"""The public API the way docs/api.md and docs/examples/ show it, against a live sandbox.

Every ```python block of docs/api.md runs, in order and in one namespace, from a directory
holding a copy of sample_data/ and mappings/, with the INSTASENT_* variables of a sandbox on
127.0.0.1; then what the blocks did is checked in the sandbox and on disk.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import shutil
import stat
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import importer
from importer.sandbox.server import RunningSandbox
from tests._s3 import S3

ROOT = Path(__file__).resolve().parent.parent
API_MD = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", API_MD, re.S)
PUBLIC_FUNCTIONS = ("run_import", "arun_import", "validate_files", "retry_rejects",
                    "check_datasource", "load_specs", "plan_delete", "delete_contacts")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            sandbox_server: RunningSandbox) -> Path:
    for name in ("sample_data", "mappings"):
        shutil.copytree(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    settings = sandbox_server.settings
    monkeypatch.setenv("INSTASENT_API_URL", sandbox_server.api_url)
    monkeypatch.setenv("INSTASENT_PROJECT", settings.project)
    monkeypatch.setenv("INSTASENT_DATASOURCE", settings.datasource)
    monkeypatch.setenv("INSTASENT_TOKEN", settings.token)
    return tmp_path


def test_every_public_function_is_documented_with_an_example() -> None:
    code = "\n".join(BLOCKS)
    for name in PUBLIC_FUNCTIONS:
        assert re.search(rf"^## .*`{name}`", API_MD, re.M), f"no section for {name}"
        assert re.search(rf"\b{name}\(", code), f"no example calls {name}"
        assert name in importer.__all__ and callable(getattr(importer, name)), name


def test_the_api_page_runs_against_the_sandbox(workdir: Path, sandbox_server: RunningSandbox,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, Any] = {"__name__": "api_md"}
    for number, block in enumerate(BLOCKS, 1):
        try:
            exec(compile(block, f"docs/api.md block {number}", "exec"), namespace)
        except SystemExit as exc:  # a block that decides the run failed
            pytest.fail(f"block {number} exited: {exc}")
    out = capsys.readouterr().out

    report = namespace["report"]  # run_import: the sample's 60 rows, 8 of them rejected
    assert (report.rows_read, report.exit_code) == (60, 3)
    assert report.rows_read == report.accepted + report.rejected + report.filtered
    assert namespace["seen"] and namespace["seen"][-1].rows_read == 60  # the progress callback
    written = json.loads((workdir / "contacts.report.json").read_text())
    assert written["exit_code"] == 3 and written["accepted"] == report.accepted
    assert stat.S_IMODE((workdir / "contacts.report.json").stat().st_mode) == 0o600
    assert Path(report.rejects_path).name == "contacts.rejects.csv"

    first, second = namespace["first"], namespace["second"]  # --changed-only, twice
    assert first.accepted == report.accepted and second.accepted == 0
    assert second.unchanged == report.accepted and (workdir / "state").is_dir()
    assert namespace["exit_code"] == 3  # arun_import

    checked = namespace["checked"]  # validate_files
    assert (checked.valid, checked.rejected, checked.exit_code) == (report.accepted, 8, 3)
    assert len(checked.problems) == 3
    last = namespace["read_so_far"][-1]  # its progress callback
    assert (last.phase, last.rows_read, last.accepted, last.rejected) == ("validate", 60,
                                                                          checked.valid, 8)
    assert last.done == last.total
    retried = namespace["retried"]  # retry_rejects: the 8 rejects, all of them (include_all)
    assert (retried.rows_selected, retried.exit_code) == (8, 3)

    info = namespace["info"]  # check_datasource
    assert info.exit_code == 0 and sandbox_server.settings.project in info.project
    assert sandbox_server.settings.datasource in info.datasource
    assert namespace["specs"].attributes and namespace["against"].rows_read == 60

    preview, gone = namespace["preview"], namespace["gone"]  # delete_contacts
    assert preview.dry_run and preview.deleted == 0
    assert gone.deleted == 2 and gone.exit_code == 0
    assert json.loads((workdir / "delete.report.json").read_text())["deleted"] == 2
    assert namespace["code"] == 3  # the scheduler block: warned, did not exit
    assert "warning: exit code 3" in out


def test_retry_rejects_as_documented(workdir: Path) -> None:
    """The retry block re-runs every row of the first block's rejects file."""
    run_block, retry_block = BLOCKS[0], next(b for b in BLOCKS if "retry_rejects(" in b)
    namespace: dict[str, Any] = {}
    exec(compile(run_block, "run block", "exec"), namespace)
    exec(compile(retry_block, "retry block", "exec"), namespace)
    retried = namespace["retried"]
    assert (retried.rows_total, retried.rows_selected) == (8, 8)  # include_all: every reject
    assert retried.report is not None and retried.report.rows_read == 8
    assert retried.exit_code == 3  # the same rows are still invalid under the same mapping
    assert Path(retried.output_rejects).name == "contacts.rejects.retry1.csv"
    assert Path(retried.output_rejects).exists()


def test_errors_come_from_the_documented_root(workdir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(importer.MappingError) as bad:
        (workdir / "broken.yaml").write_text("version: 1\ntarget: contacts\nfields: {}\n")
        importer.validate_files(["sample_data/contacts.csv"], "broken.yaml")
    assert bad.value.exit_code == 2 and isinstance(bad.value, importer.ImporterError)
    monkeypatch.setenv("INSTASENT_TOKEN", "wrong-token-0000")
    with pytest.raises(importer.AuthError) as refused:
        importer.check_datasource()
    assert refused.value.exit_code == 1 and "wrong-token-0000" not in str(refused.value)
    monkeypatch.delenv("INSTASENT_TOKEN")
    with pytest.raises(importer.ConfigError):
        importer.run_import(["sample_data/contacts.csv"], "mappings/contacts.yaml")
    for name in ("StateBusy", "StateLocked", "RunCrashed", "NotConfirmed", "ConnectionProblem",
                 "UnexpectedResponse", "ReportNotWritten"):
        assert issubclass(getattr(importer, name), importer.ImporterError), name
        assert name in (ROOT / "importer" / "exceptions.py").read_text(), name


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nightly_files(workdir: Path) -> dict[str, str]:
    return {"mapping": "mappings/contacts.yaml", "state_dir": str(workdir / "state"),
            "rejects": str(workdir / "crm.rejects.csv"),
            "report": str(workdir / "crm.report.json")}


def test_the_airflow_example_is_a_plain_callable(workdir: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    airflow = _example("nightly_airflow")
    paths = _nightly_files(workdir)
    with caplog.at_level(logging.WARNING):
        first = airflow.nightly_load(["sample_data/contacts.csv"], **paths)
    assert first.exit_code == 3 and "nightly load: exit 3" in caplog.text  # warned, not failed
    second = airflow.nightly_load(["sample_data/contacts.csv"], **paths)
    assert second.accepted == 0 and second.unchanged == first.accepted  # --changed-only
    assert json.loads(Path(paths["report"]).read_text())["unchanged"] == first.accepted
    with pytest.raises(airflow.NightlyLoadFailed, match="exit 2"):  # bad input fails the task
        airflow.nightly_load(["sample_data/missing-*.csv"], **paths)


def test_the_dagster_example_fails_on_1_and_warns_on_3(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dagster = _example("nightly_dagster")
    paths = _nightly_files(workdir)
    result, warnings = dagster.nightly_load(["sample_data/contacts.csv"], **paths)
    assert result.exit_code == 3 and warnings[0].startswith("exit 3: 8 rows rejected")
    monkeypatch.setenv("INSTASENT_TOKEN", "revoked-token-1234")
    with pytest.raises(dagster.NightlyLoadFailed, match="exit 1") as failed:
        dagster.nightly_load(["sample_data/contacts.csv"], **paths)
    assert "revoked-token-1234" not in str(failed.value)


def test_the_examples_run_from_a_bucket_with_their_defaults(
        workdir: Path, s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    """As deployed: exports, state, rejects and report under one bucket (``NIGHTLY_ROOT``)."""
    s3.put("exports/crm-2026-12-03.csv", (workdir / "sample_data" / "contacts.csv").read_bytes())
    monkeypatch.setenv("NIGHTLY_ROOT", s3.url().rstrip("/"))
    airflow = _example("nightly_airflow")
    first = airflow.nightly_load()
    assert first.exit_code == 3 and first.accepted > 0
    assert {"state/journal.sqlite", "rejects/crm.rejects.csv",
            "reports/crm.report.json"} <= set(s3.keys())
    assert json.loads(s3.get("reports/crm.report.json"))["accepted"] == first.accepted
    # the next night, from another container (nothing local): nothing changed, nothing sent
    monkeypatch.chdir(workdir / "mappings")
    dagster = _example("nightly_dagster")
    second, _ = dagster.nightly_load(mapping="contacts.yaml")
    assert second.accepted == 0 and second.unchanged == first.accepted
    assert not (workdir / ".instasent-import").exists()
