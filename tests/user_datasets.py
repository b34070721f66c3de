"""A user-defined dataset, loaded through ``dataset.name: tests.user_datasets:stripes``."""

from __future__ import annotations

from typing import Any

import numpy as np


def stripes(cfg: Any) -> dict[str, Any]:
    """Horizontal vs vertical stripes at 24×24 (a factory may build data however it likes)."""
    rng = np.random.default_rng(0)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        x = np.zeros((n, 3, 24, 24), dtype=np.uint8)
        for i, label in enumerate(y):
            phase = rng.integers(0, 4)
            if label:
                x[i, :, :, phase::4] = 255
            else:
                x[i, :, phase::4, :] = 255
        return x, y

    return {"train": make(64), "val": make(32), "classes": ["horizontal", "vertical"]}
