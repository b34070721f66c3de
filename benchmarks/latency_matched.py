"""Did every method get the same latency? Time all of a benchmark's final policies together.

    python -m benchmarks.latency_matched [--name cpu-v2] [--sessions 3]   # ~2 min per session
    python -m benchmarks.latency_matched --name cpu-v2 --render   # no timing: re-render after
                                                                  # the results file changed

Each row of a benchmark v2 results file was fitted to the measured budget, and timed after its
final fine-tune, in its own timing session — minutes or hours apart. On a shared or virtualised
CPU the machine's speed drifts between sessions by more than the fit's 1.5 % tolerance, so the
rows may not have received the same latency. This study times the dense model and every row's
final architecture (weights do not change latency) interleaved in one session, several sessions
in a row, and reports each row's share of dense latency: the latency-matched view of the table,
with each row's held-out accuracy beside it (the table the README quotes).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from autoprune._threads import torch_threads
from autoprune.apply import MEASURE
from autoprune.hardware import LUTPredictor
from autoprune.hardware.measure import measure_models
from autoprune.pipeline import ensure_profile
from autoprune.policy import PruningPolicy
from autoprune.pruning import apply_policy
from benchmarks._common import FORCE_PROFILE_HELP, RESULTS, provenance, save, wait_for_quiet
from benchmarks._report import HELD_OUT_HEADER, LABEL, held_out_cells
from benchmarks.run import _log, suite_workspace


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--name", default="cpu-v2", help="benchmark results file to read")
    ap.add_argument("--work", type=Path, default=None, help="its work folder (for the profile)")
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--force-profile", action="store_true", help=FORCE_PROFILE_HELP)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument(
        "--render",
        action="store_true",
        help="time nothing: re-render the markdown from the saved timings and the results\n"
        "file as it is now (after seeds or rows were added to it)",
    )
    args = ap.parse_args(argv)
    source = args.results / f"{args.name}.json"
    if not source.is_file():
        raise SystemExit(f"error: no benchmark results {source}: run benchmarks.run first")
    bench = json.loads(source.read_text())
    if args.render:
        saved = args.results / f"latency_matched-{args.name}.json"
        if not saved.is_file():
            raise SystemExit(f"error: no timings {saved}: run without --render first")
        timings: dict[str, Any] = json.loads(saved.read_text())
        save(timings["name"], timings, markdown(timings, bench), folder=args.results)
        return timings
    work = args.work or Path("runs/bench") / args.name
    _, ws = suite_workspace(bench["suite"], work)
    profile, _, _ = ensure_profile(ws, force=args.force_profile)
    predictor = LUTPredictor(profile)
    rows = bench["rows"]
    policies = [PruningPolicy(profile.model, r["ratios"], round_to=profile.round_to) for r in rows]
    models = [apply_policy(ws.model, p, ws.layers, ws.input_shape) for p in policies]
    measure: dict[str, Any] = dict(MEASURE)
    shares: list[list[float]] = [[] for _ in rows]
    sessions = []
    with torch_threads(profile.threads):
        for k in range(args.sessions):
            quiet = wait_for_quiet()
            _log(f"timing session {k + 1}/{args.sessions}: dense + {len(models)} models")
            dense, *timed = measure_models(
                [ws.model, *models], ws.input_shape, profile.spec, **measure
            )
            sessions.append(
                {
                    "dense_ms": dense.ms,
                    "ms": [t.ms for t in timed],
                    "other_cpus_before": quiet,
                    "other_cpus": dense.other_cpus,
                }
            )
            for s, t in zip(shares, timed, strict=True):
                s.append(t.ms / dense.ms)
    out_rows = [
        {
            "budget": r["budget"],
            "method": r["method"],
            "share_median": statistics.median(s),
            "share_min": min(s),
            "share_max": max(s),
            "table_share": predictor.predict(p) / profile.dense_ms,
            "own_session_share": r["relative_latency"],
            "macs": r["macs"],
        }
        for r, p, s in zip(rows, policies, shares, strict=True)
    ]
    out: dict[str, Any] = {
        "name": f"latency_matched-{args.name}",
        "source": f"{args.name}.json",
        "sessions": sessions,
        "rows": out_rows,
        "measure": MEASURE,
        "provenance": provenance(profile.device, profile.threads, profile.batch),
    }
    md = markdown(out, bench)
    save(out["name"], out, md, folder=args.results)
    print(md)
    return out


def accuracy_table(out: dict[str, Any], bench: dict[str, Any]) -> list[str]:
    """Every row of the benchmark with its held-out accuracy (:func:`held_out_cells`) and its
    share of dense latency as timed here."""
    share = {(r["budget"], r["method"]): r["share_median"] for r in out["rows"]}
    md = [
        HELD_OUT_HEADER + " share of dense, timed together | MACs M |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r, cells in held_out_cells(bench["rows"], bench["dense"]):
        timed = share.get((r["budget"], r["method"]))
        matched = "– (not timed here)" if timed is None else f"{timed:.1%}"
        md.append(f"| {' | '.join(cells)} | {matched} | {r['macs'] / 1e6:.2f} |")
    md += [
        "",
        f"Accuracy from `{out['source']}` as it is now; dense: test "
        f"{bench['dense']['test_acc']:.2f}, holdout {bench['dense']['holdout_acc']:.2f} %. "
        "✓ / ✗: the paired interval excludes zero in favour / against.",
    ]
    return md


def markdown(out: dict[str, Any], bench: dict[str, Any] | None = None) -> str:
    """The timings; with ``bench`` (the results file timed) the accuracy table beside them."""
    prov = out["provenance"]
    dense = [s["dense_ms"] for s in out["sessions"]]
    md = [
        f"# Latency-matched view of `{out['source']}`",
        "",
        f"{prov['device_name']}, {prov['threads']} thread(s), batch {prov['batch']}, torch "
        f"{prov['versions']['torch']}; commit {prov['git_commit']}; {prov['date']}. The dense "
        f"model and every row's final architecture timed interleaved in one session, "
        f"{len(dense)} sessions in a row (dense {min(dense):.3f}–{max(dense):.3f} ms).",
        "",
        "| budget | method | share of dense, one session (median [min, max]) | "
        "in its own session | table | MACs M |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in out["rows"]:
        md.append(
            f"| {float(r['budget']):.0%} | {LABEL[r['method']]} | {r['share_median']:.1%} "
            f"[{r['share_min']:.1%}, {r['share_max']:.1%}] | {r['own_session_share']:.1%} | "
            f"{r['table_share']:.1%} | {r['macs'] / 1e6:.2f} |"
        )
    if bench is not None:
        md += ["", "## Accuracy at the latency timed here", "", *accuracy_table(out, bench)]
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
