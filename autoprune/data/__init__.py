"""Datasets as in-memory uint8 tensors, split so that the search reward is honest.

Four splits, each recorded by the original row numbers it holds:

- ``train``: fine-tuning (short and final);
- ``val``: the search reward and early stopping — images the checkpoint never trained on;
- ``test``: final reports only;
- ``holdout``: a second, larger test part the search never touches (optional).

A pretrained checkpoint has seen its whole train set, so a validation split carved from train
reads ~100 % for the dense model and rewards re-memorization. The CIFAR-10 sources ``bundled``
(shipped, offline) and ``shared`` (the full 60,000 images) therefore validate on test-set images
outside the exact 1,017 that are the test split. Sources that carve validation out of train
(``exact``, ``jpeg``, ``torchvision``) warn with :class:`MemorizedValidationWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from autoprune.data import cifar10
from autoprune.data.cifar10 import Part
from autoprune.errors import DataError, MemorizedValidationWarning

SOURCES: tuple[str, ...] = ("bundled", "shared", "exact", "jpeg", "torchvision")
HONEST = ("bundled", "shared")  # validation on test-set images outside the test split

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


def _tensor(part: Part) -> Split:
    return Split(
        torch.from_numpy(np.ascontiguousarray(part.x)), torch.from_numpy(part.y.astype(np.int64))
    )


def _honest(
    source: str, root: Path | None, val_size: float | None, train_limit: int | None
) -> dict[str, Part]:
    if source == "bundled":
        return cifar10.read_bundle(root, train=train_limit, val=val_size)
    train, test_jpeg = cifar10.read_jpeg(root)
    _, exact_test = cifar10.read_exact(root)
    outside = ~np.isin(test_jpeg.rows, exact_test.rows)
    val = test_jpeg.take(outside & (test_jpeg.rows < 5000))
    return {
        "train": train,
        "val": val.take(np.arange(cifar10.count(val_size, len(val)))),
        "test": exact_test,
        "holdout": test_jpeg.take(outside & (test_jpeg.rows >= 5000)),
    }


def _carved(source: str, root: Path | None, val_size: float | None, seed: int) -> dict[str, Part]:
    if source == "exact":
        train, test = cifar10.read_exact(root)
    elif source == "jpeg":
        train, test = cifar10.read_jpeg(root)
    else:
        if root is None:
            raise DataError(
                "source 'torchvision' needs dataset.root pointing at cifar-10-batches-py"
            )
        train, test = cifar10.read_torchvision(root)
    if len(train) == 0 or len(test) == 0:
        return {"train": train, "val": train, "test": test}
    size = 0.1 if val_size is None else val_size
    n_val = round(size * len(train)) if size < 1 else int(size)
    if not 0 < n_val < len(train):
        raise DataError(f"val_size {size} leaves no train or no validation images of {len(train)}")
    val_idx = _stratified(train.y, n_val, np.random.default_rng(seed))
    mask = np.ones(len(train), dtype=bool)
    mask[val_idx] = False
    warnings.warn(
        f"dataset source {source!r} carves validation out of train; a checkpoint trained on "
        "these images reads high on it and the search rewards re-memorization (use 'shared' or "
        "'bundled' for CIFAR-10, or name a validation split of your own)",
        MemorizedValidationWarning,
        stacklevel=3,
    )
    return {"train": train.take(mask), "val": train.take(val_idx), "test": test}


def load_cifar10(
    source: str = "bundled",
    *,
    root: str | Path | None = None,
    val_size: float | None = None,
    train_limit: int | None = None,
    seed: int = 0,
) -> Splits:
    """Load CIFAR-10 as train / validation / test (/ holdout) splits.

    Args:
        source: ``bundled`` (shipped, offline: 20,000 JPEG train images; validation 2,000 JPEG
            test images; test the 1,017 exact test images; holdout 2,000 more JPEG test images),
            ``shared`` (the containers in ``../shared/data/cifar10``: all 50,000 train images;
            validation JPEG test images 1,017–4,999; test the exact 1,017; holdout JPEG test
            images 5,000–9,999), or ``exact`` / ``jpeg`` / ``torchvision``, which carve
            validation out of train and warn.
        root: file (``bundled``) or folder holding the files; defaults per source.
        val_size: validation images: a count (≥ 1) or a fraction (< 1) of the validation pool
            (``bundled``/``shared``) or of train (the others; default 10 %).
        train_limit: keep at most this many training images.
        seed: seed for carving validation out of train.
    """
    if source not in SOURCES:
        raise DataError(f"unknown dataset source {source!r}; choose one of {', '.join(SOURCES)}")
    root_path = Path(root) if root is not None else None
    if source in HONEST:
        parts = _honest(source, root_path, val_size, train_limit)
    else:
        parts = _carved(source, root_path, val_size, seed)
    if len(parts["train"]) == 0 or len(parts["test"]) == 0:
        where = f" at {root}" if root else ""
        raise DataError(
            f"dataset source {source!r}{where} is empty "
            f"({len(parts['train'])} train, {len(parts['test'])} test images)"
        )
    if train_limit is not None:
        parts["train"] = parts["train"].take(np.arange(min(train_limit, len(parts["train"]))))
    return Splits(
        _tensor(parts["train"]),
        _tensor(parts["val"]),
        _tensor(parts["test"]),
        source,
        holdout=_tensor(parts["holdout"]) if "holdout" in parts else None,
        val_from_train=source not in HONEST,
        rows={name: (p.pool, p.rows) for name, p in parts.items()},
    )


def _stratified(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    classes = np.unique(y)
    picks = []
    for i, c in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        share = n // len(classes) + (1 if i < n % len(classes) else 0)
        picks.append(idx[:share])
    return np.sort(np.concatenate(picks))


__all__ = [
    "HONEST",
    "MEAN",
    "SOURCES",
    "STD",
    "Split",
    "Splits",
    "load_cifar10",
    "normalize",
]
