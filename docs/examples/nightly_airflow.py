"""An Airflow task running the nightly ``--changed-only`` load (docs/api.md, README).

The work is :func:`nightly_load`, a plain Python function: call it from anywhere (a test, a
cron script, another scheduler). The ``@dag``/``@task`` wrapping at the bottom is applied only
when Airflow is importable; instasent-import does not depend on Airflow.

Exit codes (the report's ``exit_code``, or the raised error's): 1 aborted and 2 bad
input/config fail the task (Airflow retries or alerts as configured); 3 permanent rejects and
4 retryable rows left log a warning and let the DAG go on — the rejects file says which rows
and why, and ``retry_rejects`` re-runs the retryable ones.

The exports, the state, the rejects and the report live in a bucket (``BUCKET`` below:
``s3://…``, ``gs://…`` or ``az://…``; ``pip install 'instasent-import[s3]'``), so the task
can run in a throwaway container: the cloud's own credentials chain (role, workload
identity, environment) is used, no option of ours. Local paths work the same (a mounted
volume). The mapping ships with the job's code.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from importer import ChangeOptions, ImporterError, ImportReport, RunOptions, run_import

log = logging.getLogger(__name__)

#: Where the exports land and the job keeps its files (a bucket URL or a local directory).
BUCKET = os.environ.get("NIGHTLY_ROOT", "s3://acme-imports")
INPUTS = (f"{BUCKET}/exports/crm-*.csv",)
MAPPING = os.environ.get("NIGHTLY_MAPPING", "mappings/contacts.yaml")
STATE_DIR = f"{BUCKET}/state"  # journal, resume and the --changed-only state: keep it!
REJECTS = f"{BUCKET}/rejects/crm.rejects.csv"
REPORT = f"{BUCKET}/reports/crm.report.json"


class NightlyLoadFailed(RuntimeError):
    """Exit code 1 or 2: the load did not happen (or not completely); fail the task."""


def nightly_load(
    inputs: Sequence[str] = INPUTS,
    *,
    mapping: str = MAPPING,
    state_dir: str = STATE_DIR,
    rejects: str = REJECTS,
    report: str = REPORT,
    resume: bool = False,
) -> ImportReport:
    """Send what changed since last night; raise on exit codes 1/2, warn on 3/4.

    Credentials come from INSTASENT_PROJECT, INSTASENT_DATASOURCE, INSTASENT_TOKEN (and
    INSTASENT_API_URL). ``resume=True`` continues a run that was killed (the next run
    otherwise stops with exit 2 and says so).
    """
    options = RunOptions(state_dir=state_dir, rejects_path=rejects, changes=ChangeOptions(),
                         resume="resume" if resume else None)
    try:
        result = run_import(list(inputs), mapping, options=options, report_path=report)
    except ImporterError as exc:  # exit 1 or 2 before or instead of a report
        raise NightlyLoadFailed(f"exit {exc.exit_code}: {exc}") from exc
    if result.exit_code in (1, 2):
        raise NightlyLoadFailed(f"exit {result.exit_code}: {result.aborted}")
    if result.exit_code in (3, 4):
        log.warning("nightly load: exit %d, %d rows rejected (%d retryable) — see %s",
                    result.exit_code, result.rejected, result.retryable_rejects,
                    result.rejects_path)
    log.info("nightly load: %d rows read, %d accepted, %d unchanged", result.rows_read,
             result.accepted, result.unchanged)
    return result


try:  # the Airflow wrapping, only where Airflow is installed
    import pendulum
    from airflow.decorators import dag, task
except ImportError:  # pragma: no cover - plain Python use
    pass
else:  # pragma: no cover - needs Airflow

    @dag(schedule="0 2 * * *", start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         catchup=False, max_active_runs=1)  # one run at a time: they share the state
    def instasent_nightly() -> None:
        @task(retries=0)
        def load() -> dict[str, object]:
            return nightly_load().to_dict()  # the report, as the task's XCom value

        load()

    instasent_nightly()
