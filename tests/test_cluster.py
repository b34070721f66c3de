"""Searches on a cluster, for real: several `autoprune search` processes (drivers) on one study in
a PostgreSQL server this test starts, evaluating on one Ray cluster this test starts; one driver
killed with SIGKILL mid-trial and the database restarted mid-search; every trial accounted for,
none duplicated, the same best policy read from every driver. Also the journal-file storage
(no server) and the AMC agent on a cluster (one agent, parallel evaluations)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks._services import PostgresServer, RayHead
from benchmarks.cluster import accounting, driver, fault_run, finish, study_of
from tests.conftest import profile_for, write_config

TRIALS = 12


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory):
    try:
        server = PostgresServer(tmp_path_factory.mktemp("pg"))
    except (RuntimeError, OSError) as e:
        pytest.skip(f"no PostgreSQL server here: {e}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ray_cluster():
    """The Ray cluster the README's recipe joins (6 CPUs: 3 drivers × 2 workers)."""
    try:
        head = RayHead(cpus=6)
    except RuntimeError as e:
        pytest.skip(str(e))
    yield head.address
    head.stop()


def _config(tmp_path: Path, **changes: object) -> Path:
    cfg = write_config(
        tmp_path,
        model="resnet8",
        **{
            "search.trials": TRIALS,
            "search.heartbeat_s": 2,
            "search.retries": 3,
            "search.startup_trials": 4,
            "short_finetune.steps": 4,
            "fidelity": {"min_steps": 2, "rungs": 2, "reduction_factor": 2},
            **changes,
        },
    )
    profile_for(cfg)
    return cfg


def test_three_drivers_one_study_survive_a_kill_and_a_restart(
    tmp_path: Path, postgres: PostgresServer, ray_cluster: str
) -> None:
    """The README's cluster recipe, with faults: 3 drivers × 2 workers, driver 0 SIGKILLed
    mid-trial, the database restarted under the other two, driver 0 resumed, a report from
    every driver's folder (benchmarks/cluster.py runs the same and records the figures)."""
    figures = fault_run(_config(tmp_path), tmp_path, postgres, ray_cluster)
    assert figures["recorded"] == TRIALS and figures["unaccounted"] == []
    assert figures["evaluated_twice"] == 0
    assert figures["retried"] >= 1  # the killed driver's trial, taken up by another driver
    assert set(figures["states"]) <= {"COMPLETE", "PRUNED", "FAIL"}
    assert figures["same_best_policy_everywhere"]
    assert figures["trial_log_lines_per_driver"] == [TRIALS] * 3
    report = (tmp_path / "driver1/report/report.md").read_text()
    assert f"{TRIALS} candidates" in report


def test_two_drivers_share_a_journal_file(tmp_path: Path) -> None:
    """No database server: Optuna's journal file on a (shared) filesystem."""
    cfg = _config(tmp_path, **{"search.trials": 6})
    storage = f"journal:{tmp_path / 'study.log'}"
    finish([driver(cfg, tmp_path / f"driver{i}", storage, "journal") for i in range(2)])
    figures = accounting(study_of(storage, "journal"))
    assert figures["recorded"] == 6 and figures["unaccounted"] == []
    assert figures["evaluated_twice"] == 0 and figures["recording_drivers"] == 2


def test_amc_on_a_cluster_is_one_agent_with_parallel_evaluations(
    tmp_path: Path, postgres: PostgresServer, ray_cluster: str
) -> None:
    """AMC's agent learns episode by episode, so it runs in one driver; its evaluations run in
    parallel on the Ray cluster, and its study lives in the shared database."""
    cfg = _config(tmp_path, **{"search.trials": 6, "search.searcher": "amc"})
    run = tmp_path / "amc"
    finish([driver(cfg, run, postgres.url, "amc", "--address", ray_cluster, "--parallel", "2")])
    figures = accounting(study_of(postgres.url, "amc"))
    assert figures["recorded"] == 6 and figures["unaccounted"] == []
    assert json.loads((run / "amc_state.json").read_text())["episodes"] == 6


def test_accounting_follows_a_chain_of_retries() -> None:
    """A retry that fails too is retried again; Optuna's callback keeps the first failed trial
    in ``failed_trial`` and the chain in ``retry_history``: every link is accounted for, and a
    failure nobody retried is not."""
    import optuna

    study = optuna.create_study()
    retry = optuna.storages.RetryFailedTrialCallback(max_retry=3)
    first = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(first, state=optuna.trial.TrialState.FAIL)
    retry(study, study.trials[first.number])
    second = study.ask()  # takes the queued retry
    study.tell(second, state=optuna.trial.TrialState.FAIL)
    retry(study, study.trials[second.number])
    third = study.ask()
    third.set_user_attr("record", {"trial": third.number})
    study.tell(third, 0.5)
    assert third.params == first.params
    figures = accounting(study)
    assert figures["unaccounted"] == [] and figures["retried"] == 2
    lone = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(lone, state=optuna.trial.TrialState.FAIL)
    assert accounting(study)["unaccounted"] == [f"{lone.number} FAIL"]
    study.enqueue_trial({"x": 0.3})  # queued, and nobody took it
    assert accounting(study)["unaccounted"][-1].endswith("WAITING")


def test_a_trial_lost_before_it_held_a_candidate_is_not_queued_again() -> None:
    """A driver that loses its connection (or is killed) between asking for a trial and giving
    it parameters leaves a trial that proposed nothing: failing it stale queues nothing that
    no driver would take, and the accounting calls it abandoned; a candidate's trial is queued
    again as before."""
    import optuna

    from autoprune.search.storage import RetryCandidate

    study = optuna.create_study()
    retry = RetryCandidate(max_retry=2)
    empty = study.ask()
    study.tell(empty, state=optuna.trial.TrialState.FAIL)
    retry(study, study.trials[empty.number])
    assert len(study.trials) == 1
    figures = accounting(study)
    assert figures["abandoned"] == 1 and figures["unaccounted"] == []
    held = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(held, state=optuna.trial.TrialState.FAIL)
    retry(study, study.trials[held.number])
    assert study.trials[-1].state.name == "WAITING" and study.trials[-1].params == held.params
    ruled = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    ruled.set_user_attr("owner", "ledger")  # a rule's or AMC's candidate: re-proposed on resume
    study.tell(ruled, state=optuna.trial.TrialState.FAIL)
    retry(study, study.trials[ruled.number])
    assert study.trials[-1].number == ruled.number
    # Evaluated and recorded, then failed as stale before its driver told the study (its
    # heartbeats stalled): the record counts, and a copy would wait with every place taken.
    done = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    done.set_user_attr("record", {"trial": done.number})
    study.tell(done, state=optuna.trial.TrialState.FAIL)
    retry(study, study.trials[done.number])
    assert study.trials[-1].number == done.number
    figures = accounting(study)  # the rule's candidate waits for its searcher's resume
    assert figures["recorded"] == 1 and figures["unaccounted"] == [f"{ruled.number} FAIL"]


def test_a_trial_failed_as_stale_after_its_record_is_said_not_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A driver whose heartbeats stalled can see its trial failed as stale between storing the
    record and telling the result: the record counts, the trial is not queued again, and the
    driver says that the study holds the trial as FAIL while its own log says COMPLETE."""
    import optuna

    from autoprune.policy import PruningPolicy
    from autoprune.search._base import Proposal
    from autoprune.search.fidelity import Ledger, make_pruner, worth_retrying

    ledger = Ledger(None, make_pruner("none", [1], 2))
    prop = Proposal(0, PruningPolicy("resnet8", {"a": 0.4}))
    ledger.open(prop, {"a": 0.9})
    tell = ledger.study.tell

    def stalled(trial: optuna.Trial, *args: object, **kwargs: object) -> object:
        tell(trial.number, state=optuna.trial.TrialState.FAIL)  # the other driver, just now
        return tell(trial, *args, **kwargs)

    monkeypatch.setattr(ledger.study, "tell", stalled)
    with pytest.warns(UserWarning, match="trial 0 is FAIL in the study"):
        ledger.close(prop, "COMPLETE", [0.5], record={"trial": 0})
    frozen = ledger.study.trials[0]
    assert frozen.user_attrs["record"] == {"trial": 0} and not worth_retrying(frozen)
    assert accounting(ledger.study)["unaccounted"] == []


def test_two_drivers_taking_the_last_place_at_once_keep_one_candidate(tmp_path: Path) -> None:
    """Two drivers both counted one free place and both asked: trial numbers order them alike
    for both, the later gives its trial back (a queued one is queued again as it was), and the
    accounting calls it surplus."""
    from autoprune.policy import PruningPolicy
    from autoprune.search._base import Proposal
    from autoprune.search.fidelity import Ledger, make_pruner

    url = f"sqlite:///{tmp_path / 'study.db'}"
    first, second = (Ledger(url, make_pruner("none", [None], 2), driver=d) for d in "ab")
    bounds = {"a": 0.9, "b": 0.9}
    policy = PruningPolicy("resnet8", {"a": 0.4, "b": 0.2})
    assert first.taken() == second.taken() == 0  # both see the free place
    first.open(Proposal(0, policy), bounds)
    first.study.enqueue_trial({"a": 0.3}, user_attrs={"warm_start": "uniform"})
    asked = second.study.ask()  # the queued warm start, numbered after the first's trial
    asked.suggest_float("a", 0.0, 0.9)
    late = Proposal(0, policy, handle=asked)
    second.open(late, bounds)
    assert first.taken() == 2
    assert not first.surplus(Proposal(0, policy), 1)
    assert second.surplus(late, 1)
    second.give_back(late)
    assert first.taken() == 1
    kept, surplus, queued = first.study.get_trials(deepcopy=False)
    assert kept.user_attrs["driver"] == "a" and kept.state.name == "RUNNING"
    assert surplus.state.name == "FAIL" and surplus.user_attrs["surplus"]
    assert queued.state.name == "WAITING" and queued.user_attrs == {"warm_start": "uniform"}
    assert queued.system_attrs["fixed_params"] == {"a": 0.3}
    first.close(Proposal(0, policy), "PRUNED", record={"trial": 0})
    figures = accounting(first.study)
    assert figures["surplus"] == 1 and figures["unaccounted"] == [f"{queued.number} WAITING"]
