"""Run Evaluator calls in parallel — in-process, or as Ray tasks locally or on a cluster — and
the one driver loop every searcher uses: ask → evaluate rung by rung (the pruner may stop a
weak candidate early) → tell on arrival → record."""

from __future__ import annotations

import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import optuna

from autoprune.evaluate import Evaluator
from autoprune.policy import PruningPolicy
from autoprune.records import EvalResult, TrialLog
from autoprune.search._base import Proposal, Searcher

if TYPE_CHECKING:
    from autoprune.search.fidelity import Ledger

Outcome = tuple[EvalResult | None, str | None]


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip()


class Pool(ABC):
    """Runs ``evaluator(policy, seed, steps)`` calls; results come back in completion order."""

    slots: int = 1

    @abstractmethod
    def submit(
        self, key: int, policy: PruningPolicy, seed: int, steps: int | None = None
    ) -> None: ...

    @abstractmethod
    def wait(self) -> tuple[int, Outcome]:
        """Block until one submitted call finishes; return its key and (result, error)."""

    def cancel_all(self) -> None:  # noqa: B027 - optional hook
        """Drop calls still in flight (on Ctrl-C)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class LocalPool(Pool):
    """Evaluates in this process, one call at a time (runs at ``wait``)."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator
        self.queue: list[tuple[int, PruningPolicy, int, int | None]] = []

    def submit(self, key: int, policy: PruningPolicy, seed: int, steps: int | None = None) -> None:
        self.queue.append((key, policy, seed, steps))

    def wait(self) -> tuple[int, Outcome]:
        key, policy, seed, steps = self.queue.pop(0)
        try:
            return key, (self.evaluator(policy, seed, steps), None)
        except Exception as e:  # a failing candidate is a failed trial, not a dead search
            return key, (None, _one_line(e))

    def cancel_all(self) -> None:
        self.queue.clear()


def _warm_task(evaluator: Evaluator) -> int:
    """Start a worker process and load the evaluator into it (imports torch) ahead of trials."""
    return os.getpid() if evaluator.layers else 0


def _evaluate_task(
    evaluator: Evaluator, policy: dict[str, Any], seed: int, steps: int | None
) -> Outcome:
    try:
        return evaluator(PruningPolicy.from_dict(policy), seed, steps), None
    except Exception as e:
        return None, _one_line(e)


class RayPool(Pool):
    """Evaluations as Ray tasks. The evaluator (model weights + data) goes into the object
    store once.

    Args:
        evaluator: shipped once with ``ray.put``.
        address: ``None`` starts a local Ray sized to this machine; ``auto`` or ``ray://host:port``
            joins a cluster.
        cpus_per_trial / gpus_per_trial: resources each evaluation reserves (fractions allowed).
        max_retries: retries of a task whose worker process died (killed, out of memory).
        slots: evaluations in flight; defaults to what the cluster's CPUs allow.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        *,
        address: str | None = None,
        cpus_per_trial: float = 1.0,
        gpus_per_trial: float = 0.0,
        max_retries: int = 2,
        slots: int | None = None,
    ) -> None:
        import ray

        self.ray = ray
        self._owns_ray = not ray.is_initialized() and address is None
        init_ray(address)
        self.ref = ray.put(evaluator.with_threads(max(1, int(cpus_per_trial))))
        self.task = ray.remote(_evaluate_task).options(
            num_cpus=cpus_per_trial,
            num_gpus=gpus_per_trial,
            max_retries=max_retries,
            retry_exceptions=False,
        )
        cpus = ray.cluster_resources().get("CPU", 1)
        self.slots = slots or max(1, int(cpus // max(cpus_per_trial, 1e-9)))
        self.futures: dict[Any, int] = {}
        # Start the workers now so the first trials do not pay process start + torch import.
        warm = ray.remote(_warm_task).options(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial)
        ray.get([warm.remote(self.ref) for _ in range(self.slots)])

    def submit(self, key: int, policy: PruningPolicy, seed: int, steps: int | None = None) -> None:
        self.futures[self.task.remote(self.ref, policy.to_dict(), seed, steps)] = key

    def wait(self) -> tuple[int, Outcome]:
        (ready,), _ = self.ray.wait(list(self.futures), num_returns=1)
        key = self.futures.pop(ready)
        try:
            return key, self.ray.get(ready)
        except Exception as e:  # worker died more than max_retries times, or task cancelled
            return key, (None, _one_line(e))

    def cancel_all(self) -> None:
        for f in list(self.futures):
            self.ray.cancel(f, force=True)
        self.futures.clear()

    def close(self) -> None:
        """Stop the local Ray this pool started (its workers would disturb latency timing)."""
        if self._owns_ray:
            self.ray.shutdown()


def make_pool(
    evaluator: Evaluator,
    *,
    parallel: int = 1,
    use_ray: bool = False,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    max_retries: int = 2,
) -> Pool:
    """In-process for one evaluation at a time, else Ray (local, or the cluster at ``address``)."""
    if not use_ray and address is None and parallel <= 1:
        return LocalPool(evaluator)
    return RayPool(
        evaluator,
        address=address,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        max_retries=max_retries,
        slots=parallel,
    )


def init_ray(address: str | None = None) -> None:
    """Start (or join) Ray once: local runs start their own instance (``address="local"``: never
    an unrelated cluster someone started with ``ray start`` on this machine) sized to the machine's
    CPUs, keep the dashboard off, and leave the home directory alone
    (``RAY_AUTH_MODE=disabled``)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    ray.init(
        address="local",
        num_cpus=os.cpu_count() or 1,
        include_dashboard=False,
        dashboard_host="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )


@dataclass
class SearchSummary:
    finished: int
    failed: int
    best: dict[str, Any] | None
    seconds: float
    interrupted: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)  # every finished candidate
    timed_out: bool = False  # stopped asking for candidates at the timeout


@dataclass
class _Job:
    """A candidate in flight: its rung, the scores of the rungs it finished, when it started."""

    proposal: Proposal
    rung: int
    started: float
    curve: list[tuple[int, float]]
    scored: bool = False  # this rung's score is in the study
    result: EvalResult | None = None  # this rung's, kept while the candidate waits


class _Driver:
    """The state of one :func:`run_search`: candidates in flight, keyed by submission. Every
    step that writes to the study may be repeated after a lost connection (see
    :func:`autoprune.search.storage.retrying`), so each is written to be safe to repeat."""

    def __init__(
        self,
        searcher: Searcher,
        pool: Pool,
        log: TrialLog,
        ledger: Ledger,
        rungs: list[int | None],
        seed: int,
        on_result: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.searcher, self.pool, self.log, self.ledger = searcher, pool, log, ledger
        self.rungs, self.seed, self.on_result = rungs, seed, on_result
        self.jobs: dict[int, _Job] = {}
        self.waiting: list[_Job] = []  # scored, until the pruner can say go or stop
        self.planned: int | None = None
        self.keys = iter(range(1 << 62))

    def submit(self, job: _Job) -> None:
        key = next(self.keys)
        steps = self.rungs[job.rung]
        self.pool.submit(key, job.proposal.policy, self.seed + job.proposal.trial, steps)
        self.jobs[key] = job

    def start(self, prop: Proposal) -> None:
        """Open the candidate's trial in the ledger and submit its first rung, unless the
        search's places were all taken meanwhile (then the trial is given back)."""
        ctx = self.searcher.ctx
        predicted = ctx.predictor.predict(prop.policy)
        self.ledger.open(
            prop,
            ctx.max_ratio,
            predicted_ms=predicted,
            violation_ms=predicted - ctx.budget_ms,
            ratios=dict(prop.policy.ratios),
        )
        planned = self.planned
        if planned is not None and self.ledger.surplus(prop, planned):  # another took the last
            self.ledger.give_back(prop)
            return
        self.submit(_Job(prop, 0, time.perf_counter(), []))

    def finish(self, job: _Job, state: str, result: EvalResult | None, error: str | None) -> None:
        """Close the trial (its record stored on it), tell the searcher, record the
        candidate."""
        values = None
        if result is not None and state == "COMPLETE":
            multi = self.ledger.multi
            values = [result.accuracy, result.predicted_ms] if multi else [result.accuracy]
        seconds = time.perf_counter() - job.started
        rec = self.log.make(job.proposal, result, error, seconds, state=state, curve=job.curve)
        self.ledger.close(job.proposal, state, values, record=rec)
        self.searcher.tell(job.proposal, result, error)
        self.log.append(rec)
        if self.on_result is not None:
            self.on_result(rec)

    def arrived(self, key: int, result: EvalResult | None, error: str | None) -> None:
        """Handle one finished rung: record it, then promote, stop, finish or hold the
        candidate. The job leaves ``jobs`` only once all of that is done, so a repeat after a
        lost connection picks up where the first try stopped."""
        job = self.jobs[key]
        if result is None:
            self.finish(job, "FAIL", None, error)
            del self.jobs[key]
            return
        if not job.scored:
            self.ledger.report(job.proposal, result.accuracy, result.steps)
            job.curve.append((result.steps, result.accuracy))
            job.scored, job.result = True, result
            self.searcher.scored(job.proposal, job.rung, result)
        (decision,) = self.ledger.decide([job.proposal], self.planned)
        if decision == "wait":
            if job not in self.waiting:
                self.waiting.append(job)
        else:
            self.advance(job, decision == "go")
        del self.jobs[key]

    def advance(self, job: _Job, go: bool) -> None:
        """Submit the candidate's next rung, or finish it (COMPLETE after the last rung)."""
        if job.rung + 1 < len(self.rungs) and go:
            self.submit(_Job(job.proposal, job.rung + 1, job.started, job.curve))
            return
        last = job.rung + 1 == len(self.rungs)
        self.finish(job, "COMPLETE" if last else "PRUNED", job.result, None)

    def revisit(self, asked: bool, note: Callable[[str], None] | None = None) -> None:
        """Ask the pruner again about the waiting candidates. Once every candidate was
        ``asked`` for, a rung's scores are final when none of this driver's candidates is in
        flight at that rung or below it: its waiting candidates go on or stop now."""
        from autoprune.search.storage import retrying

        if not self.waiting:
            return
        proposals = [j.proposal for j in self.waiting]
        low = min((j.rung for j in self.jobs.values()), default=len(self.rungs))
        final = [asked and j.rung < low for j in self.waiting]
        decisions = retrying(lambda: self.ledger.decide(proposals, self.planned, final), note=note)
        for job, decision in list(zip(self.waiting, decisions, strict=True)):
            if decision != "wait":
                lost(partial(self.advance, job, decision == "go"), self, None, job.proposal, note)
                self.waiting.remove(job)

    def taken(self) -> int:
        """Candidates counted towards the search's total: every driver's, in the study, or
        (a study from before trials kept their records) this run's own."""
        return max(self.ledger.taken(), len(self.log.records) + len(self.jobs) + len(self.waiting))

    def _others_running(self) -> bool:
        """Whether candidates of other drivers are running in a study that keeps heartbeats
        (elsewhere a dead driver's trial would be waited on forever)."""
        return self.ledger.heartbeat_s is not None and self.ledger.running_elsewhere()

    def run(
        self,
        n_trials: int,
        parallel: int,
        note: Callable[[str], None] | None,
        deadline: float = math.inf,
    ) -> bool:
        """Ask and submit until ``n_trials`` are taken (or ``deadline``, a ``perf_counter``
        time, passed) and nothing is in flight; handle each rung as it arrives. Dead drivers'
        trials are failed along the way. Returns whether the deadline stopped the asking."""
        from autoprune.search.storage import retrying

        exhausted = False
        self.planned = n_trials
        asked = False  # every candidate asked for: no new scores but those in flight
        while True:
            retrying(self.ledger.fail_stale, note=note)
            self.revisit(asked, note=note)
            late = time.perf_counter() >= deadline
            full = False
            while not late and len(self.jobs) < parallel:
                if retrying(self.taken, note=note) >= n_trials:
                    full = True
                    break
                try:
                    prop = retrying(self.searcher.ask, note=note)
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue  # failed as stale while being made (a stalled driver): ask again
                if prop is None:
                    exhausted = True
                    break
                lost(partial(self.start, prop), self, None, prop, note)
            if (late or exhausted or full) and not asked:
                asked = True  # from now on: decide what waited for that before waiting again
                continue
            if not self.jobs and self.waiting:  # nothing in flight: every rung's scores are in
                self.revisit(True, note=note)
                continue
            if not self.jobs:
                if exhausted or late or not retrying(self._others_running, note=note):
                    return late
                # Other drivers' candidates still run: wait for them, so that if a driver died
                # its trials go stale here and are taken up, and the study is finished.
                time.sleep(self.ledger.heartbeat_s or 1)
                continue
            key, (result, error) = self.pool.wait()
            lost(partial(self.arrived, key, result, error), self, key, None, note)


def lost(
    step: Callable[[], None],
    driver: _Driver,
    key: int | None,
    prop: Proposal | None,
    note: Callable[[str], None] | None,
) -> None:
    """Run one driver step (retrying through a lost connection); if another driver has failed
    the candidate's trial meanwhile (its heartbeats stopped reaching the database for longer
    than the grace period), drop it: the trial was queued again for some driver to take up."""
    from autoprune.search.storage import retrying

    try:
        retrying(step, note=note)
    except optuna.exceptions.UpdateFinishedTrialError as e:
        job = driver.jobs.pop(key, None) if key is not None else None
        driver.ledger.forget(job.proposal if job is not None else prop)
        if note is not None:
            note(f"a candidate was given up: {str(e).splitlines()[0]} (queued again)")


def run_search(
    searcher: Searcher,
    pool: Pool,
    log: TrialLog,
    n_trials: int,
    *,
    ledger: Ledger | None = None,
    rungs: list[int | None] | None = None,
    parallel: int = 1,
    seed: int = 0,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    note: Callable[[str], None] | None = None,
    timeout_s: float | None = None,
) -> SearchSummary:
    """Drive ``searcher`` until the run's study holds ``n_trials`` candidates (resumed ones and
    other drivers' count) or ``timeout_s`` passed (then no new candidate starts; started ones
    finish). Each candidate is fine-tuned ``rungs[0]`` steps and scored, then ``rungs[1]``, …
    while ``ledger``'s pruner lets it (default: one rung of the evaluator's own length, in an
    in-memory study); promotions are submitted before new candidates, up to ``parallel`` in
    flight. Each finished candidate (COMPLETE at the last rung, PRUNED earlier, or FAIL) is
    stored on its trial and recorded before the searcher is told. With heartbeats, this driver
    sends them for its trials and fails dead drivers' (queued again). A lost database
    connection is retried (``note`` hears of it). Ctrl-C cancels what is in flight and returns
    with everything finished saved.
    """
    from autoprune.search.storage import retrying

    start = time.perf_counter()
    if ledger is None:  # an in-memory study: no pruning, nothing written
        from autoprune.search.fidelity import Ledger, make_pruner

        ledger = Ledger(None, make_pruner("none", [1], 2))

    def db(fn: Callable[[], Any]) -> Any:
        return retrying(fn, note=note)

    db(lambda: searcher.attach(ledger.study, ledger.created, ledger.salt, ledger.driver))
    db(lambda: log.sync(ledger.records()))
    db(lambda: ledger.recover(log.records))
    searcher.resume(log.records)
    driver = _Driver(searcher, pool, log, ledger, rungs or [None], seed, on_result)
    interrupted = timed_out = False
    ledger.start()
    try:
        deadline = start + timeout_s if timeout_s is not None else math.inf
        timed_out = driver.run(n_trials, parallel, note, deadline)
    except KeyboardInterrupt:
        interrupted = True
        pool.cancel_all()
    finally:
        ledger.stop()
        searcher.close()
    if not interrupted:  # every driver's candidates, as the study holds them now
        db(lambda: log.sync(ledger.records()))
    failed = sum(r["state"] == "FAIL" for r in log.records)
    return SearchSummary(
        len(log.records), failed, log.best, time.perf_counter() - start, interrupted,
        log.records, timed_out,
    )  # fmt: skip


def evaluate_all(
    pool: Pool,
    policies: list[PruningPolicy],
    *,
    seed: int = 0,
    steps: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Outcome]:
    """Evaluate every policy (``pool.slots`` at a time) with ``steps`` fine-tune steps (default:
    the evaluator's); outcomes in the order of ``policies``."""
    out: dict[int, Outcome] = {}
    pending = list(enumerate(policies))[::-1]
    in_flight = 0
    while pending or in_flight:
        while pending and in_flight < pool.slots:
            key, policy = pending.pop()
            pool.submit(key, policy, seed, steps)
            in_flight += 1
        key, outcome = pool.wait()
        out[key] = outcome
        in_flight -= 1
        if progress is not None:
            progress(len(out), len(policies))
    return [out[k] for k in range(len(policies))]


__all__ = [
    "LocalPool",
    "Pool",
    "RayPool",
    "SearchSummary",
    "evaluate_all",
    "init_ray",
    "make_pool",
    "run_search",
]
