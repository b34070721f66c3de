"""Splits as in-memory uint8 tensors, normalized batch by batch, with the rows they hold.

Four splits, each recorded by the original row numbers it holds:

- ``train``: fine-tuning (short and final);
- ``val``: the search reward and early stopping — images the checkpoint never trained on;
- ``test``: final reports only;
- ``holdout``: a second, larger test part the search never touches (optional).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

# akamaster's CIFAR ResNets were trained with ImageNet statistics.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Split:
    """Images as uint8 ``(N, C, H, W)`` and int64 labels; normalized batch by batch."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def batches(
        self, batch_size: int, *, shuffle: bool = False, augment: bool = False, seed: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield normalized float batches; ``augment`` = random crop (pad 4) + horizontal flip."""
        for _idx, x, y, _flip in self.indexed_batches(
            batch_size, shuffle=shuffle, augment=augment, seed=seed
        ):
            yield x, y

    def indexed_batches(
        self, batch_size: int, *, shuffle: bool = False, augment: bool = False, seed: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Like :meth:`batches`, also yielding each image's index and whether it was flipped."""
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self), generator=gen) if shuffle else torch.arange(len(self))
        for i in range(0, len(self), batch_size):
            idx = order[i : i + batch_size]
            x = self.x[idx]
            flip = torch.zeros(len(idx), dtype=torch.bool)
            if augment:
                x, flip = _augment(x, gen)
            yield idx, normalize(x), self.y[idx], flip


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def _augment(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), generator=gen)
    dy = torch.randint(0, 9, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out, flip


@dataclass(frozen=True)
class Splits:
    """Train, validation (search reward), test and holdout (reports only) splits.

    ``rows`` names, per split, the original pool (``train``/``test``) and row numbers it holds,
    so overlap between splits can be checked; ``val_from_train`` says validation was carved
    from train (a pretrained checkpoint may have memorized it).
    """

    train: Split
    val: Split
    test: Split
    source: str
    holdout: Split | None = None
    val_from_train: bool = False
    rows: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)

    def reported(self) -> dict[str, Split]:
        """The splits a report scores every model on: val, test and (if any) holdout."""
        out = {"val": self.val, "test": self.test}
        if self.holdout is not None:
            out["holdout"] = self.holdout
        return out

    def describe(self) -> dict[str, object]:
        """Sizes and provenance of each split, for reports and results files."""
        return {
            "source": self.source,
            "val_from_train": self.val_from_train,
            **{
                name: {"images": len(self.rows[name][1]), "pool": self.rows[name][0]}
                for name in self.rows
            },
        }


__all__ = ["MEAN", "STD", "Split", "Splits", "normalize"]
