"""Searchers over per-layer pruning ratios: Optuna (TPE / NSGA-II), AMC-style RL, baselines."""

from __future__ import annotations

from typing import Any

from autoprune.errors import ConfigError
from autoprune.search._base import Proposal, SearchContext, Searcher
from autoprune.search.baselines import GlobalMagnitudeSearcher, RandomSearcher, UniformSearcher

SEARCHERS = ("optuna", "amc", "random", "uniform", "global")


def make_searcher(name: str, ctx: SearchContext, **options: Any) -> Searcher:
    """Build a searcher by name (``optuna``, ``amc``, ``random``, ``uniform``, ``global``)."""
    if name == "optuna":
        from autoprune.search.optuna_search import OptunaSearcher

        return OptunaSearcher(
            ctx,
            sampler=options.get("sampler", "tpe"),
            startup_trials=options.get("startup_trials", 10),
        )
    if name == "amc":
        from autoprune.search.amc import AMCSearcher

        return AMCSearcher(ctx, options["amc"])
    if name == "random":
        return RandomSearcher(ctx)
    if name == "uniform":
        return UniformSearcher(ctx)
    if name == "global":
        return GlobalMagnitudeSearcher(ctx)
    raise ConfigError(f"unknown searcher {name!r}; choose one of {', '.join(SEARCHERS)}")


__all__ = ["SEARCHERS", "Proposal", "SearchContext", "Searcher", "make_searcher"]
