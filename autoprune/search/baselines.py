"""Baselines on equal terms with the searchers: uniform ratios, global magnitude and global LAMP
pruning (as in Torch-Pruning) and random feasible policies, each moved onto the same latency
budget."""

from __future__ import annotations

from typing import Any

import numpy as np

from autoprune.budget import smallest_feasible
from autoprune.errors import ConfigError
from autoprune.policy import PruningPolicy
from autoprune.records import EvalResult
from autoprune.search._base import Proposal, Searcher


class RandomSearcher(Searcher):
    """Random ratios in each dimension's bounds (a layer, or a group of layers in a grouped
    space), moved onto the budget. Trial ``k`` draws from seed ``(seed, k)``, so a resumed run
    proposes exactly what the interrupted one would have."""

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
        params = {d: float(rng.uniform(0.0, self.ctx.dim_bound(d))) for d in self.ctx.dims}
        raw = self.ctx.expand(params)
        return Proposal(k, self.ctx.fit(raw, searcher=self.name, trial=k), params)

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

    def scores(self) -> dict[str, np.ndarray]:
        """Each layer's channel scores, comparable across layers."""
        if not self.ctx.channel_scores:
            raise ConfigError(f"{self.name} pruning needs the dense model's channel scores")
        return {n: np.asarray(self.ctx.channel_scores[n], dtype=float) for n in self.ctx.layers}

    def ask(self) -> Proposal | None:
        if self._asked:
            return None
        self._asked = True
        ctx = self.ctx
        scores = self.scores()
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


def lamp(scores: np.ndarray) -> np.ndarray:
    """LAMP scores (Lee et al., ICLR 2021) of one layer's channel importances: each score divided
    by the sum of the scores not below it, so the weakest channels of every layer compare on one
    scale. Invariant to scaling a layer's scores, so the mean-normalized magnitudes give what
    Torch-Pruning's ``LAMPImportance`` does (a test checks it).

    >>> lamp(np.array([1.0, 3.0, 2.0])).round(3).tolist()
    [0.167, 1.0, 0.4]
    """
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    tail = np.cumsum(ranked[::-1])[::-1]  # sum of the scores from each rank up
    out = np.empty_like(scores, dtype=float)
    out[order] = ranked / tail
    return out


class GlobalLAMPSearcher(GlobalMagnitudeSearcher):
    """Global pruning by LAMP scores (layer-adaptive magnitude, as in Torch-Pruning's
    ``LAMPImportance``): one threshold over every channel's LAMP score, raised until the budget
    is met. LAMP keeps layers whose weights are all small from being emptied first."""

    name = "lamp"

    def scores(self) -> dict[str, np.ndarray]:
        return {n: lamp(s) for n, s in super().scores().items()}


__all__ = [
    "GlobalLAMPSearcher",
    "GlobalMagnitudeSearcher",
    "RandomSearcher",
    "UniformSearcher",
    "lamp",
]
