"""Statistics for benchmark tables: bootstrap intervals over test images and fine-tune seeds,
paired differences, rank correlation. Plain numpy, seeded, so a results file is reproducible
from its raw rows."""

from __future__ import annotations

import base64
import functools

import numpy as np

BOOT = 10_000


def pack(correct: np.ndarray) -> str:
    """Per-image correctness (bool vector) as compact base64, for results files."""
    return base64.b64encode(np.packbits(correct.astype(bool)).tobytes()).decode()


def unpack(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)


CHUNK = 500  # bootstrap replicates per batch: the CHUNK × images draws stay ~40 MB


@functools.lru_cache(maxsize=4)
def _image_draws(n: int, boot: int, seed: int) -> tuple[np.ndarray, ...]:
    """How often each of ``n`` images is drawn in each bootstrap replicate, in chunks of
    :data:`CHUNK` replicates (uint8: ~10 kB per replicate at n = 10,000). The draws depend only
    on ``(n, boot, seed)``, so the many intervals of one results file share them: rendering a
    table then costs matrix products, not 10,000 fresh resamples per cell."""
    images = np.random.default_rng(seed)
    chunks = []
    for start in range(0, boot, CHUNK):
        m = min(CHUNK, boot - start)
        idx = images.integers(0, n, size=(m, n))
        rows = (idx + n * np.arange(m)[:, None]).ravel()
        chunks.append(np.bincount(rows, minlength=m * n).reshape(m, n).astype(np.uint8))
    return tuple(chunks)


def _resampled(arrays: list[np.ndarray], boot: int, seed: int) -> list[np.ndarray]:
    """Accuracy (fraction) of each array (seeds × images) in ``boot`` bootstrap replicates.

    Every replicate draws one resample of the images, shared by all arrays (that pairs them),
    and, for each array separately, a resample of its seeds: the fine-tune's seed-to-seed spread
    then widens the interval instead of being taken for a fixed property of the method. With
    one seed, or seeds that agree on every image, the seed draw changes nothing."""
    arrays = [np.atleast_2d(x).astype(np.float32) for x in arrays]
    n = arrays[0].shape[1]
    seeds = np.random.default_rng([seed, 1])
    out = [np.empty(boot) for _ in arrays]
    start = 0
    for draws in _image_draws(n, boot, seed):
        m = len(draws)
        counts = draws.astype(np.float32)  # the resampled means become a product
        for x, acc in zip(arrays, out, strict=True):
            per_seed = counts @ x.T / n  # m × seeds: each seed on this replicate's images
            pick = seeds.integers(0, len(x), size=(m, len(x)))
            acc[start : start + m] = np.take_along_axis(per_seed, pick, 1).mean(1)
        start += m
    return out


def _summary(point: float, replicates: np.ndarray) -> tuple[float, float, float]:
    lo, hi = np.percentile(replicates, [2.5, 97.5])
    return 100 * point, 100 * float(lo), 100 * float(hi)


def bootstrap_ci(
    correct: np.ndarray, *, boot: int = BOOT, seed: int = 0
) -> tuple[float, float, float]:
    """Accuracy (%) of ``correct`` (seeds × images, averaged over seeds) with a 95 % percentile
    interval from resampling the images and the seeds."""
    (acc,) = _resampled([correct], boot, seed)
    return _summary(float(np.mean(correct)), acc)


def paired_diff(
    a: np.ndarray, b: np.ndarray, *, boot: int = BOOT, seed: int = 0
) -> tuple[float, float, float]:
    """Accuracy of ``a`` minus ``b`` in points (each seeds × images, averaged over seeds), with a
    95 % interval from resampling the same images for both (the pairing) and each one's seeds."""
    acc_a, acc_b = _resampled([a, b], boot, seed)
    return _summary(float(np.mean(a) - np.mean(b)), acc_a - acc_b)


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


def spearman_ci(
    x: list[float], y: list[float], *, boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile interval of :func:`spearman` from resampling the pairs: with a dozen
    candidates a rank correlation is uncertain by several tenths, and a study should say so."""
    return mean_spearman_ci([(x, y)], boot=boot, seed=seed)


def mean_spearman_ci(
    groups: list[tuple[list[float], list[float]]], *, boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile interval of the mean of each group's :func:`spearman` (studies on
    different models, whose scores share no scale), resampling the pairs within each group.
    Replicates whose draw leaves one side of a group constant (no ranks to correlate) are
    skipped."""
    data = [(np.asarray(x, dtype=float), np.asarray(y, dtype=float)) for x, y in groups]
    rng, reps = np.random.default_rng(seed), []
    for _ in range(boot):
        draws = [(a[pick], b[pick]) for a, b in data for pick in [rng.integers(0, len(a), len(a))]]
        if all(np.ptp(a) > 0 and np.ptp(b) > 0 for a, b in draws):
            reps.append(np.mean([spearman(list(a), list(b)) for a, b in draws]))
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return float(lo), float(hi)


__all__ = [
    "bootstrap_ci",
    "mean_spearman_ci",
    "pack",
    "paired_diff",
    "spearman",
    "spearman_ci",
    "unpack",
]
