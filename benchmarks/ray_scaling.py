"""Parallel candidate evaluation with Ray: the same evaluations with 1 and with 2 workers.

    python -m benchmarks.ray_scaling [--evals 16] [--steps 40]

Reports wall time, parallel efficiency (T1 / (workers × Tn)) and per-trial Ray overhead (wall
time × workers − time spent inside the evaluations, per trial). Writes
``benchmarks/results/ray_scaling.{json,md}``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from autoprune.config import load_config
from autoprune.distributed import RayPool, init_ray, run_search
from autoprune.pipeline import ensure_profile
from autoprune.records import TrialLog
from autoprune.search.baselines import RandomSearcher
from autoprune.workspace import build_workspace
from benchmarks._common import provenance, save


def run(workers: int, args: argparse.Namespace) -> dict:
    cfg = load_config(args.config).replace(**{"short_finetune.steps": args.steps})
    ws = build_workspace(cfg)
    profile, _, _ = ensure_profile(ws)
    data = ws.load_data()
    budget = ws.budget_ms(profile, args.budget)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = ws.search_context(profile, budget, Path(tmp), seed=7)
        t_start = time.perf_counter()
        pool = RayPool(ws.evaluator(data, profile), slots=workers)
        startup = time.perf_counter() - t_start
        log = TrialLog(Path(tmp), "random")
        t0 = time.perf_counter()
        summary = run_search(RandomSearcher(ctx), pool, log, args.evals, parallel=workers)
        wall = time.perf_counter() - t0
        inside = sum(r["finetune_s"] + r["eval_s"] for r in log.records)
    assert summary.failed == 0
    return {
        "workers": workers,
        "evals": args.evals,
        "pool_startup_s": startup,
        "wall_s": wall,
        "inside_eval_s": inside,
        "mean_eval_s": inside / args.evals,
        "overhead_per_trial_s": (wall * workers - inside) / args.evals,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="search_spaces/resnet20_cifar10.yaml")
    ap.add_argument("--evals", type=int, default=16)
    ap.add_argument("--steps", type=int, default=40, help="short fine-tune steps per evaluation")
    ap.add_argument("--budget", default="0.6")
    args = ap.parse_args(argv)
    init_ray()
    import ray

    rows = [run(1, args), run(2, args)]
    t1, t2 = rows[0]["wall_s"], rows[1]["wall_s"]
    for r in rows:
        r["overhead_pct"] = 100 * r["overhead_per_trial_s"] / r["mean_eval_s"]
    eff = t1 / (2 * t2)
    data = {
        "rows": rows,
        "parallel_efficiency": eff,
        "provenance": {**provenance("cpu", 1, None), "ray": ray.__version__},
        "settings": vars(args),
    }
    prov = data["provenance"]
    md = [
        "# Ray scaling: the same evaluations on 1 and 2 workers",
        "",
        f"{prov['device_name']}, {prov['cpu_count']} cores; each evaluation = prune ResNet-20 + "
        f"{args.steps} fine-tune steps (batch 64, 1 thread per worker) + validation on 512 "
        f"images; torch {prov['versions']['torch']}, ray {prov['ray']}; "
        f"commit {prov['git_commit']}.",
        "",
        "| workers | evaluations | pool start (s) | wall (s) | mean eval (s) | "
        "Ray overhead / trial (s) | overhead |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    md += [
        f"| {r['workers']} | {r['evals']} | {r['pool_startup_s']:.1f} | {r['wall_s']:.1f} | "
        f"{r['mean_eval_s']:.2f} | "
        f"{r['overhead_per_trial_s']:.3f} | {r['overhead_pct']:.1f} % |"
        for r in rows
    ]
    md += [
        "",
        f"Parallel efficiency with 2 workers: **{100 * eff:.0f} %** (T1 / (2 × T2)). "
        "Wall time starts once the pool is up (workers started, evaluator loaded); the pool "
        "start-up is listed apart. Overhead = (wall × workers − time inside evaluations) / "
        "trials, relative to the mean evaluation; the driver shares the 2 cores with the "
        "workers.",
        "",
    ]
    save("ray_scaling", data, "\n".join(md))
    print("\n".join(md))
    return data


if __name__ == "__main__":
    main()
