"""Searched policies vs the obvious alternatives at the same measured latency budget.

    python -m benchmarks.run --suite quick        # budget 50 %, 1 seed (~20 min on 2 cores)
    python -m benchmarks.run --suite cpu-small    # budgets 50 % and 70 %, 2 seeds (~80 min)
    python -m benchmarks.run --suite gpu          # ResNet-56 on CUDA (skips without a GPU)

Every method gets the same number of evaluations (the deterministic baselines have one candidate
each), the same short fine-tune per candidate and, for its best policy by validation accuracy,
the same on-device budget fit and final fine-tune (`autoprune apply`). Test accuracy is computed
only for that final model. Writes ``benchmarks/results/<suite>.{json,md}`` after every row, so an
interrupted run keeps what it finished.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from autoprune.config import load_config
from autoprune.config import to_dict as config_dict
from autoprune.distributed import RayPool, run_search
from autoprune.export import apply_and_export, load_pruned_model
from autoprune.hardware import DeviceSpec
from autoprune.hardware.measure import measure_models
from autoprune.pipeline import ensure_profile
from autoprune.policy import PruningPolicy
from autoprune.records import TrialLog
from autoprune.search import make_searcher
from autoprune.workspace import build_workspace
from benchmarks._common import RESULTS, provenance, save, utc_now

SEARCHED = ("optuna", "amc", "random")  # depend on the seed; uniform and global do not
SUITES: dict[str, dict[str, Any]] = {
    "quick": {
        "config": "search_spaces/resnet20_cifar10.yaml",
        "budgets": ["0.5"],
        "seeds": [0],
        "evals": 24,
        "final_epochs": 8,
    },
    "cpu-small": {
        "config": "search_spaces/resnet20_cifar10.yaml",
        "budgets": ["0.5", "0.7"],
        "seeds": [0, 1],
        "evals": 40,
        "final_epochs": 8,
    },
    "gpu": {
        "config": "search_spaces/resnet56_cifar10.yaml",
        "budgets": ["0.5", "0.7"],
        "seeds": [0, 1],
        "evals": 40,
        "final_epochs": 30,
        "device": "cuda",
    },
}
METHODS = ["optuna", "amc", "random", "uniform", "global"]


def throughput(ws, model, batch: int, device: str, threads: int) -> float:
    """Images per second at ``batch`` (the batch-1 latency is what the budget is about)."""
    (t,) = measure_models(
        [model], ws.input_shape, DeviceSpec(device, threads, batch), min_time_s=2.0, rounds=5
    )
    return batch / t.ms * 1e3


def run_method(cfg, ws, profile, data, method: str, budget: str, seed: int, evals: int) -> dict:
    budget_ms = ws.budget_ms(profile, budget)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        ctx = ws.search_context(profile, budget_ms * (1 - cfg.budget_margin), run_dir, seed=seed)
        searcher = make_searcher(
            method, ctx, sampler="tpe", startup_trials=cfg.search.startup_trials, amc=cfg.amc
        )
        # The pool starts and stops its own Ray, so nothing else runs while latency is measured.
        pool = RayPool(ws.evaluator(data, profile), slots=cfg.search.parallel)
        log = TrialLog(run_dir, searcher.name)
        t0 = time.perf_counter()
        try:
            summary = run_search(searcher, pool, log, evals, parallel=pool.slots, seed=seed)
        finally:
            pool.close()
        search_s = time.perf_counter() - t0
        best = PruningPolicy.from_dict(summary.best["policy"])
        rep = apply_and_export(ws, best, profile, run_dir / "final", budget=budget, onnx=False)
        pruned = load_pruned_model(rep.files["policy"], rep.files["model"])
        dev, threads = profile.spec.device, profile.spec.threads
        ips = [throughput(ws, m, 64, dev, threads) for m in (ws.model, pruned)]
    d, p = rep.dense, rep.pruned
    return {
        "method": method,
        "budget": budget,
        "seed": seed,
        "evaluations": summary.finished,
        "best_val_short_ft": summary.best["accuracy"],
        "val_acc": p["val_acc"],
        "test_acc": p["test_acc"],
        "dense_val_acc": d["val_acc"],
        "dense_test_acc": d["test_acc"],
        "predicted_ms": rep.predicted_ms,
        "measured_ms": p["latency_ms"],
        "budget_ms": rep.budget_ms,
        "dense_ms": d["latency_ms"],
        "within_budget": rep.within_budget,
        "budget_used": p["latency_ms"] / rep.budget_ms,
        "device_fit_steps": len(rep.device_fit),
        "macs": p["macs"],
        "params": p["params"],
        "speedup": 1 / p["relative_latency"],  # paired with the dense model, round by round
        "relative_latency": p["relative_latency"],
        "mac_reduction": d["macs"] / p["macs"],
        "b64_images_per_s": ips[1],
        "dense_b64_images_per_s": ips[0],
        "other_cpus": rep.device.get("other_cpus"),  # interference during the final timing
        "search_s": search_s,
        "apply_s": rep.seconds,
        "ratios": PruningPolicy.from_dict(rep.policy).ratios,
    }


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--suite", choices=sorted(SUITES), default="quick")
    ap.add_argument("--config", default=None, help="override the suite's config")
    ap.add_argument("--data-source", default="exact", help="slice | exact | jpeg")
    ap.add_argument("--data-root", default=None, help="folder of the CIFAR-10 npz/JPEG files")
    ap.add_argument("--final-epochs", type=float, default=None)
    ap.add_argument("--methods", nargs="*", default=METHODS, choices=METHODS)
    ap.add_argument("--name", default=None, help="results file name (default: the suite)")
    ap.add_argument(
        "--resume", action="store_true", help="keep the rows already in the results file"
    )
    args = ap.parse_args(argv)
    suite = SUITES[args.suite]
    if suite.get("device") == "cuda" and not torch.cuda.is_available():
        print(f"suite {args.suite!r} needs a CUDA GPU; none here, skipped", file=sys.stderr)
        return None
    final_epochs = args.final_epochs or suite["final_epochs"]
    overrides: dict[str, Any] = {
        "dataset.source": args.data_source,
        "dataset.val_size": 1000.0,
        "final_finetune.epochs": final_epochs,
    }
    if args.data_root:
        overrides["dataset.root"] = args.data_root
    if suite.get("device"):
        overrides["device.device"] = suite["device"]
    cfg = load_config(args.config or suite["config"]).replace(**overrides)
    ws = build_workspace(cfg)
    profile, _, _ = ensure_profile(ws)
    data = ws.load_data()
    rows: list[dict] = []
    done: set[tuple[str, str, int]] = set()
    previous = RESULTS / f"{args.name or args.suite}.json"
    if args.resume and previous.is_file():
        rows = json.loads(previous.read_text())["rows"]
        done = {(r["budget"], r["method"], r["seed"]) for r in rows}
    started = time.perf_counter() - sum(r["search_s"] + r["apply_s"] for r in rows)
    meta = {
        "suite": args.suite,
        "name": args.name or args.suite,
        "settings": {**suite, **vars(args), "final_epochs": final_epochs},
    }
    for budget in suite["budgets"]:
        for method in args.methods:
            for seed in suite["seeds"] if method in SEARCHED else suite["seeds"][:1]:
                if (budget, method, seed) in done:
                    continue
                row = run_method(cfg, ws, profile, data, method, budget, seed, suite["evals"])
                row["date"] = utc_now()
                rows.append(row)
                print(
                    f"budget {budget} seed {seed} {method:8s} val {row['val_acc']:.2f} "
                    f"test {row['test_acc']:.2f} measured {row['measured_ms']:.3f} ms "
                    f"(budget {row['budget_ms']:.3f}) search {row['search_s']:.0f} s",
                    flush=True,
                )
                _write({**meta, "wall_s": time.perf_counter() - started}, cfg, profile, data, rows)
    return _write({**meta, "wall_s": time.perf_counter() - started}, cfg, profile, data, rows)


def _spread(values: list[float], fmt: str = ".2f") -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def _write(meta, cfg, profile, data, rows) -> dict:
    order = {m: i for i, m in enumerate(METHODS)}
    rows.sort(key=lambda r: (float(r["budget"]), order[r["method"]], r["seed"]))
    out = {
        **meta,
        "config": config_dict(cfg),
        "data": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "provenance": provenance(profile.device, profile.threads, profile.batch),
        "rows": rows,
    }
    prov, s = out["provenance"], meta["settings"]
    md = [
        f"# Benchmark `{meta['suite']}`: {cfg.model} on CIFAR-10 ({cfg.dataset.source})",
        "",
        f"{prov['device_name']} ({prov['cpu_count']} cores), {profile.threads} thread(s), batch "
        f"{profile.batch}; torch {prov['versions']['torch']}, torch-pruning "
        f"{prov['versions']['torch_pruning']}, optuna {prov['versions']['optuna']}; commit "
        f"{prov['git_commit']}; {prov['date']}; wall {meta['wall_s'] / 60:.0f} min.",
        "",
        f"Data: {out['data']['train']} train / {out['data']['val']} validation (carved from "
        f"train: the search reward) / {out['data']['test']} test images (final report only). "
        f"{s['evals']} evaluations per searched method (uniform and global magnitude: one "
        f"candidate each), {cfg.short_finetune.steps} fine-tune steps per candidate; the best "
        f"policy by validation is fitted to the budget as measured on the device, then "
        f"fine-tuned {s['final_epochs']:g} epochs with distillation (weight "
        f"{cfg.final_finetune.distill}). Seeds {s['seeds']} for the searched methods.",
        "",
        "## Summary (mean ± std over seeds)",
        "",
        "| budget | method | test top-1 | val top-1 | measured ÷ budget | speed-up | "
        "speed-up ÷ MAC cut | MACs M | b64 img/s | search s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["budget"], r["method"]), []).append(r)
    for (budget, method), rs in groups.items():

        def col(key: str, rs: list[dict] = rs) -> list[float]:
            return [float(r[key]) for r in rs]

        md.append(
            f"| {float(budget):.0%} | {method} | {_spread(col('test_acc'))} | "
            f"{_spread(col('val_acc'))} | {_spread(col('budget_used'), '.1%')} | "
            f"{_spread(col('speedup'))}× | "
            f"{_spread([r['speedup'] / r['mac_reduction'] for r in rs])} | "
            f"{_spread([m / 1e6 for m in col('macs')])} | {_spread(col('b64_images_per_s'), '.0f')} | "
            f"{statistics.mean(col('search_s')):.0f} |"
        )
    within = [r["within_budget"] for r in rows]
    used = [r["budget_used"] for r in rows]
    if rows:
        md += [
            "",
            f"Dense: val {rows[0]['dense_val_acc']:.2f} %, test {rows[0]['dense_test_acc']:.2f} "
            f"%, batch-64 throughput {rows[0]['dense_b64_images_per_s']:.0f} img/s.",
            "",
            "## Budget compliance",
            "",
            f"{sum(within)} of {len(within)} exported policies are within the budget as measured "
            f"on the device; budget used: min {min(used):.1%}, median "
            f"{statistics.median(used):.1%}, max {max(used):.1%}.",
        ]
    md += [
        "",
        "## Every run",
        "",
        "Each row's dense latency (*dense ms*, measured beside it) shows the machine's speed at "
        "the time; budgets are shares of it. *Proxy val*: the best candidate's validation top-1 "
        "after the short fine-tune, i.e. what the search ranked by.",
        "",
        "| budget | seed | method | proxy val | val | test | measured ms (budget) | dense ms | "
        "predicted ms | fit steps | MACs M | params K | speed-up | b64 img/s | search s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['budget']} | {r['seed']} | {r['method']} | {r['best_val_short_ft']:.1f} | "
            f"{r['val_acc']:.2f} | {r['test_acc']:.2f} | {r['measured_ms']:.3f} "
            f"({r['budget_ms']:.3f}) | {r['dense_ms']:.3f} | {r['predicted_ms']:.3f} | "
            f"{r['device_fit_steps']} | {r['macs'] / 1e6:.2f} | "
            f"{r['params'] / 1e3:.1f} | {r['speedup']:.2f}× | {r['b64_images_per_s']:.0f} | "
            f"{r['search_s']:.0f} |"
        )
    save(meta["name"], out, "\n".join(md) + "\n")
    return out


if __name__ == "__main__":
    main()
