"""Fine-tuning recipes: SGD with cosine annealing on the train split; accuracy on a split."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autoprune._device import autocast, model_device, on_device
from autoprune._io import write_with
from autoprune.config import FinetuneConfig
from autoprune.data import Split


class Teacher:
    """Distillation targets from the dense model.

    Online, the teacher runs on every augmented batch. Cached, its logits are computed once per
    train image and per mirror image, and looked up by index: a random crop shifts the image by
    at most 4 pixels, which moves a classifier's logits little, and skipping the teacher's
    forward pass saves 30–40 % of each step for a pruned CIFAR ResNet-20 on a CPU.
    """

    def __init__(self, model: nn.Module, logits: torch.Tensor | None = None) -> None:
        self.model = model
        self.logits = logits  # (2, N, classes) on the CPU: plain and mirrored; None: online
        self._copies: dict[torch.device, nn.Module] = {}

    @classmethod
    @torch.inference_mode()
    def cached(
        cls, model: nn.Module, train: Split, batch_size: int = 500, device: str = "cpu"
    ) -> Teacher:
        """Logits of every train image and its mirror, computed on ``device``."""
        net = on_device(model, device)
        out = []
        for flip in (False, True):
            rows = []
            for x, _ in train.batches(batch_size):
                x = x.to(device)
                rows.append(net(x.flip(-1) if flip else x).cpu())
            out.append(torch.cat(rows))
        return cls(model, torch.stack(out))

    def __call__(self, idx: torch.Tensor, flip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.logits is not None:
            return self.logits[flip.long(), idx].to(x.device, non_blocking=True)
        if x.device not in self._copies:  # the dense model stays where its owner keeps it
            self._copies[x.device] = on_device(self.model, x.device)
        with torch.no_grad():
            return self._copies[x.device](x)

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_copies": {}}  # device copies are rebuilt where it runs


def as_teacher(
    teacher: nn.Module | Teacher | None,
    train: Split,
    cfg: FinetuneConfig,
    device: str | torch.device = "cpu",
) -> Teacher | None:
    """The teacher ``cfg`` asks for: ``None`` without distillation, cached or online logits."""
    if teacher is None or cfg.distill <= 0:
        return None
    if isinstance(teacher, Teacher):
        if teacher.logits is not None and len(teacher.logits[0]) != len(train):
            return Teacher(teacher.model)  # cached for another split: run it online
        return teacher if cfg.distill_targets == "cached" else Teacher(teacher.model)
    if cfg.distill_targets == "cached":
        return Teacher.cached(teacher, train, device=str(device))
    return Teacher(teacher)


def distill_loss(
    logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, cfg: FinetuneConfig
) -> torch.Tensor:
    """Cross-entropy, blended with the temperature-scaled KL to the teacher's logits."""
    loss = F.cross_entropy(logits, y)
    if target is None:
        return loss
    t = cfg.temperature
    kd = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(target / t, 1), reduction="batchmean")
    return (1 - cfg.distill) * loss + cfg.distill * kd * t * t


def _optimizer(
    model: nn.Module, cfg: FinetuneConfig, total: int, device: torch.device
) -> tuple[Any, Any]:
    """Nesterov SGD (fused into one kernel on a GPU) under a cosine schedule from the peak
    learning rate, after a linear warm-up over 5 % of the steps when the rate was scaled up
    for a larger batch."""
    opt = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=cfg.peak_lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.momentum > 0,
        fused=True if device.type == "cuda" else None,
    )
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    warm = int(0.05 * total) if cfg.peak_lr > cfg.lr else 0
    if warm < 1:
        return opt, cosine
    ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warm, total_iters=warm)
    rest = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warm)
    return opt, torch.optim.lr_scheduler.SequentialLR(opt, [ramp, rest], milestones=[warm])


@dataclass(frozen=True)
class FinetuneResult:
    """What one fine-tune did: steps run of those planned (fewer after an early stop), and the
    step whose weights the model holds at the end, with their validation accuracy (early stop
    only: without it the final weights are kept unscored)."""

    loss: float  # mean of the last 20 steps
    steps: int
    planned: int
    kept_step: int
    val_acc: float | None = None


def finetune(
    model: nn.Module,
    train: Split,
    cfg: FinetuneConfig,
    *,
    seed: int = 0,
    teacher: nn.Module | Teacher | None = None,
    val: Split | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    checkpoint: Path | None = None,
) -> FinetuneResult:
    """Train ``model`` in place, on the device it lives on, for ``cfg.total_steps`` steps
    (mixed precision with ``cfg.amp``).

    With ``cfg.patience`` and a ``val`` split, stops early when validation accuracy has not
    improved for ``patience`` checks, and returns the best weights seen — the final ones
    compete too, and win ties (a later point of a decaying schedule, at equal accuracy).

    With ``checkpoint``, resumable epoch by epoch with the same final weights (:class:`_Resume`);
    the caller removes the file when done.
    """
    total = planned = cfg.total_steps(len(train))
    if total <= 0:
        return FinetuneResult(float("nan"), 0, 0, 0)
    device = model_device(model)
    check = cfg.eval_every or math.ceil(len(train) / cfg.batch_size)
    stopper = _EarlyStop(model, val, cfg.patience) if cfg.patience > 0 and val else None
    torch.manual_seed(seed)
    targets = as_teacher(teacher, train, cfg, device)
    if device.type == "cuda":  # images resident on the GPU: crops, flips, normalization there
        train = train.on(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    opt, sched = _optimizer(model, cfg, total, device)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and _scaled(device))
    model.train()
    every = 25 if device.type == "cuda" else 1  # each read-back waits for the GPU
    saved = _Resume(checkpoint, model, cfg, seed, planned)
    step, epoch, losses = saved.load(model, opt, sched, scaler, stopper)  # (0, 0, []): a start
    while step < total:
        for idx, x, y, flip in train.indexed_batches(
            cfg.batch_size, shuffle=True, augment=cfg.augment, seed=seed + epoch
        ):
            loss = _loss(model, x, y, (idx, flip), targets, cfg, device)
            _update(loss, opt, sched, scaler)
            losses.append(loss.detach())
            step += 1
            if progress is not None and (step % every == 0 or step == total):
                progress(step, total, float(losses[-1]))
            if stopper is not None and step % check == 0 and stopper.stop(step):
                total = step
            if step >= total:
                break
        epoch += 1
        if step < total:
            saved.save(step, epoch, model, opt, sched, scaler, stopper, losses)
    kept, val_acc = stopper.finish(step, step % check == 0) if stopper else (step, None)
    model.eval()
    last = float(torch.stack(losses[-20:]).mean())
    return FinetuneResult(last, step, planned, kept, val_acc)


def _loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    where: tuple[torch.Tensor, torch.Tensor],
    targets: Teacher | None,
    cfg: FinetuneConfig,
    device: torch.device,
) -> torch.Tensor:
    """The distillation loss of one batch (``where``: the images' indices and flips, for the
    teacher's cached logits), in the recipe's precision and memory format."""
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, cfg.amp):
        logits = model(x)
        target = targets(*where, x) if targets else None
    return distill_loss(logits.float(), y, None if target is None else target.float(), cfg)


def _update(loss: torch.Tensor, opt: Any, sched: Any, scaler: torch.amp.GradScaler) -> None:
    """One optimizer step on ``loss`` (scaled where float16 needs it) and the schedule's."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    sched.step()


def _scaled(device: torch.device) -> bool:
    """float16 autocast needs loss scaling: a GPU without bfloat16."""
    return device.type == "cuda" and not torch.cuda.is_bf16_supported()


class _Resume:
    """A fine-tune's state at the end of an epoch, saved atomically in one file (``path``;
    ``None``: nothing saved): model, optimizer, schedule, loss scaler, early-stop bookkeeping
    and the last losses, keyed by the recipe, seed, length and architecture that made it (a
    checkpoint of another fine-tune is ignored and overwritten). A killed run loses at most one
    epoch and ends with the same weights: each epoch's order and augmentation are seeded by its
    number."""

    def __init__(
        self, path: Path | None, model: nn.Module, cfg: FinetuneConfig, seed: int, planned: int
    ) -> None:
        self.path = Path(path) if path is not None else None
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}  # the architecture
        self.key = json.dumps(
            {"recipe": asdict(cfg), "seed": seed, "planned": planned, "shapes": shapes}
        )

    def load(
        self, model: nn.Module, opt: Any, sched: Any, scaler: Any, stopper: _EarlyStop | None
    ) -> tuple[int, int, list[torch.Tensor]]:
        """Restore a matching checkpoint into the objects; (step, epoch, losses) to go on
        from, or (0, 0, []) to start (losses stay on the device, read back when reported)."""
        if self.path is None or not self.path.is_file():
            return 0, 0, []
        state = torch.load(self.path, weights_only=True, map_location=model_device(model))
        if state.get("key") != self.key:
            return 0, 0, []
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        if stopper is not None:
            stopper.best, stopper.waited, stopper.best_step = state["early_stop"]
            stopper.state = state["early_stop_weights"]
        torch.set_rng_state(state["rng"])
        return state["step"], state["epoch"], list(state["losses"])

    def save(
        self,
        step: int,
        epoch: int,
        model: nn.Module,
        opt: Any,
        sched: Any,
        scaler: Any,
        stopper: _EarlyStop | None,
        losses: list[torch.Tensor],
    ) -> None:
        if self.path is None:
            return
        state = {
            "key": self.key,
            "step": step,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "schedule": sched.state_dict(),
            "scaler": scaler.state_dict(),
            "early_stop": (stopper.best, stopper.waited, stopper.best_step) if stopper else None,
            "early_stop_weights": stopper.state if stopper else None,
            "rng": torch.get_rng_state(),
            "losses": torch.stack(losses[-20:]).cpu() if losses else torch.empty(0),
        }
        write_with(self.path, lambda p: torch.save(state, p))


class _EarlyStop:
    """Tracks validation accuracy and the best weights during fine-tuning."""

    def __init__(self, model: nn.Module, val: Split, patience: int) -> None:
        self.model, self.val, self.patience = model, val, patience
        self.best, self.waited, self.best_step = float("-inf"), 0, 0
        self.state: dict[str, torch.Tensor] | None = None

    def stop(self, step: int) -> bool:
        """Score the current weights; keep them if at least as good as the best (the later of
        equals); ``True`` after ``patience`` checks without a strict improvement."""
        acc = accuracy(self.model, self.val)
        self.model.train()
        self.waited = 0 if acc > self.best else self.waited + 1
        if acc >= self.best:
            self.best, self.best_step = acc, step
            self.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return self.waited >= self.patience

    def finish(self, step: int, checked: bool) -> tuple[int, float]:
        """Leave the best weights in the model, the final ones (of ``step``) scored too
        (``checked``: that step was a check already); return their step and accuracy."""
        if not checked:
            self.stop(step)
        if self.state is not None:
            self.model.load_state_dict(self.state)
        return self.best_step, self.best


@torch.inference_mode()
def accuracy(model: nn.Module, split: Split, batch_size: int = 512) -> float:
    """Top-1 accuracy (0-100) of ``model`` on ``split``, on the device the model lives on."""
    model.eval()
    device = model_device(model)
    if device.type == "cuda":  # images resident on the GPU, as when training
        split = split.on(device)
    correct = 0
    for x, y in split.batches(batch_size):
        correct += int((model(x.to(device)).argmax(1) == y.to(device)).sum())
    return 100.0 * correct / max(len(split), 1)


__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "Teacher",
    "accuracy",
    "as_teacher",
    "distill_loss",
    "finetune",
]
