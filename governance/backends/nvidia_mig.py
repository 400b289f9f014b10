"""NVIDIA Multi-Instance GPU: a SKU maps to a MIG profile, exposed by NVIDIA's device plugin.

With the device plugin's ``mixed`` strategy each profile is its own resource,
``nvidia.com/mig-<profile>`` (``nvidia.com/mig-1g.10gb``); with ``single`` every GPU of
the node is cut into one profile and the instances are plain ``nvidia.com/gpu``.

A SKU maps to a profile either explicitly (``backend_options: {profiles: {SKU:
"1g.10gb"}}``) or by shape: the smallest profile of the pool's GPU model whose memory
and compute both cover the SKU's (per GPU). Profiles hold a fixed share of the card's
SMs (g/7; g/4 on A30) and the memory in their name; the tables below follow NVIDIA's
MIG user guide ("Supported MIG Profiles") and mig-parted's per-device configs. A SKU
that no profile covers, or an explicit profile that does not exist on the model or is
smaller than the SKU, is a configuration error naming the SKU, the pool and the
valid profiles.

Options: ``strategy`` (``mixed``, the default, or ``single``), ``profile`` (the one
profile of a ``single`` pool, required there), ``profiles`` (SKU -> profile),
``mig_model`` (which table: one of :data:`PROFILE_TABLES`; found from ``pool.model``
and the card's memory otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from governance.backends import _common
from governance.backends.base import ContainerChanges, PodChanges
from governance.contract import RESOURCE_NVIDIA_GPU, SliceGrant
from governance.errors import ConfigError
from governance.model import Pool, Sku

RESOURCE_PREFIX = "nvidia.com/mig-"
OPTIONS = ("strategy", "profile", "profiles", "mig_model")
_PROFILE_NAME = re.compile(r"^(?P<g>[1-8])g\.(?P<gb>[0-9]+)gb$")


@dataclass(frozen=True, kw_only=True)
class Profile:
    """A MIG GPU-instance profile: its share of the card's SMs, and its memory."""

    name: str
    compute: Fraction
    memory_gb: int

    @property
    def memory_mib(self) -> int:
        return self.memory_gb * 1024

    @property
    def resource(self) -> str:
        return f"{RESOURCE_PREFIX}{self.name}"

    def covers(self, memory_mib: int, compute_pct: int, card_mib: int) -> bool:
        """Whether one instance holds ``memory_mib`` and ``compute_pct`` of a card.

        Memory is compared with the profile's nominal size, capped at the card's (a
        7g profile is the whole card even when the card reports a little less).
        """
        memory = min(self.memory_mib, card_mib) if self.compute == 1 else self.memory_mib
        return memory_mib <= memory and Fraction(compute_pct, 100) <= self.compute

    def describe(self) -> str:
        return f"{self.name} ({self.memory_mib} MiB, {int(self.compute * 100)}%)"


def _table(slices: int, *names: str) -> tuple[Profile, ...]:
    profiles = []
    for name in names:
        match = _PROFILE_NAME.match(name)
        assert match is not None, name
        profiles.append(
            Profile(
                name=name,
                compute=Fraction(int(match["g"]), slices),
                memory_gb=int(match["gb"]),
            )
        )
    # Smallest first: by compute, then by memory; the first that covers a SKU wins.
    return tuple(sorted(profiles, key=lambda p: (p.compute, p.memory_gb)))


PROFILE_TABLES: dict[str, tuple[Profile, ...]] = {
    "A30-24GB": _table(4, "1g.6gb", "2g.12gb", "4g.24gb"),
    "A100-40GB": _table(7, "1g.5gb", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"),
    "A100-80GB": _table(7, "1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H100-80GB": _table(7, "1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H100-94GB": _table(7, "1g.12gb", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"),
    "GH200-96GB": _table(7, "1g.12gb", "1g.24gb", "2g.24gb", "3g.48gb", "4g.48gb", "7g.96gb"),
    "H200-141GB": _table(7, "1g.18gb", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"),
    "B200-180GB": _table(7, "1g.23gb", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"),
}
"""MIG profiles per GPU model and memory size, smallest first."""

_FAMILIES = ("GH200", "A100", "A30", "H100", "H200", "B200")
"""Model families in the order they are looked for in ``pool.model`` (GH200 before H200)."""


def table_for(pool: Pool) -> tuple[str, tuple[Profile, ...]] | None:
    """The pool's profile table: ``mig_model``, else its model family and card memory."""
    explicit = _common.Options(pool, OPTIONS).string("mig_model", "")
    if explicit:
        if explicit not in PROFILE_TABLES:
            raise ConfigError(
                f"unknown MIG model {explicit!r}; known: {', '.join(PROFILE_TABLES)}",
                path=f"pools.{pool.name}.backend_options.mig_model",
            )
        return explicit, PROFILE_TABLES[explicit]
    model = re.sub(r"[^A-Z0-9]", "", pool.model.upper())
    family = next((f for f in _FAMILIES if f in model), None)
    if family is None:
        return None
    card_gb = pool.memory_mib_per_gpu / 1024
    candidates = [
        (abs(int(key.split("-")[1][:-2]) - card_gb), key)
        for key in PROFILE_TABLES
        if key.split("-")[0] == family
    ]
    distance, key = min(candidates)
    if distance > card_gb * 0.1:
        return None
    return key, PROFILE_TABLES[key]


def _untabled_profile(name: str) -> Profile | None:
    """A profile named for a GPU model without a table: its memory is in its name, its
    share of the SMs is not (boards cut them in 7, 4 or 2), so only memory is checked."""
    match = _PROFILE_NAME.match(name)
    if match is None:
        return None
    return Profile(name=name, compute=Fraction(1), memory_gb=int(match["gb"]))


def smallest_cover(
    profiles: tuple[Profile, ...], memory_mib: int, compute_pct: int, card_mib: int
) -> Profile | None:
    return next((p for p in profiles if p.covers(memory_mib, compute_pct, card_mib)), None)


class NvidiaMigBackend:
    name = "nvidia-mig"
    vendor = "nvidia"
    gpu_resources: tuple[str, ...] = _common.resource_names(
        _common.USER_RESOURCES,
        sorted({p.resource for table in PROFILE_TABLES.values() for p in table}),
    )
    gpu_annotations: tuple[str, ...] = ()

    def profile_for(self, pool: Pool, sku: str, memory_mib: int, compute_pct: int) -> Profile:
        """The profile serving one GPU of a slice; ConfigError when none can."""
        options = _common.Options(pool, OPTIONS)
        found = table_for(pool)
        key, profiles = found if found is not None else (pool.model, ())
        valid = ", ".join(p.describe() for p in profiles) or "none known for this model"
        shape = f"{memory_mib} MiB and {compute_pct}% per GPU"
        strategy = options.choice("strategy", "mixed", ("mixed", "single"))
        if strategy == "single":
            name = options.string("profile", "")
            if not name:
                raise ConfigError(
                    "a MIG pool with strategy single needs the one profile its GPUs are "
                    f"cut into (backend_options: {{profile: ...}}); valid profiles: {valid}",
                    path=f"pools.{pool.name}.backend_options.profile",
                )
            where = "the pool's single-strategy profile"
        else:
            name = options.string_map("profiles").get(sku, "")
            where = "backend_options.profiles"
        if name:
            profile = next((p for p in profiles if p.name == name), None)
            if profile is None and not profiles:
                profile = _untabled_profile(name)
            if profile is None:
                raise ConfigError(
                    f"SKU {sku!r} on pool {pool.name!r} ({key}) is mapped by {where} to MIG "
                    f"profile {name!r}, which this GPU model does not have. Valid profiles: "
                    f"{valid}.",
                    path=f"pools.{pool.name}.backend_options",
                )
            if not profile.covers(memory_mib, compute_pct, pool.memory_mib_per_gpu):
                raise ConfigError(
                    f"SKU {sku!r} ({shape}) on pool {pool.name!r} ({key}) is mapped by {where} "
                    f"to MIG profile {profile.describe()}, which is smaller: the SKU would sell "
                    f"more than the instance holds. Valid profiles: {valid}.",
                    path=f"pools.{pool.name}.backend_options",
                )
            return profile
        if not profiles:
            raise ConfigError(
                f"SKU {sku!r} on pool {pool.name!r}: no MIG profile table for GPU model "
                f"{pool.model!r} with {pool.memory_mib_per_gpu} MiB. Set "
                f"backend_options.mig_model to one of {', '.join(PROFILE_TABLES)}, or map "
                "each SKU to a profile with backend_options.profiles.",
                path=f"pools.{pool.name}.backend_options",
            )
        profile = smallest_cover(profiles, memory_mib, compute_pct, pool.memory_mib_per_gpu)
        if profile is None:
            raise ConfigError(
                f"SKU {sku!r} ({shape}) on pool {pool.name!r} ({key}) matches no MIG profile. "
                f"Valid profiles: {valid}.",
                path=f"skus.{sku}",
            )
        return profile

    def container(self, grant: SliceGrant, pool: Pool) -> ContainerChanges:
        try:
            profile = self.profile_for(pool, grant.sku, grant.memory_mib, grant.compute_pct)
        except ConfigError as exc:
            raise _common.cannot_serve(
                grant, pool, exc.reason, "Ask for a SKU offered in your queue."
            ) from exc
        single = _common.Options(pool, OPTIONS).string("strategy", "mixed") == "single"
        resource = RESOURCE_NVIDIA_GPU if single else profile.resource
        return ContainerChanges(resources={resource: _common.quantity(grant.gpus)})

    def pod(self, grants: Mapping[str, SliceGrant], pool: Pool, queue: str) -> PodChanges:
        return _common.base_pod(pool)

    def validate(self, pool: Pool, skus: list[Sku]) -> None:
        _common.check_vendor(pool, self.vendor)
        options = _common.Options(pool, OPTIONS)
        options.check()
        options.choice("strategy", "mixed", ("mixed", "single"))
        mapped = options.string_map("profiles")
        offered = {sku.name for sku in skus}
        stray = sorted(set(mapped) - offered)
        if stray:
            raise ConfigError(
                f"backend_options.profiles maps SKU(s) {', '.join(stray)}, which are not "
                f"offered on pool {pool.name!r}; offered: {', '.join(sorted(offered))}",
                path=f"pools.{pool.name}.backend_options.profiles",
            )
        table_for(pool)
        for sku in skus:
            self.profile_for(pool, sku.name, sku.memory_mib_on(pool), sku.compute_pct)


BACKEND = NvidiaMigBackend()
