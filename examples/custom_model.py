"""Bring your own model: a factory function, weights you trained, and the same pipeline.

    .venv/bin/python examples/custom_model.py [--epochs 12] [--trials 6]

Trains the small VGG-style CNN below for a few epochs on the bundled CIFAR-10 images (real
data, offline), saves its state dict, then profiles it on this CPU, searches per-layer ratios under
60 % of its measured latency, applies the best policy (fit on the device, final fine-tune) and
exports it. In a YAML config the same model is ``model: custom_model:small_cnn`` with
``checkpoint: <your .pt>`` (the module must be importable: on ``PYTHONPATH``, or installed).
Writes into runs/custom_model/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from autoprune import SearchOptions, api, build_workspace, load_config
from autoprune.config import FinetuneConfig
from autoprune.finetune import accuracy, finetune

sys.path.insert(0, str(Path(__file__).resolve().parent))  # makes "custom_model:..." importable


def small_cnn(num_classes: int = 10) -> nn.Module:
    """Three conv blocks and a linear head: every conv's output channels can be pruned."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(3, 32),
        nn.MaxPool2d(2),
        *block(32, 64),
        nn.MaxPool2d(2),
        *block(64, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=float, default=12)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/custom_model"))
    args = ap.parse_args()
    run = args.run_dir
    run.mkdir(parents=True, exist_ok=True)
    cfg = load_config("search_spaces/resnet20_cifar10.yaml").replace(
        **{
            "model": "custom_model:small_cnn",
            "profile": str(run / "profile.json"),
            "budget": "0.6",
            "search.trials": args.trials,
            "search.parallel": 1,
            "final_finetune.distill": 0.0,
        }
    )

    # 0. your training: here a few epochs from scratch on the bundled images.
    ws = build_workspace(cfg)
    data = ws.load_data()
    finetune(ws.model, data.train, FinetuneConfig(epochs=args.epochs, lr=0.05))
    checkpoint = run / "small_cnn.pt"
    torch.save(ws.model.state_dict(), checkpoint)
    print(f"trained: validation top-1 {accuracy(ws.model, data.val):.2f} %")
    cfg = cfg.replace(checkpoint=str(checkpoint))

    # 1. search (the profile is measured on first use).
    summary = api.search(cfg, SearchOptions(run / "search", resume=(run / "search").exists()))
    print(f"{summary.finished} trials, best validation top-1 {summary.best['accuracy']:.2f} %")

    # 2. apply and 3. export, as `autoprune apply` / `autoprune export` do.
    rep = api.apply(run / "search", out=run / "final")
    api.export(run / "final", out=run / "export")
    print(
        f"pruned: test top-1 {rep.pruned['test_acc']:.2f} % "
        f"(dense {rep.dense['test_acc']:.2f} %), "
        f"{rep.pruned['latency_ms']:.3f} ms measured vs budget {rep.budget_ms:.3f} ms; "
        f"exported to {run / 'export'}"
    )


if __name__ == "__main__":
    main()
