"""The searcher plug-in point: propose policies (``ask``), learn from results (``tell``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from autoprune.budget import fit_to_budget
from autoprune.hardware.predictor import LatencyPredictor
from autoprune.policy import PruningPolicy

if TYPE_CHECKING:
    import optuna

    from autoprune.config import Config
    from autoprune.records import EvalResult


@dataclass(frozen=True)
class SearchContext:
    """What every searcher knows: the space, the budget and where to keep its state."""

    model: str
    layers: list[str]
    max_ratio: Mapping[str, float]
    round_to: int
    predictor: LatencyPredictor
    budget_ms: float
    run_dir: Path
    seed: int = 0
    channel_scores: Mapping[str, Sequence[float]] = field(default_factory=dict)  # dense model's
    round_to_choices: tuple[int, ...] = ()  # channel multiples a searcher may choose among
    # The search space's dimensions: each names the layers that share one ratio (empty: one
    # dimension per layer). See :func:`stage_groups`.
    groups: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @property
    def dims(self) -> dict[str, list[str]]:
        """Dimension → the layers it sets (one per layer unless the space is grouped)."""
        if self.groups:
            return {g: list(names) for g, names in self.groups.items()}
        return {n: [n] for n in self.layers}

    def dim_bound(self, dim: str) -> float:
        """The largest ratio a dimension takes (its layers' largest bound)."""
        return max(self.max_ratio[n] for n in self.dims[dim])

    def expand(self, params: Mapping[str, float]) -> dict[str, float]:
        """Per-layer ratios from per-dimension ones, each capped at its layer's bound."""
        return {
            n: min(float(params.get(d, 0.0)), self.max_ratio[n])
            for d, names in self.dims.items()
            for n in names
        }

    def project(self, ratios: Mapping[str, float]) -> dict[str, float]:
        """Per-dimension ratios nearest a per-layer policy (the mean of each group's ratios):
        how a baseline's policy enters a grouped space."""
        return {
            d: min(sum(ratios.get(n, 0.0) for n in names) / len(names), self.dim_bound(d))
            for d, names in self.dims.items()
        }

    def fit(
        self, ratios: Mapping[str, float], round_to: int | None = None, **metadata: Any
    ) -> PruningPolicy:
        """A policy from raw ratios (channel counts multiples of ``round_to``, default the
        context's), moved onto the budget (see :func:`fit_to_budget`)."""
        raw = PruningPolicy(
            self.model,
            {n: float(ratios.get(n, 0.0)) for n in self.layers},
            round_to=round_to or self.round_to,
        )
        fitted = fit_to_budget(raw, self.max_ratio, self.predictor, self.budget_ms)
        return fitted.with_metadata(**metadata)


@dataclass(frozen=True)
class Proposal:
    """One candidate: a trial number unique within the run, and the policy to evaluate
    (``handle``: the Optuna trial of a searcher that proposes through Optuna)."""

    trial: int
    policy: PruningPolicy
    params: Mapping[str, float] = field(default_factory=dict)
    handle: Any = field(default=None, compare=False, repr=False)  # the Optuna trial, if any


class Searcher(ABC):
    """Base class of all searchers. Subclasses implement :meth:`ask` and :meth:`tell`.

    The driver loop (:func:`autoprune.distributed.run_search`) owns evaluation, records and resume
    bookkeeping; a searcher only proposes and learns. ``ask`` may be called several times before
    the matching ``tell`` when trials run in parallel.
    """

    name: ClassVar[str] = "base"

    def __init__(self, ctx: SearchContext) -> None:
        self.ctx = ctx

    @classmethod
    def from_config(cls, ctx: SearchContext, cfg: Config) -> Searcher:
        """Build from the config's settings for this searcher (default: none needed)."""
        return cls(ctx)

    def attach(  # noqa: B027 - optional hook
        self, study: optuna.Study, fresh: bool = True, salt: int = 0, driver: str = ""
    ) -> None:
        """Receive the run's Optuna study (:class:`autoprune.search.fidelity.Ledger`); a
        searcher that proposes through Optuna samples from it. ``fresh``: this driver created
        the study (so it seeds it); ``salt`` tells drivers sharing one study apart (0 for the
        creator), so their random proposals differ; ``driver`` names this driver on the trials
        it asks for."""

    @abstractmethod
    def ask(self) -> Proposal | None:
        """Next candidate, or ``None`` when this searcher has nothing left to propose."""

    @abstractmethod
    def tell(
        self, proposal: Proposal, result: EvalResult | None, error: str | None = None
    ) -> None:
        """Report a finished candidate (``result``: its score at the last fidelity it reached)
        or its failure (``error``)."""

    def scored(  # noqa: B027 - optional hook
        self, proposal: Proposal, rung: int, result: EvalResult
    ) -> None:
        """A candidate's score at fidelity rung ``rung`` arrived (before the pruner decides
        whether it goes on); a searcher that learns from one comparable score per candidate
        takes rung 0's, which every candidate reaches."""

    def resume(self, finished: list[dict[str, Any]]) -> None:  # noqa: B027 - optional hook
        """Restore state from the run's finished trial records (default: nothing to restore)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (storage connections, files)."""


def stage_groups(
    layers: Sequence[str], resolution: Mapping[str, tuple[int, int]], coupled: Set[str]
) -> dict[str, list[str]]:
    """Group layers by the spatial size of their output and whether they are coupled through a
    residual add (several layers' outputs pruned together): a CIFAR ResNet's stages, 6
    dimensions instead of 30 for ResNet-56, so a search can learn the whole space from a few
    hundred candidates. Groups are named like ``16x16`` and ``16x16-coupled``.

    >>> stage_groups(["a", "b", "c"], {"a": (8, 8), "b": (8, 8), "c": (4, 4)}, {"b"})
    {'8x8': ['a'], '8x8-coupled': ['b'], '4x4': ['c']}
    """
    out: dict[str, list[str]] = {}
    for n in layers:
        h, w = resolution[n]
        out.setdefault(f"{h}x{w}" + ("-coupled" if n in coupled else ""), []).append(n)
    return out


__all__ = ["Proposal", "SearchContext", "Searcher", "stage_groups"]
