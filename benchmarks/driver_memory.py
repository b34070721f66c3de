"""Does the search driver's memory stay flat over a long search? 300 Optuna TPE trials of a real
ResNet-20 (1 fine-tune step each, so the driver — not the evaluations — is what is exercised),
evaluated as Ray tasks on 2 workers, with the driver's resident memory read after every trial.

    python -m benchmarks.driver_memory [--trials 300]

Writes ``benchmarks/results/driver_memory.{json,md}``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from autoprune.config import load_config
from autoprune.pipeline import SearchOptions, search
from benchmarks._common import provenance, save


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--parallel", type=int, default=2)
    args = ap.parse_args(argv)
    cfg = load_config("search_spaces/resnet20_cifar10.yaml").replace(
        **{
            "dataset.val_size": 64.0,
            "dataset.train_limit": 256,
            "short_finetune.steps": 1,
            "short_finetune.batch_size": 16,
            "search.trials": args.trials,
            "search.parallel": args.parallel,
        }
    )
    samples: list[tuple[int, float, float]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:

        def on_result(rec: dict) -> None:
            samples.append((len(samples) + 1, rss_mb(), time.perf_counter() - t0))

        summary = search(cfg, SearchOptions(Path(tmp) / "run", use_ray=True), on_result=on_result)
    at = {n: rss for n, rss, _ in samples}
    marks = sorted({m for m in (1, 10, 50, 100, 200, 300, args.trials) if m in at})
    late = [rss for n, rss, _ in samples if n >= 10]
    data: dict[str, Any] = {
        "trials": summary.finished,
        "failed": summary.failed,
        "seconds": summary.seconds,
        "rss_mb": {str(m): at[m] for m in marks},
        "growth_10_to_last_mb": at[samples[-1][0]] - at[10] if 10 in at else None,
        "max_mb_after_10": max(late) if late else None,
        "samples": samples,
        "provenance": provenance("cpu", 1, 1),
    }
    md = [
        "# Search driver memory over a long search",
        "",
        f"{summary.finished} Optuna TPE trials (SQLite storage, multivariate, constant liar) of "
        f"the pretrained ResNet-20, 1 fine-tune step each, {args.parallel} Ray workers; "
        f"{data['provenance']['device_name']}, torch {data['provenance']['versions']['torch']}, "
        f"commit {data['provenance']['git_commit']}, {data['provenance']['date']}; "
        f"{summary.seconds:.0f} s.",
        "",
        "| after trial | driver RSS (MB) |",
        "|---:|---:|",
        *[f"| {m} | {at[m]:.0f} |" for m in marks],
        "",
        f"Growth from trial 10 to trial {samples[-1][0]}: {data['growth_10_to_last_mb']:+.1f} MB.",
    ]
    save("driver_memory", data, "\n".join(md) + "\n")
    print("\n".join(md))
    return data


if __name__ == "__main__":
    main()
