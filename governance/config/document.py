"""The configuration document: YAML in, a mapping that remembers each path's line.

:func:`load_document` parses one YAML document with a safe loader that refuses
duplicate keys, keeps timestamps as strings (the document is stored as JSON), and
refuses documents whose nesting or aliases would cost far more than their size
(:data:`MAX_YAML_DEPTH`, :data:`MAX_ALIAS_NODES`); a syntax error is a ConfigError
naming the file, line and column. The result is a :class:`Document`, whose
:meth:`~Document.line_of` lets every later error name its line as well as its path
(:func:`with_lines`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from governance.errors import ConfigError

MAX_YAML_DEPTH: Final = 64
"""Nesting the YAML loader accepts (an organisation document needs about six levels).

PyYAML composes nested nodes recursively, and the line map walks them the same way: a
document of 50,000 ``[`` ended in a RecursionError traceback instead of an error."""

MAX_ALIAS_NODES: Final = 100_000
"""Nodes that aliases may add to a document, an alias counting as the whole of what it
names. Aliases are shared while composing, but everything after (the line map, pydantic,
the JSON stored as the revision) walks the expanded document: 331 bytes of nested
aliases became 2.3 million entries, and 481 bytes took 37 s and 4 GB. 100,000 leaves
room for anchors used as defaults across thousands of entries."""


class DocumentTooLarge(yaml.YAMLError):
    """Composing the document would go past :data:`MAX_YAML_DEPTH` or
    :data:`MAX_ALIAS_NODES`; ``path`` and ``line`` say where."""

    def __init__(self, message: str, *, path: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys, keeps timestamps as strings (the
    document is stored as JSON), and refuses documents whose nesting or aliases would
    cost far more than their size (:class:`DocumentTooLarge`)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._path: list[str] = []
        self._alias_nodes = 0
        self._extents: dict[int, tuple[int, int]] = {}
        """(nodes, depth) of each anchored node once expanded, by id(node)."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if isinstance(index, yaml.ScalarNode):
            self._path.append(f".{index.value}")
        elif isinstance(index, int):
            self._path.append(f"[{index}]")
        else:  # the root, or a mapping's key
            self._path.append("")
        self._depth += 1
        try:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            if self._depth > MAX_YAML_DEPTH:
                raise self._too_large(f"nesting deeper than {MAX_YAML_DEPTH} levels", mark)
            aliased = self.check_event(yaml.AliasEvent)
            node = super().compose_node(parent, index)
            if aliased and node is not None:
                nodes, depth = self._extent(node)
                if self._depth - 1 + depth > MAX_YAML_DEPTH:
                    raise self._too_large(
                        f"nesting deeper than {MAX_YAML_DEPTH} levels once its aliases "
                        "are expanded",
                        mark,
                    )
                self._alias_nodes += nodes
                if self._alias_nodes > MAX_ALIAS_NODES:
                    raise self._too_large(
                        f"aliases expand the document by more than {MAX_ALIAS_NODES:,} "
                        "nodes (an alias counts as everything its anchor names); write "
                        "the repeated parts out, or use fewer nested aliases",
                        mark,
                    )
            return node
        finally:
            self._depth -= 1
            self._path.pop()

    def _too_large(self, what: str, mark: yaml.Mark) -> DocumentTooLarge:
        path = "".join(self._path).lstrip(".")
        return DocumentTooLarge(f"the document is refused: {what}", path=path, line=mark.line + 1)

    def _extent(self, node: yaml.Node) -> tuple[int, int]:
        """(nodes, depth) of ``node`` with its aliases expanded; linear in the composed
        nodes, since each is measured once (its depth is bounded by the composition's)."""
        found = self._extents.get(id(node))
        if found is not None:
            return found
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        nodes, depth = 1, 1
        for child in children:
            child_nodes, child_depth = self._extent(child)
            nodes += child_nodes
            depth = max(depth, child_depth + 1)
        self._extents[id(node)] = (nodes, depth)
        return nodes, depth

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _timestamp_as_string(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    value: str = loader.construct_scalar(node)  # type: ignore[arg-type]
    return value


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_string)


class Document(dict[str, Any]):
    """A parsed configuration document that remembers the line of each path in it, so
    that a validation error can name the line as well as the path."""

    def __init__(self, data: Mapping[str, Any], lines: Mapping[str, int]) -> None:
        super().__init__(data)
        self.lines = dict(lines)

    def line_of(self, path: str) -> int | None:
        """The line of ``path``, or of the nearest enclosing path that has one."""
        while path:
            line = self.lines.get(path)
            if line is not None:
                return line
            parent = re.sub(r"(\.[^.\[\]]*|\[\d+\])$", "", path)
            path = "" if parent == path else parent
        return None


def _node_lines(node: yaml.Node, path: str, out: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = f"{path}.{key.value}" if path else str(key.value)
            out[child] = key.start_mark.line + 1
            _node_lines(value, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            child = f"{path}[{i}]"
            out[child] = value.start_mark.line + 1
            _node_lines(value, child, out)


def load_document(text: str, *, source: str) -> dict[str, Any]:
    """Parse one YAML document; a syntax error is a ConfigError naming file and line.

    The result is a :class:`Document`: :func:`build_org` and :func:`apply` add the line
    to the errors they raise about it.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except DocumentTooLarge as exc:
        raise ConfigError(
            f"invalid YAML: {exc.message} (line {exc.line})", source=source, path=exc.path
        ) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"invalid YAML: {reason}", source=source, path=where) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", source=source) from exc
    finally:
        loader.dispose()
    if data is None:
        return Document({}, {})
    if not isinstance(data, dict):
        raise ConfigError(
            "the document must be a mapping with the keys pools, skus, departments, "
            f"role_bindings, not a {type(data).__name__}",
            source=source,
        )
    lines: dict[str, int] = {}
    assert node is not None
    _node_lines(node, "", lines)
    return Document(data, lines)


def with_lines(exc: ConfigError, document: Mapping[str, Any]) -> ConfigError:
    """``exc`` with the line of each error's path, when ``document`` came from a file."""
    if not isinstance(document, Document):
        return exc
    return exc.with_lines(document.line_of)


def load_file(path: str | Path) -> dict[str, Any]:
    """Read and parse a configuration file (``-`` is not handled here: pass the text)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", source=str(path)) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} (line "
            f"{line}) cannot be decoded; save the file as UTF-8",
            source=str(path),
        ) from None
    return load_document(text, source=str(path))
