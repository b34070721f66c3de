"""CIFAR-10, split so that the search reward is honest.

A pretrained checkpoint has seen its whole train set, so a validation split carved from train
reads ~100 % for the dense model and rewards re-memorization. The sources ``bundled`` (shipped,
offline) and ``shared`` (the full 60,000 images) therefore validate on test-set images outside
the exact 1,017 that are the test split. Sources that carve validation out of train (``exact``,
``jpeg``, ``torchvision``) warn with :class:`MemorizedValidationWarning`.

Each reader returns *pools* of images (``train`` and ``test`` of the original dataset) with their
original row numbers, so every split can say exactly which images it holds.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from autoprune.data.splits import Split, Splits, with_normalization
from autoprune.errors import DataError, MemorizedValidationWarning

if TYPE_CHECKING:
    from autoprune.config import DatasetConfig

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLE = ASSETS / "cifar10_bundle.npz"
SHARED_CIFAR = Path(__file__).resolve().parents[2].parent / "shared/data/cifar10"
SOURCES: tuple[str, ...] = ("bundled", "shared", "exact", "jpeg", "torchvision")
HONEST = ("bundled", "shared")  # validation on test-set images outside the test split
CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
EXACT_FILE, JPEG_FILE = "cifar10_exact_subset.npz", "cifar10_jpeg_q75_yoongikim.npz"


@dataclass(frozen=True)
class Part:
    """Images ``x`` (uint8 N×3×32×32), labels ``y`` and their row numbers in ``pool``."""

    x: np.ndarray
    y: np.ndarray
    rows: np.ndarray
    pool: str  # "train" or "test" of the original CIFAR-10

    def take(self, keep: np.ndarray) -> Part:
        return Part(self.x[keep], self.y[keep], self.rows[keep], self.pool)

    def rows_in(self, lo: int, hi: int) -> Part:
        return self.take((self.rows >= lo) & (self.rows < hi))

    def __len__(self) -> int:
        return len(self.y)


def _npz(path: Path) -> np.lib.npyio.NpzFile:
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(f"cannot read dataset {path}: {e}") from e


def _chw(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32))


def decode_jpegs(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Concatenated JPEG files (``offsets`` has N + 1 entries) → uint8 N×3×32×32."""
    from PIL import Image

    out = np.empty((len(offsets) - 1, 32, 32, 3), dtype=np.uint8)
    for i in range(len(offsets) - 1):
        img = Image.open(io.BytesIO(blob[offsets[i] : offsets[i + 1]].tobytes()))
        out[i] = np.asarray(img.convert("RGB"))
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def count(size: float | None, pool: int) -> int:
    """``size`` images of a pool of ``pool``: a count (≥ 1), a fraction (< 1), or all (None)."""
    if size is None or pool == 0:  # an empty pool is reported as an empty dataset
        return pool
    n = round(size * pool) if size < 1 else int(size)
    if not 0 < n <= pool:
        raise DataError(f"val_size {size} asks for {n} of the {pool} validation images")
    return n


def read_bundle(
    path: Path | None = None, *, train: int | None = None, val: float | None = None
) -> dict[str, Part]:
    """The part shipped with autoprune (``scripts/bundle_cifar10.py``): 20,000 JPEG train images,
    2,000 + 2,000 JPEG test images (validation, holdout), and the 1,017 exact test images.
    Only the first ``train`` train images and ``val`` (see :func:`count`) validation images
    are decoded."""
    z = _npz(path or BUNDLE)
    try:
        out = {}
        for name in ("train", "val", "holdout"):
            offsets = z[f"{name}_offsets"]
            pool = len(offsets) - 1
            n = {"train": min(train or pool, pool), "val": count(val, pool)}.get(name, pool)
            out[name] = Part(
                decode_jpegs(z[f"{name}_jpeg"], offsets[: n + 1]),
                z[f"{name}_y"][:n],
                z[f"{name}_index"][:n],
                "train" if name == "train" else "test",
            )
        out["test"] = Part(_chw(z["test_x"]), z["test_y"], z["test_index"], "test")
    except KeyError as e:
        raise DataError(f"{path or BUNDLE} is not an autoprune CIFAR-10 bundle (no {e})") from e
    return out


def read_exact(root: Path | None = None) -> tuple[Part, Part]:
    """Exact original pixels: 5,085 train and 1,017 test images."""
    z = _npz((root or SHARED_CIFAR) / EXACT_FILE)
    train_rows, test_rows = z["train_index"], z["test_index"]
    return (
        Part(_chw(z["train_data"]), z["train_labels_all"][train_rows], train_rows, "train"),
        Part(_chw(z["test_data"]), z["test_labels_all"][test_rows], test_rows, "test"),
    )


def _cache_dir() -> Path:
    return Path(os.environ.get("AUTOPRUNE_CACHE", ".cache"))


def read_jpeg(root: Path | None = None) -> tuple[Part, Part]:
    """All 60,000 images from the JPEG container (lossy, q≈75), decoded once and cached."""
    root = root or SHARED_CIFAR
    cache = _cache_dir() / "cifar10_jpeg_decoded.npz"
    if cache.is_file():
        z = _npz(cache)
        tx, ty, sx, sy = z["train_x"], z["train_y"], z["test_x"], z["test_y"]
    else:
        z = _npz(root / JPEG_FILE)
        tx = decode_jpegs(z["train_jpeg"], z["train_offsets"])
        sx = decode_jpegs(z["test_jpeg"], z["test_offsets"])
        ty, sy = z["train_labels"], z["test_labels"]
        from autoprune._io import write_with

        write_with(
            cache,
            lambda p: np.savez(p.open("wb"), train_x=tx, train_y=ty, test_x=sx, test_y=sy),
        )
    return (
        Part(tx, ty, np.arange(len(ty)), "train"),
        Part(sx, sy, np.arange(len(sy)), "test"),
    )


def read_torchvision(root: Path) -> tuple[Part, Part]:
    """A standard ``cifar-10-batches-py`` folder, read through torchvision (no download)."""
    from torchvision.datasets import CIFAR10

    try:
        tr, te = CIFAR10(str(root), train=True), CIFAR10(str(root), train=False)
    except RuntimeError as e:
        raise DataError(f"no torchvision CIFAR-10 under {root}: {e}") from e
    return tuple(  # type: ignore[return-value]
        Part(
            np.ascontiguousarray(d.data.transpose(0, 3, 1, 2)),
            np.asarray(d.targets),
            np.arange(len(d.targets)),
            pool,
        )
        for d, pool in ((tr, "train"), (te, "test"))
    )


def _tensor(part: Part) -> Split:
    return Split(
        torch.from_numpy(np.ascontiguousarray(part.x)), torch.from_numpy(part.y.astype(np.int64))
    )


def _honest(
    source: str, root: Path | None, val_size: float | None, train_limit: int | None
) -> dict[str, Part]:
    if source == "bundled":
        return read_bundle(root, train=train_limit, val=val_size)
    train, test_jpeg = read_jpeg(root)
    _, exact_test = read_exact(root)
    outside = ~np.isin(test_jpeg.rows, exact_test.rows)
    val = test_jpeg.take(outside & (test_jpeg.rows < 5000))
    return {
        "train": train,
        "val": val.take(np.arange(count(val_size, len(val)))),
        "test": exact_test,
        "holdout": test_jpeg.take(outside & (test_jpeg.rows >= 5000)),
    }


def _carved(source: str, root: Path | None, val_size: float | None, seed: int) -> dict[str, Part]:
    if source == "exact":
        train, test = read_exact(root)
    elif source == "jpeg":
        train, test = read_jpeg(root)
    else:
        if root is None:
            raise DataError(
                "source 'torchvision' needs dataset.root pointing at cifar-10-batches-py"
            )
        train, test = read_torchvision(root)
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
        classes=CLASSES,
    )


def _stratified(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    classes = np.unique(y)
    picks = []
    for i, c in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        share = n // len(classes) + (1 if i < n % len(classes) else 0)
        picks.append(idx[:share])
    return np.sort(np.concatenate(picks))


def load(cfg: DatasetConfig) -> Splits:
    """The dataset plug-in entry: CIFAR-10 splits as the config's ``dataset:`` section says."""
    splits = load_cifar10(
        cfg.source,
        root=cfg.root,
        val_size=cfg.val_size,
        train_limit=cfg.train_limit,
        seed=cfg.split_seed,
    )
    return with_normalization(splits, cfg)


__all__ = ["HONEST", "SOURCES", "load", "load_cifar10"]
