"""How well does a cheap score (a proxy) predict the accuracy after the final fine-tune, and what
does it cost? Spearman rank correlation over random feasible candidates at one budget, and the
wall time per candidate of each proxy.

    python -m benchmarks.proxy --suite cpu-v3 --budget 0.5 --n 12 --work runs/bench/cpu-v3
    python -m benchmarks.proxy --suite cpu-v2 --budget 0.5 --n 12    # ResNet-20: v2's 10 + 2

For ``--n`` random policies fitted to the budget (what a search's start-up phase proposes), each
proxy scores the pruned model on the validation split (test-set images the checkpoint never
trained on):

- *zero-cost*: the pruned model's MACs and parameters (architecture alone);
- *screens* (candidates for a cheap rung 0): the pruned model repaired by batch-norm
  re-estimation or by least-squares reconstruction (:mod:`autoprune.reconstruct`) and scored
  with no fine-tune step, or reconstructed and then fine-tuned 30 / 100 steps;
- *rungs*: the multi-fidelity evaluator's 100 / 300 / 900-step short fine-tunes from the plain
  pruned model (what benchmark v2 searched with);
- *before* (``cpu-v2`` only): benchmark v1's 80-step proxy on a validation split carved from
  the train images the checkpoint memorized;
- *final*: the suite's final recipe at that budget (or ``--final-epochs``), one seed; its
  validation accuracy is what the proxies should rank.

Seconds per candidate are measured in this process on one thread (what one search worker uses):
pruning, repair, fine-tune and scoring. Every step is saved in ``WORK/proxy-<budget>/`` as it
finishes, so a rerun resumes (and a larger ``--n`` adds candidates); the finals, the long part,
run first, two at a time as Ray tasks.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autoprune._io import write_json
from autoprune._threads import torch_threads
from autoprune.data import load_cifar10
from autoprune.distributed import LocalPool, RayPool
from autoprune.evaluate import Evaluator
from autoprune.finetune import FinetuneConfig, accuracy, finetune
from autoprune.hardware import LUTPredictor
from autoprune.policy import PruningPolicy
from autoprune.pruning import apply_policy
from autoprune.search.baselines import RandomSearcher
from benchmarks._common import provenance, save
from benchmarks._final import FinalJob, proposals, run_finals, study_bench, study_parser
from benchmarks._stats import spearman, spearman_ci
from benchmarks.run import Bench, _log

OLD_PROXY = FinetuneConfig(steps=80, batch_size=64, lr=0.01)
RUNGS = [100, 300, 900]  # benchmark v2's rungs: short fine-tunes from the plain pruned model


@dataclass(frozen=True)
class Screen:
    """A cheap rung-0 candidate: a repair (``Evaluator``'s ``recover``), then ``steps`` of the
    suite's short fine-tune (``None`` fields: the suite's settings)."""

    repair: str
    steps: int = 0
    calibration_images: int | None = None
    batch_size: int | None = None
    lr: float | None = None


SCREENS: dict[str, Screen] = {
    "bn": Screen("bn"),
    "reconstruct": Screen("reconstruct"),
    "reconstruct + 30 steps": Screen("reconstruct", 30),
    "reconstruct + 100 steps": Screen("reconstruct", 100),
    # Added after the first four (the same candidates, resumed): variants costing about as
    # much as plain reconstruction or up to 1/20 of the 900-step rung.
    "reconstruct + bn": Screen("reconstruct_bn"),
    "reconstruct, 1,024 images": Screen("reconstruct", calibration_images=1024),
    "reconstruct + 100 steps of batch 32": Screen("reconstruct", 100, batch_size=32),
    "reconstruct + 30 steps at lr 0.001": Screen("reconstruct", 30, lr=0.001),
}


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _evaluator(bench: Bench, screen: Screen) -> Evaluator:
    """The suite's candidate evaluator with ``screen``'s repair before every fine-tune and its
    settings in place of the suite's."""
    ws, cfg = bench.ws, bench.cfg
    recipe = dataclasses.replace(
        cfg.short_finetune,
        batch_size=screen.batch_size or cfg.short_finetune.batch_size,
        lr=screen.lr or cfg.short_finetune.lr,
    )
    return Evaluator(
        ws.model, ws.layers, ws.input_shape, bench.data.train, bench.data.val,
        LUTPredictor(bench.profile), recipe, eval_batch_size=cfg.eval_batch_size,
        teacher=bench.teacher, recover=screen.repair,
        calibration_images=screen.calibration_images or cfg.fidelity.calibration_images,
    )  # fmt: skip


def _policies(bench: Bench, budget: str, n: int, folder: Path) -> list[dict[str, Any]]:
    """The study's candidates: the first ``n`` proposals of a seeded random searcher, fitted to
    the budget; a cached list is extended (its entries must be what the searcher proposes)."""
    path = folder / "policies.json"
    cached: list[dict[str, Any]] = _load(path) or []
    if len(cached) >= n:
        return cached[:n]
    ws, profile, cfg = bench.ws, bench.profile, bench.cfg
    budget_ms = ws.budget_ms(profile, budget)
    ctx = ws.search_context(profile, budget_ms * (1 - cfg.budget_margin), folder, seed=7)
    fresh = [p.to_dict() for p in proposals(RandomSearcher(ctx), n)]
    for old, new in zip(cached, fresh, strict=False):
        if old["ratios"] != new["ratios"]:
            raise SystemExit(f"{path} holds other policies than seed 7 proposes: remove it")
    write_json(path, fresh)
    return fresh


def _finals(
    bench: Bench, policies: list[dict[str, Any]], recipe: FinetuneConfig, folder: Path
) -> list[dict[str, Any]]:
    path = folder / f"finals-{recipe.epochs:g}ep.json"
    finals: dict[str, Any] = _load(path) or {}
    todo = [i for i in range(len(policies)) if str(i) not in finals]
    if todo:
        _log(f"final fine-tunes ({recipe.epochs:g} epochs) of {len(todo)} candidates")
        ws = bench.ws
        job = FinalJob(ws.model, ws.layers, ws.input_shape, bench.data, bench.teacher)

        def done(j: int, result: dict[str, Any]) -> None:
            finals[str(todo[j])] = result
            write_json(path, finals)
            _log(f"  candidate {todo[j]}: val {result['val_acc']:.2f}")

        run_finals(
            job,
            [(policies[i], 0, recipe) for i in todo],
            done=done,
            checkpoints=[folder / f"final-{i}-{recipe.epochs:g}ep.ckpt" for i in todo],
        )
    return [finals[str(i)] for i in range(len(policies))]


def _rungs(
    bench: Bench, policies: list[dict[str, Any]], folder: Path
) -> tuple[list[int], list[list[float]], list[list[float] | None]]:
    """Each candidate's score after each rung's fine-tune (from the plain pruned model), and its
    seconds (``None`` for rows recorded before times were kept). Saved after every fine-tune, so
    a rerun resumes with the ones not yet run."""
    rungs = RUNGS
    path = folder / "rungs.json"
    saved = _load(path) or {}
    if isinstance(saved, list):  # the format before seconds were recorded
        saved = {"scores": saved, "seconds": [None] * len(saved)}
    n, r = len(policies), len(rungs)
    scores: list[list[float | None]] = saved.get("scores", [])[:n]
    seconds: list[list[float | None]] = [row or [None] * r for row in saved.get("seconds", [])]
    scores += [[None] * r for _ in range(n - len(scores))]
    seconds = seconds[:n] + [[None] * r for _ in range(n - len(seconds))]
    jobs = [(i, k) for i in range(n) for k in range(r) if scores[i][k] is None]
    if jobs:
        _log(f"rungs {rungs}: {len(jobs)} fine-tunes to run")
        ev = _evaluator(bench, Screen("none"))
        pool = RayPool(ev, slots=2) if bench.train_threads > 1 else LocalPool(ev)
        try:
            for key, (i, k) in enumerate(jobs):
                pool.submit(key, PruningPolicy.from_dict(policies[i]), 0, rungs[k])
            for _ in jobs:
                key, (result, error) = pool.wait()
                i, k = jobs[key]
                if result is None:
                    raise RuntimeError(error)
                scores[i][k] = result.accuracy
                seconds[i][k] = result.finetune_s + result.eval_s
                write_json(path, {"rungs": rungs, "scores": scores, "seconds": seconds})
                _log(f"  candidate {i}, {rungs[k]} steps: {result.accuracy:.2f}")
        finally:
            pool.close()
    return rungs, scores, seconds  # type: ignore[return-value]  # every entry is set by now


def _screens(bench: Bench, policies: list[dict[str, Any]], folder: Path) -> list[dict[str, Any]]:
    """Each candidate's score and seconds under every screen (and its MACs and parameters),
    measured here on one thread."""
    path = folder / "screens.json"
    rows: list[dict[str, Any]] = _load(path) or []
    evaluators: dict[Screen, Evaluator] = {}
    for i in range(len(policies)):
        row = rows[i] if i < len(rows) else {}
        missing = [name for name in SCREENS if name not in row]
        if not missing:
            continue
        policy = PruningPolicy.from_dict(policies[i])
        for name in missing:
            screen = SCREENS[name]
            key = dataclasses.replace(screen, steps=0)  # one evaluator serves every length
            if key not in evaluators:
                evaluators[key] = _evaluator(bench, screen).with_threads(1)
            t0 = time.perf_counter()
            result = evaluators[key](policy, 0, screen.steps)
            row[name] = {"score": result.accuracy, "seconds": time.perf_counter() - t0}
            row.update(macs=result.macs, params=result.params)
        rows[i:] = [row, *rows[i + 1 :]]
        write_json(path, rows)
        _log(f"  screens of candidate {i}: " + ", ".join(
            f"{n} {row[n]['score']:.2f} ({row[n]['seconds']:.1f} s)" for n in SCREENS
        ))  # fmt: skip
    return rows


def _old_proxy(
    bench: Bench, policies: list[dict[str, Any]], folder: Path
) -> list[dict[str, float]]:
    """Benchmark v1's proxy (cpu-v2 only): 80 steps on the exact train images, scored on a
    split carved from them (memorized) and on the honest validation split."""
    path = folder / "old_proxy.json"
    out: list[dict[str, float]] = _load(path) or []
    if len(out) >= len(policies):
        return out[: len(policies)]
    _log("before: v1 proxy (80 steps on exact train, validation carved from train)")
    ws = bench.ws
    exact = load_cifar10("exact", val_size=1000, seed=0)
    with torch_threads(bench.train_threads):
        for p in policies[len(out) :]:
            model = apply_policy(ws.model, PruningPolicy.from_dict(p), ws.layers, ws.input_shape)
            finetune(model, exact.train, OLD_PROXY, seed=0)
            out.append(
                {
                    "memorized_val": accuracy(model, exact.val),
                    "honest_val": accuracy(model, bench.data.val),
                }
            )
            write_json(path, out)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = study_parser(__doc__ or "")
    ap.add_argument("--n", type=int, default=12, help="candidates (random feasible policies)")
    ap.add_argument(
        "--final-epochs",
        type=float,
        default=None,
        help="epochs of the final recipe (default: the suite's at this budget); a shorter\n"
        "one fits the study into a session and is named in the results",
    )
    args = ap.parse_args(argv)
    bench = study_bench(args)
    folder = args.work / f"proxy-{args.budget}"
    policies = _policies(bench, args.budget, args.n, folder)
    recipe = bench.recipe(args.budget)
    if args.final_epochs is not None:
        recipe = dataclasses.replace(recipe, epochs=args.final_epochs)
    finals = _finals(bench, policies, recipe, folder)
    screens = _screens(bench, policies, folder)  # minutes: known before the rungs' hour
    rungs, rung_scores, rung_seconds = _rungs(bench, policies, folder)
    old = _old_proxy(bench, policies, folder) if args.suite == "cpu-v2" else None
    final_val = [f["val_acc"] for f in finals]

    def entry(
        kind: str, scores: list[float], seconds: list[float | None] | None
    ) -> dict[str, Any]:
        timed = [s for s in seconds or [] if s is not None]
        return {
            "kind": kind,
            "spearman": spearman(scores, final_val),
            "spearman_ci": spearman_ci(scores, final_val),
            # What a search that kept only this proxy's best candidate would lose after the
            # final, in validation points against the best of the candidates.
            "regret": max(final_val) - final_val[int(np.argmax(scores))],
            "seconds": float(np.mean(timed)) if timed else None,
        }

    proxies: dict[str, dict[str, Any]] = {
        name: entry(kind, scores, seconds)
        for name, (kind, scores, seconds) in _proxies(
            screens, rungs, rung_scores, rung_seconds
        ).items()
    }
    if old is not None:
        proxies["v1: 80 steps, memorized validation"] = entry(
            "before", [o["memorized_val"] for o in old], None
        )
    out = {
        "suite": args.suite,
        "model": bench.cfg.model,
        "budget": args.budget,
        "n": len(policies),
        "final_recipe": dataclasses.asdict(recipe),
        "rungs": rungs,
        "proxies": proxies,
        "candidates": [
            {"policy": p, "final": f, "rungs": r, "screens": s}
            for p, f, r, s in zip(policies, finals, rung_scores, screens, strict=True)
        ],
        "provenance": provenance(bench.profile.device, bench.profile.threads, bench.profile.batch),
    }
    name = f"proxy-{bench.cfg.model}-{args.budget}"
    save(name, out, _markdown(out), folder=args.results)
    _plot(out, args.results / f"{name}.png")
    return out


def _screen_label(name: str) -> str:
    return f"{name}, no fine-tune" if SCREENS[name].steps == 0 else name


def _rung_label(k: int, steps: int) -> str:
    return f"rung {k}: {steps} steps"


def _proxies(
    screens: list[dict[str, Any]],
    rungs: list[int],
    rung_scores: list[list[float]],
    rung_seconds: Sequence[Sequence[float | None] | None] | None = None,
) -> dict[str, tuple[str, list[float], list[float | None] | None]]:
    """Each proxy's kind, score per candidate and seconds per candidate (``None``: untimed),
    under the name its table row has."""
    return {
        "MACs": ("zero-cost", [s["macs"] for s in screens], None),
        "parameters": ("zero-cost", [s["params"] for s in screens], None),
        **{
            _screen_label(n): (
                "screen",
                [s[n]["score"] for s in screens],
                [s[n]["seconds"] for s in screens],
            )
            for n in SCREENS
        },
        **{
            _rung_label(k, steps): (
                "rung",
                [r[k] for r in rung_scores],
                [s[k] if s else None for s in rung_seconds] if rung_seconds else None,
            )
            for k, steps in enumerate(rungs)
        },
    }


def proxy_scores(out: dict[str, Any]) -> dict[str, list[float]]:
    """Each proxy's score per candidate, read back from a study's results file."""
    cands = out["candidates"]
    proxies = _proxies([c["screens"] for c in cands], out["rungs"], [c["rungs"] for c in cands])
    return {name: scores for name, (_, scores, _) in proxies.items()}


def frontier(proxies: dict[str, dict[str, Any]]) -> list[str]:
    """The timed proxies no other beats on both counts (cheaper and higher Spearman), cheapest
    first: the cost-vs-faithfulness frontier a search's rung 0 is picked from."""
    timed = {n: p for n, p in proxies.items() if p["seconds"] is not None}
    return sorted(
        (
            n
            for n, p in timed.items()
            if not any(
                q["seconds"] <= p["seconds"] and q["spearman"] > p["spearman"]
                for m, q in timed.items()
                if m != n
            )
        ),
        key=lambda n: timed[n]["seconds"],
    )


def last_rung_seconds(out: dict[str, Any]) -> float | None:
    """Seconds per candidate of the longest rung: the yardstick a screen's cost is read against."""
    return out["proxies"][_rung_label(len(out["rungs"]) - 1, out["rungs"][-1])]["seconds"]


def _markdown(out: dict[str, Any]) -> str:
    prov = out["provenance"]
    last = last_rung_seconds(out)
    recipe = out["final_recipe"]
    md = [
        f"# Proxy → final: {out['model']} at {float(out['budget']):.0%} of dense latency",
        "",
        f"{out['n']} random feasible policies (seeded), each scored by each proxy on the "
        "validation split and then fine-tuned with the final recipe "
        f"({recipe['epochs']:g} epochs on all 50,000 train images, distilled, lr {recipe['lr']}, "
        "one seed); the target is the final model's validation accuracy. Seconds per "
        "candidate on one thread (prune, repair, fine-tune, score). "
        f"{prov['device_name']}, torch {prov['versions']['torch']}, commit "
        f"{prov['git_commit']}, {prov['date']}.",
        "",
        "*Spearman* comes with a 95 % interval from resampling the candidates (a dozen pin a "
        "rank correlation only to several tenths); *regret* is what keeping only the proxy's "
        "top candidate loses after the final, in validation points against the best candidate; "
        "◆ marks the frontier (no proxy is both cheaper and more faithful).",
        "",
        "| proxy | kind | Spearman vs final validation | regret (points) | "
        "seconds per candidate | ÷ last rung's time |",
        "|---|---|---:|---:|---:|---:|",
    ]
    front = frontier(out["proxies"])
    for name, p in out["proxies"].items():
        sec, ci = p["seconds"], p.get("spearman_ci")
        share = f"{sec / last:.3f}" if sec is not None and last else "–"
        interval = f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""
        regret = f"{p['regret']:.2f}" if "regret" in p else "–"
        md.append(
            f"| {name}{' ◆' if name in front else ''} | {p['kind']} | "
            f"{p['spearman']:+.2f}{interval} | {regret} | "
            f"{'–' if sec is None else f'{sec:.1f}'} | {share} |"
        )
    names = list(SCREENS)
    md += [
        "",
        "| candidate | MACs M | params k | "
        + " | ".join(names)
        + " | "
        + " | ".join(f"rung {s} steps" for s in out["rungs"])
        + " | final val | final test | final holdout |",
        "|---:|---:|---:|" + "---:|" * (len(names) + len(out["rungs"])) + "---:|---:|---:|",
    ]
    for i, c in enumerate(out["candidates"]):
        f, s = c["final"], c["screens"]
        md.append(
            f"| {i} | {s['macs'] / 1e6:.2f} | {s['params'] / 1e3:.1f} | "
            + " | ".join(f"{s[n]['score']:.2f}" for n in names)
            + " | "
            + " | ".join(f"{a:.2f}" for a in c["rungs"])
            + f" | {f['val_acc']:.2f} | {f['test_acc']:.2f} | {f.get('holdout_acc', 0):.2f} |"
        )
    return "\n".join(md) + "\n"


def _plot(out: dict[str, Any], path: Path) -> None:
    """Spearman (with its interval) against seconds per candidate, one point per timed proxy,
    with the issue's target: ≥ 0.8 at ≤ 1/20 of the last rung's time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from autoprune._io import write_with

    timed = {n: p for n, p in out["proxies"].items() if p["seconds"] is not None}
    last = last_rung_seconds(out)
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, p in timed.items():
        lo, hi = p.get("spearman_ci") or (p["spearman"], p["spearman"])
        err = [[p["spearman"] - lo], [hi - p["spearman"]]]
        color = "C1" if p["kind"] == "rung" else "C0"
        ax.errorbar(p["seconds"], p["spearman"], yerr=err, fmt="o", c=color, capsize=3)
        ax.annotate(name, (p["seconds"], p["spearman"]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")  # fmt: skip
    if last:
        ax.axvline(last / 20, ls=":", c="gray", label="1/20 of the last rung's time")
    ax.axhline(0.8, ls="--", c="gray", label="Spearman 0.8")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per candidate (1 thread)")
    ax.set_ylabel("Spearman vs final validation")
    title = f"{out['model']} at {float(out['budget']):.0%}: {out['n']} candidates"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    write_with(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)


if __name__ == "__main__":
    main()
