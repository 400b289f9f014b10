"""Declarative configuration: one YAML document -> a validated :class:`~governance.model.Org`.

Three steps, each an edge or a pure function:

* :func:`load_document` parses YAML (a syntax error names the file, line and column);
* :func:`build_org` validates the document (pydantic checks the shape, then the
  cross-references are checked here) and converts it at once to the frozen dataclasses
  of :mod:`governance.model`; every error is a :class:`~governance.errors.ConfigError`
  naming the file, the path inside the document (``departments[2].queues[0].quota.memory``)
  and the reason;
* :func:`diff` says what changed between two organisations.

Recording a document in the store is :mod:`governance.storage.apply`'s; readers keep
the organisation in force with :class:`governance.storage.source.OrgSource`. The YAML
reference is docs/config.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from governance import backends, rbac
from governance.contract import SKU_CUSTOM
from governance.errors import ConfigError
from governance.model import ROLES, Department, Org, Pool, Queue, Quota, RoleBinding, Sku
from governance.resources import RESOURCE_NAMES, Limits, ResourceName

YAML_KEYS: Final[dict[ResourceName, str]] = {
    "slices": "slices",
    "memory_mib": "memory",
    "compute_pct": "compute",
}
"""How each quota resource is spelled in the YAML document."""

# --------------------------------------------------------------------------------------
# Quantities
# --------------------------------------------------------------------------------------

UNLIMITED_WORD: Final = "unlimited"
_MEMORY_UNITS: Final = {"Mi": 1, "MiB": 1, "Gi": 1024, "GiB": 1024, "Ti": 1024**2, "TiB": 1024**2}
_MEMORY_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_COMPUTE_RE: Final = re.compile(r"^\s*(\d+)\s*%?\s*$")


def parse_memory_mib(value: object) -> int | None:
    """GPU memory in MiB: an integer (MiB) or ``"512Mi"``, ``"80Gi"``, ``"8GiB"``,
    ``"1.5Ti"``; ``"unlimited"`` or None is None (no limit). ValueError otherwise."""
    if value is None or value == UNLIMITED_WORD:
        return None
    if isinstance(value, bool):
        raise ValueError(f"memory {value!r} is not a quantity")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"memory {value} is negative: quantities must be 0 or more")
        return value
    if isinstance(value, float):
        raise ValueError(
            f"memory {value!r} is not a whole number of MiB: write an integer (MiB) or a "
            "string with a unit (512Mi, 80Gi, 1Ti)"
        )
    if isinstance(value, str):
        if value.strip().startswith("-"):
            raise ValueError(f"memory {value!r} is negative: quantities must be 0 or more")
        match = _MEMORY_RE.match(value)
        if match and match.group(2) in ("", *_MEMORY_UNITS):
            number, unit = match.groups()
            mib = float(number) * _MEMORY_UNITS.get(unit, 1)
            if mib != int(mib):
                raise ValueError(f"memory {value!r} is not a whole number of MiB")
            return int(mib)
        raise ValueError(
            f"memory {value!r} is not a quantity: write MiB as an integer, or a string with "
            "a binary unit (512Mi, 80Gi, 8GiB, 1Ti), or 'unlimited'"
        )
    raise ValueError(f"memory {value!r} is not a quantity")


def parse_compute_pct(value: object) -> int | None:
    """Compute in percent of one card: ``30``, ``"30%"`` (``"3200%"`` is 32 cards);
    ``"unlimited"`` or None is None. ValueError otherwise."""
    if value is None or value == UNLIMITED_WORD:
        return None
    if isinstance(value, bool | float):
        raise ValueError(f"compute {value!r} is not a whole percentage (write 30 or '30%')")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"compute {value} is negative: quantities must be 0 or more")
        return value
    if isinstance(value, str):
        if value.strip().startswith("-"):
            raise ValueError(f"compute {value!r} is negative: quantities must be 0 or more")
        match = _COMPUTE_RE.match(value)
        if match:
            return int(match.group(1))
    raise ValueError(
        f"compute {value!r} is not a quantity: write percent of a card as 30 or '30%' "
        "(100% is one whole card), or 'unlimited'"
    )


def parse_count(value: object) -> int | None:
    """A count of slices: an integer >= 0, or ``"unlimited"``/None (no limit)."""
    if value is None or value == UNLIMITED_WORD:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"slices {value} is negative: quantities must be 0 or more")
        return value
    raise ValueError(f"slices {value!r} is not a whole number (or 'unlimited')")


def _required_memory(value: object) -> int:
    mib = parse_memory_mib(value)
    if mib is None:
        raise ValueError("memory per GPU must be a quantity, not unlimited")
    if mib == 0:
        raise ValueError("memory per GPU must be more than 0")
    return mib


def _non_negative(what: str) -> Callable[[object], object]:
    def check(value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise ValueError(f"{what} {value} is negative: quantities must be 0 or more")
        return value

    return check


def format_mib(mib: int | None) -> str:
    """``81920`` -> ``80Gi``; None -> ``unlimited``."""
    if mib is None:
        return UNLIMITED_WORD
    if mib == 0:
        return "0"
    for unit, size in (("Ti", 1024**2), ("Gi", 1024)):
        if mib and mib % size == 0:
            return f"{mib // size}{unit}"
    return f"{mib}Mi"


def format_amount(resource: ResourceName, value: int | None) -> str:
    if value is None:
        return UNLIMITED_WORD
    if resource == "memory_mib":
        return format_mib(value)
    if resource == "compute_pct":
        return f"{value}%"
    return str(value)


# --------------------------------------------------------------------------------------
# The document's shape (pydantic: untrusted input stops here)
# --------------------------------------------------------------------------------------

MemoryQ = Annotated[int | None, BeforeValidator(parse_memory_mib)]
ComputeQ = Annotated[int | None, BeforeValidator(parse_compute_pct)]
CountQ = Annotated[int | None, BeforeValidator(parse_count)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LimitsDoc(_Doc):
    slices: CountQ = None
    memory: MemoryQ = None
    compute: ComputeQ = None

    def limits(self) -> Limits:
        return Limits.of(slices=self.slices, memory_mib=self.memory, compute_pct=self.compute)


class QuotaDoc(LimitsDoc):
    per_sku: dict[str, LimitsDoc] = Field(default_factory=dict)
    per_pool: dict[str, LimitsDoc] = Field(default_factory=dict)


class PoolDoc(_Doc):
    name: str
    vendor: str
    model: str
    backend: str
    gpus: Annotated[int, BeforeValidator(_non_negative("gpus"))]
    memory_per_gpu: Annotated[int, BeforeValidator(_required_memory)]
    memory_oversubscription: float = 1.0
    compute_oversubscription: float = 1.0
    node_selector: dict[str, str] = Field(default_factory=dict)
    backend_options: dict[str, Any] = Field(default_factory=dict)


class SkuDoc(_Doc):
    name: str
    compute: Annotated[int, BeforeValidator(parse_compute_pct)]
    memory: MemoryQ = None
    memory_pct: Annotated[int | None, BeforeValidator(_non_negative("memory_pct"))] = None
    gpus: Annotated[int, BeforeValidator(_non_negative("gpus"))] = 1
    price_per_hour: Annotated[float | None, BeforeValidator(_non_negative("price_per_hour"))] = None
    pools: list[str]
    description: str = ""


class QueueDoc(_Doc):
    name: str
    pool: str
    quota: QuotaDoc = Field(default_factory=QuotaDoc)
    borrowing_limit: LimitsDoc = Field(default_factory=LimitsDoc)
    default_sku: str | None = None
    skus: list[str] = Field(default_factory=list)


class DepartmentDoc(_Doc):
    name: str
    namespaces: list[str] = Field(default_factory=list)
    default_queue: str
    quota: QuotaDoc = Field(default_factory=QuotaDoc)
    queues: list[QueueDoc] = Field(default_factory=list)


class RoleBindingDoc(_Doc):
    role: str
    department: str | None = None
    subjects: list[str]
    queues: list[str] = Field(default_factory=list)
    skus: list[str] = Field(default_factory=list)


class OrgDoc(_Doc):
    apiVersion: str = "gpupool.io/v1"  # the YAML key
    kind: str = "Organisation"
    pools: list[PoolDoc] = Field(default_factory=list)
    skus: list[SkuDoc] = Field(default_factory=list)
    departments: list[DepartmentDoc] = Field(default_factory=list)
    role_bindings: list[RoleBindingDoc] = Field(default_factory=list)


# --------------------------------------------------------------------------------------
# Loading YAML
# --------------------------------------------------------------------------------------


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


def with_line(exc: ConfigError, document: Mapping[str, Any]) -> ConfigError:
    """``exc`` with the line of its path appended, when the document knows it."""
    if not isinstance(document, Document) or not exc.path:
        return exc
    line = document.line_of(exc.path)
    if line is None:
        return exc
    return ConfigError(f"{exc.reason} (line {line})", source=exc.source, path=exc.path)


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


# --------------------------------------------------------------------------------------
# Validation and conversion
# --------------------------------------------------------------------------------------

_NAME_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$")
_NAMESPACE_RE: Final = re.compile(r"^[a-z0-9*?]([-a-z0-9*?]{0,61}[a-z0-9*?])?$")


def _path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _pydantic_error(exc: ValidationError, source: str) -> ConfigError:
    errors = exc.errors()
    first = errors[0]
    loc = first["loc"]
    kind = first["type"]
    if kind == "value_error":
        reason = str(first.get("ctx", {}).get("error", first["msg"]))
    elif kind == "missing":
        reason = f"required field {loc[-1]!r} is missing"
    elif kind == "extra_forbidden":
        reason = f"unknown field {loc[-1]!r} (check its spelling against docs/config.md)"
    else:
        reason = f"{first['msg']} (got {first.get('input')!r})"
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return ConfigError(reason, source=source, path=_path(loc))


def known_backends() -> list[str]:
    """Backend names a pool may use: every registered backend."""
    return sorted(backends.BACKENDS)


def globs_overlap(a: str, b: str) -> bool:
    """Whether some namespace matches both glob patterns (``*`` and ``?`` only).

    Walks the product of the two patterns' automata: a state is a position in each.
    First a cheap test on the literal text before the first and after the last
    wildcard, which settles almost every pair of an organisation's patterns (an apply
    compares every pair, and organisations have a thousand departments).
    """
    pa, pb = _literal_prefix(a), _literal_prefix(b)
    if not (pa.startswith(pb) or pb.startswith(pa)):
        return False
    sa_, sb_ = _literal_prefix(a[::-1]), _literal_prefix(b[::-1])
    if not (sa_.startswith(sb_) or sb_.startswith(sa_)):
        return False
    start = (0, 0)
    seen = {start}
    todo = [start]
    while todo:
        i, j = todo.pop()
        if i == len(a) and j == len(b):
            return True
        steps: list[tuple[int, int]] = []
        if i < len(a) and a[i] == "*":
            steps.append((i + 1, j))
        if j < len(b) and b[j] == "*":
            steps.append((i, j + 1))
        if i < len(a) and j < len(b):
            ca, cb = a[i], b[j]
            if ca in "*?" or cb in "*?" or ca == cb:
                steps.append((i if ca == "*" else i + 1, j if cb == "*" else j + 1))
        for step in steps:
            if step not in seen:
                seen.add(step)
                todo.append(step)
    return False


def _literal_prefix(pattern: str) -> str:
    """The text before the first wildcard."""
    for i, c in enumerate(pattern):
        if c in "*?":
            return pattern[:i]
    return pattern


def _is_pattern(namespace: str) -> bool:
    return "*" in namespace or "?" in namespace


class _Builder:
    """Checks the cross-references of a shape-valid document and builds the Org."""

    def __init__(self, doc: OrgDoc, source: str) -> None:
        self.doc = doc
        self.source = source

    def fail(self, path: str, message: str) -> ConfigError:
        return ConfigError(message, source=self.source, path=path)

    def name(self, path: str, value: str, what: str) -> str:
        if value == "*" or not _NAME_RE.match(value):
            raise self.fail(
                path,
                f"{what} name {value!r} is not valid: use lowercase letters, digits, '-', "
                "'.', '_' (at most 63 characters, starting and ending with a letter or digit)",
            )
        return value

    def unique(self, items: Iterable[tuple[str, str]], what: str) -> None:
        seen: dict[str, str] = {}
        for path, name in items:
            if name in seen:
                raise self.fail(
                    f"{path}.name", f"duplicate {what} name {name!r} (also {seen[name]})"
                )
            seen[name] = path

    def build(self) -> Org:
        pools = self.pools()
        skus = self.skus(pools)
        departments, queues = self.departments(pools, skus)
        bindings = self.role_bindings(departments, queues, skus)
        return Org(
            skus=skus,
            pools=pools,
            departments=departments,
            queues=queues,
            role_bindings=bindings,
        )

    def pools(self) -> dict[str, Pool]:
        self.unique(((f"pools[{i}]", p.name) for i, p in enumerate(self.doc.pools)), "pool")
        out: dict[str, Pool] = {}
        allowed = known_backends()
        for i, doc in enumerate(self.doc.pools):
            at = f"pools[{i}]"
            self.name(f"{at}.name", doc.name, "pool")
            if doc.backend not in allowed:
                raise self.fail(
                    f"{at}.backend",
                    f"unknown backend {doc.backend!r} for pool {doc.name}; known backends: "
                    f"{', '.join(allowed)}",
                )
            for key in ("memory_oversubscription", "compute_oversubscription"):
                factor = getattr(doc, key)
                if factor < 1.0:
                    raise self.fail(
                        f"{at}.{key}",
                        f"over-subscription factor {factor} is below 1.0: a pool sells at "
                        "least its physical capacity (1.0 = no over-subscription)",
                    )
            out[doc.name] = Pool(
                name=doc.name,
                vendor=doc.vendor,
                model=doc.model,
                backend=doc.backend,
                gpus=doc.gpus,
                memory_mib_per_gpu=doc.memory_per_gpu,
                memory_oversubscription=doc.memory_oversubscription,
                compute_oversubscription=doc.compute_oversubscription,
                node_selector=dict(doc.node_selector),
                backend_options=dict(doc.backend_options),
            )
        return out

    def skus(self, pools: Mapping[str, Pool]) -> dict[str, Sku]:
        self.unique(((f"skus[{i}]", s.name) for i, s in enumerate(self.doc.skus)), "SKU")
        out: dict[str, Sku] = {}
        for i, doc in enumerate(self.doc.skus):
            at = f"skus[{i}]"
            self.name(f"{at}.name", doc.name, "SKU")
            if doc.name == SKU_CUSTOM:
                raise self.fail(
                    f"{at}.name",
                    f"SKU name {SKU_CUSTOM!r} is reserved for HAMi-form requests that name "
                    "no SKU: choose another name",
                )
            if doc.memory is not None and doc.memory_pct is not None:
                raise self.fail(
                    at,
                    f"SKU {doc.name} gives both memory and memory_pct: give one (memory "
                    "in MiB or with a unit, or memory_pct of the card)",
                )
            if not 1 <= doc.compute <= 100:
                raise self.fail(
                    f"{at}.compute",
                    f"SKU {doc.name} compute {doc.compute}% is not 1..100% of a card (it is "
                    "per GPU; a SKU spanning several cards sets gpus: N)",
                )
            memory_pct = doc.memory_pct
            if doc.memory is None and memory_pct is None:
                if doc.compute != 100:
                    raise self.fail(
                        at,
                        f"SKU {doc.name} gives neither memory nor memory_pct: only a whole-card "
                        "SKU (compute 100%) may leave memory out (it then gets the whole card's)",
                    )
                memory_pct = 100
            if memory_pct is not None and not 1 <= memory_pct <= 100:
                raise self.fail(
                    f"{at}.memory_pct", f"SKU {doc.name} memory_pct {memory_pct} is not 1..100"
                )
            if doc.memory == 0:
                raise self.fail(f"{at}.memory", f"SKU {doc.name} memory must be more than 0")
            if doc.gpus < 1:
                raise self.fail(f"{at}.gpus", f"SKU {doc.name} gpus must be 1 or more")
            if not doc.pools:
                raise self.fail(f"{at}.pools", f"SKU {doc.name} is offered on no pool")
            for j, pool_name in enumerate(doc.pools):
                pool = pools.get(pool_name)
                if pool is None:
                    raise self.fail(
                        f"{at}.pools[{j}]",
                        f"unknown pool {pool_name!r} for SKU {doc.name}; pools: "
                        f"{', '.join(sorted(pools)) or '(none defined)'}",
                    )
                if doc.memory is not None and doc.memory > pool.memory_mib_per_gpu:
                    raise self.fail(
                        f"{at}.memory",
                        f"SKU {doc.name} has {format_mib(doc.memory)} per GPU, more than a "
                        f"card of pool {pool.name} ({pool.model}, "
                        f"{format_mib(pool.memory_mib_per_gpu)})",
                    )
            out[doc.name] = Sku(
                name=doc.name,
                compute_pct=doc.compute,
                memory_mib=doc.memory,
                memory_pct=memory_pct,
                gpus_per_slice=doc.gpus,
                price_per_hour=doc.price_per_hour,
                pools=tuple(doc.pools),
                description=doc.description,
            )
        return out

    def quota(
        self,
        at: str,
        doc: QuotaDoc,
        pools: Mapping[str, Pool],
        skus: Mapping[str, Sku],
    ) -> Quota:
        for sku in doc.per_sku:
            if sku not in skus:
                raise self.fail(
                    f"{at}.per_sku.{sku}",
                    f"unknown SKU {sku!r} in a quota; SKUs: {', '.join(sorted(skus)) or '(none)'}",
                )
        for pool in doc.per_pool:
            if pool not in pools:
                raise self.fail(
                    f"{at}.per_pool.{pool}",
                    f"unknown pool {pool!r} in a quota; pools: "
                    f"{', '.join(sorted(pools)) or '(none)'}",
                )
        return Quota(
            total=doc.limits(),
            per_sku={k: v.limits() for k, v in doc.per_sku.items()},
            per_pool={k: v.limits() for k, v in doc.per_pool.items()},
        )

    def departments(
        self, pools: Mapping[str, Pool], skus: Mapping[str, Sku]
    ) -> tuple[dict[str, Department], dict[tuple[str, str], Queue]]:
        docs = self.doc.departments
        self.unique(((f"departments[{i}]", d.name) for i, d in enumerate(docs)), "department")
        self.namespaces()
        departments: dict[str, Department] = {}
        queues: dict[tuple[str, str], Queue] = {}
        for i, doc in enumerate(docs):
            at = f"departments[{i}]"
            self.name(f"{at}.name", doc.name, "department")
            quota = self.quota(f"{at}.quota", doc.quota, pools, skus)
            self.unique(
                ((f"{at}.queues[{j}]", q.name) for j, q in enumerate(doc.queues)),
                f"queue (in department {doc.name})",
            )
            for j, qdoc in enumerate(doc.queues):
                queue = self.queue(f"{at}.queues[{j}]", doc.name, quota, qdoc, pools, skus)
                queues[(doc.name, queue.name)] = queue
            names = [q.name for q in doc.queues]
            if doc.default_queue not in names:
                raise self.fail(
                    f"{at}.default_queue",
                    f"default queue {doc.default_queue!r} is not a queue of department "
                    f"{doc.name}; its queues: {', '.join(names) or '(none)'}",
                )
            departments[doc.name] = Department(
                name=doc.name,
                namespaces=tuple(doc.namespaces),
                default_queue=doc.default_queue,
                quota=quota,
            )
        return departments, queues

    def namespaces(self) -> None:
        owners: list[tuple[str, str, str]] = []  # (path, namespace, department)
        for i, doc in enumerate(self.doc.departments):
            for k, ns in enumerate(doc.namespaces):
                at = f"departments[{i}].namespaces[{k}]"
                if not _NAMESPACE_RE.match(ns):
                    raise self.fail(
                        at,
                        f"namespace {ns!r} is not a namespace name or glob pattern "
                        "(lowercase letters, digits, '-', and '*' or '?' in patterns)",
                    )
                for other_at, other, dept in owners:
                    if other == ns:
                        where = "also" if dept == doc.name else f"department {dept} has it"
                        raise self.fail(
                            at,
                            f"namespace {ns!r} is listed twice ({where} at {other_at}): a "
                            "namespace belongs to at most one department",
                        )
                    # An exact name beside another department's pattern is a deliberate
                    # carve-out (exact names win); two patterns that overlap are not.
                    if (
                        dept != doc.name
                        and _is_pattern(ns)
                        and _is_pattern(other)
                        and globs_overlap(ns, other)
                    ):
                        raise self.fail(
                            at,
                            f"namespace pattern {ns!r} of department {doc.name} overlaps "
                            f"{other!r} of department {dept} ({other_at}): a namespace "
                            "belongs to at most one department",
                        )
                owners.append((at, ns, doc.name))

    def queue(
        self,
        at: str,
        department: str,
        dept_quota: Quota,
        doc: QueueDoc,
        pools: Mapping[str, Pool],
        skus: Mapping[str, Sku],
    ) -> Queue:
        self.name(f"{at}.name", doc.name, "queue")
        pool = pools.get(doc.pool)
        if pool is None:
            raise self.fail(
                f"{at}.pool",
                f"unknown pool {doc.pool!r} for queue {department}/{doc.name}; pools: "
                f"{', '.join(sorted(pools)) or '(none defined)'}",
            )
        nominal = self.quota(f"{at}.quota", doc.quota, pools, skus)
        offered = sorted(s.name for s in skus.values() if pool.name in s.pools)
        for k, sku in enumerate(doc.skus):
            self.offered(f"{at}.skus[{k}]", sku, pool, skus, offered, department, doc.name)
        default_sku = doc.default_sku
        if default_sku is not None:
            self.offered(
                f"{at}.default_sku", default_sku, pool, skus, offered, department, doc.name
            )
            if doc.skus and default_sku not in doc.skus:
                raise self.fail(
                    f"{at}.default_sku",
                    f"default SKU {default_sku!r} is not among the SKUs of queue "
                    f"{department}/{doc.name}: {', '.join(doc.skus)}",
                )
        else:
            default_sku = _whole_card_sku(pool, skus, doc.skus)
        borrowing = doc.borrowing_limit.limits()
        for resource in RESOURCE_NAMES:
            if borrowing.get(resource).unlimited:
                continue
            key = YAML_KEYS[resource]
            if dept_quota.total.get(resource).unlimited:
                raise self.fail(
                    f"{at}.borrowing_limit.{key}",
                    f"queue {department}/{doc.name} has a borrowing limit on {key}, but "
                    f"department {department} has no {key} quota to borrow from: set the "
                    f"department's quota.{key} or remove the borrowing limit",
                )
            if nominal.total.get(resource).unlimited:
                raise self.fail(
                    f"{at}.borrowing_limit.{key}",
                    f"queue {department}/{doc.name} has a borrowing limit on {key} but no "
                    f"nominal {key} quota: a borrowing limit caps how far the queue goes "
                    f"above its nominal quota, so set quota.{key} too",
                )
        return Queue(
            name=doc.name,
            department=department,
            pool=pool.name,
            nominal=nominal,
            borrowing_limit=borrowing,
            default_sku=default_sku,
            skus=tuple(doc.skus),
        )

    def offered(
        self,
        at: str,
        sku: str,
        pool: Pool,
        skus: Mapping[str, Sku],
        offered: list[str],
        department: str,
        queue: str,
    ) -> None:
        if sku not in skus:
            raise self.fail(
                at,
                f"unknown SKU {sku!r} in queue {department}/{queue}; SKUs on pool "
                f"{pool.name}: {', '.join(offered) or '(none)'}",
            )
        if sku not in offered:
            raise self.fail(
                at,
                f"SKU {sku!r} is not offered on pool {pool.name} of queue {department}/{queue}; "
                f"SKUs on that pool: {', '.join(offered) or '(none)'}",
            )

    def role_bindings(
        self,
        departments: Mapping[str, Department],
        queues: Mapping[tuple[str, str], Queue],
        skus: Mapping[str, Sku],
    ) -> tuple[RoleBinding, ...]:
        out: list[RoleBinding] = []
        for i, doc in enumerate(self.doc.role_bindings):
            at = f"role_bindings[{i}]"
            if doc.role not in ROLES:
                raise self.fail(
                    f"{at}.role", f"unknown role {doc.role!r}; roles: {', '.join(ROLES)}"
                )
            department = doc.department
            if doc.role == rbac.PLATFORM_ADMIN:
                if department not in (None, rbac.EVERY_DEPARTMENT):
                    raise self.fail(
                        f"{at}.department",
                        "platform-admin holds every department: leave department out or write '*'",
                    )
                department = rbac.EVERY_DEPARTMENT
            elif department is None:
                raise self.fail(
                    f"{at}.department",
                    f"required field 'department' is missing (a department name, or '*' "
                    f"for every department) for role {doc.role}",
                )
            elif department != rbac.EVERY_DEPARTMENT and department not in departments:
                raise self.fail(
                    f"{at}.department",
                    f"unknown department {department!r}; departments: "
                    f"{', '.join(sorted(departments)) or '(none)'}",
                )
            if not doc.subjects:
                raise self.fail(f"{at}.subjects", "a role binding needs at least one subject")
            subjects: list[str] = []
            for k, subject in enumerate(doc.subjects):
                try:
                    subjects.append(rbac.normalize_subject(subject))
                except ValueError as exc:
                    raise self.fail(f"{at}.subjects[{k}]", str(exc)) from None
            if (doc.queues or doc.skus) and doc.role != rbac.MEMBER:
                raise self.fail(
                    at,
                    f"only a member binding may be narrowed to queues or SKUs; {doc.role} "
                    "holds the whole department",
                )
            if (doc.queues or doc.skus) and department == rbac.EVERY_DEPARTMENT:
                raise self.fail(at, "a binding narrowed to queues or SKUs must name one department")
            for k, queue in enumerate(doc.queues):
                if (department, queue) not in queues:
                    names = sorted(q for d, q in queues if d == department)
                    raise self.fail(
                        f"{at}.queues[{k}]",
                        f"unknown queue {queue!r} in department {department}; its queues: "
                        f"{', '.join(names)}",
                    )
            for k, sku in enumerate(doc.skus):
                if sku not in skus:
                    raise self.fail(
                        f"{at}.skus[{k}]",
                        f"unknown SKU {sku!r}; SKUs: {', '.join(sorted(skus)) or '(none)'}",
                    )
            out.append(
                RoleBinding(
                    role=doc.role,
                    department=department,
                    subjects=tuple(subjects),
                    queues=tuple(doc.queues),
                    skus=tuple(doc.skus),
                )
            )
        return tuple(out)

    def backends(self, org: Org) -> None:
        """Let each registered backend check the SKUs offered on its pools."""
        for i, doc in enumerate(self.doc.pools):
            backend = backends.BACKENDS.get(doc.backend)
            if backend is None:
                continue
            pool = org.pools[doc.name]
            try:
                backend.validate(pool, org.skus_on(pool.name))
            except ConfigError as exc:
                raise self.fail(self.doc_path(exc.path, f"pools[{i}]"), exc.reason) from exc

    def doc_path(self, path: str, default: str) -> str:
        """A backend's ``pools.NAME.x`` or ``skus.NAME.x`` as a path into the document."""
        kind, _, rest = path.partition(".")
        name, _, tail = rest.partition(".")
        names: list[str] = []
        if kind == "pools":
            names = [p.name for p in self.doc.pools]
        elif kind == "skus":
            names = [s.name for s in self.doc.skus]
        for i, item in enumerate(names):
            if item == name:
                return f"{kind}[{i}]" + (f".{tail}" if tail else "")
        return path or default


def _whole_card_sku(pool: Pool, skus: Mapping[str, Sku], allowed: list[str]) -> str | None:
    """The default SKU of a queue that names none: a whole card of its pool, if offered."""
    for sku in sorted(skus.values(), key=lambda s: s.name):
        if pool.name not in sku.pools or (allowed and sku.name not in allowed):
            continue
        if (
            sku.gpus_per_slice == 1
            and sku.compute_pct == 100
            and (sku.memory_mib_on(pool) == pool.memory_mib_per_gpu)
        ):
            return sku.name
    return None


def build_org(document: Mapping[str, Any], *, source: str = "") -> Org:
    """Validate ``document`` and build the organisation; ConfigError on any error."""
    try:
        doc = OrgDoc.model_validate(dict(document))
    except ValidationError as exc:
        raise with_line(_pydantic_error(exc, source), document) from None
    builder = _Builder(doc, source)
    try:
        org = builder.build()
        builder.backends(org)
    except ConfigError as exc:
        raise with_line(exc, document) from exc.__cause__
    return org


# --------------------------------------------------------------------------------------
# Differences between two organisations (for apply and --dry-run)
# --------------------------------------------------------------------------------------


def _limits_fields(prefix: str, limits: Limits) -> dict[str, str]:
    return {
        f"{prefix}{YAML_KEYS[r]}": format_amount(r, limits.get(r).value) for r in RESOURCE_NAMES
    }


def _quota_fields(prefix: str, quota: Quota) -> dict[str, str]:
    out = _limits_fields(f"{prefix} ", quota.total)
    for sku, limits in sorted(quota.per_sku.items()):
        out.update(_limits_fields(f"{prefix} per_sku {sku} ", limits))
    for pool, limits in sorted(quota.per_pool.items()):
        out.update(_limits_fields(f"{prefix} per_pool {pool} ", limits))
    return out


def _entities(org: Org | None) -> dict[str, dict[str, str]]:
    """Each entity of ``org`` as ``"kind name" -> {field: shown value}``, in order."""
    if org is None:
        return {}
    out: dict[str, dict[str, str]] = {}
    for p in org.pools.values():
        out[f"pool {p.name}"] = {
            "vendor": p.vendor,
            "model": p.model,
            "backend": p.backend,
            "gpus": str(p.gpus),
            "memory_per_gpu": format_mib(p.memory_mib_per_gpu),
            "memory_oversubscription": str(p.memory_oversubscription),
            "compute_oversubscription": str(p.compute_oversubscription),
            "node_selector": json.dumps(dict(p.node_selector), sort_keys=True),
            "backend_options": json.dumps(dict(p.backend_options), sort_keys=True),
        }
    for s in org.skus.values():
        out[f"sku {s.name}"] = {
            "memory": format_mib(s.memory_mib) if s.memory_mib is not None else "-",
            "memory_pct": str(s.memory_pct) if s.memory_pct is not None else "-",
            "compute": f"{s.compute_pct}%",
            "gpus": str(s.gpus_per_slice),
            "price_per_hour": str(s.price_per_hour),
            "pools": ", ".join(s.pools),
            "description": s.description,
        }
    for d in org.departments.values():
        out[f"department {d.name}"] = {
            "namespaces": ", ".join(d.namespaces),
            "default_queue": d.default_queue,
            **_quota_fields("quota", d.quota),
        }
    for (dept, name), q in org.queues.items():
        out[f"queue {dept}/{name}"] = {
            "pool": q.pool,
            "default_sku": str(q.default_sku),
            "skus": ", ".join(q.skus) or "(all on its pool)",
            **_quota_fields("nominal", q.nominal),
            **_limits_fields("borrowing_limit ", q.borrowing_limit),
        }
    for b in org.role_bindings:
        narrowed = ""
        if b.queues or b.skus:
            narrowed = (
                f" (queues {', '.join(b.queues) or 'all'}; SKUs {', '.join(b.skus) or 'all'})"
            )
        where = "every department" if b.department == rbac.EVERY_DEPARTMENT else b.department
        for subject in b.subjects:
            out[f"binding {b.role} in {where} for {subject}{narrowed}"] = {}
    return out


def diff(old: Org | None, new: Org) -> list[str]:
    """Human lines: ``+ department ml``, ``~ queue ml/train nominal memory 80Gi -> 160Gi``,
    ``- sku old``."""
    before = _entities(old)
    after = _entities(new)
    lines: list[str] = []
    for key, fields in after.items():
        if key not in before:
            lines.append(f"+ {key}")
            continue
        for name, value in fields.items():
            was = before[key].get(name)
            if was != value:
                lines.append(f"~ {key} {name} {was} -> {value}")
    lines.extend(f"- {key}" for key in before if key not in after)
    return lines


__all__ = [
    "Document",
    "build_org",
    "diff",
    "format_mib",
    "load_document",
    "load_file",
    "parse_compute_pct",
    "parse_memory_mib",
]
