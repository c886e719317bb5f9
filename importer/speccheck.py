"""What a datasource accepts (its spec endpoints), and a mapping checked against it.

- :func:`fetch_specs` reads ``GET /stream/specs/attributes``, ``/specs/events`` and each event
  type's ``/specs/event-parameters/{type}`` into a frozen :class:`DatasourceSpecs`;
- :func:`check_mapping` compares a mapping with them, every problem at once with its YAML
  line: reserved attributes the datasource does not define (or manages itself), event types
  it does not know, required event parameters the mapping does not fill, lists sent to
  single-valued attributes or parameters, constants longer than ``maxLength``; warnings for
  parameters the type does not list and for types that would be better checked locally;
- :func:`limits_for` / :func:`apply_specs` hand the per-row rules to the mapping engine, which
  rejects rows locally (``too_long``, ``too_many_values``, ``required_missing``,
  ``unknown_event_type``) before anything is sent.

Reading the specs fails like ``check`` does (see :mod:`importer.datasource`). A 404 on one
event type's parameters means "no parameter specs" for it: the datasource itself was
verified by the first read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from importer.client import ApiClient
from importer.config import Credentials
from importer.datasource import Timing, UnexpectedResponse, get_json
from importer.exceptions import MappingError, MappingProblem
from importer.mapping import CompiledMapping, FieldLimit, Limits, MappingSpec, with_limits
from importer.mapping.options import did_you_mean
from importer.mapping.spec import FieldSpec, NestedSpec, TargetName, TargetSpec, ValueSource
from importer.upload import RatePacer, UploadSettings

#: Parameter specs are read a few at a time: they share one rate-limit budget with the rest.
SPEC_CONCURRENCY = 4
_NUMBER_TYPES = frozenset({"number", "float", "integer", "int", "decimal"})


# ───────────────────────────── the specs ─────────────────────────────


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    uid: str
    label: str = ""
    data_type: str = ""
    max_values: int | None = 1  # 1: one value · N: a list of at most N · None: no known cap
    read_only: bool = False
    description: str = ""
    custom: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"uid": self.uid, "displayLabel": self.label, "dataType": self.data_type,
                "multivalue": self.max_values, "readOnly": self.read_only,
                "custom": self.custom, "description": self.description}


@dataclass(frozen=True, slots=True)
class ParameterSpec:
    name: str
    title: str = ""
    data_type: str = ""
    max_length: int | None = None  # characters; None: no limit
    required: bool = False
    max_values: int | None = 1

    def to_dict(self) -> dict[str, Any]:
        return {"parameter": self.name, "title": self.title, "dataType": self.data_type,
                "maxLength": self.max_length, "required": self.required,
                "multiValue": self.max_values}


@dataclass(frozen=True, slots=True)
class EventTypeSpec:
    uid: str
    name: str = ""
    category: str = ""
    description: str = ""
    parameters: tuple[ParameterSpec, ...] = ()

    def parameter(self, name: str) -> ParameterSpec | None:
        return next((p for p in self.parameters if p.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"uid": self.uid, "name": self.name, "category": self.category,
                "description": self.description,
                "parameters": [p.to_dict() for p in self.parameters]}


@dataclass(frozen=True, slots=True)
class DatasourceSpecs:
    attributes: tuple[AttributeSpec, ...]
    events: tuple[EventTypeSpec, ...]
    source: str = "the datasource"  # for messages, e.g. "datasource 'shop'"

    def attribute(self, uid: str) -> AttributeSpec | None:
        return next((a for a in self.attributes if a.uid == uid), None)

    def event(self, uid: str) -> EventTypeSpec | None:
        return next((e for e in self.events if e.uid == uid), None)

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(e.uid for e in self.events)

    @property
    def exit_code(self) -> int:
        """0: the specs were read (a read that fails raises instead)."""
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {"attributes": [a.to_dict() for a in self.attributes],
                "events": [e.to_dict() for e in self.events]}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _count(value: Any, *, single: int | None = 1) -> int | None:
    """A multi-value cap: ints as given; ``true`` (a cap nobody told us) → None."""
    if value is True:
        return None
    if value is False or value is None:
        return single
    try:
        number = int(value)
    except (TypeError, ValueError):
        return single
    return max(number, 1)


def _length(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None  # 0 or absent: no limit


def _spec_list(body: Any, path: str) -> list[Mapping[str, Any]]:
    items = body.get("specs") if isinstance(body, Mapping) else None
    if not isinstance(items, list):
        raise UnexpectedResponse(
            f"GET {path} did not answer {{\"specs\": [...]}} — the Ingest API's spec shape; "
            "check that INSTASENT_API_URL is the Instasent API", 200)
    return [i for i in items if isinstance(i, Mapping)]


def parse_attributes(body: Any) -> tuple[AttributeSpec, ...]:
    return tuple(
        AttributeSpec(
            uid=_text(a.get("uid")),
            label=_text(a.get("displayLabel")),
            data_type=_text(a.get("dataType")),
            max_values=_count(a.get("multivalue")),
            read_only=bool(a.get("readOnly")),
            description=_text(a.get("description")),
            custom=bool(a.get("custom")),
        )
        for a in _spec_list(body, "/stream/specs/attributes") if a.get("uid")
    )


def parse_parameters(body: Any) -> tuple[ParameterSpec, ...]:
    return tuple(
        ParameterSpec(
            name=_text(p.get("parameter")),
            title=_text(p.get("title")),
            data_type=_text(p.get("dataType")),
            max_length=_length(p.get("maxLength")),
            required=bool(p.get("required")),
            max_values=_count(p.get("multiValue")),
        )
        for p in _spec_list(body, "/stream/specs/event-parameters") if p.get("parameter")
    )


async def fetch_specs(
    client: ApiClient,
    *,
    settings: UploadSettings = UploadSettings(),
    timing: Timing | None = None,
    timeout: float = 30.0,
) -> DatasourceSpecs:
    """Attributes, event types and every type's parameters (raises like ``check``)."""
    timing = timing or Timing()
    pacer = RatePacer(clock=timing.clock, sleep=timing.sleep, rng=timing.rng,
                      jitter=settings.rate_jitter)

    async def read(path: str, missing_ok: bool = False) -> Any:
        fetched = await get_json(client, path, settings=settings, pacer=pacer, timing=timing,
                                 missing_ok=missing_ok, timeout=timeout)
        return None if fetched is None else fetched.body

    attributes = parse_attributes(await read("/stream/specs/attributes"))
    kinds = _spec_list(await read("/stream/specs/events"), "/stream/specs/events")
    gate = asyncio.Semaphore(SPEC_CONCURRENCY)

    async def parameters(uid: str) -> tuple[ParameterSpec, ...]:
        async with gate:
            body = await read(f"/stream/specs/event-parameters/{quote(uid, safe='')}",
                              missing_ok=True)
        return () if body is None else parse_parameters(body)

    uids = [_text(k.get("uid")) for k in kinds if k.get("uid")]
    params = await asyncio.gather(*(parameters(uid) for uid in uids))
    by_uid = {_text(k.get("uid")): k for k in kinds}
    events = tuple(
        EventTypeSpec(uid, _text(by_uid[uid].get("name")), _text(by_uid[uid].get("category")),
                      _text(by_uid[uid].get("description")), found)
        for uid, found in zip(uids, params, strict=True)
    )
    creds = client.credentials
    return DatasourceSpecs(attributes, events, f"datasource {creds.datasource!r}")


async def aload_specs(
    credentials: Credentials,
    *,
    timeout: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> DatasourceSpecs:
    """:func:`fetch_specs` with a client of its own."""
    client = ApiClient(credentials, timeout=timeout, max_connections=SPEC_CONCURRENCY,
                       transport=transport)
    try:
        return await fetch_specs(client, timeout=timeout)
    finally:
        await client.aclose()


def load_specs(
    credentials: Credentials | None = None,
    *,
    timeout: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> DatasourceSpecs:
    """What the datasource accepts: contact attributes, event types and their parameters.

    ``credentials`` default to the ``INSTASENT_*`` environment. Returns
    :class:`DatasourceSpecs` (``exit_code`` 0); fails like :func:`importer.check_datasource`.
    """
    return asyncio.run(aload_specs(credentials or Credentials.resolve(), timeout=timeout,
                                   transport=transport))


def _flags(a: AttributeSpec) -> str:
    flags = []
    if a.max_values != 1:
        flags.append(f"up to {a.max_values} values" if a.max_values else "multi-value")
    if a.read_only:
        flags.append("read-only")
    if a.custom:
        flags.append("custom")
    return ", ".join(flags)


def _param_flags(p: ParameterSpec) -> str:
    flags = ["required"] if p.required else []
    if p.max_length:
        flags.append(f"max {p.max_length} chars")
    if p.max_values != 1:
        flags.append(f"up to {p.max_values} values" if p.max_values else "multi-value")
    return ", ".join(flags)


def render_specs(specs: DatasourceSpecs) -> str:
    """The table ``instasent-import specs`` prints."""
    width = max([len(a.uid) for a in specs.attributes] + [12]) + 2
    lines = [f"contact attributes ({len(specs.attributes)})"]
    lines += [
        f"  {a.uid:<{width}}{a.data_type:<9}{a.label}"
        + (f"  ({_flags(a)})" if _flags(a) else "")
        for a in specs.attributes
    ]
    lines += ["", f"event types ({len(specs.events)})"]
    for e in specs.events:
        category = f"  [{e.category}]" if e.category else ""
        lines.append(f"  {e.uid}  {e.name}{category}")
        pwidth = max([len(p.name) for p in e.parameters] + [10]) + 2
        lines += [
            f"      {p.name:<{pwidth}}{p.data_type:<9}"
            + (f"{_param_flags(p)}" if _param_flags(p) else "")
            for p in e.parameters
        ]
        if not e.parameters:
            lines.append("      (no parameter specs)")
    return "\n".join(line.rstrip() for line in lines)


# ───────────────────────────── the mapping against the specs ─────────────────────────────


class _Checker:
    """Collects problems and per-row limits while walking a mapping."""

    def __init__(self, specs: DatasourceSpecs) -> None:
        self.specs = specs
        self.problems: list[MappingProblem] = []
        self.limits: list[FieldLimit] = []

    def error(self, message: str, line: int) -> None:
        self.problems.append(MappingProblem(message, line))

    def warn(self, message: str, line: int) -> None:
        self.problems.append(MappingProblem(message, line, "warning"))

    # -- attributes: contact fields and an event's _user_data

    def attribute(self, target: TargetName, path: str, name: str, f: FieldSpec | None,
                  line: int) -> None:
        if name == "_user_id":
            return  # every datasource has it (API.md §3), listed in its specs or not
        spec = self.specs.attribute(name)
        src = self.specs.source
        if spec is None:
            if name.startswith("_"):
                hint = did_you_mean(name, [a.uid for a in self.specs.attributes])
                self.error(f"{path}: {name!r} is not a reserved attribute of {src}{hint}; "
                           "name custom attributes without a leading '_' (see "
                           "`instasent-import specs`)", line)
            return
        if spec.read_only:
            self.error(f"{path}: {name!r} is set by Instasent ({src} marks it read-only); "
                       "remove it from the mapping", line)
            return
        if f is None:
            return
        self._attribute_type(path, spec, f, line)
        if f.type == "list":
            if spec.max_values == 1:
                self.error(f"{path}: {name!r} holds one value in {src}, but the mapping sends "
                           "a list (type: list); use type: string", line)
            elif spec.max_values is not None:
                self.limits.append(FieldLimit(target, path, max_values=spec.max_values,
                                              origin=f"attribute {name!r}"))

    def _attribute_type(self, path: str, spec: AttributeSpec, f: FieldSpec, line: int) -> None:
        if isinstance(f.source, ValueSource) or f.type != "string":
            return
        wanted = {"date": "date", "bool": "bool"}.get(spec.data_type)
        if wanted:
            self.warn(f"{path}: {spec.uid!r} is a {spec.data_type} attribute, sent as given "
                      f"text; add `type: {wanted}` so bad values are caught before sending",
                      line)

    # -- events

    def events(self, target: TargetSpec) -> None:
        by_name = {f.name: f for f in target.fields}
        kind = by_name.get("_event_type")
        params = by_name.get("_event_parameters")
        user_data = by_name.get("_user_data")
        if isinstance(user_data, NestedSpec):
            for f in user_data.fields:
                self.attribute("events", f"_user_data.{f.name}", f.name, f, f.line)
        if not isinstance(kind, FieldSpec):
            return
        fixed = _constant(kind)
        if fixed is not None:
            found = self.specs.event(fixed)
            if found is None:
                hint = did_you_mean(fixed, self.specs.event_types)
                self.error(f"_event_type {fixed!r} is not an event type of {self.specs.source}"
                           f"{hint}; it has: {', '.join(self.specs.event_types) or 'none'}",
                           kind.line)
                return
            in_play = [found]
        else:
            in_play = list(self.specs.events)
        mapped = params.fields if isinstance(params, NestedSpec) else ()
        line = params.line if isinstance(params, NestedSpec) else kind.line
        self._parameters(in_play, mapped, line, constant=fixed is not None)

    def _parameters(self, kinds: Sequence[EventTypeSpec], mapped: Sequence[FieldSpec],
                    line: int, *, constant: bool) -> None:
        names = {f.name for f in mapped}
        for kind in kinds:
            for spec in kind.parameters:
                if spec.required and spec.name not in names:
                    self._unfilled(kind, spec, line, constant)
            for f in mapped:
                found = kind.parameter(f.name)
                if found is not None:
                    self._parameter(kind, found, f, constant)
        known = {p.name for k in kinds for p in k.parameters}
        for f in mapped:
            if f.name not in known and kinds:
                hint = did_you_mean(f.name, sorted(known))
                which = f"event type {kinds[0].uid!r}" if constant else "any event type"
                self.warn(f"_event_parameters.{f.name} is not a parameter of {which} in "
                          f"{self.specs.source}{hint}; it is sent as is", f.line)
        self._merge_limits()

    def _unfilled(self, kind: EventTypeSpec, spec: ParameterSpec, line: int,
                  constant: bool) -> None:
        path = f"_event_parameters.{spec.name}"
        if constant:
            self.error(f"event type {kind.uid!r} requires parameter {spec.name!r}, which the "
                       "mapping does not fill; map it under _event_parameters", line)
            return
        self.warn(f"rows of event type {kind.uid!r} will be rejected (required_missing): its "
                  f"required parameter {spec.name!r} is not mapped under _event_parameters",
                  line)
        self.limits.append(FieldLimit("events", path, required=True,
                                      event_types=frozenset({kind.uid})))

    def _parameter(self, kind: EventTypeSpec, spec: ParameterSpec, f: FieldSpec,
                   constant: bool) -> None:
        path = f"_event_parameters.{f.name}"
        where = f"event type {kind.uid!r}"
        report = self.error if constant else self.warn
        if f.type == "list" and spec.max_values == 1:
            report(f"{path}: {where} takes one value for {spec.name!r}, but the mapping sends "
                   "a list (type: list); use type: string", f.line)
        if isinstance(f.source, ValueSource) and spec.max_length:
            text = _constant_text(f)
            if len(text) > spec.max_length:
                report(f"{path}: the constant {text!r} has {len(text)} characters; {where} "
                       f"allows at most {spec.max_length}", f.line)
        if spec.data_type in _NUMBER_TYPES and f.type == "string" and not isinstance(
            f.source, ValueSource
        ):
            self.warn(f"{path}: {where} expects a number; add `type: float` (or int) so bad "
                      "values are caught before sending", f.line)
        limit = FieldLimit(
            "events", path,
            max_length=spec.max_length,
            max_values=spec.max_values if f.type == "list" and spec.max_values != 1 else None,
            required=spec.required and not f.required,
            event_types=None if constant else frozenset({kind.uid}),
            origin=where,
        )
        if limit.max_length or limit.max_values or limit.required:
            self.limits.append(limit)

    def _merge_limits(self) -> None:
        """One limit per (path, rule) over all the event types that share it."""
        merged: dict[tuple[Any, ...], FieldLimit] = {}
        for limit in self.limits:
            key = (limit.target, limit.path, limit.max_length, limit.max_values,
                   limit.required, limit.event_types is None)
            seen = merged.get(key)
            if seen is None or seen.event_types is None or limit.event_types is None:
                merged.setdefault(key, limit)
                continue
            merged[key] = FieldLimit(limit.target, limit.path, limit.max_length,
                                     limit.max_values, limit.required,
                                     seen.event_types | limit.event_types, limit.origin)
        self.limits = list(merged.values())


def _constant(f: FieldSpec) -> str | None:
    if isinstance(f.source, ValueSource) and not f.transforms:
        return _constant_text(f)
    return None


def _constant_text(f: FieldSpec) -> str:
    value = f.source.value if isinstance(f.source, ValueSource) else ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _walk(
    spec: MappingSpec, specs: DatasourceSpecs, compiled: Sequence[CompiledMapping]
) -> _Checker:
    checker = _Checker(specs)
    for target in spec.targets:
        if target.target == "contacts":
            for f in target.leaves():
                checker.attribute("contacts", f.name, f.name, f, f.line)
            line = target.pass_through.line if target.pass_through else target.line
            for column in _passed(compiled, "contacts"):
                checker.attribute("contacts", column, column, None, line)
        else:
            checker.events(target)
    return checker


def _passed(compiled: Iterable[CompiledMapping], target: str) -> list[str]:
    names: dict[str, None] = {}
    for c in compiled:
        names.update(dict.fromkeys(c.pass_through.get(target, ())))
    return list(names)


def check_mapping(
    spec: MappingSpec,
    specs: DatasourceSpecs,
    *,
    compiled: Sequence[CompiledMapping] = (),
) -> list[MappingProblem]:
    """Every problem of ``spec`` against the datasource's ``specs`` (errors and warnings,
    with YAML lines). ``compiled`` adds the columns ``all_other_columns`` sends."""
    problems = _walk(spec, specs, compiled).problems
    return sorted(dict.fromkeys(problems), key=lambda p: (p.line, p.severity))


def limits_for(spec: MappingSpec, specs: DatasourceSpecs) -> Limits:
    """The per-row rules the engine enforces for ``spec`` under these specs."""
    checker = _walk(spec, specs, ())
    events = any(t.target == "events" for t in spec.targets)
    return Limits(
        fields=tuple(checker.limits),
        event_types=frozenset(specs.event_types) if events else None,
        source=specs.source,
    )


def apply_specs(
    spec: MappingSpec,
    compiled: Sequence[CompiledMapping],
    specs: DatasourceSpecs,
) -> tuple[tuple[CompiledMapping, ...], tuple[MappingProblem, ...]]:
    """Check ``spec`` against ``specs``; raise :class:`MappingError` (exit 2, nothing sent)
    on any error. Returns the compiled mappings now enforcing the datasource's per-row limits,
    and the warnings."""
    problems = check_mapping(spec, specs, compiled=compiled)
    if any(p.severity == "error" for p in problems):
        raise MappingError(spec.path, problems)
    limits = limits_for(spec, specs)
    return tuple(with_limits(c, limits) for c in compiled), tuple(problems)
