"""Bulk importer for the Instasent Ingest API.

Every row of a CSV/Parquet/NDJSON export ends up either accepted by the API or in a
rejects file that says why and can be re-run: never lost, never duplicated.

The public API (docs/api.md) is what ``from importer import …`` gives; the CLI is built on
exactly these functions. They print nothing and raise only :class:`ImporterError`
subclasses (importer/exceptions.py). Names load on first use, so ``import importer`` stays
cheap and the command can set process-wide settings before polars loads (importer/_launch.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from importer.exceptions import ImporterError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from importer.changed_run import ChangeOptions, NotConfirmed
    from importer.changes import MaxDelete, StateLocked
    from importer.check import DatasourceInfo, check_datasource
    from importer.config import Credentials
    from importer.crash import RunCrashed
    from importer.datasource import ConnectionProblem, UnexpectedResponse
    from importer.delete import (
        DeleteOptions,
        DeletePlan,
        DeleteReport,
        delete_contacts,
        plan_delete,
    )
    from importer.exceptions import (
        AuthError,
        ConfigError,
        FatalApiError,
        InputChanged,
        InputError,
        InternalError,
        MappingError,
        NotFoundError,
        OutputPathError,
        ReportNotWritten,
        StorageError,
        UsageError,
    )
    from importer.network import Network
    from importer.pipeline import Progress, RunOptions
    from importer.report import ImportReport
    from importer.retry import RetryReport, retry_rejects
    from importer.run import arun_import, run_import
    from importer.sources import ReadOptions
    from importer.speccheck import DatasourceSpecs, load_specs
    from importer.statelock import StateBusy
    from importer.upload import UploadSettings
    from importer.validate import ValidationReport, validate_files

#: public name → the module that defines it
_PUBLIC = {
    # the functions, one per command
    "run_import": "importer.run", "arun_import": "importer.run",
    "validate_files": "importer.validate", "retry_rejects": "importer.retry",
    "check_datasource": "importer.check", "load_specs": "importer.speccheck",
    "plan_delete": "importer.delete", "delete_contacts": "importer.delete",
    # what they take
    "Credentials": "importer.config", "Network": "importer.network",
    "RunOptions": "importer.pipeline", "ReadOptions": "importer.sources",
    "UploadSettings": "importer.upload", "ChangeOptions": "importer.changed_run",
    "MaxDelete": "importer.changes", "DeleteOptions": "importer.delete",
    "DeletePlan": "importer.delete", "Progress": "importer.pipeline",
    # what they return
    "ImportReport": "importer.report", "ValidationReport": "importer.validate",
    "RetryReport": "importer.retry", "DatasourceInfo": "importer.check",
    "DatasourceSpecs": "importer.speccheck", "DeleteReport": "importer.delete",
    # what they raise: one root, ImporterError
    "UsageError": "importer.exceptions", "ConfigError": "importer.exceptions",
    "InputError": "importer.exceptions", "OutputPathError": "importer.exceptions",
    "InputChanged": "importer.exceptions",
    "MappingError": "importer.exceptions", "FatalApiError": "importer.exceptions",
    "AuthError": "importer.exceptions", "NotFoundError": "importer.exceptions",
    "StorageError": "importer.exceptions", "ReportNotWritten": "importer.exceptions",
    "InternalError": "importer.exceptions", "StateBusy": "importer.statelock",
    "StateLocked": "importer.changes", "NotConfirmed": "importer.changed_run",
    "RunCrashed": "importer.crash", "ConnectionProblem": "importer.datasource",
    "UnexpectedResponse": "importer.datasource",
}

__all__ = [
    "AuthError",
    "ChangeOptions",
    "ConfigError",
    "ConnectionProblem",
    "Credentials",
    "DatasourceInfo",
    "DatasourceSpecs",
    "DeleteOptions",
    "DeletePlan",
    "DeleteReport",
    "FatalApiError",
    "ImportReport",
    "ImporterError",
    "InputChanged",
    "InputError",
    "InternalError",
    "MappingError",
    "MaxDelete",
    "Network",
    "NotConfirmed",
    "NotFoundError",
    "OutputPathError",
    "Progress",
    "ReadOptions",
    "ReportNotWritten",
    "RetryReport",
    "RunCrashed",
    "RunOptions",
    "StateBusy",
    "StateLocked",
    "StorageError",
    "UnexpectedResponse",
    "UploadSettings",
    "UsageError",
    "ValidationReport",
    "__version__",
    "arun_import",
    "check_datasource",
    "delete_contacts",
    "load_specs",
    "plan_delete",
    "retry_rejects",
    "run_import",
    "validate_files",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
