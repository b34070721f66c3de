"""The final recipe: one-shot (prune to the policy, then fine-tune) or iterative (prune a share of
the way, fine-tune, repeat), the schedule AMC, NetAdapt and Torch-Pruning's examples use when a
large cut at once loses more than fine-tuning recovers."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path

from torch import nn

from autoprune.data import Split
from autoprune.finetune import FinetuneConfig, FinetuneResult, Teacher, as_teacher, finetune
from autoprune.policy import PruningPolicy, kept_channels
from autoprune.prunable import PrunableLayer
from autoprune.pruning import apply_policy, apply_sparsity, make_permanent, prune_structured


def prune_and_finetune(
    dense: nn.Module,
    policy: PruningPolicy,
    layers: list[PrunableLayer],
    input_shape: tuple[int, ...],
    train: Split,
    cfg: FinetuneConfig,
    *,
    seed: int = 0,
    teacher: nn.Module | Teacher | None = None,
    val: Split | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    device: str = "cpu",
    on_result: Callable[[FinetuneResult], None] | None = None,
    checkpoint: Path | None = None,
) -> nn.Module:
    """Return ``dense`` pruned to ``policy`` and fine-tuned with ``cfg`` on ``device`` (the
    result is back on the CPU; ``dense`` is never moved).

    With ``cfg.iterative_steps = N > 1`` round ``k`` prunes each layer to the channel count of
    ``k / N`` of its ratio (channels ranked again on the fine-tuned weights) and fine-tunes for
    ``1 / N`` of the recipe's steps, the learning rate cosine-annealed within each round. The
    result has exactly the one-shot architecture, so it reloads from the same policy.
    Magnitude masks (hybrid/unstructured) stay attached while fine-tuning, so zeros stay zero.
    ``on_result`` receives what the fine-tune did (rounds summed: steps counted from the first).
    ``checkpoint`` makes a one-shot fine-tune resumable epoch by epoch (see :func:`finetune`);
    iterative rounds start over.
    """
    rounds = cfg.iterative_steps if policy.mode != "unstructured" else 1
    # cached logits are computed once for all rounds
    teacher = as_teacher(teacher, train, cfg, device)
    report = on_result or (lambda _done: None)
    if rounds <= 1:
        model = apply_policy(dense, policy, layers, input_shape, permanent=False).to(device)
        report(finetune(model, train, cfg, seed=seed, teacher=teacher, val=val,
                        progress=progress, checkpoint=checkpoint))  # fmt: skip
        return make_permanent(model).cpu()
    per = max(1, cfg.total_steps(len(train)) // rounds)
    round_cfg = dataclasses.replace(cfg, steps=per, epochs=None)
    model = copy.deepcopy(dense)
    current = {la.name: la.channels for la in layers}
    results: list[FinetuneResult] = []
    for k in range(1, rounds + 1):
        model, current = _prune_round(model, policy, layers, current, k, rounds, input_shape)
        if k == rounds:
            apply_sparsity(model, policy, permanent=False)

        def tick(s: int, _n: int, loss: float, k: int = k) -> None:
            if progress is not None:
                progress(per * (k - 1) + s, per * rounds, loss)

        model.to(device)
        results.append(
            finetune(
                model, train, round_cfg, seed=seed + k, teacher=teacher, val=val, progress=tick
            )
        )
    report(_summed(results))
    return make_permanent(model).cpu()


def _prune_round(
    model: nn.Module,
    policy: PruningPolicy,
    layers: list[PrunableLayer],
    current: dict[str, int],
    k: int,
    rounds: int,
    input_shape: tuple[int, ...],
) -> tuple[nn.Module, dict[str, int]]:
    """Prune ``model`` (at ``current`` channels) ``k / rounds`` of the way to ``policy``; return
    it and its new channel counts."""
    target = {
        la.name: kept_channels(la.channels, policy.ratio(la.name) * k / rounds, policy.round_to)
        for la in layers
    }
    step = PruningPolicy(
        policy.model, {n: (current[n] - target[n]) / current[n] for n in current}, round_to=1
    )
    now = [dataclasses.replace(la, channels=current[la.name]) for la in layers]
    return prune_structured(model.cpu(), step, now, input_shape, inplace=True), target


def _summed(rounds: list[FinetuneResult]) -> FinetuneResult:
    """Iterative rounds as one fine-tune: steps counted from the first round's start."""
    last, before = rounds[-1], sum(r.steps for r in rounds[:-1])
    planned = sum(r.planned for r in rounds)
    return FinetuneResult(
        last.loss, before + last.steps, planned, before + last.kept_step, last.val_acc
    )


__all__ = ["prune_and_finetune"]
