"""Searched policies vs the obvious alternatives at the same latency budget.

    python -m benchmarks.run --suite quick        # 1 budget, 1 seed (~20 min on 2 cores)
    python -m benchmarks.run --suite cpu-small    # budgets 50 % and 70 %, 2 seeds (~2 h)

Every method gets the same number of evaluations, the same short fine-tune per candidate, and its
best policy (by validation accuracy) the same final fine-tune; test accuracy is computed only for
that final model. Writes ``benchmarks/results/<suite>.{json,md}``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from autoprune.config import load_config
from autoprune.distributed import RayPool, init_ray, run_search
from autoprune.export import apply_and_export
from autoprune.pipeline import ensure_profile
from autoprune.policy import PruningPolicy
from autoprune.records import TrialLog
from autoprune.search import make_searcher
from benchmarks._common import provenance, save

SUITES: dict[str, dict[str, Any]] = {
    "quick": {
        "budgets": ["0.5"],
        "seeds": [0],
        "evals": 24,
        "methods": ["optuna", "amc", "random", "uniform"],
    },
    "cpu-small": {
        "budgets": ["0.5", "0.7"],
        "seeds": [0, 1],
        "evals": 40,
        "methods": ["optuna", "amc", "random", "uniform"],
    },
}


def run_method(cfg, ws, profile, data, method: str, budget: str, seed: int, evals: int) -> dict:
    budget_ms = ws.budget_ms(profile, budget)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        ctx = ws.search_context(profile, budget_ms * (1 - cfg.budget_margin), run_dir, seed=seed)
        searcher = make_searcher(
            method, ctx, sampler="tpe", startup_trials=cfg.search.startup_trials, amc=cfg.amc
        )
        pool = RayPool(ws.evaluator(data, profile), slots=cfg.search.parallel)
        log = TrialLog(run_dir, searcher.name)
        t0 = time.perf_counter()
        summary = run_search(searcher, pool, log, evals, parallel=pool.slots, seed=seed)
        search_s = time.perf_counter() - t0
        best = PruningPolicy.from_dict(summary.best["policy"])
        rep = apply_and_export(ws, best, profile, run_dir / "final", budget=budget, onnx=False)
    d, p = rep.dense, rep.pruned
    return {
        "method": method,
        "budget": budget,
        "seed": seed,
        "evaluations": summary.finished,
        "best_val_short_ft": summary.best["accuracy"],
        "val_acc": p["val_acc"],
        "test_acc": p["test_acc"],
        "dense_test_acc": d["test_acc"],
        "predicted_ms": rep.predicted_ms,
        "measured_ms": p["latency_ms"],
        "budget_ms": rep.budget_ms,
        "dense_ms": d["latency_ms"],
        "within_budget": rep.within_budget,
        "budget_used": p["latency_ms"] / rep.budget_ms,
        "macs": p["macs"],
        "params": p["params"],
        "speedup": d["latency_ms"] / p["latency_ms"],
        "mac_reduction": d["macs"] / p["macs"],
        "search_s": search_s,
        "ratios": best.ratios,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--suite", choices=sorted(SUITES), default="quick")
    ap.add_argument("--config", default="search_spaces/resnet20_cifar10.yaml")
    ap.add_argument("--data-source", default="exact", help="slice | exact | jpeg")
    ap.add_argument("--final-epochs", type=float, default=8)
    ap.add_argument("--methods", nargs="*", default=None)
    args = ap.parse_args(argv)
    suite = SUITES[args.suite]
    cfg = load_config(args.config).replace(
        **{
            "dataset.source": args.data_source,
            "dataset.val_size": 1000.0,
            "final_finetune.epochs": args.final_epochs,
        }
    )
    from autoprune.workspace import build_workspace

    ws = build_workspace(cfg)
    profile, _, _ = ensure_profile(ws)
    data = ws.load_data()
    init_ray()
    rows = []
    for budget in suite["budgets"]:
        for seed in suite["seeds"]:
            for method in args.methods or suite["methods"]:
                row = run_method(cfg, ws, profile, data, method, budget, seed, suite["evals"])
                rows.append(row)
                print(
                    {
                        k: row[k]
                        for k in (
                            "method",
                            "budget",
                            "seed",
                            "val_acc",
                            "test_acc",
                            "measured_ms",
                            "budget_ms",
                        )
                    },
                    flush=True,
                )
                _write(args, suite, cfg, profile, rows)
    return _write(args, suite, cfg, profile, rows)


def _write(args, suite, cfg, profile, rows) -> dict:
    data = {
        "suite": args.suite,
        "settings": {
            **suite,
            **vars(args),
            "short_finetune": cfg.short_finetune.__dict__,
            "final_finetune": cfg.final_finetune.__dict__,
            "budget_margin": cfg.budget_margin,
        },
        "provenance": provenance(profile.device, profile.threads, profile.batch),
        "rows": rows,
    }
    prov = data["provenance"]
    md = [
        f"# Benchmark `{args.suite}`: {cfg.model} on CIFAR-10 ({args.data_source})",
        "",
        f"{prov['device_name']}, {profile.threads} thread(s), batch {profile.batch}; torch "
        f"{prov['versions']['torch']}; commit {prov['git_commit']}; {prov['date']}. "
        f"{suite['evals']} evaluations per method ({cfg.short_finetune.steps} fine-tune steps "
        f"each), final fine-tune {args.final_epochs} epochs with distillation; validation = "
        f"{int(cfg.dataset.val_size)} train images, test = exact test images.",
        "",
        "| budget | seed | method | val top-1 | test top-1 | measured ms (budget) | predicted ms "
        "| MACs M | params K | speed-up | speed-up ÷ MAC cut | search s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['budget']} | {r['seed']} | {r['method']} | {r['val_acc']:.2f} | "
            f"{r['test_acc']:.2f} | {r['measured_ms']:.3f} ({r['budget_ms']:.3f}) | "
            f"{r['predicted_ms']:.3f} | {r['macs'] / 1e6:.2f} | {r['params'] / 1e3:.1f} | "
            f"{r['speedup']:.2f}× | {r['speedup'] / r['mac_reduction']:.2f} | "
            f"{r['search_s']:.0f} |"
        )
    if rows:
        md += ["", f"Dense: test top-1 {rows[0]['dense_test_acc']:.2f} %."]
    save(args.suite, data, "\n".join(md) + "\n")
    return data


if __name__ == "__main__":
    main()
