"""Place one pod at a time on the fleet with a policy, as kube-scheduler does.

The scheduler keeps every kind's score on every node in a (kinds x nodes) table,
``-inf`` where the kind does not fit. Placing a pod is an argmax over its kind's row;
ties go to the node whose name sorts first, as in the authors' kube-scheduler fork
(its ``selectHost`` was changed from a random pick "for reproducibility"), unless the
policy asks for a uniformly random pick (``random``). Then only the node that changed
is scored again, for every kind.
Scores only ever depend on the node they are about (every published policy is a
per-node score plugin), which is what makes the table exact, not an approximation.

Because a score depends only on the node's state, scores are remembered by state
(:meth:`~simulator.fleet.Fleet.state_key`): the Alibaba fleet's 1,213 nodes start in
15 distinct states, and in a replay nodes keep coming back to states they had (empty,
above all). The memo may be shared by schedulers of one policy and one set of kinds,
as the replay's fleet-size search does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.fleet import Fleet, IntArray, Kinds
from simulator.policies.base import FloatArray, Policy

Memo = dict[tuple[int, ...], tuple[FloatArray, IntArray]]
"""Node state -> (every kind's score there, -inf where it does not fit; GPU hints)."""

MEMO_LIMIT = 200_000
"""Entries before the memo starts over (~2.4 KB each with the trace's 151 kinds)."""


@dataclass(frozen=True, kw_only=True)
class Placement:
    node: int
    gpus: tuple[int, ...]


class Scheduler:
    """Places and releases pods of ``kinds`` on ``fleet`` (which it mutates)."""

    def __init__(
        self,
        fleet: Fleet,
        kinds: Kinds,
        policy: Policy,
        rng: np.random.Generator,
        memo: Memo | None = None,
    ) -> None:
        self.fleet = fleet
        self.kinds = kinds
        self.policy = policy
        self.rng = rng
        self.table: FloatArray = np.full((len(kinds), len(fleet)), -np.inf)
        self.hint: IntArray = np.full((len(kinds), len(fleet)), -1, dtype=np.int64)
        names = [node.name for node in fleet.nodes]
        self.name_rank: IntArray = np.argsort(np.argsort(names, kind="stable")).astype(np.int64)
        self.memo: Memo = {} if memo is None else memo
        for node in range(len(fleet)):
            self.refresh(node)

    def refresh(self, node: int) -> None:
        """Score every kind on ``node`` again (after it changed)."""
        key = self.fleet.state_key(node)
        known = self.memo.get(key)
        if known is None:
            if len(self.memo) >= MEMO_LIMIT:
                self.memo.clear()
            fits = self.fleet.fits(self.kinds, node)
            scores = self.policy.score(self.fleet, node, fits)
            known = (np.where(fits, scores.score, -np.inf), scores.gpu)
            self.memo[key] = known
        self.table[:, node], self.hint[:, node] = known

    def fits_anywhere(self, kind: int) -> bool:
        return bool(np.isfinite(self.table[kind].max()))

    def place(self, kind: int) -> Placement | None:
        """Place one pod of ``kind`` on the best node, or None when none fits."""
        row = self.table[kind]
        best = row.max()
        if best == -np.inf:
            return None
        ties = np.flatnonzero(row == best)
        if len(ties) == 1:
            node = int(ties[0])
        elif self.policy.random_ties:
            node = int(ties[self.rng.integers(len(ties))])
        else:
            node = int(ties[np.argmin(self.name_rank[ties])])
        gpus = self.policy.choose_gpus(self.fleet, node, kind, int(self.hint[kind, node]), self.rng)
        self.fleet.allocate(node, self.kinds, kind, gpus)
        self.refresh(node)
        return Placement(node=node, gpus=gpus)

    def release(self, kind: int, placement: Placement) -> None:
        self.fleet.release(placement.node, self.kinds, kind, placement.gpus)
        self.refresh(placement.node)
