"""Multi-fidelity candidate evaluation, on Optuna's own pruners.

A candidate is fine-tuned for ``min_steps`` steps and scored on validation (rung 0); the
pruner (successive halving by default) lets only the best ``1 / reduction_factor`` of the
candidates seen at a rung go on to a fine-tune ``reduction_factor`` times longer, up to the last
rung, whose score is the candidate's result. Each rung is a complete short recipe of that
length (its own cosine schedule, from the pruned weights), so a score means the same at every
rung and a Ray task is still a pure function of ``(policy, seed, steps)``.

The :class:`Ledger` is the run's Optuna study. Every candidate is one of its trials, whichever
searcher proposed it, with its learning curve as intermediate values and its predicted latency,
MACs, ratios and the budget as attributes, so ``optuna-dashboard sqlite:///RUN/study.db`` shows
every search live.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import TrialState

from autoprune.search._base import Proposal

STUDY_NAME = "autoprune"
OBJECTIVE = "val_top1"


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial INFO lines off for this block (the CLI reports progress itself); the
    caller's log level is restored afterwards."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def rung_steps(min_steps: int, rungs: int, reduction_factor: int) -> list[int]:
    """Fine-tune steps of each rung: ``min_steps · reduction_factorᵏ``.

    >>> rung_steps(100, 3, 3)
    [100, 300, 900]
    """
    return [min_steps * reduction_factor**k for k in range(rungs)]


class RungPruner(optuna.pruners.BasePruner):
    """Asynchronous successive halving over explicit rungs, each with its own share kept.

    A candidate that reported its score at rung ``k`` (after ``steps[k]`` fine-tune steps) goes
    on while it ranks in the best ``keep[k]`` share of every score reported at that rung so far
    (itself included; the best one always goes on), as Optuna's
    :class:`~optuna.pruners.SuccessiveHalvingPruner` does with one ratio for all rungs. A cheap
    screening rung can thus keep 1 in 10 and the fine-tune rungs 1 in 3. Single objective,
    maximized.
    """

    def __init__(self, steps: list[int], keep: list[float]) -> None:
        if len(keep) != len(steps) - 1 or not all(0 < k <= 1 for k in keep):
            raise ValueError(f"need one share in (0, 1] per rung but the last: {steps}, {keep}")
        self.steps, self.keep = list(steps), list(keep)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step not in self.steps[:-1]:
            return False
        share = self.keep[self.steps.index(step)]
        value = trial.intermediate_values[step]
        peers = [
            t.intermediate_values[step]
            for t in study.get_trials(deepcopy=False)
            if step in t.intermediate_values and t.number != trial.number
        ]
        better = sum(v > value for v in peers)
        return better >= max(1, math.floor(share * (len(peers) + 1)))


def make_pruner(
    kind: str, steps: list[int], reduction_factor: int, keep: list[float] | None = None
) -> optuna.pruners.BasePruner:
    """Optuna's pruner over rungs ``steps`` (``none``: every candidate runs every rung); with
    ``keep`` (a share per rung but the last), a :class:`RungPruner`."""
    if kind == "none" or len(steps) == 1:
        return optuna.pruners.NopPruner()
    if keep is not None:
        return RungPruner(steps, keep)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=steps[0], max_resource=steps[-1], reduction_factor=reduction_factor
        )
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=steps[0], reduction_factor=reduction_factor, min_early_stopping_rate=0
    )


class Ledger:
    """The run's Optuna study: one trial per candidate, its learning curve, and the pruner.

    Args:
        storage: SQLAlchemy URL (SQLite in the run directory by default; ``None``: in memory).
        pruner: from :func:`make_pruner`.
        multi_objective: accuracy × latency (NSGA-II); Optuna cannot prune those, so their
            candidates are scored at the last rung only.
        attrs: study attributes (budget, dense latency, model, searcher, …).
    """

    def __init__(
        self,
        storage: str | None,
        pruner: optuna.pruners.BasePruner,
        *,
        multi_objective: bool = False,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        self.multi = multi_objective
        with quiet_optuna():
            self.study = optuna.create_study(
                storage=storage,
                study_name=STUDY_NAME,
                load_if_exists=True,
                directions=["maximize", "minimize"] if multi_objective else ["maximize"],
                pruner=pruner,
                sampler=optuna.samplers.RandomSampler(),  # replaced by an Optuna searcher's own
            )
        with warnings.catch_warnings():  # experimental in Optuna, stable in practice
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.set_metric_names(
                [OBJECTIVE, "predicted_ms"] if multi_objective else [OBJECTIVE]
            )
        for key, value in (attrs or {}).items():
            self.study.set_user_attr(key, value)
        self._open: dict[int, optuna.Trial] = {}

    # -- one candidate -----------------------------------------------------------------------
    def open(self, proposal: Proposal, max_ratio: Mapping[str, float], **attrs: Any) -> None:
        """Start the candidate's trial: the Optuna searcher's own, or a new one holding the
        policy's ratios as parameters."""
        trial = proposal.handle
        if trial is None:
            ratios = dict(proposal.policy.ratios)
            dists: dict[str, BaseDistribution] = {
                n: FloatDistribution(0.0, max(max_ratio[n], 1e-9)) for n in max_ratio
            }
            self.study.enqueue_trial({n: min(ratios.get(n, 0.0), max_ratio[n]) for n in dists})
            trial = self.study.ask(dists)
            trial.set_user_attr("owner", "ledger")
        trial.set_user_attr("trial", proposal.trial)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        self._open[proposal.trial] = trial

    def report(self, proposal: Proposal, value: float, steps: int) -> bool:
        """Record the score after ``steps`` fine-tune steps; ``True`` when the pruner stops it."""
        trial = self._open[proposal.trial]
        if self.multi:
            return False
        trial.report(value, steps)
        return trial.should_prune()

    def close(self, proposal: Proposal, state: str, values: list[float] | None = None) -> None:
        """Finish the trial as ``COMPLETE`` (with ``values``), ``PRUNED`` or ``FAIL``."""
        trial = self._open.pop(proposal.trial, None)
        if trial is None:
            return
        with quiet_optuna():
            if state == "COMPLETE":
                self.study.tell(trial, values)
            else:
                self.study.tell(trial, state=TrialState[state])

    # -- resume ------------------------------------------------------------------------------
    def recover(self, finished: list[dict[str, Any]]) -> None:
        """Close trials a killed driver left RUNNING: finish the ones the trial log recorded,
        fail the rest, and re-queue those an Optuna sampler proposed that had not reported a
        rung yet (other searchers re-propose their own on resume)."""
        with quiet_optuna():
            self._recover(finished)

    def _recover(self, finished: list[dict[str, Any]]) -> None:
        by_trial = {int(r["trial"]): r for r in finished}
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            rec = by_trial.get(int(t.user_attrs.get("trial", t.number)))
            if rec is not None and rec["state"] == "COMPLETE":
                values = (
                    [rec["accuracy"], rec["predicted_ms"]] if self.multi else [rec["accuracy"]]
                )
                self.study.tell(t.number, values)
            elif rec is not None and rec["state"] == "PRUNED":
                self.study.tell(t.number, state=TrialState.PRUNED)
            else:
                self.study.tell(t.number, state=TrialState.FAIL)
                # Re-queue a lost proposal only if it reported no rung: a rung score it did
                # report stays in the pruner's history, and a copy would compete against it.
                fresh = not t.intermediate_values and t.user_attrs.get("owner") != "ledger"
                if rec is None and fresh:
                    self.study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})


__all__ = ["OBJECTIVE", "STUDY_NAME", "Ledger", "RungPruner", "make_pruner", "rung_steps"]
