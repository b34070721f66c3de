"""``AMCSearcher``: an SB3 DDPG/TD3 agent walks the layers and picks each ratio (AMC), scored by
the same Evaluator as every other searcher, through ask/tell so episodes evaluate in parallel."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import DDPG, TD3
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.logger import Logger

from autoprune._io import write_json, write_with
from autoprune.budget import fit_to_budget
from autoprune.config import AMCConfig, Config
from autoprune.errors import ConfigError
from autoprune.hardware.predictor import LUTPredictor
from autoprune.policy import PruningPolicy
from autoprune.records import EvalResult
from autoprune.search._base import Proposal, SearchContext, Searcher
from autoprune.search.amc.env import PruningEnv

STATE, WEIGHTS = "amc_state.json", "amc_agent.pt"
Transition = tuple[np.ndarray, np.ndarray, float, bool]  # obs, next_obs, action, done


class AMCSearcher(Searcher):
    """AMC-style RL search under the latency budget.

    Each ``ask`` rolls out one episode: the first ``warmup_episodes`` with uniformly random
    actions, then the actor's action plus truncated-normal noise whose σ starts at ``noise_sigma``
    and decays by ``noise_decay`` every episode after the warm-up (as AMC's reference code does).
    The episode's policy is moved onto the budget (:func:`fit_to_budget`, which keeps it
    feasible), and the transitions are replayed with the evaluated ratios. The episode's reward
    is the candidate's score at the first fidelity rung, which every candidate reaches (later
    rungs score on another scale, and only the best candidates reach them): every step of the
    episode gets it minus a moving-average baseline (as AMC does), the episode joins the replay
    buffer and the agent trains. With a screening rung (``fidelity.screen``) the agent thus
    learns from hundreds of cheap episodes. State survives in the run directory: actor/critic
    weights (``weights_only`` tensors) and a JSON state; the replay buffer is rebuilt from the
    trial log, so nothing pickled is loaded on resume.
    """

    name = "amc"

    def __init__(self, ctx: SearchContext, cfg: AMCConfig) -> None:
        super().__init__(ctx)
        self.cfg = cfg
        if not isinstance(ctx.predictor, LUTPredictor):  # its state reads the profile's tables
            raise ConfigError("the AMC searcher needs a profile-based latency predictor")
        self.env = PruningEnv(
            ctx.model,
            list(ctx.layers),
            ctx.max_ratio,
            ctx.predictor,
            ctx.budget_ms,
            round_to=ctx.round_to,
        )
        algo = TD3 if cfg.algorithm == "td3" else DDPG
        self.agent = algo(
            "MlpPolicy",
            self.env,
            learning_rate=cfg.learning_rate,
            buffer_size=cfg.buffer_size,
            batch_size=cfg.batch_size,
            tau=cfg.tau,
            gamma=cfg.gamma,
            learning_starts=0,
            policy_kwargs={"net_arch": list(cfg.net_arch)},
            seed=ctx.seed,
            device="cpu",
        )
        # no outputs and no folder: SB3's configure() would leave an empty SB3-<time> dir in /tmp
        self.agent.set_logger(Logger(folder=None, output_formats=[]))
        self.rng = np.random.default_rng(ctx.seed)
        self.episodes = 0
        self.sigma = cfg.noise_sigma
        self.baseline: float | None = None
        self.next_trial = 0
        self.pending: dict[int, list[Transition]] = {}
        self.learned: set[int] = set()  # in flight, already rewarded at their first rung

    @classmethod
    def from_config(cls, ctx: SearchContext, cfg: Config) -> AMCSearcher:
        return cls(ctx, cfg.amc)

    # -- rollouts -------------------------------------------------------------------------
    def _act(self, obs: np.ndarray) -> float:
        if self.episodes < self.cfg.warmup_episodes:
            return float(self.rng.uniform(-1, 1))
        with torch.no_grad():
            mean = float(self.agent.predict(obs, deterministic=True)[0][0])
        # Truncated normal around the actor's action, as AMC explores.
        for _ in range(100):
            a = mean + self.sigma * float(self.rng.standard_normal())
            if -1 <= a <= 1:
                return a
        return float(np.clip(mean, -1, 1))

    def _replay(self, ratios: dict[str, float]) -> list[Transition]:
        """Step the env with fixed ratios; return the episode's transitions (the wall never binds
        on a feasible policy, so this reproduces exactly the evaluated policy)."""
        obs, _ = self.env.reset()
        out = []
        for name in self.ctx.layers:
            action = self.env.to_action(ratios.get(name, 0.0))
            nxt, _, done, _, info = self.env.step(np.array([action], dtype=np.float32))
            out.append((obs, nxt, info["effective_action"], done))
            obs = nxt
        return out

    def ask(self) -> Proposal | None:
        obs, _ = self.env.reset()
        done = False
        while not done:
            obs, _, done, _, _ = self.env.step(np.array([self._act(obs)], dtype=np.float32))
        trial = self.next_trial
        self.next_trial += 1
        self.episodes += 1
        if self.episodes > self.cfg.warmup_episodes:  # the first noisy episode uses noise_sigma
            self.sigma *= self.cfg.noise_decay
        policy = fit_to_budget(
            self.env.policy(), self.ctx.max_ratio, self.ctx.predictor, self.ctx.budget_ms
        )
        policy = policy.with_metadata(searcher=self.name, trial=trial)
        self.pending[trial] = self._replay(dict(policy.ratios))
        return Proposal(trial, policy, dict(policy.ratios))

    # -- learning -------------------------------------------------------------------------
    def _buffer(self) -> ReplayBuffer:
        buf = self.agent.replay_buffer
        assert buf is not None  # SB3 builds it in the constructor (off-policy algorithms)
        return buf

    def _reward(self, result: EvalResult | None) -> float:
        if result is None:
            return 0.0
        if self.cfg.reward == "error_log_cost":
            return -(1 - result.accuracy / 100) * math.log(max(result.predicted_ms, 1e-6))
        return result.accuracy / 100

    def _learn(self, transitions: list[Transition], reward: float) -> None:
        self.baseline = reward if self.baseline is None else 0.95 * self.baseline + 0.05 * reward
        shaped = reward - self.baseline
        buf = self._buffer()
        for obs, nxt, action, done in transitions:
            buf.add(
                obs[None],
                nxt[None],
                np.array([[action]], dtype=np.float32),
                np.array([shaped]),
                np.array([done]),
                [{}],
            )
        if self.episodes > self.cfg.warmup_episodes and buf.size() >= self.cfg.batch_size:
            self.agent.train(
                gradient_steps=self.cfg.gradient_steps, batch_size=self.cfg.batch_size
            )

    def scored(self, proposal: Proposal, rung: int, result: EvalResult) -> None:
        if rung == 0:
            self._episode_done(proposal, result)

    def tell(
        self, proposal: Proposal, result: EvalResult | None, error: str | None = None
    ) -> None:
        if proposal.trial not in self.learned:  # failed before its first rung: reward 0
            self._episode_done(proposal, None)
        self.learned.discard(proposal.trial)

    def _episode_done(self, proposal: Proposal, result: EvalResult | None) -> None:
        transitions = self.pending.pop(proposal.trial, None) or self._replay(
            dict(proposal.policy.ratios)
        )
        self._learn(transitions, self._reward(result))
        self.learned.add(proposal.trial)
        self._save()

    # -- persistence ----------------------------------------------------------------------
    def _save(self) -> None:
        run: Path = self.ctx.run_dir
        write_with(run / WEIGHTS, lambda p: torch.save(self.agent.policy.state_dict(), p))
        write_json(
            run / STATE,
            {
                "episodes": self.episodes,
                "sigma": self.sigma,
                "baseline": self.baseline,
                "next_trial": self.next_trial,
                "rng": self.rng.bit_generator.state,
            },
        )

    def resume(self, finished: list[dict[str, Any]]) -> None:
        """Reload weights and exploration state; rebuild the replay buffer from the trial log."""
        run: Path = self.ctx.run_dir
        if not finished:
            return
        if (run / WEIGHTS).is_file():
            self.agent.policy.load_state_dict(torch.load(run / WEIGHTS, weights_only=True))
        state = json.loads((run / STATE).read_text()) if (run / STATE).is_file() else {}
        saved_baseline = state.get("baseline")
        for rec in finished:
            policy = PruningPolicy.from_dict(rec["policy"])
            curve = rec.get("curve")
            result = (  # every candidate is rewarded with its first rung's score
                None
                if not curve
                else EvalResult(
                    rec["policy"],
                    curve[0][1],
                    rec.get("predicted_ms", 0.0),
                    rec.get("macs", 0),
                    rec.get("params_count", 0),
                    rec.get("kept", {}),
                    rec.get("seed", 0),
                    0.0,
                    0.0,
                )
            )
            for obs, nxt, action, done in self._replay(dict(policy.ratios)):
                self._buffer().add(
                    obs[None],
                    nxt[None],
                    np.array([[action]], dtype=np.float32),
                    np.array([self._reward(result) - (saved_baseline or 0.0)]),
                    np.array([done]),
                    [{}],
                )
        self.episodes = int(state.get("episodes", len(finished)))
        self.sigma = float(state.get("sigma", self.cfg.noise_sigma))
        self.baseline = saved_baseline
        self.next_trial = max(
            int(state.get("next_trial", 0)), max(int(r["trial"]) for r in finished) + 1
        )
        if "rng" in state:
            self.rng.bit_generator.state = state["rng"]


__all__ = ["AMCSearcher"]
