"""``validate``: read, map and check files locally — what a run would send or reject, no network.

The same code path as a run up to the upload: :func:`importer.sources.resolve_inputs` and
``iter_batches``, :func:`load_mapping` and :func:`compile_mapping` per file, then
``map_batch``. Read rejects and map rejects both count as "would reject".

With ``specs`` (``validate --specs``: the datasource's spec endpoints, read by the caller) the
mapping is also checked against what the datasource accepts, and rows breaking its limits
(``too_long`` …) count as would-reject too: see :mod:`importer.speccheck`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import polars as pl

from importer import __version__
from importer.dedupe import EventIds, dedupe
from importer.exceptions import MappingProblem
from importer.journal import DEFAULT_STATE_DIR
from importer.mapping import (
    MappedBatch,
    MappingSpec,
    load_and_compile,
)
from importer.pipeline import Progress
from importer.records import Reject, RejectFrame, SourceBatch
from importer.rejects import RejectsFormat, RejectsWriter, open_rejects
from importer.remote import is_url
from importer.sources import ReadOptions, SourceFile, iter_batches, resolve_inputs
from importer.speccheck import DatasourceSpecs, apply_specs
from importer.storage import check_file

if TYPE_CHECKING:
    from importer.changed_run import ChangeTracker
    from importer.pipeline import ProgressCallback

_REJECT_SUFFIXES: dict[str, RejectsFormat] = {
    ".csv": "csv", ".parquet": "parquet", ".ndjson": "ndjson", ".jsonl": "ndjson",
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One row that would be rejected, for display."""

    source_file: str
    source_row: int
    stage: str
    code: str
    field: str | None
    message: str


@dataclass(frozen=True, slots=True)
class ValidationReport:
    mapping_path: str
    mapping_sha256: str
    files: tuple[str, ...]
    targets: tuple[str, ...]
    rows_read: int
    valid: int
    filtered: int
    rejected: int
    rejects_by_code: Mapping[str, int]
    problems: tuple[Problem, ...]  # the first ones, in file order
    samples: Mapping[str, tuple[bytes, ...]]  # the first payloads per target, as sent
    warnings: tuple[MappingProblem, ...] = ()
    rejects_path: str | None = None  # set when a rejects file was written
    specs_source: str | None = None  # with --specs: whose specs the mapping was checked against
    read_as: tuple[str, ...] = ()  # per file: format, encoding, delimiter as detected
    # rows whose event repeats an earlier row's exactly (same _event_id and content): a run
    # sends the first and counts these as duplicates_in_input
    duplicates_in_input: int = 0
    # --changed-only: per target, items that would be sent / skipped as unchanged, and the
    # contacts --delete-missing would delete (with the guard that would refuse, if any)
    changes: Mapping[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        """0 clean, 3 rows would be rejected (DESIGN.md exit codes)."""
        return 3 if self.rejected else 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (samples as objects, exactly the payloads' content)."""
        return {
            "mapping": {"path": self.mapping_path, "sha256": self.mapping_sha256},
            "files": list(self.files),
            "read_as": list(self.read_as),
            "targets": list(self.targets),
            "rows_read": self.rows_read,
            "valid": self.valid,
            "filtered": self.filtered,
            "rejected": self.rejected,
            "duplicates_in_input": self.duplicates_in_input,
            "rejects_by_code": dict(self.rejects_by_code),
            "problems": [
                {"file": p.source_file, "row": p.source_row, "stage": p.stage, "code": p.code,
                 "field": p.field, "message": p.message}
                for p in self.problems
            ],
            "samples": {t: [orjson.loads(b) for b in s] for t, s in self.samples.items()},
            "warnings": [{"line": w.line, "message": w.message} for w in self.warnings],
            "rejects_file": self.rejects_path,
            "specs": self.specs_source,
            "changed_only": dict(self.changes) if self.changes is not None else None,
            "exit_code": self.exit_code,
        }


def validate_files(
    inputs: Sequence[str],
    mapping: str | Path,
    *,
    read: ReadOptions = ReadOptions(),
    sample: int = 0,
    top: int = 10,
    rejects_path: str | Path | None = None,
    specs: DatasourceSpecs | None = None,
    changed_only: bool = False,
    state_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> ValidationReport:
    """Map ``inputs`` with ``mapping`` and tally the outcome; nothing leaves the machine.

    Returns a :class:`ValidationReport` (``exit_code`` 0 clean, 3 rows would be rejected).
    Raises :class:`MappingError` (every problem, across all files' headers, and against
    ``specs`` when given), :class:`InputError` or :class:`OutputPathError` (``rejects_path``
    not writable) before reading any row.

    ``specs``: what :func:`importer.speccheck.load_specs` read from the datasource.
    ``changed_only``: also count what ``run --changed-only`` would send, skip and delete,
    from the state in ``state_dir`` (default ``$INSTASENT_STATE_DIR`` or
    ``.instasent-import``), read-only: no lock, no network, no token (the state is per
    datasource: ``INSTASENT_PROJECT`` and ``INSTASENT_DATASOURCE`` must be set).
    ``progress`` hears a :class:`~importer.pipeline.Progress` after every source batch
    (phase ``"validate"``; ``accepted`` counts the rows that would be sent).
    """
    root = str(state_dir or os.environ.get("INSTASENT_STATE_DIR") or DEFAULT_STATE_DIR)
    if changed_only and is_url(root):
        from importer.mirror import Outputs

        with Outputs() as outputs:  # the bucket's state, pulled into a copy read here only
            return validate_files(inputs, mapping, read=read, sample=sample, top=top,
                                  rejects_path=rejects_path, specs=specs, changed_only=True,
                                  state_dir=outputs.state_dir(root, write=False),
                                  progress=progress)
    if rejects_path:
        check_file(str(rejects_path), "rejects file")
    sources = resolve_inputs(inputs, read)
    # the mapping's own problems and every header's column problems, in one report
    spec, compiled = load_and_compile(mapping, [(s.path, s.columns) for s in sources])
    changes = _preview_tracker(spec, state_dir) if changed_only else None
    spec_warnings: tuple[MappingProblem, ...] = ()
    if specs is not None:
        checked, spec_warnings = apply_specs(spec, compiled, specs)
        compiled = list(checked)
    tally = _Tally(sample=sample, top=top, targets=compiled[0].targets if compiled else ())
    writer = _LazyWriter(rejects_path, spec, sources)
    event_ids = EventIds()
    total, done = sum(s.total for s in sources), 0
    unit = sources[0].total_unit if sources else "rows"
    try:
        for source, mapper in zip(sources, compiled, strict=True):
            for batch in iter_batches(source, read):
                mapped = mapper.map_batch(batch)
                tally.add(batch, mapped)
                if changes is not None:
                    for target, items in mapped.items.items():
                        changes.preview(target, items.keys, items.bodies)
                writer.write(batch.rejects, batch.frame.schema)
                writer.write(mapped.rejects, batch.frame.schema)
                events = mapped.items.get("events")
                if events is not None:
                    # what a run does: the first occurrence of an _event_id is the one sent
                    found = dedupe(event_ids, batch, events.source_rows, events.keys,
                                   events.bodies)
                    tally.deduped(found.identical, found.rejects)
                    writer.write(found.rejects, batch.frame.schema)
                if progress is not None:
                    done = max(done, batch.progress)
                    progress(Progress("validate", unit, done, total, tally.rows_read,
                                      tally.valid, sum(tally.by_code.values())))
    finally:
        writer.close()
    warnings = tuple(dict.fromkeys(w for c in compiled for w in c.warnings)) or spec.warnings
    report = tally.report(spec, sources, (*warnings, *spec_warnings), writer.path_if_written)
    if changes is not None:
        report = dataclasses.replace(report, changes=_changes(changes, spec, sources, read))
    if specs is None:
        return report
    return dataclasses.replace(report, specs_source=specs.source)


def _preview_tracker(spec: MappingSpec, state_dir: str | Path | None) -> ChangeTracker:
    """A read-only view of the changed-only state (no lock, no network, no token)."""
    from importer.changed_run import ChangeOptions, ChangeTracker, state_credentials

    root = state_dir or os.environ.get("INSTASENT_STATE_DIR") or DEFAULT_STATE_DIR
    targets = [t.target for t in spec.targets]
    return ChangeTracker(str(root), state_credentials(), spec, targets,
                         ChangeOptions(delete_missing="contacts" in targets), write=False)


def _changes(
    changes: ChangeTracker, spec: MappingSpec, sources: Sequence[SourceFile], read: ReadOptions
) -> dict[str, Any]:
    out: dict[str, Any] = {
        t: {"status": s.status, "would_send": s.sent, "unchanged": s.unchanged,
            "recorded": s.recorded}
        for t, s in changes.states.items()
    }
    if "contacts" in changes.states:
        removal = changes.scan_removals(spec, sources, read)
        out["would_delete"] = len(removal.ids)
        out["delete_refused"] = removal.refused or removal.note or None
    return out


@dataclass
class _Tally:
    sample: int
    top: int
    targets: tuple[str, ...]
    rows_read: int = 0
    valid: int = 0
    filtered: int = 0
    duplicates_in_input: int = 0
    by_code: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    samples: dict[str, list[bytes]] = field(default_factory=dict)

    def add(self, batch: SourceBatch, mapped: MappedBatch) -> None:
        self.rows_read += batch.rows_read
        self.filtered += len(mapped.filtered_rows)
        first = next(iter(mapped.items.values()), None)
        self.valid += len(first.source_rows) if first else 0
        for reject in (*batch.rejects, *mapped.rejects):
            self._reject(reject)
        for target, items in mapped.items.items():
            kept = self.samples.setdefault(target, [])
            kept.extend(items.bodies[: max(0, self.sample - len(kept))])

    def deduped(self, identical: int, rejects: Sequence[Reject]) -> None:
        self.duplicates_in_input += identical
        self.valid -= identical + len(rejects)
        for reject in rejects:
            self._reject(reject)

    def _reject(self, reject: Reject) -> None:
        self.by_code[reject.code] += 1
        if len(self.problems) < self.top:
            self.problems.append(
                Problem(reject.source_file, reject.source_row, reject.stage, reject.code,
                        reject.field, reject.message)
            )

    def report(
        self,
        spec: MappingSpec,
        sources: Sequence[SourceFile],
        warnings: Sequence[MappingProblem],
        rejects_path: str | None,
    ) -> ValidationReport:
        return ValidationReport(
            mapping_path=spec.path,
            mapping_sha256=spec.sha256,
            files=tuple(s.path for s in sources),
            read_as=tuple(s.describe() for s in sources),
            targets=self.targets,
            rows_read=self.rows_read,
            valid=self.valid,
            filtered=self.filtered,
            duplicates_in_input=self.duplicates_in_input,
            rejected=sum(self.by_code.values()),
            rejects_by_code=dict(self.by_code.most_common()),
            problems=tuple(self.problems),
            samples={t: tuple(s) for t, s in self.samples.items()},
            warnings=tuple(warnings),
            rejects_path=rejects_path,
        )


class _LazyWriter:
    """The rejects file, created on the first reject so a clean check leaves nothing behind."""

    def __init__(
        self, path: str | Path | None, spec: MappingSpec, sources: Sequence[SourceFile]
    ) -> None:
        self.path = str(path) if path is not None else None
        self.spec = spec
        self.sources = sources
        self._writer: RejectsWriter | None = None

    @property
    def path_if_written(self) -> str | None:
        return self.path if self._writer is not None else None

    def write(self, rejects: Sequence[Reject] | RejectFrame, schema: pl.Schema) -> None:
        if not rejects or self.path is None:
            return
        if self._writer is None:
            self._writer = self._open(schema)
        self._writer.write(rejects)

    def _open(self, schema: pl.Schema) -> RejectsWriter:
        assert self.path is not None
        first = self.sources[0]
        columns: list[str] = []
        for source in self.sources:
            columns += [c for c in source.columns if c not in columns]
        fmt = _REJECT_SUFFIXES.get(Path(self.path).suffix.lower(), first.format)
        return open_rejects(
            self.path,
            source_columns=columns,
            fmt=fmt,
            delimiter=first.delimiter or ",",
            source_schema=dict(schema),
            meta={
                "mapping": str(Path(self.spec.path).resolve()),
                "mapping_sha256": self.spec.sha256,
                "inputs": [s.path for s in self.sources],
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "tool": f"instasent-import {__version__} validate",
            },
        )

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def render_text(report: ValidationReport) -> str:
    """The human summary printed by ``instasent-import validate``."""
    lines = [
        f"mapping   {report.mapping_path} (sha256 {report.mapping_sha256[:12]}…)",
        f"files     {', '.join(report.read_as or report.files)}",
        f"targets   {', '.join(report.targets)}",
    ]
    if report.specs_source:
        lines.append(f"specs     checked against {report.specs_source}")
    lines += [f"warning   {w.render(report.mapping_path)}" for w in report.warnings]
    lines += [
        "",
        f"rows read     {report.rows_read:>10,}",
        f"valid         {report.valid:>10,}",
        f"filtered      {report.filtered:>10,}",
        f"would reject  {report.rejected:>10,}",
    ]
    lines += [f"  {code:<22}{count:>10,}" for code, count in report.rejects_by_code.items()]
    if report.duplicates_in_input:
        lines.append(f"repeated      {report.duplicates_in_input:>10,}  (an earlier row has the "
                     "same _event_id and content: not sent)")
    if report.problems:
        lines += ["", f"first {len(report.problems)} problems (file:row — row 1 is the first "
                      "data row after the header):"]
        lines += [
            f"  {p.source_file}:{p.source_row}  {p.code}"
            f"{f' [{p.field}]' if p.field else ''}  {p.message}"
            for p in report.problems
        ]
    for target, bodies in report.samples.items():
        if bodies:
            lines += ["", f"sample {target} payloads (as sent):"]
            lines += [b.decode("utf-8") for b in bodies]
    if report.changes is not None:
        lines += ["", "with --changed-only (against the recorded state):"]
        for target, c in report.changes.items():
            if isinstance(c, Mapping):
                lines.append(f"  {target:<9} would send {c['would_send']:>10,}   unchanged "
                             f"{c['unchanged']:>10,}   ({_STATUS[c['status']]})")
        if "would_delete" in report.changes:
            lines.append(f"  --delete-missing would delete {report.changes['would_delete']:,} "
                         "contact(s) absent from this input")
            if report.changes.get("delete_refused"):
                lines.append(f"  {report.changes['delete_refused']}")
    if report.rejects_path:
        lines += ["", f"rejects written to {report.rejects_path} (mode 0600)"]
    return "\n".join(lines)


_STATUS = {
    "recorded": "compared with the recorded state",
    "first": "no state yet: everything would be sent",
    "mapping_changed": "mapping changed since the last run: everything would be sent",
    "full": "--full: everything would be sent",
}
