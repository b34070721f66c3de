"""Does the final fine-tune's early stop cost accuracy? The same fitted policy and seed trained
with the early stop and without it, compared on the held-out images.

    python -m benchmarks.run --suite cpu-v2-matched --budgets 0.7 --final-epochs 14 \\
        --final-patience 0 --methods optuna --seeds 1 --work runs/bench/cpu-v2-matched-70 \\
        --name cpu-v2-matched-70-14ep-p0          # the whole schedule again, ~35 min per final
    python -m benchmarks.early_stop --steps benchmarks/results/cpu-v2-matched-70-14ep-steps \\
        --tag 14ep                                # seconds: compares, trains nothing

The final recipe stops when validation has not improved for a few checks and keeps the best
check's weights; inside a cosine schedule that can keep mid-schedule weights, before the
learning rate has decayed. ``--final-patience 0`` runs the whole schedule and keeps the final
weights. For every ``final-seedS-TAG.json`` of a work (or steps) folder that has a
``final-seedS-TAG-p0.json`` beside it, this prints both runs and the paired difference
(whole schedule minus early stop) on the exact test images, the holdout and all held-out
images, with 95 % bootstrap intervals over the images; the last row is the mean over the pairs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import provenance, save
from benchmarks._report import HELD_OUT, LABEL, _steps, correct, diff_cell
from benchmarks._stats import paired_diff

SPLITS = (*HELD_OUT, "all")
RUNS = ("whole", "early")  # Δ = whole schedule minus early stop


def pairs(steps: Path, tag: str) -> list[dict[str, Any]]:
    """Every (budget, method, seed) with both finals: ``early`` (the suite's early stop) and
    ``whole`` (patience 0), as the runner wrote them."""
    found = []
    for whole_path in sorted(steps.glob(f"budget-*/*/final-seed*-{tag}-p0.json")):
        early_path = whole_path.with_name(whole_path.name.replace("-p0.json", ".json"))
        if not early_path.exists():
            continue
        early, whole = (json.loads(p.read_text()) for p in (early_path, whole_path))
        found.append(
            {
                "budget": whole_path.parent.parent.name.removeprefix("budget-"),
                "method": whole_path.parent.name,
                "seed": whole["seed"],
                "early": early,
                "whole": whole,
            }
        )
    return found


def compare(found: list[dict[str, Any]]) -> dict[str, Any]:
    """Per pair and pooled: whole schedule minus early stop, in points, per held-out split."""
    out: dict[str, Any] = {"pairs": [], "pooled": {}}
    for p in found:
        out["pairs"].append(
            {
                **{k: p[k] for k in ("budget", "method", "seed")},
                **{
                    run: {
                        "steps": _steps(p[run]),
                        **{s: p[run][f"{s}_acc"] for s in ("val", *HELD_OUT)},
                    }
                    for run in RUNS
                },
                "diff": {s: paired_diff(*(correct([p[r]], s) for r in RUNS)) for s in SPLITS},
            }
        )
    if len(found) > 1:  # the mean over these pairs: each pair's images side by side
        out["pooled"] = {
            s: paired_diff(*(np.hstack([correct([p[r]], s) for p in found]) for r in RUNS))
            for s in SPLITS
        }
    return out


def markdown(data: dict[str, Any]) -> str:
    prov = data["provenance"]
    md = [
        f"# Early stop vs the whole schedule: `{data['steps']}` (finals `{data['tag']}`)",
        "",
        f"`python -m benchmarks.early_stop --steps {data['steps']} --tag {data['tag']}`, "
        f"commit {prov['git_commit']}, {prov['date']} (no timing, no training: it reads the "
        "finals the runner saved). *Early stop*: the suite's final recipe (stops when "
        "validation has not improved for a few checks, keeps the best check's weights; *steps*: "
        "run of planned, and the step kept where recorded); *whole schedule*: the same fitted "
        "policy and seed rerun with `--final-patience 0` (every step, final weights). Δ = whole "
        "minus early in points, paired on the same images, 95 % bootstrap interval over the "
        "images (✓ excludes zero in favour of the whole schedule, ✗ against); the last row is "
        "the mean over the pairs, the pairs' images resampled side by side.",
        "",
        "| budget | method | seed | early stop: steps | val | exact test | holdout | whole "
        "schedule: steps | val | exact test | holdout | Δ exact test | Δ holdout | Δ all "
        "held-out |",
        "|---|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in data["pairs"]:
        runs = [
            f"{p[r]['steps']} | {p[r]['val']:.2f} | {p[r]['test']:.2f} | {p[r]['holdout']:.2f}"
            for r in ("early", "whole")
        ]
        md.append(
            f"| {float(p['budget']):.0%} | {LABEL[p['method']]} | {p['seed']} | {runs[0]} | "
            f"{runs[1]} | " + " | ".join(diff_cell(p["diff"][s]) for s in SPLITS) + " |"
        )
    if data["pooled"]:
        cells = " | ".join(diff_cell(data["pooled"][s]) for s in SPLITS)
        md.append(f"| | all {len(data['pairs'])} pairs | | | | | | | | | | {cells} |")
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--steps", type=Path, required=True, help="work or steps folder to read")
    ap.add_argument("--tag", default="14ep", help="the finals' tag, e.g. 14ep (final-seed0-14ep)")
    ap.add_argument("--name", default=None, help="results name (default: from the folder)")
    args = ap.parse_args(argv)
    found = pairs(args.steps, args.tag)
    if not found:
        raise SystemExit(
            f"no final-seed*-{args.tag}-p0.json with an early-stop twin under {args.steps}"
        )
    name = args.name or f"early_stop-{args.steps.name.removesuffix('-steps')}"
    data = {"provenance": provenance(), "steps": str(args.steps), "tag": args.tag}
    data.update(compare(found))
    md = markdown(data)
    save(name, data, md)
    print(md)
    return data


if __name__ == "__main__":
    main()
