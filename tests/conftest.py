"""Shared fixtures: a tiny real CIFAR ResNet-8, its real (fast) hardware profile, real CIFAR-10."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pytest
import yaml

from autoprune.config import set_dotted

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parent.parent
FAST_PROFILE = {"repeats": 5, "min_time_s": 0.02, "channel_sweep": False}


@dataclass
class Tiny:
    model: object
    layers: list
    profile: object
    predictor: object
    data: object
    max_ratio: dict

    def evaluator(self, cls: type | None = None, steps: int = 2):
        """A real Evaluator on the tiny model and data (``cls`` may be an Evaluator subclass)."""
        from autoprune.evaluate import Evaluator
        from autoprune.finetune import FinetuneConfig

        return (cls or Evaluator)(
            self.model,
            self.layers,
            (3, 32, 32),
            self.data.train,
            self.data.val,
            self.predictor,
            FinetuneConfig(steps=steps, batch_size=16),
        )

    @cached_property
    def channel_scores(self) -> dict[str, list[float]]:
        """The dense model's channel scores (a dependency-graph trace: computed once)."""
        from autoprune.pruning import channel_scores

        return channel_scores(self.model, self.layers, (3, 32, 32))

    def context(self, run_dir: Path, budget_share: float = 0.5, scores: bool = True):
        """A SearchContext whose budget lies ``budget_share`` of the way from the fastest
        reachable latency to dense (``scores``: with the dense model's channel scores, as a
        workspace builds it; global magnitude pruning needs them)."""
        from autoprune.policy import PruningPolicy
        from autoprune.search import SearchContext

        floor = self.predictor.predict(PruningPolicy("resnet8", self.max_ratio))
        budget = floor + budget_share * (self.profile.dense_ms - floor)
        return SearchContext(
            "resnet8",
            [la.name for la in self.layers],
            self.max_ratio,
            1,
            self.predictor,
            budget,
            run_dir,
            seed=0,
            channel_scores=self.channel_scores if scores else {},
        )


class FakeEvaluator:
    """A closed-form stand-in for :class:`autoprune.evaluate.Evaluator`, for tests whose subject
    is control flow (searchers, the driver, fidelity rungs), not pruning: the score depends on
    the policy (less pruning of the first layers is better) and grows with fine-tune steps."""

    def __init__(self, predictor, layers: list[str], fail_on: int | None = None) -> None:
        self.predictor, self.layers, self.fail_on, self.calls = predictor, layers, fail_on, 0

    def __call__(self, policy, seed: int = 0, steps: int | None = None):
        import math

        from autoprune.records import EvalResult

        self.calls += 1
        if self.calls == self.fail_on:
            raise MemoryError("simulated out of memory")
        steps = 1 if steps is None else steps  # 0: a screening rung, no fine-tune step
        weights = [1.0 / (i + 1) for i in range(len(self.layers))]
        loss = sum(w * policy.ratio(n) for w, n in zip(weights, self.layers, strict=True))
        acc = 90 - 40 * loss / sum(weights) - 20 / math.sqrt(max(steps, 0.5))
        kept = self.predictor.kept(policy)
        return EvalResult(
            policy.to_dict(),
            acc,
            self.predictor.predict_kept(kept),
            1,
            1,
            kept,
            seed,
            0.0,
            0.0,
            steps,
        )


@pytest.fixture(scope="session")
def tiny() -> Tiny:
    """ResNet-8 (random init), its prunable layers, a real profile and a small real data split."""
    from autoprune.data import load_cifar10
    from autoprune.hardware import DeviceSpec, LUTPredictor
    from autoprune.hardware.profiler import profile_model
    from autoprune.models import build_model
    from autoprune.prunable import discover

    model = build_model("resnet8", pretrained=False)
    layers = discover(model, (3, 32, 32))
    max_ratio = {la.name: 0.8 for la in layers}
    profile = profile_model(
        "resnet8",
        model,
        layers,
        (3, 32, 32),
        DeviceSpec(),
        max_ratio=max_ratio,
        grid_points=4,
        calibration_policies=6,
        **FAST_PROFILE,
    )
    data = load_cifar10("bundled", val_size=64, train_limit=128)
    return Tiny(model, layers, profile, LUTPredictor(profile), data, max_ratio)


def write_config(tmp_path: Path, **changes: object) -> Path:
    """A search-space YAML in ``tmp_path``: the shipped ResNet-20 one made small and fast."""
    cfg = yaml.safe_load((REPO / "search_spaces/resnet20_cifar10.yaml").read_text())
    cfg.update(profile=str(tmp_path / "profile.json"), profile_grid_points=3, budget="0.8")
    cfg.update(measure_seconds=0.3)  # apply's device fit: a check of the loop, not a timing
    cfg["dataset"].update(val_size=64, train_limit=128)
    cfg["search"].update(trials=3, parallel=1, startup_trials=2)
    cfg["short_finetune"].update(steps=2, batch_size=16)
    cfg["fidelity"] = {"min_steps": 1, "rungs": 2, "reduction_factor": 2}
    cfg["final_finetune"] = {"steps": 2, "batch_size": 16}
    set_dotted(cfg, changes)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def profile_for(config_path: Path) -> Path:
    """Measure (fast) and save the profile the config points at."""
    from autoprune.config import load_config
    from autoprune.workspace import build_workspace

    ws = build_workspace(load_config(config_path))
    path = ws.profile_path()
    ws.measure_profile(**FAST_PROFILE).save(path)
    return path
