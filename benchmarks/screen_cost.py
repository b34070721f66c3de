"""What a screen (rung 0: prune, repair by least squares, score with no fine-tune step) costs,
part by part, and how many validation images its score needs.

    python -m benchmarks.screen_cost --suite cpu-v2 --budget 0.5 --n 40
    python -m benchmarks.screen_cost --suite cpu-v3 --budget 0.5 --n 24 --work runs/bench/cpu-v3

For ``--n`` random feasible policies at the budget (the proxy study's: a seeded random
searcher's first proposals), each is pruned and reconstructed (:mod:`autoprune.reconstruct`) on
one thread, then scored on every validation image, keeping each image's hit. From the hits, the
score on the sample of ``k`` images a search would screen on (``fidelity.screen_images: k``) is
known for every ``k`` at no extra cost: the table gives, per ``k``, the Spearman correlation of
those scores with the full split's over the candidates, and the seconds a screen would take
scoring ``k`` images (prune and repair as measured, scoring scaled by ``k``). A screen's score
only has to sort hundreds of candidates into the few worth fine-tuning; where a subset ranks
like the whole split, it screens more candidates in the same time. Each candidate is saved as
it finishes (rerun to resume).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoprune._io import write_json
from autoprune._threads import torch_threads
from autoprune.evaluate import seeded_sample
from autoprune.policy import PruningPolicy
from autoprune.pruning import make_permanent
from benchmarks._common import provenance, save
from benchmarks._final import study_bench, study_parser
from benchmarks._stats import spearman
from benchmarks.proxy import Screen, _evaluator, _load, _policies
from benchmarks.run import Bench, _log

SUBSETS = (250, 500, 1000, 2000)


def screen_hits(bench: Bench, policies: list[dict[str, Any]], folder: Path) -> list[dict]:
    """Per candidate: seconds to prune, to reconstruct and to score, and one hit per
    validation image (a 0/1 string), measured on one thread."""
    path = folder / "hits.json"
    rows: list[dict[str, Any]] = _load(path) or []
    ev = _evaluator(bench, Screen("reconstruct"))
    for i in range(len(rows), len(policies)):
        policy = PruningPolicy.from_dict(policies[i])
        with torch_threads(1):
            t0 = time.perf_counter()
            plain = ev.prune(policy, "none")
            t1 = time.perf_counter()
            del plain
            model = make_permanent(ev.prune(policy, "reconstruct")).eval()
            t2 = time.perf_counter()
            with torch.inference_mode():
                hits = torch.cat(
                    [model(x).argmax(1) == y for x, y in ev.val.batches(ev.eval_batch_size)]
                )
            t3 = time.perf_counter()
        rows.append(
            {
                "prune_s": t1 - t0,
                "reconstruct_s": (t2 - t1) - (t1 - t0),  # pruning again, then the repair
                "score_s": t3 - t2,
                "hits": "".join("1" if h else "0" for h in hits.tolist()),
            }
        )
        write_json(path, rows)
        _log(f"  candidate {i}: {100 * hits.float().mean():.2f} % in {t3 - t0:.1f} s")
    return rows


def table(rows: list[dict[str, Any]], subsets: tuple[int, ...] = SUBSETS) -> list[dict]:
    """Per subset size: Spearman against the full split's score, and seconds per screen."""
    hits = np.array([[c == "1" for c in r["hits"]] for r in rows], dtype=float)
    n = hits.shape[1]
    order = seeded_sample(n, n).numpy()  # the evaluator's: the first k are a screen's images
    full = hits.mean(1).tolist()
    fixed = np.mean([r["prune_s"] + r["reconstruct_s"] for r in rows])
    score = np.mean([r["score_s"] for r in rows])
    out = []
    for k in [*(k for k in subsets if k < n), n]:
        part = hits[:, order[:k]].mean(1).tolist()
        out.append(
            {
                "images": k,
                "spearman_vs_full": spearman(part, full),
                "seconds": float(fixed + score * k / n),
            }
        )
    return out


def markdown(out: dict[str, Any]) -> str:
    prov, parts = out["provenance"], out["parts"]
    md = [
        f"# Screen cost: {out['model']} at {float(out['budget']):.0%} of dense latency",
        "",
        f"{prov['device_name']} ({prov['cpu_count']} cores), 1 thread, torch "
        f"{prov['versions']['torch']}, commit {prov['git_commit']}, {prov['date']}. "
        f"{out['n']} random feasible policies; validation split of {out['val_images']} "
        f"images. {out.get('note', '')}",
        "",
        f"Per screen (means): prune {parts['prune_s']:.2f} s, least-squares reconstruction "
        f"{parts['reconstruct_s']:.2f} s, scoring all validation images {parts['score_s']:.2f} s.",
        "",
        "| images scored | Spearman vs all | seconds per screen |",
        "|---:|---:|---:|",
    ]
    md += [
        f"| {r['images']} | {r['spearman_vs_full']:+.3f} | {r['seconds']:.2f} |"
        for r in out["table"]
    ]
    return "\n".join([*md, ""])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = study_parser(__doc__ or "")
    ap.add_argument("--n", type=int, default=40, help="candidates (random feasible policies)")
    ap.add_argument("--note", default="", help="a sentence for the results (e.g. load)")
    args = ap.parse_args(argv)
    bench = study_bench(args)
    folder = args.work / f"screen-{args.budget}"
    policies = _policies(bench, args.budget, args.n, folder)
    rows = screen_hits(bench, policies, folder)
    parts = {
        k: float(np.mean([r[k] for r in rows])) for k in ("prune_s", "reconstruct_s", "score_s")
    }
    out = {
        "provenance": provenance(threads=1),
        "model": bench.cfg.model,
        "budget": args.budget,
        "n": len(rows),
        "val_images": len(rows[0]["hits"]),
        "note": args.note,
        "parts": parts,
        "table": table(rows),
    }
    md = markdown(out)
    save(f"screen_cost-{bench.cfg.model}-{args.budget}", out, md, args.results)
    print(md)
    return out


if __name__ == "__main__":
    main()
