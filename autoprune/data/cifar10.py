"""CIFAR-10 readers: the bundled slice, the shared npz containers, and torchvision's CIFAR10 folder."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from autoprune.errors import DataError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SHARED_CIFAR = Path(__file__).resolve().parents[2].parent / "shared/data/cifar10"

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # train_x, train_y, test_x, test_y


def _npz(path: Path) -> np.lib.npyio.NpzFile:
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(f"cannot read dataset {path}: {e}") from e


def _chw(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32))


def read_slice(path: Path | None = None) -> Arrays:
    """The small exact-pixel slice shipped with autoprune (2,560 train + 1,017 test images)."""
    z = _npz(path or ASSETS / "cifar10_slice.npz")
    return _chw(z["train_x"]), z["train_y"], _chw(z["test_x"]), z["test_y"]


def read_exact_subset(root: Path | None = None) -> Arrays:
    """Exact original pixels: 5,085 train and 1,017 test images (``cifar10_exact_subset.npz``)."""
    z = _npz((root or SHARED_CIFAR) / "cifar10_exact_subset.npz")
    train_y = z["train_labels_all"][z["train_index"]]
    test_y = z["test_labels_all"][z["test_index"]]
    return _chw(z["train_data"]), train_y, _chw(z["test_data"]), test_y


def _decode_jpegs(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(offsets) - 1, 32, 32, 3), dtype=np.uint8)
    for i in range(len(offsets) - 1):
        img = Image.open(io.BytesIO(blob[offsets[i] : offsets[i + 1]].tobytes()))
        out[i] = np.asarray(img.convert("RGB"))
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def read_jpeg(root: Path | None = None, cache_dir: Path | None = None) -> Arrays:
    """All 60,000 images from the JPEG container (lossy, q≈75), decoded once and cached as npz."""
    root = root or SHARED_CIFAR
    cache = (cache_dir or Path(".cache")) / "cifar10_jpeg_decoded.npz"
    if cache.is_file():
        z = _npz(cache)
        return z["train_x"], z["train_y"], z["test_x"], z["test_y"]
    z = _npz(root / "cifar10_jpeg_q75_yoongikim.npz")
    arrays = (
        _decode_jpegs(z["train_jpeg"], z["train_offsets"]),
        z["train_labels"],
        _decode_jpegs(z["test_jpeg"], z["test_offsets"]),
        z["test_labels"],
    )
    from autoprune._io import write_with

    write_with(
        cache,
        lambda p: np.savez(
            p.open("wb"), train_x=arrays[0], train_y=arrays[1], test_x=arrays[2], test_y=arrays[3]
        ),
    )
    return arrays


def read_torchvision(root: Path) -> Arrays:
    """A standard ``cifar-10-batches-py`` folder, read through torchvision (no download)."""
    from torchvision.datasets import CIFAR10

    try:
        tr, te = CIFAR10(str(root), train=True), CIFAR10(str(root), train=False)
    except RuntimeError as e:
        raise DataError(f"no torchvision CIFAR-10 under {root}: {e}") from e
    return (
        np.ascontiguousarray(tr.data.transpose(0, 3, 1, 2)),
        np.asarray(tr.targets),
        np.ascontiguousarray(te.data.transpose(0, 3, 1, 2)),
        np.asarray(te.targets),
    )
