"""Searches on a cluster, for real: several `autoprune search` processes (drivers) on one study in
a PostgreSQL server this test starts, evaluating on one Ray cluster this test starts; one driver
killed with SIGKILL mid-trial and the database restarted mid-search; every trial accounted for,
none duplicated, the same best policy read from every driver. Also the journal-file storage
(no server) and the AMC agent on a cluster (one agent, parallel evaluations)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest

from autoprune.search.storage import open_storage
from tests.conftest import REPO, profile_for, write_config
from tests.pgserver import PostgresServer, start_or_skip

TRIALS = 24


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory):
    server = start_or_skip(tmp_path_factory.mktemp("pg"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):
    """``ray start --head`` (the cluster the README's recipe joins), stopped afterwards (only
    this one: ``ray stop`` would stop every Ray on the machine)."""
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
         f"--port={port}", "--num-cpus=6", "--include-dashboard=false",
         "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while subprocess.run(
        [str(Path(sys.executable).parent / "ray"), "status", f"--address={address}"],
        env=env, capture_output=True, check=False,
    ).returncode:  # fmt: skip
        if head.poll() is not None or time.monotonic() > deadline:
            pytest.skip("could not start a Ray cluster here")
        time.sleep(1)
    yield address
    head.send_signal(signal.SIGINT)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        head.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def _driver(
    cfg: Path, run: Path, storage: str, *extra: str, study: str = "cluster"
) -> subprocess.Popen[str]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "autoprune.cli", "search", "-c", str(cfg), "--run-dir", str(run),
         "--storage", storage, "--study", study, *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _study(storage: str, name: str = "cluster") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def _running_of(storage: str, run: Path) -> bool:
    try:
        trials = _study(storage).get_trials(deepcopy=False)
    except Exception:  # the study is not there yet
        return False
    return any(
        t.state == optuna.trial.TrialState.RUNNING
        and str(t.user_attrs.get("driver", "")).endswith(str(run.resolve()))
        for t in trials
    )


def _accounting(study: optuna.Study) -> tuple[list[dict[str, object]], dict[str, int]]:
    """The recorded candidates, and the study's trials by fate; asserts nothing is lost or
    evaluated twice."""
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    assert set(states) <= {"COMPLETE", "PRUNED", "FAIL"}, states  # nothing left running
    retried = {t.system_attrs["failed_trial"] for t in trials if "failed_trial" in t.system_attrs}
    retried |= {t.user_attrs["requeued_from"] for t in trials if "requeued_from" in t.user_attrs}
    for t in trials:  # a failure without a record is a dead driver's trial, queued again
        if t.state.name == "FAIL" and "record" not in t.user_attrs:
            assert t.number in retried, f"trial {t.number} failed and was not retried"
    evaluated = [t for t in trials if "record" in t.user_attrs]
    params = Counter(json.dumps(t.params, sort_keys=True) for t in evaluated)
    assert max(params.values()) == 1, "a candidate was evaluated twice"
    records = sorted((t.user_attrs["record"] for t in evaluated), key=lambda r: r["trial"])
    return records, {**states, "retried": len(retried)}


def test_three_drivers_one_study_survive_a_kill_and_a_restart(
    tmp_path: Path, postgres: PostgresServer, ray_cluster: str
) -> None:
    cfg = _config(tmp_path)
    runs = [tmp_path / f"driver{i}" for i in range(3)]
    ray = ["--address", ray_cluster, "--parallel", "2"]
    drivers = [_driver(cfg, run, postgres.url, *ray) for run in runs]
    deadline = time.monotonic() + 240
    while not _running_of(postgres.url, runs[0]):  # driver 0 mid-trial
        assert drivers[0].poll() is None, drivers[0].stdout.read()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "driver 0 never started a trial"
        time.sleep(0.2)
    drivers[0].send_signal(signal.SIGKILL)
    drivers[0].wait()
    postgres.restart()  # mid-search, under the two live drivers
    for d in drivers[1:]:
        out, _ = d.communicate(timeout=600)
        assert d.returncode == 0, out
    records, fates = _accounting(_study(postgres.url))
    assert len(records) == TRIALS, fates
    assert fates["retried"] >= 1  # the killed driver's trial, taken up by another driver
    # The killed driver resumes: nothing left to run, and it reads what the others did.
    again = _driver(cfg, runs[0], postgres.url, "--resume")
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for run in runs:  # a report from any driver's run directory shows every candidate
        cmd = [sys.executable, "-m", "autoprune.cli", "report", str(run)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        lines = (run / "trials.jsonl").read_text().splitlines()
        assert sorted(json.loads(x)["trial"] for x in lines) == [r["trial"] for r in records]
        assert f"{len(records)} candidates" in (run / "report/report.md").read_text()
    best = [json.loads((run / "best_policy.json").read_text()) for run in runs]
    assert best[0] == best[1] == best[2]
    done = [r for r in records if r["state"] == "COMPLETE"]
    top = max(done, key=lambda r: (r["accuracy"], -r["trial"]))
    assert best[0]["ratios"] == top["policy"]["ratios"]


def test_two_drivers_share_a_journal_file(tmp_path: Path) -> None:
    """No database server: Optuna's journal file on a (shared) filesystem."""
    cfg = _config(tmp_path, **{"search.trials": 10})
    storage = f"journal:{tmp_path / 'study.log'}"
    runs = [tmp_path / f"driver{i}" for i in range(2)]
    drivers = [_driver(cfg, run, storage) for run in runs]
    for d in drivers:
        out, _ = d.communicate(timeout=600)
        assert d.returncode == 0, out
    records, fates = _accounting(_study(storage))
    assert len(records) == 10 and fates.get("FAIL", 0) == 0
    owners = {str(t.user_attrs["driver"]) for t in _study(storage).trials}
    assert len(owners) == 2  # both drivers took candidates


def test_amc_on_a_cluster_is_one_agent_with_parallel_evaluations(
    tmp_path: Path, postgres: PostgresServer, ray_cluster: str
) -> None:
    """AMC's agent learns episode by episode, so it runs in one driver; its evaluations run in
    parallel on the Ray cluster, and its study lives in the shared database."""
    cfg = _config(tmp_path, **{"search.trials": 8, "search.searcher": "amc"})
    run = tmp_path / "amc"
    ray = ["--address", ray_cluster, "--parallel", "2"]
    d = _driver(cfg, run, postgres.url, *ray, study="amc")
    out, _ = d.communicate(timeout=600)
    assert d.returncode == 0, out
    records, _ = _accounting(_study(postgres.url, "amc"))
    assert len(records) == 8
    assert (run / "amc_state.json").is_file()
    assert json.loads((run / "amc_state.json").read_text())["episodes"] == 8
