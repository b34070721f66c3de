"""Datasets as in-memory uint8 tensors: train / validation (carved from train) / test splits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from autoprune.data import cifar10
from autoprune.errors import DataError

Source = Literal["slice", "exact", "jpeg", "torchvision"]
SOURCES: tuple[str, ...] = ("slice", "exact", "jpeg", "torchvision")

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
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self), generator=gen) if shuffle else torch.arange(len(self))
        for i in range(0, len(self), batch_size):
            idx = order[i : i + batch_size]
            x = self.x[idx]
            if augment:
                x = _augment(x, gen)
            yield normalize(x), self.y[idx]


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), generator=gen)
    dy = torch.randint(0, 9, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


@dataclass(frozen=True)
class Splits:
    """Train (fine-tuning), validation (search reward, carved from train) and test (final report)."""

    train: Split
    val: Split
    test: Split
    source: str


def _split(x: np.ndarray, y: np.ndarray) -> Split:
    return Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)))


def load_cifar10(
    source: str = "slice",
    *,
    root: str | Path | None = None,
    val_size: int | float = 0.2,
    train_limit: int | None = None,
    seed: int = 0,
) -> Splits:
    """Load CIFAR-10 and carve a stratified validation split out of train.

    Args:
        source: ``slice`` (bundled, offline), ``exact`` / ``jpeg`` (the shared npz containers under
            ``root``) or ``torchvision`` (a ``cifar-10-batches-py`` folder under ``root``).
        root: folder holding the files; defaults per source.
        val_size: validation images: a count (≥ 1) or a fraction of train (< 1).
        train_limit: keep at most this many training images (after carving validation).
        seed: seed for the split.
    """
    root_path = Path(root) if root is not None else None
    if source == "slice":
        arrays = cifar10.read_slice(root_path)
    elif source == "exact":
        arrays = cifar10.read_exact_subset(root_path)
    elif source == "jpeg":
        arrays = cifar10.read_jpeg(root_path)
    elif source == "torchvision":
        if root_path is None:
            raise DataError(
                "source 'torchvision' needs --data-root pointing at cifar-10-batches-py"
            )
        arrays = cifar10.read_torchvision(root_path)
    else:
        raise DataError(f"unknown dataset source {source!r}; choose one of {', '.join(SOURCES)}")
    tx, ty, sx, sy = arrays
    if len(ty) == 0 or len(sy) == 0:
        where = f" at {root}" if root else ""
        raise DataError(
            f"dataset source {source!r}{where} is empty ({len(ty)} train, {len(sy)} test images)"
        )
    n_val = round(val_size * len(ty)) if val_size < 1 else int(val_size)
    if not 0 < n_val < len(ty):
        raise DataError(
            f"val_size {val_size} leaves no train or no validation images of {len(ty)}"
        )
    rng = np.random.default_rng(seed)
    val_idx = _stratified(ty, n_val, rng)
    mask = np.ones(len(ty), dtype=bool)
    mask[val_idx] = False
    train_idx = np.flatnonzero(mask)
    if train_limit is not None:
        train_idx = train_idx[:train_limit]
    return Splits(
        _split(tx[train_idx], ty[train_idx]),
        _split(tx[val_idx], ty[val_idx]),
        _split(sx, sy),
        source,
    )


def _stratified(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    classes = np.unique(y)
    picks = []
    for i, c in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        share = n // len(classes) + (1 if i < n % len(classes) else 0)
        picks.append(idx[:share])
    return np.sort(np.concatenate(picks))


__all__ = ["MEAN", "SOURCES", "STD", "Split", "Splits", "load_cifar10", "normalize"]
