"""Optuna searcher: TPE (single objective, every candidate fitted to the budget) or NSGA-II
(accuracy × predicted latency Pareto front, budget as a constraint), sampling from the run's
study (:class:`autoprune.search.fidelity.Ledger`), so candidates the pruner stopped early
inform the sampler too."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna

from autoprune.budget import violation
from autoprune.policy import PruningPolicy
from autoprune.records import EvalResult
from autoprune.search._base import Proposal, SearchContext, Searcher
from autoprune.search.fidelity import beat, quiet_optuna

if TYPE_CHECKING:
    from autoprune.config import Config


def default_storage(ctx: SearchContext) -> str:
    return f"sqlite:///{(ctx.run_dir / 'study.db').resolve()}"


def make_sampler(kind: str, seed: int, startup_trials: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler ``kind`` names: multivariate TPE (the ratios interact through the
    budget, so they are modelled jointly; constant liar spreads parallel trials), NSGA-II,
    CMA-ES (a continuous space; random start-up trials first) or random."""
    with warnings.catch_warnings():  # experimental arguments, stable in practice
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if kind == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=startup_trials,
                multivariate=True,
                group=True,
                constant_liar=True,
            )
        if kind == "cmaes":
            return optuna.samplers.CmaEsSampler(
                seed=seed,
                n_startup_trials=startup_trials,
                warn_independent_sampling=False,
                independent_sampler=optuna.samplers.RandomSampler(seed=seed),
            )
    if kind == "nsga2":
        # Feasibility comes from Trial.set_constraint (Optuna ≥ 5), set in ask().
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


class OptunaSearcher(Searcher):
    """The space's ratios (one per layer, or per group of layers) as Optuna float parameters,
    driven by ask/tell.

    Args:
        ctx: the search context.
        sampler: ``tpe`` (default; multivariate, constant liar so parallel trials spread out),
            ``nsga2``, ``cmaes`` or ``random``.
        startup_trials: random trials before TPE starts modelling.
        warm_start: baseline searchers (``uniform``, ``global``) whose policies a new study
            evaluates first: the sampler then models from strong, feasible points, and the
            search cannot end below the baselines by its own score.
    """

    name = "optuna"

    def __init__(
        self,
        ctx: SearchContext,
        sampler: str = "tpe",
        startup_trials: int = 10,
        warm_start: Sequence[str] = (),
    ) -> None:
        super().__init__(ctx)
        self.kind = sampler
        self.multi = sampler == "nsga2"
        self.startup_trials = startup_trials
        self.warm_start = tuple(warm_start)
        self.study: optuna.Study | None = None
        self.driver = ""

    @classmethod
    def from_config(cls, ctx: SearchContext, cfg: Config) -> OptunaSearcher:
        s = cfg.search
        return cls(ctx, s.sampler, s.startup_trials, warm_start=s.warm_start)

    def attach(
        self, study: optuna.Study, fresh: bool = True, salt: int = 0, driver: str = ""
    ) -> None:
        # A resumed study gets a sampler seeded past its history: re-seeding with the original
        # seed would replay the first (random start-up) proposals and evaluate them twice; a
        # second driver joining the study gets its own seed for the same reason.
        n = len(study.get_trials(deepcopy=False))
        seed = self.ctx.seed + n + 7919 * salt
        study.sampler = make_sampler(self.kind, seed, self.startup_trials)
        self.study, self.driver = study, driver
        if fresh and n == 0:  # a new study: queue the baselines' policies first
            for name in self.warm_start:
                study.enqueue_trial(self.baseline_params(name), user_attrs={"warm_start": name})

    def baseline_params(self, name: str) -> dict[str, float]:
        """The ratios a baseline searcher proposes, as this searcher's parameters."""
        from autoprune.search import SEARCHERS

        proposal = SEARCHERS.get(name)(self.ctx).ask()
        assert proposal is not None
        return self.ctx.project(proposal.policy.ratios)

    def ask(self) -> Proposal | None:
        if self.study is None:
            raise RuntimeError("OptunaSearcher needs the run's study: call attach() first")
        with quiet_optuna():
            trial = self.study.ask()
        beat(self.study, trial)  # a trial left half-made by a lost connection goes stale
        if self.driver:  # claimed at once: another driver's resume leaves it alone
            trial.set_user_attr("driver", self.driver)
        params = {d: trial.suggest_float(d, 0.0, self.ctx.dim_bound(d)) for d in self.ctx.dims}
        raw = self.ctx.expand(params)
        meta = {"searcher": f"optuna-{self.kind}", "trial": trial.number}
        if "warm_start" in trial.user_attrs:  # a baseline's policy, evaluated first
            meta["warm_start"] = trial.user_attrs["warm_start"]
        choices = self.ctx.round_to_choices
        round_to = int(trial.suggest_categorical("round_to", choices)) if choices else None
        if self.multi:
            policy = PruningPolicy(
                self.ctx.model, raw, round_to=round_to or self.ctx.round_to, metadata=meta
            )
        else:
            policy = self.ctx.fit(raw, round_to, **meta)
        if self.multi:  # NSGA-II's feasibility; fitted policies meet the budget by construction
            trial.set_constraint(
                "latency_ms", violation(self.ctx.predictor.predict(policy), self.ctx.budget_ms)
            )
        trial.set_user_attr("owner", "sampler")
        return Proposal(trial.number, policy, params, handle=trial)

    def tell(
        self, proposal: Proposal, result: EvalResult | None, error: str | None = None
    ) -> None:
        """Nothing to do: the run's ledger tells the study, and the sampler reads it."""

    def resume(self, finished: list[dict[str, Any]]) -> None:
        """Nothing to restore: the study holds the history (the ledger recovers lost trials)."""


__all__ = ["OptunaSearcher", "default_storage", "make_sampler"]
