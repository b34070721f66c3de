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

import datetime
import logging
import math
import os
import socket
import threading
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study import StudyDirection
from optuna.trial import TrialState

from autoprune.search._base import Proposal

STUDY_NAME = "autoprune"
OBJECTIVE = "val_top1"
# Seconds an unclaimed running trial holds a place where the storage keeps no heartbeats.
UNCLAIMED_GRACE_S = 60
# What a queued trial carries that its copy, queued again, must keep.
QUEUED_ATTRS = ("warm_start", "requeued_from")


def worth_retrying(t: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial lost with its driver is queued again: only a sampler's candidate that
    was not evaluated yet. One without parameters proposed nothing (lost between asking and
    sampling); one the ledger made for a searcher that proposes outside Optuna (rules, AMC,
    random) is proposed again by that searcher on resume; one holding a record was evaluated
    (its driver wrote the result, then its heartbeats stalled past the grace period before it
    told the study), and the record counts among the search's candidates. Any such copy would
    only be left waiting."""
    return (
        bool(t.params) and t.user_attrs.get("owner") != "ledger" and "record" not in t.user_attrs
    )


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial INFO lines off for this block (the CLI reports progress itself); the
    caller's log level is restored afterwards."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        with warnings.catch_warnings():  # we send heartbeats ourselves, outside optimize()
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
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

    A candidate scored at rung ``k`` (after ``steps[k]`` fine-tune steps) goes on once it
    ranks in the best ``keep[k]`` share of every score reported at that rung so far (itself
    included), so a cheap screening rung can keep 1 in 20 and the fine-tune rungs 1 in 3.
    Promotion is lazy, as in ASHA (Li et al. 2020): while too few candidates were scored for the
    share to mean anything, a candidate that may still make it *waits* (the driver asks again as
    more scores arrive) instead of going on because it beat the first two or three; one that
    cannot make it any more (as many better ones as the whole search will ever keep at that
    rung) stops at once, so the sampler hears of it. Hand-made rules' policies (warm-start
    trials) always go on: they are the yardstick the search is compared with. Through Optuna's
    :meth:`prune` (no search size known) the decision is eager: go on while in the best share,
    the best one always. Single objective, maximized.

    ``defer``: a rung promotes nothing before its scores are final (every candidate that can
    still reach it scored there, the asking stopped): synchronous successive halving — screen
    all, then fine-tune exactly the best share, then exactly the best share of those — as many
    screens as possible in the wall time, where lazy promotion lets an improving sampler's new
    leaders start fine-tunes all along (and lets more than the share through, by arrival
    order).
    """

    def __init__(self, steps: list[int], keep: list[float], defer: bool = False) -> None:
        if len(keep) != len(steps) - 1 or not all(0 < k <= 1 for k in keep):
            raise ValueError(f"need one share in (0, 1] per rung but the last: {steps}, {keep}")
        self.steps, self.keep, self.defer = list(steps), list(keep), defer

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return self.decide(study.get_trials(deepcopy=False), trial) == "stop"

    def decide(
        self,
        trials: Sequence[optuna.trial.FrozenTrial],
        trial: optuna.trial.FrozenTrial,
        planned: int | None = None,
        final: bool = False,
    ) -> str:
        """``go``, ``stop`` or ``wait`` for ``trial`` at its last reported rung, among
        ``trials`` (the study's), in a search of ``planned`` candidates (``None``: eager);
        ``final``: no more scores will arrive, decide now (the best always goes on)."""
        step = trial.last_step
        if step is None or step not in self.steps[:-1] or trial.user_attrs.get("warm_start"):
            return "go"
        k = self.steps.index(step)
        value = trial.intermediate_values[step]
        peers = [  # a failed trial's scores do not compete: it was queued again or is lost
            t.intermediate_values[step]
            for t in trials
            if step in t.intermediate_values
            and t.number != trial.number
            and t.state != TrialState.FAIL
        ]
        better = sum(v > value for v in peers)
        kept = math.floor(self.keep[k] * (len(peers) + 1))
        if planned is None or final:
            return "go" if better < max(1, kept) else "stop"
        if better < kept and not self.defer:
            return "go"
        ever = max(1, math.floor(planned * math.prod(self.keep[: k + 1])))
        return "stop" if better >= ever else "wait"


def make_pruner(
    kind: str,
    steps: list[int],
    reduction_factor: int,
    keep: list[float] | None = None,
    defer: bool = False,
) -> optuna.pruners.BasePruner:
    """Optuna's pruner over rungs ``steps`` (``none``: every candidate runs every rung); with
    ``keep`` (a share per rung but the last), a :class:`RungPruner` (``defer``: each rung
    promotes only once final)."""
    if kind == "none" or len(steps) == 1:
        return optuna.pruners.NopPruner()
    if keep is not None:
        return RungPruner(steps, keep, defer)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=steps[0], max_resource=steps[-1], reduction_factor=reduction_factor
        )
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=steps[0], reduction_factor=reduction_factor, min_early_stopping_rate=0
    )


def beat(study: optuna.Study, trial: optuna.Trial) -> None:
    """Record a heartbeat for ``trial`` now, where the storage keeps them: a trial whose driver
    dies before the heartbeat thread sees it is then failed like any other."""
    storage = study._storage
    if isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval() is not None:
        storage.record_heartbeat(trial._trial_id)


class Ledger:
    """The run's Optuna study: one trial per candidate, its learning curve, and the pruner.

    Several drivers (``autoprune search`` processes, on several machines) may share one study
    in a database or journal file (:mod:`autoprune.search.storage`): each candidate's finished
    record is stored on its trial, so any driver can rebuild the run's trial log from the
    study, and each trial names the driver that runs it. Where the storage keeps heartbeats, a
    thread sends them for this driver's running trials, and :meth:`fail_stale` fails (and
    queues again) the trials of drivers that stopped sending them.

    Args:
        storage: an Optuna storage or URL (SQLite in the run directory by default; ``None``:
            in memory).
        pruner: from :func:`make_pruner`.
        multi_objective: accuracy × latency (NSGA-II); Optuna cannot prune those, so their
            candidates are scored at the last rung only.
        attrs: study attributes (budget, dense latency, model, searcher, …).
        study_name: the study several drivers join.
        driver: this driver's name, recorded on its trials (default: host and process).
        exclusive: no other driver uses this study (the run directory's own SQLite file), so a
            running trial no driver has claimed yet is this driver's, left by a kill.
    """

    def __init__(
        self,
        storage: str | optuna.storages.BaseStorage | None,
        pruner: optuna.pruners.BasePruner,
        *,
        multi_objective: bool = False,
        attrs: Mapping[str, Any] | None = None,
        study_name: str = STUDY_NAME,
        driver: str | None = None,
        exclusive: bool = False,
    ) -> None:
        self.multi = multi_objective
        self.exclusive = exclusive
        self.driver = driver or f"{socket.gethostname()}:{os.getpid()}"
        directions: list[StudyDirection] = [StudyDirection.MAXIMIZE]
        if multi_objective:
            directions.append(StudyDirection.MINIMIZE)
        sampler = optuna.samplers.RandomSampler()  # replaced by an Optuna searcher's own
        with quiet_optuna():
            try:  # the driver that creates the study is the one that seeds it (warm start)
                self.study = optuna.create_study(
                    storage=storage, study_name=study_name, directions=directions,
                    pruner=pruner, sampler=sampler,
                )  # fmt: skip
                self.created = True
            except optuna.exceptions.DuplicatedStudyError:
                assert storage is not None  # an in-memory study is always new
                self.study = optuna.load_study(
                    study_name=study_name, storage=storage, pruner=pruner, sampler=sampler
                )
                self.created = False
        with warnings.catch_warnings():  # experimental in Optuna, stable in practice
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.set_metric_names(
                [OBJECTIVE, "predicted_ms"] if multi_objective else [OBJECTIVE]
            )
        for key, value in (attrs or {}).items():
            self.study.set_user_attr(key, value)
        if self.created:
            self.study.set_user_attr("created_by", self.driver)
        self._open: dict[int, optuna.Trial] = {}
        self._beat: threading.Thread | None = None
        self._stop = threading.Event()

    # -- several drivers ---------------------------------------------------------------------
    @property
    def heartbeat_s(self) -> int | None:
        """Seconds between heartbeats, where the storage keeps them (database servers)."""
        storage = self.study._storage
        return storage.get_heartbeat_interval() if isinstance(storage, BaseHeartbeat) else None

    def start(self) -> None:
        """Send heartbeats for this driver's running trials (storages that keep them)."""
        if self.heartbeat_s is None or self._beat is not None:
            return
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeats, daemon=True, name="heartbeat")
        self._beat.start()

    def stop(self) -> None:
        if self._beat is not None:
            self._stop.set()
            self._beat.join(timeout=10)
            self._beat = None

    def _heartbeats(self) -> None:
        storage = self.study._storage
        assert isinstance(storage, BaseHeartbeat)
        while not self._stop.wait(self.heartbeat_s or 1):
            for trial in list(self._open.values()):
                try:
                    storage.record_heartbeat(trial._trial_id)
                except Exception:  # the database is away; the next beat tries again
                    continue

    def fail_stale(self) -> None:
        """Fail the running trials whose driver stopped sending heartbeats (and queue them
        again, as the storage's failed-trial callback says). A trial whose driver died between
        asking for it and its first heartbeat has none to go stale: one still unclaimed (no
        driver named on it) ten heartbeats after it started is failed too, and queued again
        if it holds parameters (a trial with none proposed nothing)."""
        beat = self.heartbeat_s
        if beat is None:
            return
        with quiet_optuna(), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)
        cutoff = self._claim_cutoff()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if "driver" in t.user_attrs or t.datetime_start is None or t.datetime_start > cutoff:
                continue
            try:
                self.study.tell(t.number, state=TrialState.FAIL)
            except RuntimeError:  # another driver got there first
                continue
            if worth_retrying(t):
                self.study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})

    @property
    def salt(self) -> int:
        """0 for the driver that created the study (also when it resumes), a number of its own
        for every driver that joined it: their samplers must not draw the same candidates."""
        if self.study.user_attrs.get("created_by", self.driver) == self.driver:
            return 0
        return zlib.crc32(self.driver.encode()) % 100_003 + 1

    def taken(self) -> int:
        """Candidates finished (with a record) or running, by any driver: what counts towards
        the search's number of trials. A trial failed because its driver died, and so queued
        again, does not count; its retry does once it runs."""
        return len(self._places())

    def _places(self) -> list[int]:
        """The numbers of the trials that hold a place among the search's candidates."""
        since = self._claim_cutoff()
        return [t.number for t in self.study.get_trials(deepcopy=False) if self._holds(t, since)]

    def _claim_cutoff(self) -> datetime.datetime:
        """Start time after which a running trial no driver has claimed yet still holds a
        place: its driver is between asking for it and claiming it. Older ones were lost
        (their driver died in between); :meth:`fail_stale` fails them."""
        grace = 10 * (self.heartbeat_s or UNCLAIMED_GRACE_S // 10)
        return datetime.datetime.now() - datetime.timedelta(seconds=grace)

    def _holds(self, t: optuna.trial.FrozenTrial, since: datetime.datetime) -> bool:
        """Whether the trial holds a place among the search's candidates: recorded, or
        running and claimed by a driver (any running trial, in a study that is this driver's
        alone), or running and asked for within the grace period."""
        if "record" in t.user_attrs:
            return True
        if t.state != TrialState.RUNNING:
            return False
        claimed = "driver" in t.user_attrs or self.exclusive
        return claimed or (t.datetime_start is not None and t.datetime_start > since)

    def surplus(self, proposal: Proposal, planned: int) -> bool:
        """Whether the candidate just opened is one too many: ``planned`` trials numbered
        before it already hold a place. Two drivers that counted the same free place both ask;
        trial numbers order the two the same way for every driver, so the later one gives its
        trial back (:meth:`give_back`) and the search ends with ``planned`` candidates."""
        mine = self._open[proposal.trial].number
        return sum(n < mine for n in self._places()) >= planned

    def give_back(self, proposal: Proposal) -> None:
        """Fail a surplus candidate's trial (marked ``surplus``, no record); one taken from the
        queue (a warm start, a dead driver's retry) is queued again as it was."""
        trial = self._open.pop(proposal.trial)
        frozen = self.study._storage.get_trial(trial._trial_id)
        with quiet_optuna():
            trial.set_user_attr("surplus", True)
            self.study.tell(trial, state=TrialState.FAIL)
            if {"fixed_params", "failed_trial"} & frozen.system_attrs.keys():
                queued = {k: v for k, v in frozen.user_attrs.items() if k in QUEUED_ATTRS}
                self.study.add_trial(
                    optuna.trial.create_trial(
                        state=TrialState.WAITING,
                        params=frozen.params,
                        distributions=frozen.distributions,
                        user_attrs=queued,
                        system_attrs=dict(frozen.system_attrs),
                    )
                )

    def running_elsewhere(self) -> bool:
        """Whether trials of other drivers are running."""
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return any(t.user_attrs.get("driver") != self.driver for t in running)

    def records(self) -> list[dict[str, Any]]:
        """Every finished candidate's record in the study (all drivers'), by trial number."""
        found = [
            t.user_attrs["record"]
            for t in self.study.get_trials(deepcopy=False)
            if "record" in t.user_attrs
        ]
        return sorted(found, key=lambda r: int(r["trial"]))

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
            # Created running with its parameters, not queued and asked for: ``ask`` takes the
            # oldest queued trial, which may be another's retry.
            frozen = optuna.trial.create_trial(
                state=TrialState.RUNNING,
                params={n: min(ratios.get(n, 0.0), max_ratio[n]) for n in dists},
                distributions=dists,
                user_attrs={"owner": "ledger"},
            )
            trial_id = self.study._storage.create_new_trial(self.study._study_id, frozen)
            trial = optuna.Trial(self.study, trial_id)
        self._open[proposal.trial] = trial
        beat(self.study, trial)
        trial.set_user_attr("trial", proposal.trial)
        trial.set_user_attr("driver", self.driver)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

    def forget(self, proposal: Proposal | None) -> None:
        """Stop tracking a candidate another driver failed (its trial was queued again)."""
        if proposal is not None:
            self._open.pop(proposal.trial, None)

    def report(self, proposal: Proposal, value: float, steps: int) -> None:
        """Record the score after ``steps`` fine-tune steps (once, whatever the retries;
        multi-objective trials keep only their final values)."""
        trial = self._open[proposal.trial]
        if self.multi:
            return
        if steps not in self.study._storage.get_trial(trial._trial_id).intermediate_values:
            trial.report(value, steps)

    def decide(
        self,
        proposals: Sequence[Proposal],
        planned: int | None = None,
        final: bool | Sequence[bool] = False,
    ) -> list[str]:
        """The pruner's ``go``, ``stop`` or ``wait`` for each candidate at its last reported
        rung (``wait`` only from a :class:`RungPruner` told the search's size ``planned``;
        ``final``: no more scores will arrive at that rung, for all or per candidate;
        multi-objective studies cannot prune: always ``go``)."""
        if self.multi:
            return ["go"] * len(proposals)
        pruner = self.study.pruner
        if not isinstance(pruner, RungPruner):
            return ["stop" if self._open[p.trial].should_prune() else "go" for p in proposals]
        trials = self.study.get_trials(deepcopy=False)
        by_id = {t._trial_id: t for t in trials}
        finals = [final] * len(proposals) if isinstance(final, bool) else list(final)
        return [
            pruner.decide(trials, by_id[self._open[p.trial]._trial_id], planned, last)
            for p, last in zip(proposals, finals, strict=True)
        ]

    def close(
        self,
        proposal: Proposal,
        state: str,
        values: list[float] | None = None,
        record: dict[str, Any] | None = None,
    ) -> None:
        """Finish the trial as ``COMPLETE`` (with ``values``), ``PRUNED`` or ``FAIL``, storing
        the candidate's ``record`` on it (safe to call again after a lost connection)."""
        trial = self._open.get(proposal.trial)
        if trial is None:
            return
        with quiet_optuna():
            if record is not None:
                trial.set_user_attr("record", record)
            told = {"state": TrialState[state]} if state != "COMPLETE" else {"values": values}
            try:  # skip_if_finished: told already (before a connection dropped), or failed stale
                held = self.study.tell(trial, **told, skip_if_finished=True).state.name
            except optuna.exceptions.UpdateFinishedTrialError:  # finished while being told
                held = self.study.get_trials(deepcopy=False)[trial.number].state.name
        if held != state:  # another driver failed it as stale between its record and its tell
            warnings.warn(
                f"trial {trial.number} is {held} in the study: another driver failed it as "
                f"stale while it finished here; its record is kept and counts ({state} in "
                "this run's trial log)",
                stacklevel=2,
            )
        self._open.pop(proposal.trial, None)

    # -- resume ------------------------------------------------------------------------------
    def recover(self, finished: list[dict[str, Any]]) -> None:
        """Close trials this driver left RUNNING when it was killed: finish the ones the trial
        log recorded, fail the rest, and re-queue those an Optuna sampler proposed (other
        searchers re-propose their own on resume). Other drivers' running trials are theirs
        (heartbeats fail the dead ones)."""
        with quiet_optuna():
            self._recover(finished)

    def _recover(self, finished: list[dict[str, Any]]) -> None:
        if self.heartbeat_s is not None:  # stale trials are failed and queued again instead
            return
        by_trial = {int(r["trial"]): r for r in finished}
        # Trials name their driver; in a study from before they did, or in one that is ours
        # alone, an unclaimed trial is ours too.
        ours = self.exclusive or "created_by" not in self.study.user_attrs
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = t.user_attrs.get("driver", self.driver if ours else None)
            if owner != self.driver:
                continue
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
                # A lost proposal is queued again, also one that was waiting after its screen
                # (the best of a deferred search's screens wait): failed, its scores no
                # longer compete with its copy's (RungPruner).
                if rec is None and worth_retrying(t):
                    self.study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})


__all__ = [
    "OBJECTIVE",
    "STUDY_NAME",
    "Ledger",
    "RungPruner",
    "beat",
    "make_pruner",
    "rung_steps",
]
