"""Docs as tests: the README's commands exist and its mapping example is valid."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from importer.cli import cli
from importer.mapping import compile_mapping, parse_mapping

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_readme_opens_with_demo_and_test() -> None:
    head = README.split("##", 1)[0]
    assert "make demo" in head and "make test" in head


def test_every_command_is_in_the_readme_and_has_help() -> None:
    commands = sorted(cli.commands)  # type: ignore[attr-defined]
    assert {"run", "validate", "retry", "check", "delete", "specs", "sandbox"} <= set(commands)
    for name in commands:
        assert f"instasent-import {name}" in README, name
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, name


def test_the_readme_mapping_example_compiles() -> None:
    (block,) = re.findall(r"```yaml\n(.*?)```", README, re.S)
    spec = parse_mapping(block, path="README.md")
    columns = re.findall(r"(?:column: |hash: \[|^\s+_user_id: )(\w+)", block, re.M)
    columns += ["line_no", "status"]
    compiled = compile_mapping(spec, sorted(set(columns)))
    assert compiled.targets == ("contacts", "events")
