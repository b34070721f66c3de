"""How well does the search's cheap score (the proxy) predict the accuracy after the final
fine-tune? Spearman rank correlation over random feasible candidates at one budget.

    python -m benchmarks.proxy [--budget 0.5] [--n 10] [--final-epochs E] [--work WORK]
    # ~2.5 h with the suite's 16-epoch recipe at 50 %, 1.5 h measured with --final-epochs 8

For ``--n`` random policies fitted to the budget (what a search's start-up phase proposes):

- *before* (benchmark v1's proxy): 80 fine-tune steps, batch 64, no distillation, on 4,085
  exact train images, scored on 1,000 images carved from train (which the checkpoint trained
  on) — and, to separate the two causes, the same models scored on the honest validation split;
- *after*: the multi-fidelity evaluator's score at each rung (100 / 300 / 900 steps on all
  50,000 train images, distillation from the dense model, validation on test-set images the
  checkpoint never saw);
- *final*: the benchmark's final recipe at that budget (or its ``--final-epochs`` version);
  its validation accuracy is what the proxies should rank correctly.

Reuses the profile and teacher logits of the ``cpu-v2`` work folder; every step is saved in
``WORK/proxy-<budget>/`` as it finishes, so a rerun resumes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from autoprune._io import write_json
from autoprune._threads import torch_threads
from autoprune.data import load_cifar10
from autoprune.distributed import LocalPool, RayPool
from autoprune.finetune import FinetuneConfig, accuracy, finetune
from autoprune.policy import PruningPolicy
from autoprune.pruning import apply_policy
from autoprune.search.baselines import RandomSearcher
from benchmarks._common import provenance, save
from benchmarks._final import FinalJob, proposals, run_finals, study_parser
from benchmarks._stats import spearman
from benchmarks.run import Bench, _log

OLD_PROXY = FinetuneConfig(steps=80, batch_size=64, lr=0.01)


def _cached(path: Path, make: Any) -> Any:
    import json

    if path.is_file():
        return json.loads(path.read_text())
    value = make()
    write_json(path, value)
    return value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = study_parser(__doc__ or "")
    ap.add_argument("--n", type=int, default=10, help="candidates (random feasible policies)")
    ap.add_argument(
        "--final-epochs",
        type=float,
        default=None,
        help="epochs of the final recipe (default: the suite's at this budget); a shorter\n"
        "one fits the study into a session and is named in the results",
    )
    args = ap.parse_args(argv)
    bench = Bench(args.suite, args.work, args.suite, [])
    ws, profile, cfg = bench.ws, bench.profile, bench.cfg
    folder = args.work / f"proxy-{args.budget}"
    budget_ms = ws.budget_ms(profile, args.budget)
    ctx = ws.search_context(profile, budget_ms * (1 - cfg.budget_margin), folder, seed=7)
    searcher = RandomSearcher(ctx)
    policies = _cached(
        folder / "policies.json", lambda: [p.to_dict() for p in proposals(searcher, args.n)]
    )

    def old_proxy() -> list[dict[str, float]]:
        _log("before: v1 proxy (80 steps on exact train, validation carved from train)")
        exact = load_cifar10("exact", val_size=1000, seed=0)
        out = []
        with torch_threads(bench.train_threads):
            for p in policies:
                model = apply_policy(
                    ws.model, PruningPolicy.from_dict(p), ws.layers, ws.input_shape
                )
                finetune(model, exact.train, OLD_PROXY, seed=0)
                out.append(
                    {
                        "memorized_val": accuracy(model, exact.val),
                        "honest_val": accuracy(model, bench.data.val),
                    }
                )
        return out

    old = _cached(folder / "old_proxy.json", old_proxy)

    def new_proxy() -> list[list[float]]:
        rungs = cfg.fidelity.steps(cfg.short_finetune.steps)
        _log(f"after: multi-fidelity scores at {rungs} steps")
        ev = ws.evaluator(bench.data, profile, teacher=bench.teacher)
        pool = RayPool(ev, slots=2) if bench.train_threads > 1 else LocalPool(ev)
        try:
            jobs = [(i, k) for i in range(len(policies)) for k in range(len(rungs))]
            scores = np.zeros((len(policies), len(rungs)))
            for key, (i, k) in enumerate(jobs):
                pool.submit(key, PruningPolicy.from_dict(policies[i]), 0, rungs[k])
            for _ in jobs:
                key, (result, error) = pool.wait()
                i, k = jobs[key]
                if result is None:
                    raise RuntimeError(error)
                scores[i, k] = result.accuracy
        finally:
            pool.close()
        return scores.tolist()

    new = _cached(folder / "rungs.json", new_proxy)

    recipe = bench.recipe(args.budget)
    if args.final_epochs is not None:
        recipe = dataclasses.replace(recipe, epochs=args.final_epochs)
    finals_path = folder / f"finals-{recipe.epochs:g}ep.json"
    finals: dict[str, Any] = _cached(finals_path, dict)
    todo = [i for i in range(len(policies)) if str(i) not in finals]
    if todo:
        _log(f"final fine-tunes ({recipe.epochs} epochs) of {len(todo)} candidates")
        job = FinalJob(ws.model, ws.layers, ws.input_shape, bench.data, bench.teacher)

        def done(j: int, result: dict[str, Any]) -> None:
            finals[str(todo[j])] = result
            write_json(finals_path, finals)
            _log(f"  candidate {todo[j]}: val {result['val_acc']:.2f}")

        run_finals(job, [(policies[i], 0, recipe) for i in todo], done=done)
    final_val = [finals[str(i)]["val_acc"] for i in range(len(policies))]
    rungs = cfg.fidelity.steps(cfg.short_finetune.steps)
    corr = {
        "before: 80 steps, validation carved from train": spearman(
            [o["memorized_val"] for o in old], final_val
        ),
        "before, scored on the honest validation split": spearman(
            [o["honest_val"] for o in old], final_val
        ),
        **{
            f"after: rung {k} ({s} steps, honest validation)": spearman(
                [row[k] for row in new], final_val
            )
            for k, s in enumerate(rungs)
        },
    }
    out = {
        "budget": args.budget,
        "n": len(policies),
        "final_recipe": dataclasses.asdict(recipe),
        "spearman": corr,
        "candidates": [
            {"policy": p, "old": o, "rungs": r, "final": finals[str(i)]}
            for i, (p, o, r) in enumerate(zip(policies, old, new, strict=True))
        ],
        "provenance": provenance(profile.device, profile.threads, profile.batch),
    }
    save(f"proxy-{args.budget}", out, _markdown(out, rungs), folder=args.results)
    return out


def _markdown(out: dict[str, Any], rungs: list[int]) -> str:
    prov = out["provenance"]
    md = [
        f"# Proxy → final: rank correlation at {float(out['budget']):.0%} of dense latency",
        "",
        f"{out['n']} random feasible ResNet-20 policies (seeded), each scored by each proxy and "
        f"then fine-tuned with the final recipe ({out['final_recipe']['epochs']} epochs on all "
        "50,000 train images, distilled, lr "
        f"{out['final_recipe']['lr']}); the target is the final model's validation accuracy. "
        f"{prov['device_name']}, torch {prov['versions']['torch']}, commit "
        f"{prov['git_commit']}, {prov['date']}.",
        "",
        "| proxy | Spearman vs final validation |",
        "|---|---:|",
        *[f"| {k} | {v:+.2f} |" for k, v in out["spearman"].items()],
        "",
        "| candidate | v1 proxy (memorized val) | v1 proxy (honest val) | "
        + " | ".join(f"rung {s} steps" for s in rungs)
        + " | final val | final test | final holdout |",
        "|---:|---:|---:|" + "---:|" * len(rungs) + "---:|---:|---:|",
    ]
    for i, c in enumerate(out["candidates"]):
        f = c["final"]
        md.append(
            f"| {i} | {c['old']['memorized_val']:.2f} | {c['old']['honest_val']:.2f} | "
            + " | ".join(f"{a:.2f}" for a in c["rungs"])
            + f" | {f['val_acc']:.2f} | {f['test_acc']:.2f} | {f.get('holdout_acc', 0):.2f} |"
        )
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
