from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from autoprune.config import AMCConfig
from autoprune.distributed import LocalPool, run_search
from autoprune.finetune import accuracy
from autoprune.policy import PruningPolicy
from autoprune.pruning import apply_policy
from autoprune.records import TrialLog
from autoprune.search.amc import AMCSearcher, PruningEnv
from autoprune.search.fidelity import Ledger, RungPruner, make_pruner
from tests.conftest import FakeEvaluator

FAST = AMCConfig(warmup_episodes=2, batch_size=8, net_arch=[16, 16], gradient_steps=2)


def _budget(tiny) -> float:
    return tiny.context(Path("."), 0.3).budget_ms


def test_env_passes_check_env_and_the_wall_keeps_episodes_feasible(tiny) -> None:
    names = [la.name for la in tiny.layers]
    val = tiny.data.val

    def reward(policy: PruningPolicy) -> float:  # real accuracy of the pruned model
        return accuracy(apply_policy(tiny.model, policy, tiny.layers, (3, 32, 32)), val) / 100

    env = PruningEnv("resnet8", names, tiny.max_ratio, tiny.predictor, _budget(tiny), reward)
    check_env(env, skip_render_check=True)
    rng = np.random.default_rng(0)
    for _ in range(4):  # greedy "prune nothing" and random actions alike end feasible
        obs, _ = env.reset()
        done = False
        while not done:
            a = np.array([rng.uniform(-1, -0.5)], dtype=np.float32)
            obs, r, done, _, info = env.step(a)
            assert env.observation_space.contains(obs)
        assert info["predicted_ms"] <= _budget(tiny) + 1e-9 and 0 <= r <= 1


def _run(tiny, run_dir: Path, n: int, cfg: AMCConfig = FAST):
    log = TrialLog(run_dir, "amc")
    searcher = AMCSearcher(tiny.context(run_dir, 0.3), cfg)
    ledger = Ledger(f"sqlite:///{run_dir / 'study.db'}", make_pruner("none", [1], 2))
    return run_search(searcher, LocalPool(tiny.evaluator(steps=1)), log, n, ledger=ledger), log


def test_agent_learns_through_the_evaluator_and_resumes(tiny, tmp_path: Path) -> None:
    summary, log = _run(tiny, tmp_path, 4)
    assert summary.finished == 4 and (tmp_path / "amc_agent.pt").is_file()
    state = json.loads((tmp_path / "amc_state.json").read_text())
    # σ decays only after the warm-up: episodes 3 and 4 explored with 0.5 and 0.5 · 0.95
    assert state["episodes"] == 4
    assert state["sigma"] == pytest.approx(FAST.noise_sigma * FAST.noise_decay**2)
    budget = _budget(tiny)
    summary, log = _run(tiny, tmp_path, 6)
    trials = [r["trial"] for r in log.records]
    assert summary.finished == 6 and trials == sorted(set(trials))
    assert all(r["predicted_ms"] <= budget + 1e-9 for r in log.records)
    assert json.loads((tmp_path / "amc_state.json").read_text())["episodes"] == 6


def test_td3_agent_runs_and_writes_nothing_outside_its_run_dir(
    tiny, tmp_path, monkeypatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where SB3 would put a log folder
    td3 = AMCConfig(**{**FAST.__dict__, "algorithm": "td3", "reward": "error_log_cost"})
    (tmp_path / "run").mkdir()
    summary, log = _run(tiny, tmp_path / "run", 3, td3)
    assert summary.finished == 3 and all(r["state"] == "COMPLETE" for r in log.records)
    assert list(scratch.iterdir()) == []


def test_deferred_promotion_lets_the_agent_learn_from_every_screen_first(
    tiny, tmp_path: Path
) -> None:
    """The README's remedy for a converged agent's costly episodes: with deferred promotion the
    agent still learns from each episode's screen as it arrives, and only the best quarter of
    the 8 episodes is fine-tuned afterwards (the best half of those to the last rung)."""
    searcher = AMCSearcher(tiny.context(tmp_path, 0.3), FAST)
    fake = FakeEvaluator(tiny.predictor, [la.name for la in tiny.layers])
    calls: list[int | None] = []
    learned: list[int] = []  # replay-buffer size when each fine-tune starts

    def evaluate(policy: PruningPolicy, seed: int, steps: int | None):
        calls.append(steps)
        if steps:
            learned.append(searcher._buffer().size())
        return fake(policy, seed, steps)

    rungs = [0, 2, 4]
    ledger = Ledger(f"sqlite:///{tmp_path / 'study.db'}", RungPruner(rungs, [0.25, 0.5], True))
    log = TrialLog(tmp_path, "amc")
    run_search(searcher, LocalPool(evaluate), log, 8, ledger=ledger, rungs=rungs, parallel=2)
    assert calls == [0] * 8 + [2, 2, 4]
    assert searcher.episodes == 8 and learned == [8 * len(tiny.layers)] * 3
    assert sorted(len(r["curve"]) for r in log.records) == [1] * 6 + [2, 3]
