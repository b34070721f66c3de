"""``Evaluator``: policy → pruned copy → short fine-tune → validation accuracy + latency/MACs/params.

A pure function of ``(policy, seed)``: it holds the dense model, the train/validation splits and the
latency predictor, so it can be shipped once to Ray workers and called there or in-process alike.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from autoprune.data import Split
from autoprune.errors import EvaluationError
from autoprune.finetune import FinetuneConfig, accuracy, finetune
from autoprune.hardware.predictor import LatencyPredictor
from autoprune.policy import PruningPolicy
from autoprune.prunable import PrunableLayer
from autoprune.pruning import apply_policy, count_macs_params, make_permanent


@dataclass(frozen=True)
class EvalResult:
    """What one candidate scored. ``accuracy`` is on the validation split (0-100)."""

    policy: dict[str, Any]
    accuracy: float
    predicted_ms: float
    macs: int
    params: int
    kept: dict[str, int]
    seed: int
    finetune_s: float
    eval_s: float
    accuracy_before_finetune: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Evaluator:
    """Score pruning policies on equal terms for every searcher.

    Args:
        model: the dense, trained model (kept unmodified).
        layers: prunable layers from :func:`autoprune.prunable.discover`.
        input_shape: one input without batch dimension.
        train: fine-tuning split.
        val: validation split (the reward); never the test split.
        predictor: latency predictor from the device's hardware profile.
        finetune_cfg: the short fine-tune recipe.
        threads: torch threads to use while evaluating (``None`` leaves the setting alone).
        score_before_finetune: also record validation accuracy right after pruning.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: list[PrunableLayer],
        input_shape: tuple[int, ...],
        train: Split,
        val: Split,
        predictor: LatencyPredictor,
        finetune_cfg: FinetuneConfig = FinetuneConfig(),
        *,
        threads: int | None = None,
        score_before_finetune: bool = False,
        eval_batch_size: int = 512,
    ) -> None:
        self.model = model.eval()
        self.layers = layers
        self.input_shape = tuple(input_shape)
        self.train = train
        self.val = val
        self.predictor = predictor
        self.finetune_cfg = finetune_cfg
        self.threads = threads
        self.score_before_finetune = score_before_finetune
        self.eval_batch_size = eval_batch_size

    @property
    def layer_names(self) -> list[str]:
        return [la.name for la in self.layers]

    def prune(self, policy: PruningPolicy) -> nn.Module:
        """Pruned copy; magnitude masks stay attached so fine-tuning keeps the zeros."""
        return apply_policy(self.model, policy, self.layers, self.input_shape, permanent=False)

    def __call__(self, policy: PruningPolicy, seed: int = 0) -> EvalResult:
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        t0 = time.perf_counter()
        try:
            pruned = self.prune(policy)
        except Exception as e:
            raise EvaluationError(f"pruning failed: {e}") from e
        before = (
            accuracy(pruned, self.val, self.eval_batch_size)
            if self.score_before_finetune
            else None
        )
        finetune(pruned, self.train, self.finetune_cfg, seed=seed)
        make_permanent(pruned)
        t1 = time.perf_counter()
        acc = accuracy(pruned, self.val, self.eval_batch_size)
        macs, params = count_macs_params(pruned, self.input_shape)
        kept = self.predictor.kept(policy)
        return EvalResult(
            policy=policy.to_dict(),
            accuracy=acc,
            predicted_ms=self.predictor.predict_kept(kept),
            macs=macs,
            params=params,
            kept=kept,
            seed=seed,
            finetune_s=t1 - t0,
            eval_s=time.perf_counter() - t1,
            accuracy_before_finetune=before,
        )


__all__ = ["EvalResult", "Evaluator"]
