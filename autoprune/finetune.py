"""Fine-tuning recipes: SGD with cosine annealing on the train split; accuracy on a split."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from autoprune.data import Split


@dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tune recipe.

    Args:
        steps: optimizer steps; if ``epochs`` is set it wins (epochs × batches per epoch).
        epochs: passes over the train split.
        batch_size: images per step.
        lr: peak learning rate, annealed to 0 by a cosine schedule.
        momentum: SGD momentum (Nesterov).
        weight_decay: L2 penalty.
        augment: random crop + flip.
        distill: weight of the KL term to the dense teacher's logits (0 = off).
        temperature: distillation temperature.
    """

    steps: int = 200
    epochs: float | None = None
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    distill: float = 0.0
    temperature: float = 4.0

    def total_steps(self, n_train: int) -> int:
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * math.ceil(n_train / self.batch_size)))
        return self.steps


def finetune(
    model: nn.Module,
    train: Split,
    cfg: FinetuneConfig,
    *,
    seed: int = 0,
    teacher: nn.Module | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> float:
    """Train ``model`` in place for ``cfg.total_steps`` steps; return the mean loss of the last 20."""
    total = cfg.total_steps(len(train))
    if total <= 0:
        return float("nan")
    torch.manual_seed(seed)
    opt = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.momentum > 0,
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    use_teacher = teacher is not None and cfg.distill > 0
    if use_teacher:
        teacher.eval()  # type: ignore[union-attr]
    model.train()
    losses: list[float] = []
    step, epoch = 0, 0
    while step < total:
        for x, y in train.batches(
            cfg.batch_size, shuffle=True, augment=cfg.augment, seed=seed + epoch
        ):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if use_teacher:
                with torch.no_grad():
                    t_logits = teacher(x)  # type: ignore[misc]
                t = cfg.temperature
                kd = (
                    F.kl_div(
                        F.log_softmax(logits / t, 1),
                        F.softmax(t_logits / t, 1),
                        reduction="batchmean",
                    )
                    * t
                    * t
                )
                loss = (1 - cfg.distill) * loss + cfg.distill * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step += 1
            if progress is not None:
                progress(step, total, losses[-1])
            if step >= total:
                break
        epoch += 1
    model.eval()
    return sum(losses[-20:]) / len(losses[-20:])


@torch.inference_mode()
def accuracy(model: nn.Module, split: Split, batch_size: int = 512) -> float:
    """Top-1 accuracy (0-100) of ``model`` on ``split``."""
    model.eval()
    correct = 0
    for x, y in split.batches(batch_size):
        correct += int((model(x).argmax(1) == y).sum())
    return 100.0 * correct / max(len(split), 1)


__all__ = ["FinetuneConfig", "accuracy", "finetune"]
