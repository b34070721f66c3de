"""Search, apply and export with the Python API (the same steps as `autoprune demo`).

    .venv/bin/python examples/search_resnet20.py [--trials 8]

Writes into runs/example/. Works offline: bundled ResNet-20 checkpoint and CIFAR-10 images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autoprune import SearchOptions, api, load_config


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/example"))
    args = ap.parse_args()

    cfg = load_config("search_spaces/resnet20_cifar10.yaml").replace(
        **{"search.trials": args.trials, "search.parallel": 1, "budget": "0.6"}
    )
    # 1. search: Optuna TPE over per-layer ratios, every candidate fitted to the latency budget.
    summary = api.search(cfg, SearchOptions(args.run_dir, resume=args.run_dir.exists()))
    print(f"{summary.finished} trials, best validation top-1 {summary.best['accuracy']:.2f} %")

    # 2. apply: fit to the budget as measured on this CPU, final fine-tune, re-measure, save.
    rep = api.apply(args.run_dir)
    print(
        f"pruned: test top-1 {rep.pruned['test_acc']:.2f} % "
        f"(dense {rep.dense['test_acc']:.2f} %), "
        f"{rep.pruned['latency_ms']:.3f} ms measured vs budget {rep.budget_ms:.3f} ms"
    )

    # 3. export: reload from policy + tensors, ONNX with an onnxruntime parity check.
    api.export(args.run_dir)
    print(f"exported to {args.run_dir / 'export'}")


if __name__ == "__main__":
    main()
