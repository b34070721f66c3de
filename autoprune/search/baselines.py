"""Baselines on equal terms with the searchers: uniform ratios, and random feasible policies."""

from __future__ import annotations

from typing import Any

import numpy as np

from autoprune.evaluate import EvalResult
from autoprune.search._base import Proposal, Searcher


class RandomSearcher(Searcher):
    """Random ratios in each layer's bounds, moved onto the budget. Trial ``k`` draws from seed
    ``(seed, k)``, so a resumed run proposes exactly what the interrupted one would have."""

    name = "random"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self._next = 0
        self._done: set[int] = set()

    def resume(self, finished: list[dict[str, Any]]) -> None:
        self._done = {int(r["trial"]) for r in finished}

    def ask(self) -> Proposal | None:
        while self._next in self._done:
            self._next += 1
        k = self._next
        self._next += 1
        rng = np.random.default_rng([self.ctx.seed, k])
        raw = {n: float(rng.uniform(0.0, self.ctx.max_ratio[n])) for n in self.ctx.layers}
        return Proposal(k, self.ctx.fit(raw, searcher=self.name, trial=k), raw)

    def tell(
        self, proposal: Proposal, result: EvalResult | None, error: str | None = None
    ) -> None:
        pass


class UniformSearcher(Searcher):
    """One ratio for every layer, the smallest that meets the budget (a single candidate)."""

    name = "uniform"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self._asked = False

    def resume(self, finished: list[dict[str, Any]]) -> None:
        self._asked = bool(finished)

    def ask(self) -> Proposal | None:
        if self._asked:
            return None
        self._asked = True
        # All-equal raw ratios at the bound, pulled back until the budget is just met.
        raw = {n: min(self.ctx.max_ratio.values()) for n in self.ctx.layers}
        return Proposal(0, self.ctx.fit(raw, searcher=self.name, trial=0), raw)

    def tell(
        self, proposal: Proposal, result: EvalResult | None, error: str | None = None
    ) -> None:
        pass


__all__ = ["RandomSearcher", "UniformSearcher"]
