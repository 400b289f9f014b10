"""Who is looking, and which departments they may see.

The console does not log people in: it sits behind a reverse proxy that does
(oauth2-proxy, an ingress with external auth) and reads the identity from the headers
that proxy sets (``X-Forwarded-User``, ``X-Forwarded-Groups`` by default). Anyone can
send those headers, so they are believed only from the proxy's own addresses
(:attr:`ProxyHeaders.trusted_proxies`, loopback by default: the chart runs
oauth2-proxy as a sidecar in the console's pod); a request from any other address
gets 401, headers or not. The console refuses to start unless told explicitly either
to trust a proxy (:class:`ProxyHeaders`) or to act as one fixed local user
(:class:`DevUser`, for trying it on a laptop).

What a person sees is Casbin's decision (:mod:`governance.rbac`): the departments
they may ``view``. Only someone who may view *every* department (bound in ``*``, a
platform admin) sees whole-fleet figures: whole-card GPU utilisation and memory,
which mix every tenant's processes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from governance.rbac import EVERY_DEPARTMENT, Identity

DEFAULT_USER_HEADER = "X-Forwarded-User"
DEFAULT_GROUPS_HEADER = "X-Forwarded-Groups"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
"""Where the proxy runs by default: beside the console, in the same pod."""


def parse_networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """``10.0.0.0/8``, ``192.0.2.7`` (one address), ``::1``; ValueError names the bad one."""
    out: list[Network] = []
    for text in texts:
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not an address or CIDR block ({exc})") from None
    return tuple(out)


class AccessError(Exception):
    """The request carries no identity the console may trust."""


class Decision(Protocol):
    @property
    def allowed(self) -> bool: ...


class Authorizer(Protocol):
    """The part of :class:`governance.rbac.Policy` the console uses."""

    def can_view(self, identity: Identity, department: str) -> Decision: ...

    def visible_departments(self, identity: Identity, departments: Iterable[str]) -> list[str]: ...


@dataclass(frozen=True, kw_only=True)
class ProxyHeaders:
    """Trust the identity headers of the reverse proxy in front of the console."""

    user_header: str = DEFAULT_USER_HEADER
    groups_header: str = DEFAULT_GROUPS_HEADER
    groups_separator: str = ","
    trusted_proxies: tuple[Network, ...] = LOOPBACK
    """Addresses whose identity headers are believed; requests from others get 401."""

    def trusts(self, peer: str | None) -> bool:
        """Whether ``peer`` (the connection's remote address) is a trusted proxy."""
        if not peer:
            return False
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual stack
        address = mapped or address
        return any(address in network for network in self.trusted_proxies)

    def identify(self, headers: Mapping[str, str], *, peer: str | None = None) -> Identity:
        """The identity the proxy asserts. ``peer``, when given, is the remote address
        of the connection: AccessError unless it is a trusted proxy (the console's
        request gate passes it; callers inside a request already gated may omit it)."""
        if peer is not None and not self.trusts(peer):
            allowed = ", ".join(str(n) for n in self.trusted_proxies)
            raise AccessError(
                f"{peer} is not a trusted proxy ({allowed}): the console answers only "
                "requests that come through its authenticating proxy "
                "(--trusted-proxy CIDR adds one)"
            )
        lowered = {k.lower(): v for k, v in headers.items()}
        user = (lowered.get(self.user_header.lower()) or "").strip()
        if not user:
            raise AccessError(
                f"no {self.user_header} header: the console only answers requests that "
                "come through the authenticating proxy"
            )
        raw = lowered.get(self.groups_header.lower()) or ""
        groups = tuple(g.strip() for g in raw.split(self.groups_separator) if g.strip())
        return Identity(user=user, groups=groups)


@dataclass(frozen=True, kw_only=True)
class DevUser:
    """Every request is this one user (local trial; never behind a shared ingress)."""

    user: str
    groups: tuple[str, ...] = ()

    def identify(self, headers: Mapping[str, str], *, peer: str | None = None) -> Identity:
        return Identity(user=self.user, groups=self.groups)


Trust = ProxyHeaders | DevUser


@dataclass(frozen=True, kw_only=True)
class Scope:
    """What one viewer may see."""

    identity: Identity
    departments: tuple[str, ...]
    """Departments they may view, sorted."""
    whole_fleet: bool
    """May view every department: sees fleet-wide, whole-card figures."""

    @property
    def filter(self) -> frozenset[str] | None:
        """The ``departments`` argument for a source: None means the whole fleet."""
        return None if self.whole_fleet else frozenset(self.departments)

    def may_view(self, department: str) -> bool:
        return department in self.departments

    def describe(self) -> str:
        if self.whole_fleet:
            return f"all {len(self.departments)} departments"
        if not self.departments:
            return "no department"
        if len(self.departments) <= 3:
            return ", ".join(self.departments)
        return f"{len(self.departments)} departments"


def scope_for(identity: Identity, departments: Iterable[str], authorizer: Authorizer) -> Scope:
    names = sorted(departments)
    whole = authorizer.can_view(identity, EVERY_DEPARTMENT).allowed
    visible = names if whole else sorted(authorizer.visible_departments(identity, names))
    return Scope(identity=identity, departments=tuple(visible), whole_fleet=whole)
