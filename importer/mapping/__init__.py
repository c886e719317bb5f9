"""The mapping language: a YAML file that says how an export's columns become API items.

Closed by design: column, constant, template, hash and coalesce sources, a fixed set of types
and transforms, row filters; nothing in a mapping is ever executed. ``docs/mapping.md`` is the
user guide.

    spec = load_mapping("mappings/contacts.yaml")        # MappingError lists every problem
    compiled = compile_mapping(spec, source.columns)      # checks columns against the header
    spec, per_file = load_and_compile(path, [(file, columns), …])  # both, every problem at once
    mapped = compiled.map_batch(batch)                    # items per target, rejects, filtered

Modules: ``_yaml`` (YAML with line numbers), ``shapes`` (the YAML shape, pydantic),
``load`` (load_mapping: every problem at once), ``rules`` (Instasent's rules per target),
``options`` (type options), ``spec`` (the frozen result), ``casts`` (polars expressions per
type), ``dates`` (date formats: Python's strptime, ISO 8601, epoch, Excel), ``phone`` (E.164),
``engine`` (compile, map, serialise), ``header`` (the mapping's columns against a file's
header), ``check`` (load + compile against every header at once),
``limits`` (a datasource's per-row limits, enforced by the engine under ``--specs``).
"""

from importer.mapping.check import load_and_compile
from importer.mapping.engine import (
    CompiledMapping,
    MappedBatch,
    MappedItems,
    compile_mapping,
    with_limits,
)
from importer.mapping.limits import FieldLimit, Limits
from importer.mapping.load import load_mapping, parse_mapping
from importer.mapping.spec import FieldSpec, MappingSpec, NestedSpec, TargetSpec

__all__ = [
    "CompiledMapping",
    "FieldLimit",
    "FieldSpec",
    "Limits",
    "MappedBatch",
    "MappedItems",
    "MappingSpec",
    "NestedSpec",
    "TargetSpec",
    "compile_mapping",
    "load_and_compile",
    "load_mapping",
    "parse_mapping",
    "with_limits",
]
