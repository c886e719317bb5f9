"""A Dagster asset running the nightly ``--changed-only`` load (docs/api.md, README).

The work is :func:`nightly_load`, a plain Python function returning ``(report, warnings)``.
The ``@asset`` and schedule at the bottom are defined only when Dagster is importable;
instasent-import does not depend on Dagster.

Exit codes (the report's ``exit_code``, or the raised error's): 1 aborted and 2 bad
input/config fail the materialization; 3 permanent rejects and 4 retryable rows left
materialize it with a warning in the log and the counts as metadata.

The exports, the state, the rejects and the report live in a bucket (``BUCKET`` below:
``s3://…``, ``gs://…`` or ``az://…``; ``pip install 'instasent-import[s3]'``), so the task
can run in a throwaway container: the cloud's own credentials chain (role, workload
identity, environment) is used, no option of ours. Local paths work the same (a mounted
volume). The mapping ships with the job's code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from importer import ChangeOptions, ImporterError, ImportReport, RunOptions, run_import

#: Where the exports land and the job keeps its files (a bucket URL or a local directory).
BUCKET = os.environ.get("NIGHTLY_ROOT", "s3://acme-imports")
INPUTS = (f"{BUCKET}/exports/crm-*.csv",)
MAPPING = os.environ.get("NIGHTLY_MAPPING", "mappings/contacts.yaml")
STATE_DIR = f"{BUCKET}/state"
REJECTS = f"{BUCKET}/rejects/crm.rejects.csv"
REPORT = f"{BUCKET}/reports/crm.report.json"

#: Exit codes that fail the run, and those that only warn.
FAIL, WARN = (1, 2), (3, 4)


class NightlyLoadFailed(RuntimeError):
    """Exit code 1 or 2: the load did not happen (or not completely)."""


def nightly_load(
    inputs: Sequence[str] = INPUTS,
    *,
    mapping: str = MAPPING,
    state_dir: str = STATE_DIR,
    rejects: str = REJECTS,
    report: str = REPORT,
) -> tuple[ImportReport, list[str]]:
    """Send what changed since last night: the report and the warnings to show.

    Raises :class:`NightlyLoadFailed` on exit codes 1 and 2.
    """
    options = RunOptions(state_dir=state_dir, rejects_path=rejects, changes=ChangeOptions())
    try:
        result = run_import(list(inputs), mapping, options=options, report_path=report)
    except ImporterError as exc:
        raise NightlyLoadFailed(f"exit {exc.exit_code}: {exc}") from exc
    if result.exit_code in FAIL:
        raise NightlyLoadFailed(f"exit {result.exit_code}: {result.aborted}")
    warnings = list(result.warnings)
    if result.exit_code in WARN:
        warnings.insert(0, f"exit {result.exit_code}: {result.rejected} rows rejected "
                        f"({result.retryable_rejects} retryable) — see {result.rejects_path}")
    return result, warnings


try:  # the Dagster wrapping, only where Dagster is installed
    import dagster as dg
except ImportError:  # pragma: no cover - plain Python use
    pass
else:  # pragma: no cover - needs Dagster

    @dg.asset(name="instasent_contacts")
    def instasent_contacts(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        try:
            result, warnings = nightly_load()
        except NightlyLoadFailed as exc:
            raise dg.Failure(description=str(exc)) from exc
        for line in warnings:
            context.log.warning(line)
        return dg.MaterializeResult(metadata={
            "exit_code": result.exit_code, "rows_read": result.rows_read,
            "accepted": result.accepted, "unchanged": result.unchanged,
            "rejected": result.rejected, "retryable": result.retryable_rejects,
            "rejects": result.rejects_path or "",
        })

    nightly_job = dg.define_asset_job("instasent_nightly", selection=[instasent_contacts])
    defs = dg.Definitions(
        assets=[instasent_contacts], jobs=[nightly_job],
        schedules=[dg.ScheduleDefinition(job=nightly_job, cron_schedule="0 2 * * *")],
    )
