"""Optuna searcher: TPE (single objective, every candidate fitted to the budget) or NSGA-II
(accuracy × predicted latency Pareto front, budget as a constraint), stored in an RDB study."""

from __future__ import annotations

import logging
from typing import Any

import optuna

from autoprune.budget import violation
from autoprune.evaluate import EvalResult
from autoprune.policy import PruningPolicy
from autoprune.search._base import Proposal, SearchContext, Searcher

STUDY_NAME = "autoprune"


def default_storage(ctx: SearchContext) -> str:
    return f"sqlite:///{(ctx.run_dir / 'study.db').resolve()}"


def _make_sampler(kind: str, seed: int, startup_trials: int) -> optuna.samplers.BaseSampler:
    if kind == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup_trials, multivariate=True, constant_liar=True
        )
    if kind == "nsga2":
        # Feasibility comes from Trial.set_constraint (Optuna ≥ 5), set in ask().
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


class OptunaSearcher(Searcher):
    """Per-layer ratios as Optuna float parameters, driven by ask/tell.

    Args:
        ctx: the search context.
        sampler: ``tpe`` (default; constant liar so parallel trials spread out), ``nsga2`` or
            ``random``.
        storage: any SQLAlchemy URL; defaults to SQLite ``study.db`` in the run directory, so
            ``--resume`` continues the study and ``optuna-dashboard`` can watch it.
        startup_trials: random trials before TPE starts modelling.
    """

    name = "optuna"

    def __init__(
        self,
        ctx: SearchContext,
        sampler: str = "tpe",
        storage: str | None = None,
        startup_trials: int = 10,
    ) -> None:
        super().__init__(ctx)
        optuna.logging.set_verbosity(logging.WARNING)
        self.multi = sampler == "nsga2"
        self.storage = storage or default_storage(ctx)
        self.study = optuna.create_study(
            storage=self.storage,
            study_name=STUDY_NAME,
            load_if_exists=True,
            directions=["maximize", "minimize"] if self.multi else ["maximize"],
        )
        # A resumed study gets a sampler seeded past its history: re-seeding with the original
        # seed would replay the first (random start-up) proposals and evaluate them twice.
        seed = ctx.seed + len(self.study.get_trials(deepcopy=False))
        self.study.sampler = _make_sampler(sampler, seed, startup_trials)
        self._trials: dict[int, optuna.Trial] = {}

    def resume(self, finished: list[dict[str, Any]]) -> None:
        """Close trials a killed driver left RUNNING: tell the ones already recorded, re-queue the rest."""
        by_trial = {int(r["trial"]): r for r in finished}
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            rec = by_trial.get(t.number)
            if rec is not None and rec.get("state") == "COMPLETE":
                self.study.tell(t.number, self._values(rec["accuracy"], rec["predicted_ms"]))
            else:
                self.study.tell(t.number, state=optuna.trial.TrialState.FAIL)
                if rec is None:
                    self.study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})

    def _values(self, acc: float, ms: float) -> list[float]:
        return [acc, ms] if self.multi else [acc]

    def ask(self) -> Proposal | None:
        trial = self.study.ask()
        raw = {n: trial.suggest_float(n, 0.0, self.ctx.max_ratio[n]) for n in self.ctx.layers}
        meta = {"searcher": f"optuna-{'nsga2' if self.multi else 'tpe'}", "trial": trial.number}
        if self.multi:
            policy = PruningPolicy(self.ctx.model, raw, round_to=self.ctx.round_to, metadata=meta)
        else:
            policy = self.ctx.fit(raw, **meta)
        over = violation(self.ctx.predictor.predict(policy), self.ctx.budget_ms)
        trial.set_user_attr("violation_ms", over)
        trial.set_constraint("latency_ms", over)
        trial.set_user_attr("ratios", dict(policy.ratios))
        self._trials[trial.number] = trial
        return Proposal(trial.number, policy, raw)

    def tell(
        self, proposal: Proposal, result: EvalResult | None, error: str | None = None
    ) -> None:
        trial = self._trials.pop(proposal.trial, None)
        number = trial if trial is not None else proposal.trial
        if result is None:
            if trial is not None:
                trial.set_user_attr("error", error or "failed")
            self.study.tell(number, state=optuna.trial.TrialState.FAIL)
            return
        self.study.tell(number, self._values(result.accuracy, result.predicted_ms))

    def close(self) -> None:
        self._trials.clear()


__all__ = ["OptunaSearcher", "default_storage"]
