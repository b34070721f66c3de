"""Your own images as a folder tree, and your own loader as ``package.module:factory``.

Image folder (``dataset.name: imagefolder``, ``dataset.root: ROOT``)::

    ROOT/train/<class>/*.jpg|png|…    fine-tuning
    ROOT/val/<class>/…                the search reward (images the model never trained on)
    ROOT/test/<class>/…               optional: final reports only

Images are decoded once — shorter side resized to ``dataset.image_size``, center-cropped to a
square, RGB — and kept in memory as uint8 (N × 3 × S × S bytes: 50,000 images at 64 × 64 take
600 MB), cached as an ``.npz`` under ``$AUTOPRUNE_CACHE`` (default ``.cache``) keyed by the
files' names, sizes and times, so a second run does not decode again. Without ``val/`` a
validation split is carved from train, with a warning: if the checkpoint trained on those
images, the search rewards re-memorization.

Factory (``dataset.name: package.module:factory``): ``factory(cfg)`` returns a mapping from
``train``, ``val`` and optionally ``test``/``holdout`` to ``(images, labels)`` — uint8
N × C × H × W arrays or tensors and integer labels — and optionally ``classes``.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from autoprune.data.splits import Split, Splits, with_normalization
from autoprune.errors import DataError, MemorizedValidationWarning
from autoprune.registry import import_factory

if TYPE_CHECKING:
    from autoprune.config import DatasetConfig

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm")


def _files(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    out = []
    for label, name in enumerate(classes):
        d = folder / name
        if d.is_dir():
            out += [(f, label) for f in sorted(d.iterdir()) if f.suffix.lower() in EXTENSIONS]
    return out


def _decode(files: list[tuple[Path, int]], size: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    x = np.empty((len(files), 3, size, size), dtype=np.uint8)
    for i, (path, _) in enumerate(files):
        try:
            img = Image.open(path).convert("RGB")
        except OSError as e:
            raise DataError(f"cannot read image {path}: {e}") from e
        w, h = img.size
        scale = size / min(w, h)
        new = (max(size, round(w * scale)), max(size, round(h * scale)))
        img = img.resize(new, Image.Resampling.BILINEAR)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        x[i] = np.asarray(img.crop((left, top, left + size, top + size))).transpose(2, 0, 1)
    return x, np.array([label for _, label in files], dtype=np.int64)


def _cached(files: list[tuple[Path, int]], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``files`` once; later runs read the cache (keyed by names, sizes, mtimes)."""
    key = hashlib.sha1(str(size).encode())
    for f, label in files:
        st = f.stat()
        key.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}|{label}".encode())
    folder = Path(os.environ.get("AUTOPRUNE_CACHE", ".cache"))
    cache = folder / f"imagefolder-{key.hexdigest()}.npz"
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        return z["x"], z["y"]
    x, y = _decode(files, size)
    from autoprune._io import write_with

    write_with(cache, lambda p: np.savez(p.open("wb"), x=x, y=y))
    return x, y


def _split(x: np.ndarray | torch.Tensor, y: Any) -> Split:
    xt = torch.as_tensor(np.ascontiguousarray(x))
    if xt.dtype != torch.uint8 or xt.dim() != 4:
        raise DataError(f"images must be uint8 N×C×H×W, got {xt.dtype} {tuple(xt.shape)}")
    return Split(xt, torch.as_tensor(np.asarray(y), dtype=torch.int64))


def _carve(train: Split, n_val: float | None, seed: int) -> tuple[Split, Split]:
    size = 0.1 if n_val is None else n_val
    n = round(size * len(train)) if size < 1 else int(size)
    if not 0 < n < len(train):
        raise DataError(f"val_size {size} leaves no train or no validation images")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    warnings.warn(
        "the image folder has no val/: validation is carved from train; if the checkpoint was "
        "trained on these images, validation reads high and the search rewards re-memorization",
        MemorizedValidationWarning,
        stacklevel=3,
    )
    val, rest = order[:n], order[n:]
    return Split(train.x[rest], train.y[rest]), Split(train.x[val], train.y[val])


def load(cfg: DatasetConfig) -> Splits:
    """An image-folder tree as :class:`Splits` (see the module docstring)."""
    if not cfg.root or not (Path(cfg.root) / "train").is_dir():
        raise DataError(
            f"image folder {cfg.root!r} has no train/ folder (expected ROOT/train/<class>/…)"
        )
    root, size = Path(cfg.root), cfg.image_size or 32
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    parts: dict[str, Split] = {}
    rows: dict[str, tuple[str, np.ndarray]] = {}
    for name in ("train", "val", "test"):
        files = _files(root / name, classes) if (root / name).is_dir() else []
        if name == "train" and cfg.train_limit is not None:
            files = files[:: max(1, len(files) // cfg.train_limit)][: cfg.train_limit]
        if files:
            parts[name] = _split(*_cached(files, size))
            rows[name] = (name, np.arange(len(files)))
    if "train" not in parts:
        raise DataError(f"image folder {root} has no images under train/<class>/")
    carved = "val" not in parts
    if carved:
        parts["train"], parts["val"] = _carve(parts["train"], cfg.val_size, cfg.split_seed)
        rows = {k: (k, np.arange(len(parts[k]))) for k in parts}
        rows["val"] = ("train (carved)", np.arange(len(parts["val"])))
    splits = Splits(
        parts["train"], parts["val"], parts.get("test"), f"imagefolder:{root}",
        val_from_train=carved, rows=rows, classes=tuple(classes),
    )  # fmt: skip
    return with_normalization(splits, cfg)


def load_factory(cfg: DatasetConfig) -> Splits:
    """``package.module:factory`` → :class:`Splits` (see the module docstring)."""
    got = import_factory(cfg.name, "dataset factory", DataError)(cfg)
    if not isinstance(got, Mapping) or not {"train", "val"} <= set(got):
        raise DataError(f"dataset factory {cfg.name!r} must return a mapping with train and val")
    parts = {k: _split(*got[k]) for k in ("train", "val", "test", "holdout") if k in got}
    splits = Splits(
        parts["train"], parts["val"], parts.get("test"), cfg.name, holdout=parts.get("holdout"),
        rows={k: (k, np.arange(len(v))) for k, v in parts.items()},
        classes=tuple(got.get("classes", ())),
    )  # fmt: skip
    return with_normalization(splits, cfg)


__all__ = ["EXTENSIONS", "load", "load_factory"]
