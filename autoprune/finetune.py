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
        iterative_steps: prune → fine-tune rounds (1 = one-shot; see :mod:`autoprune.schedule`).
        patience: early stop after this many validation checks without improvement, keeping
            the best weights (0 = off; needs a validation split).
        eval_every: steps between validation checks (0 = once per epoch).
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
    iterative_steps: int = 1
    patience: int = 0
    eval_every: int = 0

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
    val: Split | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> float:
    """Train ``model`` in place for ``cfg.total_steps`` steps; return the mean loss of the last 20.

    With ``cfg.patience`` and a ``val`` split, stops early when validation accuracy has not
    improved for ``patience`` checks and restores the best weights seen.
    """
    total = cfg.total_steps(len(train))
    if total <= 0:
        return float("nan")
    check = cfg.eval_every or math.ceil(len(train) / cfg.batch_size)
    stopper = _EarlyStop(model, val, cfg.patience) if cfg.patience > 0 and val else None
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
            if stopper is not None and step % check == 0 and stopper.stop():
                total = step
            if step >= total:
                break
        epoch += 1
    if stopper is not None:
        stopper.restore()
    model.eval()
    return sum(losses[-20:]) / len(losses[-20:])


class _EarlyStop:
    """Tracks validation accuracy and the best weights during fine-tuning."""

    def __init__(self, model: nn.Module, val: Split, patience: int) -> None:
        self.model, self.val, self.patience = model, val, patience
        self.best, self.state, self.waited = float("-inf"), None, 0

    def stop(self) -> bool:
        acc = accuracy(self.model, self.val)
        self.model.train()
        if acc > self.best:
            self.best, self.waited = acc, 0
            self.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.waited += 1
        return self.waited >= self.patience

    def restore(self) -> None:
        if self.state is not None:
            self.model.load_state_dict(self.state)


@torch.inference_mode()
def accuracy(model: nn.Module, split: Split, batch_size: int = 512) -> float:
    """Top-1 accuracy (0-100) of ``model`` on ``split``."""
    model.eval()
    correct = 0
    for x, y in split.batches(batch_size):
        correct += int((model(x).argmax(1) == y).sum())
    return 100.0 * correct / max(len(split), 1)


__all__ = ["FinetuneConfig", "accuracy", "finetune"]
