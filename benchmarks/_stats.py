"""Statistics for benchmark tables: bootstrap intervals over test images, paired differences,
rank correlation. Plain numpy, seeded, so a results file is reproducible from its raw rows."""

from __future__ import annotations

import base64

import numpy as np

BOOT = 10_000


def pack(correct: np.ndarray) -> str:
    """Per-image correctness (bool vector) as compact base64, for results files."""
    return base64.b64encode(np.packbits(correct.astype(bool)).tobytes()).decode()


def unpack(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)


def bootstrap_ci(
    correct: np.ndarray, *, boot: int = BOOT, seed: int = 0
) -> tuple[float, float, float]:
    """Accuracy (%) of ``correct`` (seeds × images, averaged over seeds) with a 95 % percentile
    interval from resampling the images."""
    per_image = np.atleast_2d(correct).mean(0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(per_image), size=(boot, len(per_image)))
    means = per_image[idx].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return 100 * per_image.mean(), 100 * lo, 100 * hi


def paired_diff(
    a: np.ndarray, b: np.ndarray, *, boot: int = BOOT, seed: int = 0
) -> tuple[float, float, float]:
    """Accuracy of ``a`` minus ``b`` in points (each seeds × images, averaged over seeds), with a
    95 % interval from resampling the same images for both: the paired comparison."""
    d = np.atleast_2d(a).mean(0) - np.atleast_2d(b).mean(0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(boot, len(d)))
    means = d[idx].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return 100 * d.mean(), 100 * lo, 100 * hi


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""

    def ranks(v: list[float]) -> np.ndarray:
        a = np.asarray(v, dtype=float)
        order = a.argsort()
        r = np.empty(len(a))
        r[order] = np.arange(len(a))
        for value in np.unique(a):  # ties share their mean rank
            tie = a == value
            r[tie] = r[tie].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    return float(np.corrcoef(rx, ry)[0, 1])


__all__ = ["bootstrap_ci", "pack", "paired_diff", "spearman", "unpack"]
