"""CIFAR-10 readers: the bundled part, the shared npz containers, and torchvision's folder.

Each reader returns *pools* of images (``train`` and ``test`` of the original dataset) with their
original row numbers, so every split can say exactly which images it holds.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoprune.errors import DataError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLE = ASSETS / "cifar10_bundle.npz"
SHARED_CIFAR = Path(__file__).resolve().parents[2].parent / "shared/data/cifar10"
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
