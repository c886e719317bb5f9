"""The run's report: counts per outcome, per reject stage and code, per HTTP status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from importer.redaction import redact

EXIT_OK = 0
EXIT_ABORTED = 1
EXIT_USAGE = 2
EXIT_REJECTS = 3
EXIT_RETRYABLE = 4


@dataclass(frozen=True, slots=True)
class ImportReport:
    rows_read: int
    accepted: int
    rejected: int
    filtered: int
    not_attempted: int
    retryable_rejects: int
    duplicates: int  # accepted events the API already had (a resend)
    rejected_by_stage: Mapping[str, int]
    rejected_by_code: Mapping[str, int]
    requests: int
    retries: int
    rate_limited: int
    splits: int
    http_statuses: Mapping[str, int]
    items_sent: int
    duration_s: float
    rejects_path: str | None = None
    aborted: str | None = None
    dry_run: bool = False
    skipped_done: int = 0  # a resumed run: rows finished by an earlier invocation
    # A resumed run: rows an earlier invocation rejected (already in the rejects file; part
    # of skipped_done), and how many of those are retryable. They decide the exit code too.
    rejected_before: int = 0
    retryable_before: int = 0
    resumed: bool = False
    run_id: str = ""
    inputs: tuple[str, ...] = ()
    read_as: tuple[str, ...] = ()  # per input: format, encoding and delimiter as detected
    targets: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)
    # Event rows repeating an earlier row's event exactly (same _event_id, same content): not
    # sent, part of the accounting (rows_read = accepted + rejected + filtered +
    # not_attempted + skipped_done + duplicates_in_input).
    duplicates_in_input: int = 0
    # --changed-only: rows not sent because the datasource has them, the state per target,
    # and --delete-missing's deletions (a DeleteReport as a dict, or the ids of a dry run)
    unchanged: int = 0
    changed_only: Mapping[str, Any] | None = None
    deletion: Mapping[str, Any] | None = None

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def mean_batch_fill(self) -> float:
        """Items per request that got an answer for its items (what the rate limit buys)."""
        answered = sum(n for s, n in self.http_statuses.items() if s in ("200", "202", "422"))
        return self.items_sent / answered if answered else 0.0

    @property
    def exit_code(self) -> int:
        """DESIGN.md: 0 clean · 1 aborted · 3 permanent rejects · 4 retryable rows left.

        Retryable wins over permanent: ``retry`` is the next thing to run either way. A
        resumed run answers for the whole run, so rows its earlier invocations rejected count.
        """
        deleted = int(self.deletion.get("exit_code", 0)) if self.deletion else 0
        if self.aborted or deleted == EXIT_ABORTED:
            return EXIT_ABORTED
        if self.retryable_rejects or self.retryable_before or deleted == EXIT_RETRYABLE:
            return EXIT_RETRYABLE
        if self.rejected or self.rejected_before or deleted == EXIT_REJECTS:
            return EXIT_REJECTS
        return EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rejected_by_stage"] = dict(self.rejected_by_stage)
        data["rejected_by_code"] = dict(self.rejected_by_code)
        data["http_statuses"] = dict(self.http_statuses)
        data.update(
            rows_per_s=round(self.rows_per_s, 1),
            mean_batch_fill=round(self.mean_batch_fill, 2),
            exit_code=self.exit_code,
            duration_s=round(self.duration_s, 3),
        )
        # Texts that may quote a server (an abort's reason): never with the token in them.
        data["aborted"] = redact(self.aborted) if self.aborted else self.aborted
        data["warnings"] = [redact(w) for w in self.warnings]
        return data


def render(report: ImportReport) -> str:
    """A plain table for stderr (readable in a cron log)."""
    lines = [f"{'input':<22}{d}" for d in report.read_as]
    lines += [
        f"{'rows read':<22}{report.rows_read:>12,}",
        f"{'  accepted':<22}{report.accepted:>12,}",
        f"{'  rejected':<22}{report.rejected:>12,}",
        f"{'  filtered':<22}{report.filtered:>12,}",
        f"{'  not attempted':<22}{report.not_attempted:>12,}",
    ]
    if report.duplicates_in_input:
        lines.append(f"{'  repeated in input':<22}{report.duplicates_in_input:>12,}")
    if report.changed_only is not None:
        lines.append(f"{'  unchanged (skipped)':<22}{report.unchanged:>12,}")
    if report.resumed:
        lines.append(f"{'  done before (resume)':<22}{report.skipped_done:>12,}")
        if report.rejected_before:
            lines.append(f"{'    of them rejected':<22}{report.rejected_before:>12,}")
    for stage, n in sorted(report.rejected_by_stage.items()):
        lines.append(f"{'  rejected at ' + stage:<22}{n:>12,}")
    for code, n in sorted(report.rejected_by_code.items(), key=lambda kv: (-kv[1], kv[0]))[:10]:
        lines.append(f"{'    ' + code:<22}{n:>12,}")
    if report.duplicates:
        lines.append(f"{'already there (dup)':<22}{report.duplicates:>12,}")
    lines += [
        f"{'requests':<22}{report.requests:>12,}",
        f"{'  retries':<22}{report.retries:>12,}",
        f"{'  429 (rate limited)':<22}{report.rate_limited:>12,}",
        f"{'  split (400)':<22}{report.splits:>12,}",
        f"{'http statuses':<22}"
        + ", ".join(f"{k}: {v}" for k, v in sorted(report.http_statuses.items())),
        f"{'mean batch fill':<22}{report.mean_batch_fill:>12.2f}",
        f"{'duration':<22}{report.duration_s:>11.2f}s",
        f"{'rows/s':<22}{report.rows_per_s:>12,.0f}",
    ]
    lines += _deletion_lines(report.deletion)
    if report.dry_run:
        lines.append("dry run: nothing was sent")
    if report.rejects_path:
        lines.append(f"rejects file: {report.rejects_path}")
    if report.aborted:
        lines.append(f"ABORTED: {redact(report.aborted)}")
    return "\n".join(lines)


def _deletion_lines(deletion: Mapping[str, Any] | None) -> list[str]:
    """``--delete-missing``: what was (or, in a dry run, would be) deleted."""
    if deletion is None:
        return []
    if "ids" in deletion and "deleted" not in deletion:
        return [f"{'would delete (absent)':<22}{len(deletion['ids']):>12,}"]
    lines = [f"{'deleted (absent)':<22}{deletion.get('deleted', 0):>12,}",
             f"{'  already absent':<22}{deletion.get('already_absent', 0):>12,}",
             f"{'  delete failed':<22}{deletion.get('failed', 0):>12,}"]
    if deletion.get("rejects_path"):
        lines.append(f"delete rejects file: {deletion['rejects_path']}")
    if deletion.get("aborted"):
        lines.append(f"DELETIONS ABORTED: {deletion['aborted']}")
    return lines
