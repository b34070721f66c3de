"""autoprune: search per-layer pruning ratios for a trained PyTorch network so that the pruned
model meets a latency budget measured on the target device, keeps as much accuracy as possible,
and is exported ready to deploy.

The public API is :mod:`autoprune.api`, one function per CLI command (the CLI is a thin shell
over it)::

    from autoprune import api, load_config, SearchOptions
    cfg = load_config("search_spaces/resnet20_cifar10.yaml")
    api.search(cfg, SearchOptions(Path("runs/x")))
    api.apply("runs/x")            # fit to the measured budget, final fine-tune, measure
    api.export("runs/x")           # model.pt, best_policy.json, model.onnx, report.md

Names are imported on first use, so ``import autoprune`` stays light (no torch, Ray or Optuna
until something needs them).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("autoprune")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

_EXPORTS = {
    "AutopruneError": "autoprune.errors",
    "CheckpointError": "autoprune.errors",
    "ConfigError": "autoprune.errors",
    "DataError": "autoprune.errors",
    "EvaluationError": "autoprune.errors",
    "InfeasibleBudgetError": "autoprune.errors",
    "PolicyError": "autoprune.errors",
    "ProfileError": "autoprune.errors",
    "RunLockedError": "autoprune.errors",
    "LatencyBudget": "autoprune.budget",
    "fit_to_budget": "autoprune.budget",
    "Config": "autoprune.config",
    "load_config": "autoprune.config",
    "EvalResult": "autoprune.records",
    "Evaluator": "autoprune.evaluate",
    "PruningPolicy": "autoprune.policy",
    "SearchOptions": "autoprune.pipeline",
    "Workspace": "autoprune.workspace",
    "build_workspace": "autoprune.workspace",
}


def __getattr__(name: str) -> Any:
    if name == "api":
        return importlib.import_module("autoprune.api")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'autoprune' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = ["api", *sorted(_EXPORTS)]
