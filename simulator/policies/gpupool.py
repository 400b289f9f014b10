"""``gpupool``: gpupool's own placement (work in progress: FGD with exact scores)."""

from __future__ import annotations

from simulator.fleet import BoolArray, Fleet
from simulator.policies.base import Scores
from simulator.policies.fgd import FragmentationGradientDescent, best_per_kind


class Gpupool(FragmentationGradientDescent):
    name = "gpupool"
    summary = "fragmentation growth, exact"

    def score(self, fleet: Fleet, node: int, fits: BoolArray) -> Scores:
        candidates, growth = self.growth(fleet, node, fits)
        return best_per_kind(self.kinds, candidates, -growth)
