from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoprune.distributed import LocalPool, run_search
from autoprune.errors import RunLockedError
from autoprune.evaluate import Evaluator
from autoprune.policy import PruningPolicy
from autoprune.records import RunLock, TrialLog
from autoprune.search import make_searcher


def _evaluator(tiny, cls=None):
    return tiny.evaluator(cls)


def _ctx(tiny, run_dir: Path):
    return tiny.context(run_dir)


def _search(tiny, run_dir: Path, name: str, n: int, evaluator=None, **opts):
    ctx = _ctx(tiny, run_dir)
    searcher = make_searcher(name, ctx, **opts)
    log = TrialLog(run_dir, searcher.name)
    summary = run_search(searcher, LocalPool(evaluator or _evaluator(tiny)), log, n)
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

    def __call__(self, policy, seed=0):
        type(self).calls += 1
        if type(self).calls == 2:
            raise MemoryError("simulated out of memory")
        return super().__call__(policy, seed)


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


def test_evaluator_is_deterministic(tiny) -> None:
    ev = _evaluator(tiny)
    pol = PruningPolicy("resnet8", dict.fromkeys(tiny.max_ratio, 0.4))
    a, b = ev(pol, seed=3), ev(pol, seed=3)
    assert a.accuracy == b.accuracy and a.kept == b.kept and a.macs == b.macs


def test_run_directory_lock(tmp_path: Path) -> None:
    with RunLock(tmp_path), pytest.raises(RunLockedError, match="in use by another search"):
        RunLock(tmp_path).__enter__()
