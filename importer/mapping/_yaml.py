"""Read a mapping's YAML into plain values, remembering the line of every key and item.

Why not ``yaml.safe_load``: it silently keeps the last of two duplicate keys, turns ``NO``
(Norway) and ``yes`` into booleans and ``0123`` into 83. A mapping lives for years, so every
plain scalar here is a string except ``true``/``false`` and ``null``/``~``/empty, duplicate keys
are problems, and only the standard YAML tags are accepted (nothing is ever constructed from a
tag, so no user code can run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from importer.exceptions import MappingProblem

Path = tuple[str | int, ...]

_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})
_NULL = frozenset({"", "~", "null", "Null", "NULL"})
_STANDARD_TAG = "tag:yaml.org,2002:"
#: the tags plain YAML data resolves to; anything else (``!!python/…``, custom ``!tags``) is
#: refused rather than ignored
_PLAIN_TAGS = frozenset(
    _STANDARD_TAG + t for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
)
_MAX_NODES = 200_000  # an alias bomb expands exponentially; a real mapping has a few hundred


@dataclass
class YamlDoc:
    """The document as dicts/lists/str/bool/None, plus ``lines[path]`` (1-based)."""

    value: Any
    lines: dict[Path, int] = field(default_factory=dict)
    problems: list[MappingProblem] = field(default_factory=list)

    def line(self, path: Path) -> int:
        """The line of ``path``, or of its nearest ancestor that has one (0 when unknown)."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(path[:end])
            if found:
                return found
        return 0


def read_yaml(text: str) -> YamlDoc:
    doc = YamlDoc(value=None)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        if exc.problem and any(f"found {c!r}" in exc.problem for c in ",[]{}&*!|>%@`"):
            problem += ' (a value starting with punctuation must be quoted: decimal: ",")'
        doc.problems.append(MappingProblem(f"YAML syntax error: {problem}", line))
        return doc
    except yaml.YAMLError as exc:
        doc.problems.append(MappingProblem(f"YAML error: {exc}"))
        return doc
    if node is None:
        doc.problems.append(MappingProblem("the mapping file is empty", 1))
        return doc
    doc.lines[()] = node.start_mark.line + 1
    try:
        doc.value = _Walker(doc).walk(node, ())
    except _TooBig:
        doc.value = None
        doc.problems.append(
            MappingProblem(f"the mapping expands to more than {_MAX_NODES} YAML nodes", 1)
        )
    return doc


class _Walker:
    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc
        self.count = 0

    def walk(self, node: yaml.Node, path: Path) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:
            raise _TooBig
        if node.tag not in _PLAIN_TAGS:
            self._problem(f"unsupported YAML tag {node.tag!r}; write plain values", node)
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return self._sequence(node, path)
        return _scalar(node)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _STANDARD_TAG + "merge":
                self._problem("YAML merge keys (<<) are not supported; repeat the keys", key_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._problem("a key must be a plain name, not a list or a mapping", key_node)
                continue
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in out:
                first = self.doc.lines.get((*path, key), 0)
                self.doc.problems.append(
                    MappingProblem(
                        f"duplicate key {key!r} (first at line {first}); YAML would silently "
                        "keep only the last one — remove one of them",
                        line,
                    )
                )
                continue
            self.doc.lines[(*path, key)] = line
            out[key] = self.walk(value_node, (*path, key))
        return out

    def _sequence(self, node: yaml.SequenceNode, path: Path) -> list[Any]:
        items = []
        for index, item in enumerate(node.value):
            self.doc.lines[(*path, index)] = item.start_mark.line + 1
            items.append(self.walk(item, (*path, index)))
        return items

    def _problem(self, message: str, node: yaml.Node) -> None:
        self.doc.problems.append(MappingProblem(message, node.start_mark.line + 1))


class _TooBig(Exception):
    pass


def _scalar(node: yaml.Node) -> str | bool | None:
    text = str(node.value)
    if getattr(node, "style", None) is None:  # plain (unquoted) scalar
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        if text in _NULL:
            return None
    return text

