"""Your images in a folder tree, a torchvision model, another input size and class count.

    .venv/bin/python examples/imagefolder.py [--size 48] [--epochs 6] [--trials 6]

1. writes an image-folder tree of real photos — the CIFAR-10 JPEG files shipped in
   ``autoprune/assets`` for five classes: ``train/<class>/*.jpg`` from the train set,
   ``val/`` and ``test/`` from two disjoint parts of the test set — into runs/imagefolder/data;
2. trains torchvision's MobileNetV2 (5 classes) on it from scratch for a few epochs at
   ``--size`` × ``--size`` (your own trained checkpoint goes in ``checkpoint:``);
3. profiles it on this CPU, searches per-layer ratios under 75 % of its measured latency
   (each layer keeps ≥ 20 % of its channels, so MobileNetV2 at 48×48 cannot go below ~65 %
   here), applies the best policy and exports it;
4. reloads the export with nothing but its files and checks it against the ONNX file.

The YAML equivalent of the dataset is::

    dataset: {name: imagefolder, root: runs/imagefolder/data, image_size: 48}
    model: mobilenet_v2
    num_classes: 5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from autoprune import SearchOptions, api, build_workspace, load_config
from autoprune.config import FinetuneConfig
from autoprune.export import load_pruned_model
from autoprune.finetune import accuracy, finetune
from autoprune.hardware.backends.ort import session

ASSETS = Path(__file__).resolve().parent.parent / "autoprune" / "assets"
CLASSES = {0: "airplane", 1: "automobile", 3: "cat", 7: "horse", 8: "ship"}


def write_tree(root: Path, per_class: dict[str, int]) -> Path:
    """Real JPEG files from the bundled CIFAR-10 part, as ROOT/<split>/<class>/NNNN.jpg."""
    z = np.load(ASSETS / "cifar10_bundle.npz")
    for split, source in (("train", "train"), ("val", "val"), ("test", "holdout")):
        blob, off, labels = z[f"{source}_jpeg"], z[f"{source}_offsets"], z[f"{source}_y"]
        for label, name in CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k, i in enumerate(np.flatnonzero(labels == label)[: per_class[split]]):
                (folder / f"{k:04d}.jpg").write_bytes(blob[off[i] : off[i + 1]].tobytes())
    return root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=48, help="image side the model sees")
    ap.add_argument("--epochs", type=float, default=6)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/imagefolder"))
    args = ap.parse_args()
    run = args.run_dir
    root = write_tree(run / "data", {"train": 800, "val": 200, "test": 200})
    cfg = load_config(
        "search_spaces/resnet20_cifar10.yaml",
        {
            "model": "mobilenet_v2",
            "num_classes": len(CLASSES),
            "dataset": {"name": "imagefolder", "root": str(root), "image_size": args.size},
            "profile": str(run / "profile.json"),
            "profile_grid_points": 4,
            "budget": "0.75",
            "search.trials": args.trials,
            "search.parallel": 1,
            "fidelity.min_steps": 20,
            "final_finetune.epochs": 4,
        },
    )
    # 1-2. your training: here a few epochs from scratch (use your own checkpoint instead).
    ws = build_workspace(cfg)
    data = ws.load_data()
    finetune(ws.model, data.train, FinetuneConfig(epochs=args.epochs, lr=0.05, batch_size=64))
    checkpoint = run / "mobilenet_v2.pt"
    torch.save(ws.model.state_dict(), checkpoint)
    print(
        f"trained: validation top-1 {accuracy(ws.model, data.val):.2f} % on {len(CLASSES)} classes"
    )
    cfg = cfg.replace(checkpoint=str(checkpoint))

    # 3. profile (quick settings), search, apply, export.
    api.profile(cfg, min_time_s=0.1, sweep=())
    summary = api.search(cfg, SearchOptions(run / "search", resume=(run / "search").exists()))
    print(f"{summary.finished} candidates, best validation top-1 {summary.best['accuracy']:.2f} %")
    rep = api.apply(run / "search")
    api.export(run / "search")
    p, d = rep.pruned, rep.dense
    print(
        f"pruned: test top-1 {p['test_acc']:.2f} % (dense {d['test_acc']:.2f} %), "
        f"{p['latency_ms']:.3f} ms measured vs budget {rep.budget_ms:.3f} ms"
    )

    # 4. reload from the export alone; compare with the ONNX file on test images.
    export = run / "search" / "export"
    model = load_pruned_model(export / "best_policy.json", export / "model.pt")
    x, _ = next(data.test.batches(16))
    with torch.no_grad():
        want = model(x).numpy()
    got = session(export / "model.onnx", threads=1).run(None, {"input": x.numpy()})[0]
    print(
        f"reloaded vs ONNX: max |diff| {np.abs(got - want).max():.2e} on {tuple(x.shape)} inputs"
    )


if __name__ == "__main__":
    main()
