"""What does a longer final fine-tune buy? Test accuracy against the number of epochs of the
final recipe, for one policy (Torch-Pruning global magnitude, fitted to the budget).

    python -m benchmarks.ft_length [--budget 0.5] [--epochs 1 2 4 8 16]   # ~30 min on 2 cores

Each length is its own run of the final recipe (one cosine schedule per length, so every
point is a finished recipe, not a checkpoint halfway down a longer schedule). Reuses the
``cpu-v2`` work folder's profile and teacher logits; finished lengths are kept in
``WORK/ft-length-<budget>.json``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from autoprune._io import write_json
from autoprune.search.baselines import GlobalMagnitudeSearcher
from benchmarks._common import provenance, save
from benchmarks._final import FinalJob, proposals, run_finals, study_bench, study_parser
from benchmarks.run import _log


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = study_parser(__doc__ or "")
    ap.add_argument("--epochs", type=float, nargs="*", default=[1, 2, 4, 8, 16])
    args = ap.parse_args(argv)
    bench = study_bench(args)
    ws, profile, cfg = bench.ws, bench.profile, bench.cfg
    budget_ms = ws.budget_ms(profile, args.budget)
    ctx = ws.search_context(profile, budget_ms * (1 - cfg.budget_margin), args.work)
    (policy,) = proposals(GlobalMagnitudeSearcher(ctx), 1)
    path = args.work / f"ft-length-{args.budget}.json"
    runs: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    todo = [e for e in args.epochs if str(e) not in runs]
    if todo:
        recipes = [dataclasses.replace(cfg.final_finetune, epochs=e, patience=0) for e in todo]
        job = FinalJob(ws.model, ws.layers, ws.input_shape, bench.data, bench.teacher)

        def done(i: int, result: dict[str, Any]) -> None:
            runs[str(todo[i])] = result
            write_json(path, runs)
            _log(f"  {todo[i]:g} epochs: test {result['test_acc']:.2f}")

        run_finals(job, [(policy.to_dict(), 0, r) for r in recipes], done=done)
    rows = sorted((float(e), r) for e, r in runs.items())
    out = {
        "budget": args.budget,
        "policy": policy.to_dict(),
        "dense": bench.dense,
        "train_images": len(bench.data.train),
        "runs": [{"epochs": e, **r} for e, r in rows],
        "provenance": provenance(profile.device, profile.threads, profile.batch),
    }
    name = f"ft_length-{args.budget}"
    save(name, out, _markdown(out), folder=args.results)
    _plot(out, args.results / f"{name}.png")
    return out


def _markdown(out: dict[str, Any]) -> str:
    prov, dense = out["provenance"], out["dense"]
    md = [
        f"# Final fine-tune length at {float(out['budget']):.0%} of dense latency",
        "",
        "One policy (Torch-Pruning global magnitude, fitted to the budget by the latency table), "
        f"the final recipe run for each length on all {out['train_images']:,} train images "
        "(distillation from the dense model, cosine schedule per run, one thread per run, two "
        f"runs at a time). {prov['device_name']}, torch {prov['versions']['torch']}, commit "
        f"{prov['git_commit']}, {prov['date']}. Dense: test {dense['test_acc']:.2f}, holdout "
        f"{dense.get('holdout_acc', 0):.2f} %.",
        "",
        "| epochs | steps | val | test (exact 1,017) | holdout | drop vs dense (test) | minutes |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in out["runs"]:
        steps = r["epochs"] * -(-out["train_images"] // r["recipe"]["batch_size"])
        md.append(
            f"| {r['epochs']:g} | {steps:.0f} | {r['val_acc']:.2f} | {r['test_acc']:.2f} | "
            f"{r.get('holdout_acc', 0):.2f} | {dense['test_acc'] - r['test_acc']:.2f} | "
            f"{r['finetune_s'] / 60:.1f} |"
        )
    return "\n".join(md) + "\n"


def _plot(out: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from autoprune._io import write_with

    e = [r["epochs"] for r in out["runs"]]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key, label in (("test_acc", "test (exact 1,017)"), ("holdout_acc", "holdout (JPEG)")):
        ax.plot(e, [r.get(key, 0) for r in out["runs"]], "o-", label=label)
    ax.axhline(out["dense"]["test_acc"], ls="--", c="gray", label="dense, test")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("final fine-tune epochs")
    ax.set_ylabel("top-1 %")
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_with(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)


if __name__ == "__main__":
    main()
