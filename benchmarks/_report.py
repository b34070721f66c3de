"""The markdown of benchmark v2 (``benchmarks/run.py``): accuracy with 95 % intervals, paired
differences against the best baseline, latency, and every run, computed from the raw rows."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from typing import Any

import numpy as np

from benchmarks._stats import bootstrap_ci, paired_diff, unpack

SEARCHED = ("optuna", "amc", "tpe-screen", "tpe-deferred")
BASELINES = ("random", "uniform", "global")
LABEL = {
    "optuna": "autoprune Optuna TPE",
    "amc": "autoprune AMC (DDPG)",
    "random": "random feasible, best of N",
    "uniform": "uniform ratio",
    "global": "Torch-Pruning global magnitude",
    "lamp": "Torch-Pruning global LAMP",
    "tpe-screen": "autoprune TPE, screened (v3 search)",
    "tpe-deferred": "autoprune TPE, screened in two phases",
}
HELD_OUT = ("test", "holdout")  # never seen by the search; "all" = both together


def correct(finals: list[dict[str, Any]], split: str) -> np.ndarray:
    """Seeds × images correctness; ``all`` joins test and holdout."""
    if split == "all":
        return np.concatenate([correct(finals, s) for s in HELD_OUT if f"{s}_n" in finals[0]], 1)
    return np.stack([unpack(f[f"{split}_correct"], f[f"{split}_n"]) for f in finals])


def ci_cell(values: tuple[float, float, float]) -> str:
    mean, lo, hi = values
    return f"{mean:.2f} [{lo:.2f}, {hi:.2f}]"


def diff_cell(values: tuple[float, float, float]) -> str:
    mean, lo, hi = values
    mark = " ✓" if lo > 0 else (" ✗" if hi < 0 else "")
    return f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]{mark}"


def best_baseline(
    rows: list[dict[str, Any]], baselines: tuple[str, ...] = BASELINES
) -> dict[str, Any] | None:
    """The baseline with the best mean accuracy on all held-out images."""
    base = [r for r in rows if r["method"] in baselines]
    return max(base, key=lambda r: correct(r["finals"], "all").mean(), default=None)


def held_out_cells(
    rows: list[dict[str, Any]], dense: dict[str, Any], baselines: tuple[str, ...] = BASELINES
) -> Iterator[tuple[dict[str, Any], list[str]]]:
    """Per row, budget by budget: budget, method, seeds, exact test, holdout and all held-out
    accuracy (95 % intervals), the paired Δ to the budget's best baseline, and the test drop."""
    for budget in dict.fromkeys(r["budget"] for r in rows):
        these = [r for r in rows if r["budget"] == budget]
        ref = best_baseline(these, baselines)
        for r in these:
            f = r["finals"]
            diff = (
                "–"
                if ref is None
                else "(best baseline)"
                if r is ref
                else diff_cell(paired_diff(correct(f, "all"), correct(ref["finals"], "all")))
            )
            drop = statistics.mean(x["test_acc"] for x in f) - dense["test_acc"]
            yield (
                r,
                [
                    f"{float(budget):.0%}",
                    LABEL[r["method"]],
                    str(len(f)),
                    ci_cell(bootstrap_ci(correct(f, "test"))),
                    ci_cell(bootstrap_ci(correct(f, "holdout"))) if "holdout_n" in f[0] else "–",
                    ci_cell(bootstrap_ci(correct(f, "all"))),
                    diff,
                    f"{drop:+.2f}",
                ],
            )


HELD_OUT_HEADER = (
    "| budget | method | seeds | exact test (1,017) | holdout (5,000) | all 6,017 held-out | "
    "Δ all vs best baseline (paired) | test drop |"
)


Cells = list[tuple[dict[str, Any], list[str]]]  # rows with their held_out_cells


def summary_table(held: Cells) -> list[str]:
    """Every budget in one table (the one the README quotes)."""
    md = [
        HELD_OUT_HEADER + " measured ÷ budget | table ÷ dense | speed-up (b1) | MACs M |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r, cells in held:
        md.append(
            f"| {' | '.join(cells)} | {r['budget_used']:.1%} | {table_share(r)} | "
            f"{1 / r['relative_latency']:.2f}× | {r['macs'] / 1e6:.2f} |"
        )
    return md


def table_share(row: dict[str, Any]) -> str:
    """The fitted policy's latency as the profile's table predicts it, as a share of the
    table's dense latency: one yardstick for every row, free of timing noise."""
    if "predicted_ms" not in row:
        return "–"
    return f"{row['predicted_ms'] / row['predicted_dense_ms']:.1%}"


def budget_table(
    held: Cells, dense: dict[str, Any], baselines: tuple[str, ...] = BASELINES
) -> list[str]:
    """One budget's rows in full: proxy and validation scores, the held-out cells, latency,
    throughput and wall times."""
    rows = [r for r, _ in held]
    ref = best_baseline(rows, baselines)
    md = [
        "| method | proxy val | val | test (exact 1,017) | holdout | all held-out | "
        f"Δ all vs {ref['method'] if ref else 'baseline'} (paired) | measured ÷ budget | "
        "table ÷ dense | speed-up | MACs M | b64 img/s | search min | final min |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r, cells in held:
        f = r["finals"]
        test, holdout, all_, diff = cells[3:7]
        md.append(
            f"| {LABEL[r['method']]} | {r['search']['best']['accuracy']:.2f} | "
            f"{statistics.mean(x['val_acc'] for x in f):.2f} | {test} | {holdout} | {all_} | "
            f"{'–' if r is ref else diff} | {r['budget_used']:.1%} | "
            f"{table_share(r)} | {1 / r['relative_latency']:.2f}× | {r['macs'] / 1e6:.2f} | "
            f"{r['b64_images_per_s']:.0f} | {r['search']['search_s'] / 60:.0f} | "
            f"{statistics.mean(x['finetune_s'] for x in f) / 60:.1f} |"
        )
    md += [
        "",
        f"Dense: val {dense['val_acc']:.2f}, test {dense['test_acc']:.2f}, holdout "
        f"{dense.get('holdout_acc', float('nan')):.2f} %, {dense['macs'] / 1e6:.1f} M MACs; "
        f"{rows[0]['dense_b64_images_per_s']:.0f} img/s at batch 64 (measured beside the "
        f"{LABEL[rows[0]['method']]} row).",
    ]
    return md


def _epochs(out: dict[str, Any]) -> str:
    """The final recipe's length at the budgets that have rows: one number where they agree."""
    default = out["config"]["final_finetune"]["epochs"]
    suite = out["settings"].get("final_epochs") or {}
    ran = {r["budget"] for r in out["rows"]}
    per = {b: suite.get(b, default) for b in out["settings"]["budgets"] if b in ran}
    if len(set(per.values())) <= 1:
        return f"{next(iter(per.values()), default):g} epochs"
    return ", ".join(f"{e:g} epochs at {float(b):.0%}" for b, e in per.items())


def _early_stop(out: dict[str, Any]) -> str:
    """The final recipe's early stop as run: the config's patience unless the run set its own."""
    ft = out["config"]["final_finetune"]
    patience = out["settings"].get("final_patience", ft.get("patience", 0))
    if not patience:
        return "no early stop: the whole schedule, final weights"
    return (
        f"early stop on validation after {patience} checks × {ft['eval_every']} steps without "
        "improvement, best check's weights kept"
    )


def _steps(final: dict[str, Any]) -> str:
    """Final fine-tune steps run of planned, and the step whose weights were kept when an
    earlier check won (runs recorded before these fields: "–")."""
    if "steps_run" not in final:
        return "–"
    run, kept = final["steps_run"], final.get("kept_step", final["steps_run"])
    cell = (
        f"{run:,}" if run == final["steps_planned"] else f"{run:,} of {final['steps_planned']:,}"
    )
    return cell if kept == run else f"{cell}, kept {kept:,}"


def _seeds(out: dict[str, Any]) -> str:
    """The suite's seeds, and any row's extra ones (a later run can add seeds to some rows)."""
    base = list(out["settings"]["seeds"])
    more = sorted({f["seed"] for r in out["rows"] for f in r["finals"]} - set(base))
    if not more:
        return f"seeds {base}"
    return f"seeds {base} (rows whose *seeds* column says more: also {more})"


def _search_text(out: dict[str, Any]) -> str:
    """How candidates were proposed and scored (the fidelity rungs, and a screening rung)."""
    cfg, s = out["config"], out["settings"]
    fid, ft = cfg["fidelity"], cfg["short_finetune"]
    ran = {r["method"] for r in out["rows"]}  # the methods in this file, not all the suite's
    rules = [LABEL[m] for m in ("uniform", "global", "lamp") if m in ran]
    screen = fid.get("screen", "none")
    amc = "; AMC in a space of one ratio per layer" if screen != "none" and "amc" in ran else ""
    text = (
        f"Each method proposes {s['trials']} candidates "
        f"({', '.join(rules) or 'uniform and global magnitude'}: one{amc}). "
    )
    fine = (
        f"fine-tuned {fid['min_steps']} steps (batch {ft['batch_size']}, lr {ft['lr']}, "
        f"distillation {ft['distill']}) and scored on validation"
    )
    if screen != "none":
        space = cfg["search"].get("space", "layer")
        return text + (
            f"Searchers draw in the `{space}` space. Every candidate is pruned, repaired by "
            + ("least-squares reconstruction" if screen == "reconstruct" else "batch-norm")
            + f" on {fid['calibration_images']} train images and scored on validation with no "
            f"fine-tune step (the screen); the best {fid['screen_keep']:.0%} go on: pruned again, "
            + fine
            + f"; the best 1/{fid['reduction_factor']} of those go on to "
            f"{fid['reduction_factor']}× longer fine-tunes, {fid['rungs']} fine-tune rungs. "
        )
    return text + (
        f"Every candidate is pruned, {fine}; Optuna's {fid['pruner'].replace('_', ' ')} pruner "
        f"lets the best 1/{fid['reduction_factor']} go on to {fid['reduction_factor']}× longer "
        f"fine-tunes, {fid['rungs']} rungs in all. "
    )


def _preregistered(out: dict[str, Any], held: Cells, baselines: tuple[str, ...]) -> list[str]:
    """The claim as pre-registered (before any final ran) and what came out of it, budget by
    budget: the primary method against the best of the baselines, paired on all held-out images."""
    pre = out["settings"].get("preregistered")
    if not pre:
        follow = out["settings"].get("follow_up")
        if follow:
            return [f"A follow-up of a pre-registered suite, not part of its test: {follow}.", ""]
        return []
    md = ["## Pre-registered claim", "", pre["text"], ""]
    for budget in dict.fromkeys(r["budget"] for r, _ in held):
        rows = [r for r, _ in held if r["budget"] == budget]
        ref = best_baseline(rows, baselines)
        primary = next((r for r in rows if r["method"] == pre["primary"]), None)
        if ref is None or primary is None:
            md.append(f"- {float(budget):.0%}: not decided yet (rows missing).")
            continue
        seeds = min(len(primary["finals"]), len(ref["finals"]))
        mean, lo, hi = paired_diff(
            correct(primary["finals"], "all"), correct(ref["finals"], "all")
        )
        verdict = "holds" if lo > 0 else ("fails: the rule wins" if hi < 0 else "does not hold")
        want = len(pre["seeds"])
        done = "" if seeds >= want else f" (provisional: {seeds} of {want} seeds)"
        md.append(
            f"- {float(budget):.0%}: {LABEL[pre['primary']]} − {LABEL[ref['method']]} (the best "
            f"rule) = {mean:+.2f} [{lo:+.2f}, {hi:+.2f}] points on all held-out images: "
            f"the claim {verdict}{done}."
        )
    return [*md, ""]


def markdown(out: dict[str, Any]) -> str:
    prov, cfg, data, dense = out["provenance"], out["config"], out["data"], out["dense"]
    rows, s = out["rows"], out["settings"]
    ft = cfg["final_finetune"]
    md = [
        f"# Benchmark `{out['name']}`: {cfg['model']} on CIFAR-10 ({data['source']})",
        "",
        f"{prov['device_name']} ({prov['cpu_count']} cores); latency at {prov['threads']} "
        f"thread(s), batch {prov['batch']}; training on {out['train_threads']} threads; torch "
        f"{prov['versions']['torch']}, torch-pruning {prov['versions']['torch_pruning']}, optuna "
        f"{prov['versions']['optuna']}; commit {prov['git_commit']}; written {prov['date']}.",
        "",
        *(line for note in out.get("notes", []) for line in (note, "")),
        "Splits (original CIFAR-10 rows; a test asserts they are disjoint): "
        + ", ".join(
            f"{k} {v['images']:,} ({v['pool']} set)"
            for k, v in data.items()
            if isinstance(v, dict)
        )
        + ". Validation is the search reward and the early-stop signal; test and holdout are "
        "read only for this table.",
        "",
        _search_text(out)
        + "*Proxy val* is the chosen candidate's score at the last rung. Its policy is fitted to "
        "the budget as measured beside the dense model, then fine-tuned with the final recipe "
        f"({_epochs(out)}, batch {ft['batch_size']}, lr {ft['lr']}, distillation "
        f"{ft['distill']}, {_early_stop(out)}) with {_seeds(out)}. Accuracies are the "
        "mean over seeds with a 95 % bootstrap interval that resamples the test images and the "
        "seeds (so the fine-tune's seed-to-seed spread counts); *Δ* is the paired difference to "
        "the best baseline on all 6,017 held-out images (the same images resampled for both, "
        "each one's seeds separately; ✓ the interval excludes zero in favour, ✗ against). "
        "*Measured ÷ budget* and "
        "*speed-up* come from one timing of the fine-tuned model beside the dense one; "
        "*table ÷ dense* is the fitted policy's latency as the profile's table predicts it, "
        "the same yardstick for every row, free of the machine's timing noise."
        + (
            " Here every method's policy was fitted in the same timing rounds as the others' "
            "at its budget, so all rows got the same measured latency"
            + (f" (searches reused from `{s['search_from']}`)" if s.get("search_from") else "")
            + "."
            if s.get("fit") == "joint"
            else ""
        ),
        "",
    ]
    baselines = tuple(s.get("baselines", BASELINES))
    held = list(held_out_cells(rows, dense, baselines))  # the bootstraps, once for all tables
    md += [*_preregistered(out, held, baselines), "## Summary", "", *summary_table(held), ""]
    for budget in dict.fromkeys(r["budget"] for r in rows):
        these = [(r, cells) for r, cells in held if r["budget"] == budget]
        md += [
            f"## {float(budget):.0%} of dense latency",
            "",
            *budget_table(these, dense, baselines),
            "",
        ]
    md += [
        "## Every run",
        "",
        "| budget | method | seed | val | test | holdout | trials (pruned) | rung evals | "
        "measured ms (budget) | dense ms | fit steps | params K | final steps | final min |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for f in r["finals"]:
            md.append(
                f"| {r['budget']} | {r['method']} | {f['seed']} | {f['val_acc']:.2f} | "
                f"{f['test_acc']:.2f} | {f.get('holdout_acc', float('nan')):.2f} | "
                f"{r['search']['trials']} ({r['search']['pruned']}) | "
                f"{r['search']['rung_evaluations']} | {r['measured_ms']:.3f} "
                f"({r['budget_ms']:.3f}) | {r['dense_ms']:.3f} | {len(r['device_fit'])} | "
                f"{r['params'] / 1e3:.1f} | {_steps(f)} | {f['finetune_s'] / 60:.1f} |"
            )
    return "\n".join(md) + "\n"


__all__ = [
    "HELD_OUT_HEADER",
    "best_baseline",
    "ci_cell",
    "correct",
    "diff_cell",
    "held_out_cells",
    "markdown",
    "summary_table",
]
