"""Baselines on equal terms with the searchers: uniform ratios, global magnitude pruning (as in
Torch-Pruning) and random feasible policies, each moved onto the same latency budget."""

from __future__ import annotations

from typing import Any

import numpy as np

from autoprune.budget import smallest_feasible
from autoprune.errors import ConfigError
from autoprune.policy import PruningPolicy
from autoprune.records import EvalResult
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


class GlobalMagnitudeSearcher(UniformSearcher):
    """Torch-Pruning's global magnitude pruning: one threshold over the normalized group L2
    importance of every channel of every layer (the lowest-scoring share is removed, each layer
    capped at its bound); the share is raised until the predicted latency just meets the budget.
    Layers thus lose channels where weights are small, not where latency is (a single candidate).
    """

    name = "global"

    def ask(self) -> Proposal | None:
        if self._asked:
            return None
        self._asked = True
        ctx = self.ctx
        if not ctx.channel_scores:
            raise ConfigError("global magnitude pruning needs the dense model's channel scores")
        scores = {n: np.asarray(ctx.channel_scores[n], dtype=float) for n in ctx.layers}
        pooled = np.concatenate(list(scores.values()))

        def at(share: float) -> PruningPolicy:
            cut = np.quantile(pooled, share) if share > 0 else -np.inf
            ratios = {n: min(float((s < cut).mean()), ctx.max_ratio[n]) for n, s in scores.items()}
            return PruningPolicy(ctx.model, ratios, round_to=ctx.round_to)

        # Raise the pruned share until the prediction meets the budget.
        share = smallest_feasible(
            lambda x: ctx.predictor.predict(at(x)) <= ctx.budget_ms, 0.0, 1.0, iterations=40
        )
        policy = at(share).with_metadata(searcher=self.name, trial=0, global_share=share)
        return Proposal(0, policy, {"share": share})


__all__ = ["GlobalMagnitudeSearcher", "RandomSearcher", "UniformSearcher"]
