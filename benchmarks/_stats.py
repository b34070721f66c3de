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


def _ranks(a: np.ndarray) -> np.ndarray:
    """Each row's ranks from 0, ties sharing their mean rank (a run of c tied values from sorted
    place k ranks k + (c - 1) / 2): exact, since the rows' values become integer codes first."""
    m, n = a.shape
    codes = np.unique(a, return_inverse=True)[1].reshape(m, n)
    keys = (codes + np.arange(m)[:, None] * (codes.max() + 1)).ravel()  # rows never interleave
    ordered = np.sort(keys)
    first = np.searchsorted(ordered, keys, "left").reshape(m, n)
    count = np.searchsorted(ordered, keys, "right").reshape(m, n) - first
    return first - np.arange(m)[:, None] * n + (count - 1) / 2


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each row pair (replicates at once: a bootstrap is one call)."""
    rx, ry = _ranks(x), _ranks(y)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    return (rx * ry).sum(axis=1) / np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    return float(_spearman_rows(np.asarray([x], dtype=float), np.asarray([y], dtype=float))[0])


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
    rng = np.random.default_rng(seed)
    picks: list[list[np.ndarray]] = [[] for _ in data]
    for _ in range(boot):  # the draws in the order they have always been taken
        for (a, _b), drawn in zip(data, picks, strict=True):
            drawn.append(rng.integers(0, len(a), len(a)))
    rho, ok = np.zeros(boot), np.ones(boot, dtype=bool)
    for (a, b), drawn in zip(data, picks, strict=True):
        pick = np.stack(drawn)
        xs, ys = a[pick], b[pick]
        ok &= (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
        with np.errstate(invalid="ignore", divide="ignore"):  # constant draws: skipped below
            rho += _spearman_rows(xs, ys)
    lo, hi = np.percentile(rho[ok] / len(data), [2.5, 97.5])
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
