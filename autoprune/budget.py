"""Latency budgets: absolute ms or a fraction of the dense model's measured latency.

>>> b = LatencyBudget.parse("0.5")
>>> b.resolve(dense_ms=4.0)
2.0
>>> LatencyBudget.parse("1.5ms").resolve(dense_ms=4.0)
1.5
>>> violation(2.2, 2.0) > 0
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from autoprune.errors import ConfigError, InfeasibleBudgetError
from autoprune.hardware.predictor import LatencyPredictor
from autoprune.policy import PruningPolicy


@dataclass(frozen=True)
class LatencyBudget:
    """A latency limit: ``ms`` absolute, or ``fraction`` of the dense model's measured latency."""

    ms: float | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        if (self.ms is None) == (self.fraction is None):
            raise ConfigError("a latency budget needs exactly one of ms or fraction")
        if self.ms is not None and self.ms <= 0:
            raise ConfigError(f"latency budget must be positive, got {self.ms} ms")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ConfigError(f"latency budget fraction must lie in (0, 1], got {self.fraction}")

    @classmethod
    def parse(cls, value: str | float) -> LatencyBudget:
        """``"2.5ms"`` → absolute; ``0.5`` or ``"50%"`` → fraction of dense latency."""
        text = str(value).strip().lower()
        try:
            if text.endswith("ms"):
                return cls(ms=float(text[:-2]))
            if text.endswith("%"):
                return cls(fraction=float(text[:-1]) / 100)
            return cls(fraction=float(text))
        except ValueError as e:
            raise ConfigError(
                f"cannot read latency budget {value!r}: use e.g. 0.5, 50% or 2.5ms"
            ) from e

    def resolve(self, dense_ms: float) -> float:
        return self.ms if self.ms is not None else float(self.fraction) * dense_ms  # type: ignore[arg-type]


def smallest_feasible(
    ok: Callable[[float], bool], lo: float, hi: float, *, iterations: int = 30
) -> float:
    """The smallest ``x`` in ``[lo, hi]`` with ``ok(x)``, to within ``(hi − lo) / 2**iterations``,
    for a predicate that is false below some point and true from it on (``ok(hi)`` is assumed).

    >>> round(smallest_feasible(lambda x: x * x >= 2.0, 0.0, 2.0, iterations=40), 6)
    1.414214
    """
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def violation(predicted_ms: float, budget_ms: float) -> float:
    """How far over budget (ms); ≤ 0 means feasible (Optuna's constraint convention)."""
    return predicted_ms - budget_ms


def check_feasible(
    predictor: LatencyPredictor,
    model: str,
    max_ratio: Mapping[str, float],
    budget_ms: float,
    round_to: int = 1,
) -> float:
    """Return the minimum reachable latency; raise if even maximal pruning misses the budget."""
    floor = predictor.predict(PruningPolicy(model, dict(max_ratio), round_to=round_to))
    if floor > budget_ms:
        raise InfeasibleBudgetError(
            f"latency budget {budget_ms:.3f} ms is infeasible: maximal pruning allowed by the "
            f"bounds reaches {floor:.3f} ms at best"
        )
    return floor


def _blend(
    raw: Mapping[str, float], max_ratio: Mapping[str, float], alpha: float
) -> dict[str, float]:
    if alpha >= 0:
        return {n: raw.get(n, 0.0) + alpha * (b - raw.get(n, 0.0)) for n, b in max_ratio.items()}
    return {n: raw.get(n, 0.0) * (1.0 + alpha) for n in max_ratio}


def fit_to_budget(
    policy: PruningPolicy,
    max_ratio: Mapping[str, float],
    predictor: LatencyPredictor,
    budget_ms: float,
    *,
    iterations: int = 30,
) -> PruningPolicy:
    """Move ``policy`` along one monotone path until its predicted latency just meets the budget.

    Over budget: every ratio moves the same share of the way to its bound. Under budget: every
    ratio shrinks by the same factor, giving channels back. The result is the least-pruned point on
    that path whose prediction is within budget, so searchers and baselines all spend the budget
    fully and are compared at the same latency. The path keeps the relative shape of ``policy``,
    which is what a searcher chose.
    """
    raw = {n: min(policy.ratio(n), b) for n, b in max_ratio.items()}

    def at(alpha: float) -> PruningPolicy:
        ratios = {
            n: min(max(r, 0.0), max_ratio[n]) for n, r in _blend(raw, max_ratio, alpha).items()
        }
        return PruningPolicy(
            policy.model, ratios, policy.mode, policy.round_to, policy.sparsity, policy.metadata
        )

    if predictor.predict(at(-1.0)) <= budget_ms:
        return at(-1.0)
    # pred(-1) > budget >= pred(1): feasibility is checked by the caller.
    alpha = smallest_feasible(
        lambda a: predictor.predict(at(a)) <= budget_ms, -1.0, 1.0, iterations=iterations
    )
    return at(alpha)


__all__ = [
    "LatencyBudget",
    "check_feasible",
    "fit_to_budget",
    "smallest_feasible",
    "violation",
]
