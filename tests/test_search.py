from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from autoprune.config import Config
from autoprune.distributed import LocalPool, run_search
from autoprune.errors import RunLockedError
from autoprune.evaluate import Evaluator
from autoprune.policy import PruningPolicy
from autoprune.records import RunLock, TrialLog, rule_verdict
from autoprune.search import make_searcher
from autoprune.search.fidelity import Ledger, make_pruner
from tests.conftest import FakeEvaluator


def _evaluator(tiny, cls=None):
    return tiny.evaluator(cls)


def _ctx(tiny, run_dir: Path):
    return tiny.context(run_dir)


def _ledger(run_dir: Path, rungs=(None,), multi: bool = False) -> Ledger:
    return Ledger(
        f"sqlite:///{run_dir / 'study.db'}",
        make_pruner("successive_halving", list(rungs), 2),
        multi_objective=multi,
        attrs={"budget_ms": 1.0},
    )


def _search(tiny, run_dir: Path, name: str, n: int, evaluator=None, rungs=(None,), **opts):
    ctx = _ctx(tiny, run_dir)
    cfg = Config()
    if "sampler" in opts:
        cfg = cfg.replace(**{"search.sampler": opts["sampler"]})
    if "amc" in opts:
        cfg = dataclasses.replace(cfg, amc=opts["amc"])
    searcher = make_searcher(name, ctx, cfg)
    log = TrialLog(run_dir, searcher.name)
    ledger = _ledger(run_dir, rungs, multi=opts.get("sampler") == "nsga2")
    pool = LocalPool(evaluator or _evaluator(tiny))
    summary = run_search(searcher, pool, log, n, ledger=ledger, rungs=list(rungs))
    return ctx, summary, log


@pytest.mark.parametrize("name", ["optuna", "random", "uniform"])
def test_searchers_record_feasible_trials(tiny, tmp_path: Path, name: str) -> None:
    ctx, summary, log = _search(tiny, tmp_path, name, 3)
    expected = 1 if name == "uniform" else 3  # uniform has a single candidate
    assert summary.finished == expected == len(log.records)
    for rec in log.records:
        assert rec["state"] == "COMPLETE" and 0 <= rec["accuracy"] <= 100
        assert rec["predicted_ms"] <= ctx.budget_ms + 1e-9  # fitted onto the budget
        assert rec["predicted_ms"] >= 0.9 * ctx.budget_ms  # ... and spending it
    best = PruningPolicy.load(tmp_path / "best_policy.json")
    assert best.metadata["val_accuracy"] == max(r["accuracy"] for r in log.records)
    lines = (tmp_path / "trials.jsonl").read_text().splitlines()
    assert [json.loads(x)["trial"] for x in lines] == [r["trial"] for r in log.records]


@pytest.mark.parametrize("name", ["optuna", "random"])
def test_resume_continues_without_repeating(tiny, tmp_path: Path, name: str) -> None:
    _search(tiny, tmp_path, name, 3)
    _, summary, log = _search(tiny, tmp_path, name, 5)
    trials = [r["trial"] for r in log.records]
    assert summary.finished == 5 and len(set(trials)) == 5
    ratios = [json.dumps(r["policy"]["ratios"], sort_keys=True) for r in log.records]
    assert len(set(ratios)) == 5


class _FailsOnce(Evaluator):
    calls = 0

    def __call__(self, policy, seed=0, steps=None):
        type(self).calls += 1
        if type(self).calls == 2:
            raise MemoryError("simulated out of memory")
        return super().__call__(policy, seed, steps)


def test_failing_evaluation_is_recorded_and_search_goes_on(tiny, tmp_path: Path) -> None:
    _, summary, log = _search(tiny, tmp_path, "random", 3, evaluator=_evaluator(tiny, _FailsOnce))
    states = [r["state"] for r in log.records]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"] and summary.failed == 1
    assert "MemoryError: simulated out of memory" in log.records[1]["error"]


def test_nsga2_pareto_search_runs(tiny, tmp_path: Path) -> None:
    _, summary, _ = _search(tiny, tmp_path, "optuna", 4, sampler="nsga2")
    assert summary.finished == 4
    import optuna

    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert len(study.directions) == 2 and len(study.best_trials) >= 1


@pytest.mark.parametrize("name", ["optuna", "random", "amc"])
def test_weak_candidates_stop_early_and_curves_reach_the_study(tiny, tmp_path: Path, name) -> None:
    import optuna

    from autoprune.config import AMCConfig

    amc = AMCConfig(warmup_episodes=2, batch_size=8, net_arch=[16], gradient_steps=1)
    fake = FakeEvaluator(tiny.predictor, [la.name for la in tiny.layers])
    _, summary, log = _search(tiny, tmp_path, name, 8, fake, rungs=(1, 2, 4), amc=amc)
    states = [r["state"] for r in log.records]
    assert summary.finished == 8 and set(states) <= {"COMPLETE", "PRUNED"}
    assert "PRUNED" in states and "COMPLETE" in states  # successive halving stopped some
    for rec in log.records:
        steps = [s for s, _ in rec["curve"]]
        assert steps == [1, 2, 4][: len(steps)] and rec["steps"] == steps[-1]
        assert (rec["state"] == "COMPLETE") == (len(steps) == 3)
    best = PruningPolicy.load(tmp_path / "best_policy.json")
    complete = [r for r in log.records if r["state"] == "COMPLETE"]
    assert best.metadata["val_accuracy"] == max(r["accuracy"] for r in complete)
    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert study.metric_names == ["val_top1"] and study.user_attrs["budget_ms"] == 1.0
    trials = study.get_trials()
    assert len(trials) == 8 and all(t.intermediate_values for t in trials)
    assert {t.user_attrs["trial"] for t in trials} == {r["trial"] for r in log.records}
    assert all("predicted_ms" in t.user_attrs and t.params for t in trials)
    assert sum(t.state == optuna.trial.TrialState.PRUNED for t in trials) == states.count("PRUNED")


def test_optuna_searches_the_channel_multiple_too(tiny, tmp_path: Path) -> None:
    ctx = dataclasses.replace(tiny.context(tmp_path), round_to_choices=(1, 4))
    searcher = make_searcher("optuna", ctx, Config())
    log = TrialLog(tmp_path, searcher.name)
    fake = FakeEvaluator(tiny.predictor, [la.name for la in tiny.layers])
    run_search(searcher, LocalPool(fake), log, 6, ledger=_ledger(tmp_path))
    multiples = {r["policy"]["round_to"] for r in log.records}
    assert multiples <= {1, 4} and len(multiples) == 2
    for rec in log.records:
        if rec["policy"]["round_to"] == 4:  # kept channels are multiples of 4 (or the layer)
            assert all(k % 4 == 0 or k < 4 for k in rec["kept"].values())
        assert rec["predicted_ms"] <= ctx.budget_ms + 1e-9


def test_optuna_starts_from_the_baselines_policies(tiny, tmp_path: Path) -> None:
    ctx = tiny.context(tmp_path)
    searcher = make_searcher("optuna", ctx, Config())
    log = TrialLog(tmp_path, searcher.name)
    fake = FakeEvaluator(tiny.predictor, [la.name for la in tiny.layers])
    run_search(searcher, LocalPool(fake), log, 4, ledger=_ledger(tmp_path))
    first = sorted(log.records, key=lambda r: r["trial"])[:2]
    for rec, name in zip(first, ["uniform", "global"], strict=True):
        baseline = make_searcher(name, ctx, Config()).ask()
        assert baseline is not None
        got, want = rec["policy"]["ratios"], baseline.policy.ratios  # moved onto the budget
        assert max(abs(got[n] - want[n]) for n in want) < 0.05, (name, got, want)
        assert rec["predicted_ms"] <= ctx.budget_ms + 1e-9
        assert rec["policy"]["metadata"]["warm_start"] == name
    # The closing line names the rule when it won, else the search's margin over it.
    verdict = rule_verdict(log.records)
    best = max(log.records, key=lambda r: r["accuracy"])
    rule = best["policy"]["metadata"].get("warm_start")
    assert verdict is not None and (
        f"the {rule} rule's policy" in verdict if rule else "beat" in verdict
    )
    # a resumed study does not queue them again
    again = make_searcher("optuna", ctx, Config())
    run_search(again, LocalPool(fake), log, 6, ledger=_ledger(tmp_path))
    assert len(log.records) == 6


def test_evaluator_is_deterministic(tiny) -> None:
    ev = _evaluator(tiny)
    pol = PruningPolicy("resnet8", dict.fromkeys(tiny.max_ratio, 0.4))
    a, b = ev(pol, seed=3), ev(pol, seed=3)
    assert a.accuracy == b.accuracy and a.kept == b.kept and a.macs == b.macs


def test_run_directory_lock(tmp_path: Path) -> None:
    with RunLock(tmp_path), pytest.raises(RunLockedError, match="in use by another search"):
        RunLock(tmp_path).__enter__()


def test_a_rule_candidate_does_not_take_a_queued_retry(tmp_path: Path) -> None:
    """A searcher that proposes outside Optuna gets a trial holding its own ratios, even when
    the study has a queued trial (another candidate's retry) that ``ask`` would hand out."""
    from autoprune.search._base import Proposal

    ledger = _ledger(tmp_path)
    ledger.study.enqueue_trial({"a": 0.1}, user_attrs={"requeued_from": 0})
    policy = PruningPolicy("resnet8", {"a": 0.4, "b": 0.2})
    ledger.open(Proposal(1, policy), {"a": 0.9, "b": 0.9})
    trials = ledger.study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["WAITING", "RUNNING"]
    assert trials[1].params == {"a": 0.4, "b": 0.2} and trials[1].user_attrs["trial"] == 1


def test_timeout_stops_asking_and_lets_started_candidates_finish(
    tiny, tmp_path: Path, monkeypatch
) -> None:
    """``search.timeout_s``: past it no new candidate starts, the ones started run their rungs
    to the end, and the summary says the timeout stopped it; a timeout ≤ 0 is refused. The
    driver's clock advances 0.2 s per evaluation, so the count does not hang on machine speed."""
    import time
    from types import SimpleNamespace

    from autoprune import distributed
    from autoprune.errors import ConfigError

    clock = [0.0]
    monkeypatch.setattr(
        distributed, "time", SimpleNamespace(perf_counter=lambda: clock[0], sleep=time.sleep)
    )

    class Slow(FakeEvaluator):
        def __call__(self, policy, seed: int = 0, steps: int | None = None):
            clock[0] += 0.2
            return super().__call__(policy, seed, steps)

    searcher = make_searcher("random", _ctx(tiny, tmp_path), Config())
    log = TrialLog(tmp_path, searcher.name)
    ledger = _ledger(tmp_path, (1, 3))
    pool = LocalPool(Slow(tiny.predictor, [la.name for la in tiny.layers]))
    summary = run_search(searcher, pool, log, 100, ledger=ledger, rungs=[1, 3], timeout_s=1.0)
    assert summary.timed_out and not summary.interrupted
    assert 2 <= summary.finished < 100 and summary.failed == 0
    states = {t.state.name for t in ledger.study.get_trials(deepcopy=False)}
    assert states <= {"COMPLETE", "PRUNED"}  # nothing left running
    with pytest.raises(ConfigError, match="timeout_s must be positive"):
        Config().replace(**{"search.timeout_s": 0})
