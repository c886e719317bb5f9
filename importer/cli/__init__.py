"""The ``instasent-import`` command: a thin click layer over the library (docs/api.md).

One module per command group, each a set of options over one public function of
:mod:`importer`; ``_group`` turns library exceptions into one clean line and their exit code,
``_shared`` holds the options several commands share.
"""

from __future__ import annotations

from importer.cli import datasource, delete, run, sandbox, validate  # noqa: F401  (register)
from importer.cli._group import cli
from importer.cli._progress import _ProgressPrinter

__all__ = ["_ProgressPrinter", "cli", "main"]


def main() -> None:
    cli(prog_name="instasent-import")
