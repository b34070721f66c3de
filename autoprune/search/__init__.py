"""Searchers over per-layer pruning ratios: Optuna (TPE / NSGA-II), AMC-style RL, baselines.

A searcher is one module plus one line in :data:`SEARCHERS`; it builds itself from the config
with :meth:`Searcher.from_config`, so its settings stay its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autoprune.registry import Registry
from autoprune.search._base import Proposal, SearchContext, Searcher

if TYPE_CHECKING:
    from autoprune.config import Config

SEARCHERS: Registry[type[Searcher]] = Registry(
    "searcher",
    {
        "optuna": "autoprune.search.optuna_search:OptunaSearcher",
        "amc": "autoprune.search.amc.agent:AMCSearcher",
        "random": "autoprune.search.baselines:RandomSearcher",
        "uniform": "autoprune.search.baselines:UniformSearcher",
        "global": "autoprune.search.baselines:GlobalMagnitudeSearcher",
        "lamp": "autoprune.search.baselines:GlobalLAMPSearcher",
    },
)
PRUNERS: tuple[str, ...] = ("successive_halving", "hyperband", "none")  # fidelity.pruner
# fidelity.screen (and the evaluator's recover)
RECOVERIES: tuple[str, ...] = ("none", "bn", "reconstruct", "reconstruct_bn")
SAMPLERS: tuple[str, ...] = ("tpe", "nsga2", "cmaes", "random")  # search.sampler (optuna)


def make_searcher(name: str, ctx: SearchContext, cfg: Config) -> Searcher:
    """Build the searcher registered as ``name`` with its settings from ``cfg``."""
    return SEARCHERS.get(name).from_config(ctx, cfg)


__all__ = [
    "PRUNERS",
    "RECOVERIES",
    "SAMPLERS",
    "SEARCHERS",
    "Proposal",
    "SearchContext",
    "Searcher",
    "make_searcher",
]
