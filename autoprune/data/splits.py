"""Splits as in-memory uint8 tensors, normalized batch by batch, with the rows they hold.

Four splits, each recorded by the original row numbers it holds:

- ``train``: fine-tuning (short and final);
- ``val``: the search reward and early stopping — images the checkpoint never trained on;
- ``test``: final reports only;
- ``holdout``: a second, larger test part the search never touches (optional).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from autoprune.config import DatasetConfig

# akamaster's CIFAR ResNets were trained with ImageNet statistics.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Split:
    """Images as uint8 ``(N, C, H, W)`` and int64 labels; normalized batch by batch with the
    dataset's ``mean``/``std`` (per channel, on the 0-1 scale)."""

    x: torch.Tensor
    y: torch.Tensor
    mean: tuple[float, ...] = MEAN
    std: tuple[float, ...] = STD

    def __len__(self) -> int:
        return len(self.y)

    def on(self, device: str | torch.device) -> Split:
        """This split with its images and labels resident on ``device`` (copied once and kept:
        a GPU then crops, flips and normalizes its batches itself, with no host transfer per
        step). The split itself stays where it is."""
        device = torch.device(device)
        if self.x.device == device:
            return self
        cache: dict[torch.device, Split] = self.__dict__.setdefault("_copies", {})
        if device not in cache:
            cache[device] = Split(self.x.to(device), self.y.to(device), self.mean, self.std)
        return cache[device]

    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "_copies"}  # rebuilt where used

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)

    def batches(
        self, batch_size: int, *, shuffle: bool = False, augment: bool = False, seed: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield normalized float batches; ``augment`` = random crop (padded by 1/8 of the size,
        4 pixels at 32×32) + horizontal flip."""
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
            x = self.x[idx.to(self.x.device)]
            flip = torch.zeros(len(idx), dtype=torch.bool)
            if augment:
                x, flip = _augment(x, gen)
            yield idx, normalize(x, self.mean, self.std), self.y[idx.to(self.y.device)], flip


def normalize(
    x: torch.Tensor, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD
) -> torch.Tensor:
    """uint8 images → float, scaled to 0-1 and standardized per channel (on ``x``'s device)."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s


def _augment(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop of the zero-padded images (1/8 of the size each side) and horizontal flip,
    for the whole batch at once by gathering pixel indices (on ``x``'s device; the draws come
    from the CPU generator ``gen``, so a GPU batch gets the very same crops as a CPU one)."""
    n, c, h, w = x.shape
    pad = max(1, min(h, w) // 8)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    cols = torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(0), cols) + dx[:, None]  # n × w
    rows = torch.arange(h) + dy[:, None]  # n × h
    dev = x.device
    out = padded[
        torch.arange(n, device=dev)[:, None, None, None],
        torch.arange(c, device=dev)[None, :, None, None],
        rows.to(dev)[:, None, :, None],
        cols.to(dev)[:, None, None, :],
    ]
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
    test: Split | None
    source: str
    holdout: Split | None = None
    val_from_train: bool = False
    rows: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)
    classes: tuple[str, ...] = ()

    def reported(self) -> dict[str, Split]:
        """The splits a report scores every model on: val, test and holdout (those present)."""
        out = {"val": self.val, "test": self.test, "holdout": self.holdout}
        return {k: v for k, v in out.items() if v is not None}

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes else int(self.train.y.max()) + 1

    @property
    def normalization(self) -> dict[str, list[float]]:
        return {"mean": list(self.train.mean), "std": list(self.train.std)}

    def describe(self) -> dict[str, object]:
        """Sizes and provenance of each split, for reports and results files."""
        return {
            "source": self.source,
            "val_from_train": self.val_from_train,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            **self.normalization,
            **{
                name: {"images": len(self.rows[name][1]), "pool": self.rows[name][0]}
                for name in self.rows
            },
        }


def with_normalization(splits: Splits, cfg: DatasetConfig) -> Splits:
    """``splits`` normalized with the config's ``mean``/``std`` when it names them."""
    if cfg.mean is None or cfg.std is None:
        return splits
    mean, std = tuple(cfg.mean), tuple(cfg.std)
    if len(mean) != splits.input_shape[0]:
        from autoprune.errors import ConfigError

        raise ConfigError(
            f"dataset.mean has {len(mean)} values but the images have {splits.input_shape[0]} "
            "channels"
        )

    def norm(split: Split) -> Split:
        return dataclasses.replace(split, mean=mean, std=std)

    return dataclasses.replace(
        splits,
        train=norm(splits.train),
        val=norm(splits.val),
        test=norm(splits.test) if splits.test is not None else None,
        holdout=norm(splits.holdout) if splits.holdout is not None else None,
    )


__all__ = ["MEAN", "STD", "Split", "Splits", "normalize", "with_normalization"]
