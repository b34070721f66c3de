"""Datasets: each a plug-in in :data:`DATASETS` returning :class:`Splits` (train, validation
the checkpoint never trained on, test, holdout) as in-memory uint8 tensors.

Names are imported on first use, so the config can validate ``dataset.name`` without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from autoprune.registry import Registry

if TYPE_CHECKING:
    from collections.abc import Callable

    from autoprune.config import DatasetConfig
    from autoprune.data.splits import Splits

DATASETS: Registry[Callable[[DatasetConfig], Splits]] = Registry(
    "dataset",
    {
        "cifar10": "autoprune.data.cifar10:load",
        "imagefolder": "autoprune.data.imagefolder:load",
    },
)

_EXPORTS = {
    "MEAN": "autoprune.data.splits",
    "STD": "autoprune.data.splits",
    "Split": "autoprune.data.splits",
    "Splits": "autoprune.data.splits",
    "normalize": "autoprune.data.splits",
    "SOURCES": "autoprune.data.cifar10",
    "HONEST": "autoprune.data.cifar10",
    "load_cifar10": "autoprune.data.cifar10",
}


def load_dataset(cfg: DatasetConfig) -> Splits:
    """The splits of the dataset ``cfg.name`` names (a registered one, or your
    ``package.module:factory``), loaded as ``cfg`` says."""
    if ":" in cfg.name:
        from autoprune.data.imagefolder import load_factory

        return load_factory(cfg)
    return DATASETS.get(cfg.name)(cfg)


def class_count(cfg: DatasetConfig) -> int | None:
    """How many classes the dataset has, found without loading it (``None``: only loading
    tells), so a config's ``num_classes`` is checked before a checkpoint is read."""
    from pathlib import Path

    if cfg.name == "cifar10":
        return 10
    train = Path(cfg.root or "") / "train"
    if cfg.name == "imagefolder" and cfg.root and train.is_dir():
        return sum(1 for d in train.iterdir() if d.is_dir())
    return None


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'autoprune.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = ["DATASETS", "class_count", "load_dataset", *sorted(_EXPORTS)]
