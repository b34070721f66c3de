"""``PruningPolicy``: per-layer pruning ratios plus mode, validated on construction and on load.

>>> p = PruningPolicy("resnet20", {"layer1.0.conv1": 0.5})
>>> p.ratio("layer1.0.conv1"), p.ratio("layer2.0.conv1")
(0.5, 0.0)
>>> kept_channels(16, 0.5), kept_channels(64, 0.3, round_to=8)
(8, 48)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from autoprune._io import read_json, write_json
from autoprune.errors import PolicyError

Mode = Literal["structured", "unstructured", "hybrid"]
MODES: tuple[str, ...] = ("structured", "unstructured", "hybrid")
FORMAT = "autoprune.policy/1"


def kept_channels(n: int, ratio: float, round_to: int = 1) -> int:
    """Channels left when ``ratio`` of ``n`` are pruned, rounded to a multiple of ``round_to``."""
    if round_to >= n:
        return n
    keep = round(n * (1.0 - ratio) / round_to) * round_to
    return max(min(keep, n), round_to, 1)


def _check_ratio(name: str, r: Any, what: str = "ratio") -> float:
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r):
        raise PolicyError(f"{what} for layer {name!r} must be a number, got {r!r}")
    if not 0.0 <= r < 1.0:
        raise PolicyError(f"{what} for layer {name!r} is {r}; it must lie in [0, 1)")
    return float(r)


@dataclass(frozen=True)
class PruningPolicy:
    """What to prune: the fraction of channels (or weights) to remove per layer.

    Args:
        model: the model name the policy was made for.
        ratios: layer name → fraction of channels to remove, in [0, 1). Missing layers keep all.
        mode: ``structured`` (channels removed), ``unstructured`` (magnitude masks) or ``hybrid``
            (structured ``ratios`` plus per-layer ``sparsity`` on top).
        round_to: kept channel counts are rounded to a multiple of this.
        sparsity: layer name → fraction of remaining weights zeroed (unstructured / hybrid).
        metadata: free-form provenance (searcher, trial, budget...).
    """

    model: str
    ratios: Mapping[str, float]
    mode: Mode = "structured"
    round_to: int = 1
    sparsity: Mapping[str, float] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PolicyError(f"policy mode {self.mode!r} is not one of {', '.join(MODES)}")
        if not isinstance(self.round_to, int) or self.round_to < 1:
            raise PolicyError(f"round_to must be a positive integer, got {self.round_to!r}")
        object.__setattr__(self, "ratios", {k: _check_ratio(k, v) for k, v in self.ratios.items()})
        object.__setattr__(
            self, "sparsity", {k: _check_ratio(k, v, "sparsity") for k, v in self.sparsity.items()}
        )
        if self.mode == "unstructured" and any(self.ratios.values()):
            raise PolicyError(
                "an unstructured policy removes no channels: put its ratios in 'sparsity'"
            )

    def ratio(self, layer: str) -> float:
        return self.ratios.get(layer, 0.0)

    def check_layers(
        self, known: Iterable[str], max_ratio: Mapping[str, float] | None = None
    ) -> None:
        """Raise :class:`PolicyError` if a layer is unknown or a ratio is above its bound."""
        known = list(known)
        unknown = sorted(set(self.ratios) - set(known))
        if unknown:
            raise PolicyError(
                f"policy names layers the model {self.model!r} does not have as prunable: "
                f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}"
            )
        for name, r in self.ratios.items():
            bound = (max_ratio or {}).get(name)
            if bound is not None and r > bound + 1e-9:
                raise PolicyError(f"ratio {r} for layer {name!r} is above its bound {bound}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "mode": self.mode,
            "round_to": self.round_to,
            "ratios": dict(self.ratios),
            "sparsity": dict(self.sparsity),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PruningPolicy:
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise PolicyError(f"not an autoprune policy (expected format {FORMAT!r})")
        for key in ("model", "ratios"):
            if key not in d:
                raise PolicyError(f"policy is missing {key!r}")
        if not isinstance(d["ratios"], Mapping):
            raise PolicyError("policy 'ratios' must be a mapping of layer name to ratio")
        return cls(
            model=str(d["model"]),
            ratios=dict(d["ratios"]),
            mode=d.get("mode", "structured"),
            round_to=d.get("round_to", 1),
            sparsity=dict(d.get("sparsity") or {}),
            metadata=dict(d.get("metadata") or {}),
        )

    def save(self, path: str | Path) -> Path:
        """Write the policy as JSON, atomically."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> PruningPolicy:
        return cls.from_dict(read_json(path, PolicyError, "policy file"))

    def with_metadata(self, **extra: Any) -> PruningPolicy:
        return PruningPolicy(
            self.model,
            self.ratios,
            self.mode,
            self.round_to,
            self.sparsity,
            {**self.metadata, **extra},
        )


def uniform(model: str, layers: Iterable[str], ratio: float, round_to: int = 1) -> PruningPolicy:
    """The same ratio on every layer."""
    return PruningPolicy(model, {name: ratio for name in layers}, round_to=round_to)


def random_policy(
    model: str,
    max_ratio: Mapping[str, float],
    rng: Any,
    round_to: int = 1,
) -> PruningPolicy:
    """Ratios drawn uniformly in ``[0, max_ratio[layer]]`` (``rng`` is a ``numpy`` Generator)."""
    return PruningPolicy(
        model, {n: float(rng.uniform(0.0, b)) for n, b in max_ratio.items()}, round_to=round_to
    )


__all__ = ["MODES", "PruningPolicy", "kept_channels", "random_policy", "uniform"]
