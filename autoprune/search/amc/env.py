"""``PruningEnv``: AMC's layer-by-layer pruning MDP (He et al., ECCV 2018) under a latency budget.

One step per prunable layer; the action is that layer's pruning ratio. The *action wall* raises
each ratio just enough that the remaining layers, pruned at their maximum, can still meet the
budget, so every finished episode is a feasible policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from autoprune.budget import smallest_feasible
from autoprune.hardware.predictor import LUTPredictor
from autoprune.policy import PruningPolicy, kept_channels

OBS_DIM = 10
RewardFn = Callable[[PruningPolicy], float]


class PruningEnv(gym.Env):
    """Observation (10 numbers, each in [0, 1]): layer index, type (conv / depthwise / linear),
    c_in, c_out, stride, kernel, the layer's latency share, latency already saved, latency still
    to save, previous action. Action: ``Box(-1, 1)`` mapped to a ratio in ``[0, max_ratio]``.

    Args:
        model: model name (for the policy).
        layers: prunable layer names in execution order.
        max_ratio: per-layer maximal ratio.
        predictor: latency predictor from the device profile.
        budget_ms: the latency the finished policy must meet.
        reward_fn: scores a finished policy (e.g. validation accuracy / 100); ``None`` gives 0,
            for callers that score episodes themselves (the searcher does, asynchronously).
        round_to: channel rounding of the policy.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium declares it per instance

    def __init__(
        self,
        model: str,
        layers: list[str],
        max_ratio: Mapping[str, float],
        predictor: LUTPredictor,
        budget_ms: float,
        reward_fn: RewardFn | None = None,
        round_to: int = 1,
    ) -> None:
        super().__init__()
        self.model, self.layers, self.max_ratio = model, list(layers), dict(max_ratio)
        self.predictor, self.budget_ms, self.reward_fn = predictor, budget_ms, reward_fn
        self.round_to = round_to
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(OBS_DIM,), dtype=np.float32)
        self.dense_ms = predictor.predict(PruningPolicy(model, {}, round_to=round_to))
        self._static = self._layer_features()
        self._reset_state()

    def _layer_features(self) -> np.ndarray:
        tables = {m: t for t in self.predictor.profile.tables for m in t.modules}
        rows, shares = [], []
        for name in self.layers:
            t = tables.get(name)
            kind = (
                1.0
                if t is not None and t.kind == "linear"
                else (0.5 if t is not None and t.depthwise else 0.0)
            )
            c_in = max(t.grid_in) if t else 0
            c_out = max(t.grid_out) if t else self.predictor.channels[name]
            rows.append([kind, c_in, c_out, t.stride if t else 1, t.kernel if t else 1])
            alone = self.predictor.predict(
                PruningPolicy(self.model, {name: self.max_ratio[name]}, round_to=self.round_to)
            )
            shares.append(max(self.dense_ms - alone, 0.0))
        f = np.array(rows, dtype=np.float64)
        f[:, 1:3] /= max(f[:, 1:3].max(), 1.0)
        f[:, 3] /= max(f[:, 3].max(), 1.0)
        f[:, 4] /= max(f[:, 4].max(), 1.0)
        share = np.array(shares) / max(sum(shares), 1e-9)
        return np.hstack([f, share[:, None]])

    def _reset_state(self) -> None:
        self.t = 0
        self.ratios: dict[str, float] = {}
        self.prev_action = 0.0

    def _predict(self, ratios: Mapping[str, float]) -> float:
        kept = {
            n: kept_channels(c, ratios.get(n, 0.0), self.round_to)
            for n, c in self.predictor.channels.items()
        }
        return self.predictor.predict_kept(kept)

    def _obs(self) -> np.ndarray:
        i = min(self.t, len(self.layers) - 1)
        now = self._predict(self.ratios)
        saved = (self.dense_ms - now) / self.dense_ms
        still = max(now - self.budget_ms, 0.0) / self.dense_ms
        obs = [i / max(len(self.layers) - 1, 1), *self._static[i], saved, still, self.prev_action]
        return np.clip(np.array(obs, dtype=np.float32), 0.0, 1.0)

    def wall(self, ratio: float) -> float:
        """Smallest ratio ≥ ``ratio`` for the current layer that keeps the budget reachable."""
        name = self.layers[self.t]
        rest = {n: self.max_ratio[n] for n in self.layers[self.t + 1 :]}

        def ok(r: float) -> bool:
            return self._predict({**self.ratios, name: r, **rest}) <= self.budget_ms

        if ok(ratio):
            return ratio
        return smallest_feasible(ok, ratio, self.max_ratio[name], iterations=20)

    def to_ratio(self, action: float) -> float:
        return float((np.clip(action, -1, 1) + 1) / 2 * self.max_ratio[self.layers[self.t]])

    def to_action(self, ratio: float) -> float:
        b = self.max_ratio[self.layers[self.t]]
        return float(2 * ratio / b - 1) if b > 0 else -1.0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._reset_state()
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        ratio = self.wall(self.to_ratio(float(np.asarray(action).reshape(-1)[0])))
        effective = self.to_action(ratio)
        self.ratios[self.layers[self.t]] = ratio
        self.prev_action = (effective + 1) / 2
        self.t += 1
        done = self.t >= len(self.layers)
        info: dict[str, Any] = {"ratio": ratio, "effective_action": effective}
        reward = 0.0
        if done:
            policy = self.policy()
            info["policy"] = policy
            info["predicted_ms"] = self.predictor.predict(policy)
            reward = float(self.reward_fn(policy)) if self.reward_fn is not None else 0.0
        return self._obs(), reward, done, False, info

    def policy(self) -> PruningPolicy:
        return PruningPolicy(self.model, dict(self.ratios), round_to=self.round_to)


__all__ = ["OBS_DIM", "PruningEnv"]
