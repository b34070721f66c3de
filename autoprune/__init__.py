"""autoprune: search per-layer pruning ratios for a trained PyTorch network so that the pruned
model meets a latency budget measured on the target device, keeps as much accuracy as possible,
and is exported ready to deploy.

Public API (the CLI uses only this and the pipeline/export modules)::

    cfg = load_config("search_spaces/resnet20_cifar10.yaml")
    summary = search(cfg, SearchOptions(Path("runs/x")))
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from autoprune.budget import LatencyBudget, fit_to_budget
from autoprune.config import Config, load_config
from autoprune.errors import (
    AutopruneError,
    CheckpointError,
    ConfigError,
    DataError,
    EvaluationError,
    InfeasibleBudgetError,
    PolicyError,
    ProfileError,
    RunLockedError,
)
from autoprune.evaluate import EvalResult, Evaluator
from autoprune.pipeline import SearchOptions, search
from autoprune.policy import PruningPolicy
from autoprune.workspace import Workspace, build_workspace

try:
    __version__ = version("autoprune")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AutopruneError",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataError",
    "EvalResult",
    "EvaluationError",
    "Evaluator",
    "InfeasibleBudgetError",
    "LatencyBudget",
    "PolicyError",
    "ProfileError",
    "PruningPolicy",
    "RunLockedError",
    "SearchOptions",
    "Workspace",
    "build_workspace",
    "fit_to_budget",
    "load_config",
    "search",
]
