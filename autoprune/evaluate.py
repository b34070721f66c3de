"""``Evaluator``: policy → pruned copy → repair → short fine-tune → validation accuracy +
latency/MACs/params.

A pure function of ``(policy, seed, steps)``: it holds the dense model, the train/validation
splits, the distillation teacher and the latency predictor, so it can be shipped once to Ray
workers and called there or in-process alike. ``steps`` is the fidelity: the searches call it with
short fine-tunes of increasing length (:mod:`autoprune.search.fidelity`), ``0`` scoring the
repaired candidate as it is.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import torch
from torch import nn

from autoprune._device import free_cuda_memory
from autoprune._threads import torch_threads
from autoprune.data import Split
from autoprune.data.splits import normalize
from autoprune.errors import EvaluationError
from autoprune.finetune import FinetuneConfig, Teacher, accuracy, finetune
from autoprune.hardware.predictor import LatencyPredictor
from autoprune.policy import PruningPolicy
from autoprune.prunable import PrunableLayer
from autoprune.pruning import apply_policy, count_macs_params, make_permanent
from autoprune.reconstruct import recalibrate_bn, reconstruct
from autoprune.records import EvalResult
from autoprune.search import RECOVERIES


class Evaluator:
    """Score pruning policies on equal terms for every searcher.

    Args:
        model: the dense, trained model (kept unmodified).
        layers: prunable layers from :func:`autoprune.prunable.discover`.
        input_shape: one input without batch dimension.
        train: fine-tuning split.
        val: validation split (the reward); never the test split.
        predictor: latency predictor from the device's hardware profile.
        finetune_cfg: the short fine-tune recipe (its ``steps`` unless a call names others).
        threads: torch threads while evaluating (``None``: leave the setting alone); the
            caller's setting is restored afterwards.
        eval_batch_size: images per batch when scoring.
        teacher: distillation targets for ``finetune_cfg.distill`` (default: the dense model,
            its logits cached per train image when the recipe says ``cached``).
        device: where the pruned copy is fine-tuned and scored (``cuda`` in a Ray task with a
            GPU is the GPU Ray assigned); the dense model stays where it is.
        recover: how a pruned copy is repaired before it is fine-tuned and scored: ``none``,
            ``bn`` (batch norm re-estimated), ``reconstruct`` (layers refitted to the dense
            model by least squares, :func:`autoprune.reconstruct.reconstruct`) or
            ``reconstruct_bn`` (both, batch norm last).
        screen: the repair of a screening call (``steps=0``, no fine-tune step), in place of
            ``recover`` (``none``: ``recover``'s).
        calibration_images: train images (a fixed, seeded sample, not augmented) the repair
            uses.
        screen_images: validation images a screening call scores on (a fixed, seeded sample,
            the same for every candidate; ``None``: all). Scoring is most of a screen's time,
            and a screen only has to sort candidates into the few worth fine-tuning.
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
        eval_batch_size: int = 512,
        teacher: Teacher | None = None,
        device: str = "cpu",
        recover: str = "none",
        screen: str = "none",
        calibration_images: int = 256,
        screen_images: int | None = None,
    ) -> None:
        for what, value in (("recover", recover), ("screen", screen)):
            if value not in RECOVERIES:
                raise ValueError(f"{what} is {value!r}; choose one of {', '.join(RECOVERIES)}")
        self.model = model.eval()
        self.layers = layers
        self.input_shape = tuple(input_shape)
        self.train = train
        self.val = val
        self.predictor = predictor
        self.finetune_cfg = finetune_cfg
        self.threads = threads
        self.eval_batch_size = eval_batch_size
        self.device = device
        self.recover, self.screen = recover, screen
        self.calibration = seeded_sample(len(train), calibration_images)
        self.screen_val = val
        if screen_images is not None and screen_images < len(val):
            some = seeded_sample(len(val), screen_images).sort().values
            self.screen_val = Split(val.x[some], val.y[some], val.mean, val.std)
        if teacher is None and finetune_cfg.distill > 0:
            with torch_threads(threads):
                teacher = (
                    Teacher.cached(model, train, device=device)
                    if finetune_cfg.distill_targets == "cached"
                    else Teacher(model)
                )
        self.teacher = teacher

    @property
    def layer_names(self) -> list[str]:
        return [la.name for la in self.layers]

    def with_threads(self, threads: int | None) -> Evaluator:
        """The same evaluator (sharing model, data and teacher) pinned to ``threads``."""
        twin = object.__new__(Evaluator)
        twin.__dict__.update(self.__dict__, threads=threads)
        return twin

    def prune(self, policy: PruningPolicy, repair: str = "none") -> nn.Module:
        """Pruned copy, repaired as ``repair`` says (see ``recover``); magnitude masks stay
        attached so fine-tuning keeps the zeros."""
        kept: dict[str, list[int]] = {}
        pruned = apply_policy(
            self.model, policy, self.layers, self.input_shape, permanent=False, kept=kept
        )
        if repair != "none":
            split = self.train
            images = normalize(split.x[self.calibration], split.mean, split.std)
            if repair.startswith("reconstruct"):
                reconstruct(pruned, self.model, images, kept)
            if repair.endswith("bn"):
                recalibrate_bn(pruned, images)
        return pruned

    def __call__(
        self, policy: PruningPolicy, seed: int = 0, steps: int | None = None
    ) -> EvalResult:
        with torch_threads(self.threads):
            try:
                return self._evaluate(
                    policy, seed, self.finetune_cfg.steps if steps is None else steps
                )
            except torch.cuda.OutOfMemoryError as e:  # this candidate fails; the search goes on
                free_cuda_memory()
                raise EvaluationError(f"out of GPU memory: {str(e).splitlines()[0]}") from e

    def _evaluate(self, policy: PruningPolicy, seed: int, steps: int) -> EvalResult:
        t0 = time.perf_counter()
        screening = steps == 0 and self.screen != "none"
        try:
            repair = self.screen if screening else self.recover
            pruned = self.prune(policy, repair).to(self.device)
        except Exception as e:
            raise EvaluationError(f"pruning failed: {e}") from e
        cfg = self.finetune_cfg
        if steps != cfg.steps or cfg.epochs is not None:
            cfg = FinetuneConfig(**{**asdict(cfg), "steps": steps, "epochs": None})
        finetune(pruned, self.train, cfg, seed=seed, teacher=self.teacher)
        make_permanent(pruned)
        t1 = time.perf_counter()
        acc = accuracy(pruned, self.screen_val if screening else self.val, self.eval_batch_size)
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
            steps=steps,
        )


def seeded_sample(n: int, k: int) -> torch.Tensor:
    """The first ``k`` of a fixed (seed-0) shuffle of ``range(n)``: the images an evaluator
    calibrates a repair on, or scores screens on; the first ``k`` of a larger sample."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:k]


__all__ = ["EvalResult", "Evaluator", "seeded_sample"]
