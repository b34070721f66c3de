"""Which proxy ranks candidates like the final fine-tune does across models? Pools finished
:mod:`benchmarks.proxy` studies (one per model, same budget) into one table: each proxy's
Spearman per study and their mean, with a 95 % interval resampling each study's candidates.

    python -m benchmarks.proxy_pool benchmarks/results/proxy-resnet56-0.5.json \\
        benchmarks/results/proxy-resnet20-0.5.json

A screen picked on one model's dozen candidates can rank another model's at random (the
ResNet-56 study's best screen did, on ResNet-20); the mean over models, and the worse of them,
are what a default screen should be chosen by. Writes ``proxy-pooled-<budget>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import RESULTS, provenance, save
from benchmarks._stats import mean_spearman_ci, spearman
from benchmarks.proxy import last_rung_seconds, proxy_scores


def pool(studies: list[dict[str, Any]]) -> dict[str, Any]:
    """Each proxy every study has: its Spearman per study (against the final's validation
    accuracy), their mean with an interval, and its seconds as a share of each study's last
    rung."""
    if len({s["budget"] for s in studies}) != 1:
        raise SystemExit("the studies were run at different budgets: pool one budget at a time")
    by_study = [proxy_scores(s) for s in studies]
    finals = [[c["final"]["val_acc"] for c in s["candidates"]] for s in studies]
    lasts = [last_rung_seconds(s) for s in studies]
    names = [n for n in by_study[0] if all(n in b for b in by_study[1:])]
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        groups = [(b[name], f) for b, f in zip(by_study, finals, strict=True)]
        each = [spearman(x, y) for x, y in groups]
        shares = []
        for s, last in zip(studies, lasts, strict=True):
            sec = s["proxies"][name]["seconds"]
            shares.append(sec / last if sec is not None and last else None)
        rows[name] = {
            "kind": studies[0]["proxies"][name]["kind"],
            "spearman": each,
            "mean": float(np.mean(each)),
            "mean_ci": mean_spearman_ci(groups),
            "worst": min(each),
            "share_of_last_rung": shares,
        }
    return {
        "budget": studies[0]["budget"],
        "models": [s["model"] for s in studies],
        "n": [s["n"] for s in studies],
        "commits": [s["provenance"]["git_commit"] for s in studies],
        "proxies": rows,
    }


def _markdown(out: dict[str, Any]) -> str:
    models = out["models"]
    md = [
        f"# Proxy → final across models at {float(out['budget']):.0%} of dense latency",
        "",
        "Each proxy's Spearman rank correlation with the final fine-tune's validation accuracy "
        "in each study ("
        + ", ".join(
            f"{m}: {n} candidates, commit {c}"
            for m, n, c in zip(models, out["n"], out["commits"], strict=True)
        )
        + "), their mean with a 95 % interval resampling each study's candidates, and the "
        "proxy's seconds per candidate as a share of each study's last rung. "
        f"Pooled at commit {out['provenance']['git_commit']}, {out['provenance']['date']}.",
        "",
        "| proxy | kind | "
        + " | ".join(f"{m}" for m in models)
        + " | mean [95 %] | worst | "
        + " | ".join(f"÷ last rung ({m})" for m in models)
        + " |",
        "|---|---|" + "---:|" * (2 * len(models) + 2),
    ]
    for name, p in out["proxies"].items():
        lo, hi = p["mean_ci"]
        shares = " | ".join("–" if s is None else f"{s:.3f}" for s in p["share_of_last_rung"])
        md.append(
            f"| {name} | {p['kind']} | "
            + " | ".join(f"{r:+.2f}" for r in p["spearman"])
            + f" | {p['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}] | {p['worst']:+.2f} | {shares} |"
        )
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("studies", nargs="+", type=Path, help="benchmarks.proxy results (.json)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder for results files")
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.studies if not p.is_file()]
    if missing:
        raise SystemExit(f"no such study: {', '.join(missing)}")
    out = pool([json.loads(p.read_text()) for p in args.studies])
    out["provenance"] = provenance()
    md = _markdown(out)
    save(f"proxy-pooled-{out['budget']}", out, md, folder=args.results)
    print(md)
    return out


if __name__ == "__main__":
    main()
