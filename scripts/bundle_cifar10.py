"""Build ``autoprune/assets/cifar10_bundle.npz``, the CIFAR-10 part the offline demo ships.

    python scripts/bundle_cifar10.py [--shared ../shared/data/cifar10]

Real images only, re-packed from the two containers described in ``../shared/data/README.md``:

- train: JPEG train images 0–19,999 (data_batch_1 and 2), as the original JPEG bytes;
- val: JPEG test images 1,017–3,016 (never in any train set; the search reward);
- test: the exact original pixels of test images 0–1,016;
- holdout: JPEG test images 5,000–6,999 (a second test part the search never sees).

About 10 MB (the JPEG headers compress). Row numbers are stored beside the images so the splits
can be checked for overlap.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "autoprune" / "assets" / "cifar10_bundle.npz"
TRAIN, VAL, HOLDOUT = range(0, 20_000), range(1017, 3017), range(5000, 7000)


def _jpeg_rows(
    blob: np.ndarray, offsets: np.ndarray, rows: range
) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = offsets[rows.start], offsets[rows.stop]
    return blob[lo:hi].copy(), (offsets[rows.start : rows.stop + 1] - lo).astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data" / "cifar10")
    args = ap.parse_args()
    jpeg = np.load(args.shared / "cifar10_jpeg_q75_yoongikim.npz")
    exact = np.load(args.shared / "cifar10_exact_subset.npz")
    arrays: dict[str, np.ndarray] = {}
    for name, split, rows in (
        ("train", "train", TRAIN),
        ("val", "test", VAL),
        ("holdout", "test", HOLDOUT),
    ):
        blob, off = _jpeg_rows(jpeg[f"{split}_jpeg"], jpeg[f"{split}_offsets"], rows)
        arrays.update(
            {
                f"{name}_jpeg": blob,
                f"{name}_offsets": off,
                f"{name}_y": jpeg[f"{split}_labels"][rows.start : rows.stop].astype(np.int64),
                f"{name}_index": np.arange(rows.start, rows.stop, dtype=np.int64),
            }
        )
    test_index = exact["test_index"].astype(np.int64)
    arrays.update(
        test_x=exact["test_data"],
        test_y=exact["test_labels_all"][test_index].astype(np.int64),
        test_index=test_index,
    )
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
