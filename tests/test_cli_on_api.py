"""The command is built on the public functions: each command calls its one (docs/api.md).

Each public function is wrapped by a spy that calls the real one, so the commands still run
for real against a live sandbox; a command that did the work itself would leave its spy empty.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import importer.check
import importer.delete
import importer.retry
import importer.run
import importer.speccheck
import importer.validate
from importer.cli import cli
from importer.sandbox.server import RunningSandbox

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    seen: dict[str, list[Any]] = {}
    for module, name in ((importer.run, "run_import"), (importer.retry, "retry_rejects"),
                         (importer.validate, "validate_files"),
                         (importer.check, "check_datasource"),
                         (importer.speccheck, "load_specs"), (importer.delete, "plan_delete"),
                         (importer.delete, "delete_contacts")):
        real: Callable[..., Any] = getattr(module, name)

        def spy(*args: Any, _real: Callable[..., Any] = real, _name: str = name,
                **kwargs: Any) -> Any:
            result = _real(*args, **kwargs)
            seen.setdefault(_name, []).append(result)
            return result

        monkeypatch.setattr(module, name, spy)
    return seen


def test_each_command_calls_its_public_function(
        calls: dict[str, list[Any]], sandbox_server: RunningSandbox, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(ROOT / "sample_data" / "contacts.csv", tmp_path / "contacts.csv")
    mapping = str(ROOT / "mappings" / "contacts.yaml")
    data = str(tmp_path / "contacts.csv")
    settings = sandbox_server.settings
    monkeypatch.setenv("INSTASENT_API_URL", sandbox_server.api_url)
    monkeypatch.setenv("INSTASENT_PROJECT", settings.project)
    monkeypatch.setenv("INSTASENT_DATASOURCE", settings.datasource)
    monkeypatch.setenv("INSTASENT_TOKEN", settings.token)
    runner = CliRunner()
    commands = {
        "run_import": ["run", data, "-m", mapping, "-q", "--report", str(tmp_path / "r.json")],
        "retry_rejects": ["retry", str(tmp_path / "contacts.rejects.csv"), "--all", "-q"],
        "validate_files": ["validate", data, "-m", mapping],
        "check_datasource": ["check"],
        "load_specs": ["specs"],
        "delete_contacts": ["delete", "--ids", "C00001", "--yes", "-q"],
    }
    for name, args in commands.items():
        result = runner.invoke(cli, args)
        assert len(calls.get(name, ())) == 1, (name, result.output)
        assert result.exit_code == getattr(calls[name][0], "exit_code", 0), (name, result.output)
    assert calls["run_import"][0].rows_read == 60 and (tmp_path / "r.json").exists()
    assert calls["retry_rejects"][0].rows_selected == 8
    assert calls["plan_delete"][0].ids == ("C00001",)
    assert calls["delete_contacts"][0].deleted == 1
