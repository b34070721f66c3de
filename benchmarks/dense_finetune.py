"""Control for the accuracy drop: the *dense* model through the same final recipe.

    python -m benchmarks.dense_finetune [--budget 0.7] [--seeds 0]   # ~35 min on 2 cores
    python -m benchmarks.dense_finetune --suite cpu-v3 --budget 0.5

The final recipe fine-tunes on the 50,000 CIFAR-10 train images of the JPEG container, while
the exact test images are clean; the dense checkpoint was trained on clean pixels. So a pruned
model's drop on the exact test mixes two things: what pruning costs and what fine-tuning on
JPEG images does to accuracy on clean ones. Running the unpruned model through the identical
recipe (same epochs, distillation, early stop, seeds) separates them. Uses the suite's work
folder (teacher logits, splits); the run is kept as ``WORK/budget-B/dense-finetuned/``.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from autoprune.policy import PruningPolicy
from benchmarks._common import provenance, save
from benchmarks._final import study_bench, study_parser
from benchmarks.run import _log


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = study_parser(__doc__ or "")
    ap.set_defaults(budget="0.7")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0])
    args = ap.parse_args(argv)
    bench = study_bench(args)
    nothing = PruningPolicy(model=bench.cfg.model, ratios={})
    runs = []
    for seed in args.seeds:
        _log(f"dense model, final recipe at {args.budget}, seed {seed}")
        runs.append(bench.final(args.budget, "dense-finetuned", nothing, seed))
    suite = args.results / f"{args.suite}.json"
    rows = json.loads(suite.read_text())["rows"] if suite.is_file() else []
    pruned = [{k: r[k] for k in ("method", "finals")} for r in rows if r["budget"] == args.budget]
    out = {
        "budget": args.budget,
        "model": bench.cfg.model,
        "recipe": runs[0]["recipe"],
        "dense": bench.dense,
        "dense_finetuned": runs,
        "pruned": pruned,
        "provenance": provenance(bench.profile.device, bench.profile.threads, bench.profile.batch),
    }
    name = f"dense_finetune-{args.budget}"  # cpu-v2's, as first published
    if args.suite != "cpu-v2":
        name = f"dense_finetune-{args.suite}-{args.budget}"
    save(name, out, _markdown(out), folder=args.results)
    return out


def _mean(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.mean(r[key] for r in runs)


def _markdown(out: dict[str, Any]) -> str:
    prov, dense, ft = out["provenance"], out["dense"], out["dense_finetuned"]
    keys = ("val_acc", "test_acc", "holdout_acc")
    stop = "early stop on validation" if out["recipe"].get("patience") else "no early stop"
    md = [
        f"# Dense model through the final recipe ({out['recipe']['epochs']:g} epochs)",
        "",
        f"The unpruned {out['model']} fine-tuned exactly like the pruned ones at "
        f"{float(out['budget']):.0%} (all 50,000 JPEG train images, distillation "
        f"{out['recipe']['distill']}, lr {out['recipe']['lr']} cosine, {stop}; seeds "
        f"{[r['seed'] for r in ft]}). {prov['device_name']}, torch "
        f"{prov['versions']['torch']}, commit {prov['git_commit']}, {prov['date']}.",
        "",
        "| model | val (JPEG) | test (exact 1,017) | holdout (JPEG 5,000) | test drop vs "
        "dense-finetuned |",
        "|---|---:|---:|---:|---:|",
        "| dense checkpoint | " + " | ".join(f"{dense[k]:.2f}" for k in keys) + " | |",
        "| dense, fine-tuned | " + " | ".join(f"{_mean(ft, k):.2f}" for k in keys) + " | |",
    ]
    for row in out["pruned"]:
        drop = _mean(ft, "test_acc") - _mean(row["finals"], "test_acc")
        md.append(
            f"| {row['method']} (pruned, mean of {len(row['finals'])}) | "
            + " | ".join(f"{_mean(row['finals'], k):.2f}" for k in keys)
            + f" | {drop:.2f} |"
        )
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
