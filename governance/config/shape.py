"""The document's shape, checked by pydantic: where untrusted YAML stops.

Field by field: unknown keys, wrong types, quantities that are not quantities
(:mod:`governance.quantity` reads them). :func:`validate` reports every shape error of
the document at once; what the fields refer to (a queue's pool, a binding's
department) is the builder's to check (:mod:`governance.config.builder`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from governance import quantity, resources
from governance.errors import ConfigError, FieldError
from governance.resources import Limits


def _required_memory(value: object) -> int:
    mib = quantity.parse_memory_mib(value)
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


MemoryQ = Annotated[int | None, BeforeValidator(quantity.parse_memory_mib)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _LimitsBase(_Doc):
    def limits(self) -> Limits:
        return Limits.of(**{r.name: getattr(self, r.yaml_key) for r in resources.RESOURCES})


if TYPE_CHECKING:

    class LimitsDoc(_LimitsBase):
        """A limit per quota resource, keyed as the YAML spells it (one field per
        entry of :data:`governance.resources.RESOURCES`)."""

else:
    LimitsDoc = create_model(
        "LimitsDoc",
        __base__=_LimitsBase,
        __doc__="A limit per quota resource, keyed as the YAML spells it.",
        **{
            r.yaml_key: (Annotated[int | None, BeforeValidator(r.parse)], None)
            for r in resources.RESOURCES
        },
    )


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
    compute: Annotated[int, BeforeValidator(quantity.parse_compute_pct)]
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


def validate(document: Mapping[str, Any], *, source: str = "") -> OrgDoc:
    """The document as an :class:`OrgDoc`; a ConfigError with every shape error."""
    try:
        return OrgDoc.model_validate(dict(document))
    except ValidationError as exc:
        raise ConfigError(source=source, errors=[_field_error(e) for e in exc.errors()]) from None


def _field_error(error: Any) -> FieldError:
    loc = error["loc"]
    kind = error["type"]
    if kind == "value_error":
        reason = str(error.get("ctx", {}).get("error", error["msg"]))
    elif kind == "missing":
        reason = f"required field {loc[-1]!r} is missing"
    elif kind == "extra_forbidden":
        reason = f"unknown field {loc[-1]!r} (check its spelling against docs/config.md)"
    else:
        reason = f"{error['msg']} (got {error.get('input')!r})"
    return FieldError(path=path_of(loc), reason=reason)


def path_of(loc: Iterable[int | str]) -> str:
    """A pydantic location as a document path: ``departments[0].quota.memory``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
