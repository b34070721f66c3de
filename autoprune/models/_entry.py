"""One registered architecture: how to build it, the input it expects, its pretrained weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    """A model family member in :data:`autoprune.models.MODELS`.

    Args:
        factory: a class or function called with ``num_classes=…`` (and ``kwargs``).
        input_shape: one input, without batch (C, H, W).
        checkpoint: file name of pretrained weights looked up in the bundled assets and
            ``../shared/data/pretrained`` (``None``: no pretrained weights known).
        kwargs: further arguments for ``factory``.
    """

    factory: Callable[..., nn.Module]
    input_shape: tuple[int, int, int] = (3, 32, 32)
    checkpoint: str | None = None
    kwargs: tuple[tuple[str, Any], ...] = ()

    def build(self, num_classes: int) -> nn.Module:
        return partial(self.factory, **dict(self.kwargs))(num_classes=num_classes)


__all__ = ["ModelEntry"]
