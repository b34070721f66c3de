"""How many candidates a screened search looks at in the time benchmark v2's search took, both
run here, one after the other, on the same machine.

    python -m benchmarks.screen_rate                    # ResNet-20 at 50 %: ~3 × 15 min
    python -m benchmarks.screen_rate --methods tpe-deferred   # one screened search only
    python -m benchmarks.screen_rate --screen-images 3983   # screens scored on every image
    python -m benchmarks.screen_rate --suite smoke-v3 --budget 0.7 --work /tmp/rate  # checks it

1. v2's search (suite ``cpu-v2-screen``, method ``optuna``): TPE over one ratio per layer, 24
   candidates, each fine-tuned 100 steps and the best third on to 300 and 900 (successive
   halving); its wall time ``W`` is measured here.
2. each screened search, stopped after ``W`` if it has not finished by then: ``tpe-screen``
   (grouped TPE over the stage space, every candidate reconstructed by least squares and
   scored with no fine-tune step, the best 5 % fine-tuned 300 steps as they appear (lazy
   promotion), the best third of those 900) and ``tpe-deferred`` (the same in two phases: all
   480 screened, then the best 1 % fine-tuned 300 steps, the best third of those 900).

Counted from each run's Optuna study: candidates screened (scored at rung 0) and fine-tune
rungs run. Both searches use the same Ray workers (``search.parallel``) and evaluator; the
machine should be otherwise idle (the CPUs other processes kept busy are recorded).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import optuna

from benchmarks._common import RESULTS, provenance, save, wait_for_quiet
from benchmarks.run import SUITES, Bench, _log

SCREENED_METHODS = ("tpe-screen", "tpe-deferred")


def _search(bench: Bench, budget: str, method: str, stop_after: float | None) -> dict[str, Any]:
    """Run ``method``'s search from scratch (stopped with Ctrl-C after ``stop_after`` s) and
    count what its study holds."""
    folder = bench.folder(budget, method)
    shutil.rmtree(folder, ignore_errors=True)
    timer = None
    if stop_after is not None:  # the search's own Ctrl-C path: in-flight work cancelled
        timer = threading.Timer(stop_after, os.kill, (os.getpid(), signal.SIGINT))
    t0 = time.perf_counter()
    try:
        if timer is not None:
            timer.start()
        bench.search(budget, method)
    except (SystemExit, KeyboardInterrupt):  # "stopped before it finished", as asked
        pass
    finally:
        if timer is not None:
            timer.cancel()
    wall = time.perf_counter() - t0
    finished = (folder / "search.json").is_file()
    study = optuna.load_study(
        study_name=bench.cfg.search.study, storage=f"sqlite:///{folder / 'search' / 'study.db'}"
    )
    trials = study.get_trials(deepcopy=False)
    steps = [sorted(t.intermediate_values) for t in trials]
    first = min((s[0] for s in steps if s), default=None)
    return {
        "method": method,
        "wall_s": wall,
        "finished": finished,  # the search ended by itself, not stopped at the wall time
        "candidates_scored": sum(1 for s in steps if s),
        "screened": sum(1 for s in steps if s and s[0] == 0),
        "first_rung_steps": first,
        "finetune_rungs": sum(1 for s in steps for k in s if k > 0),
    }


def markdown(out: dict[str, Any]) -> str:
    prov, ref, rows = out["provenance"], out["v2"], out["screened"]
    rows = rows if isinstance(rows, list) else [rows]  # files from before --methods

    def ratio(r: dict[str, Any]) -> str:
        return f"{r['candidates_scored'] / max(ref['candidates_scored'], 1):.1f}×"

    return "\n".join(
        [
            f"# Candidates per search wall time: {out['model']} at "
            f"{float(out['budget']):.0%} of dense latency",
            "",
            f"{prov['device_name']} ({prov['cpu_count']} cores), {out['parallel']} Ray workers "
            f"at 1 thread, torch {prov['versions']['torch']}, commit {prov['git_commit']}, "
            f"{prov['date']}; other processes kept {out['other_cpus_before']:.2f} CPUs busy "
            f"before. Screen scored on {out['screen_images'] or 'all'} validation images.",
            "",
            "| search | wall time (s) | finished | candidates scored | of them screened | "
            "fine-tune rungs run | × v2's candidates |",
            "|---|---:|---|---:|---:|---:|---:|",
            *(
                f"| {r['method']} | {r['wall_s']:.0f} | "
                f"{'yes' if r.get('finished', True) else 'stopped'} | {r['candidates_scored']} | "
                f"{r['screened']} | {r['finetune_rungs']} | {ratio(r)} |"
                for r in (ref, *rows)
            ),
            "",
            "A screened search not finished by v2's wall time was stopped there; it counts the "
            "candidates scored by then.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--suite", default="cpu-v2-screen")
    ap.add_argument("--budget", default="0.5")
    ap.add_argument("--work", type=Path, default=Path("runs/bench/screen-rate"))
    ap.add_argument("--screen-images", type=int, default=None, help="default: the suite's")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument(
        "--methods", nargs="+", choices=SCREENED_METHODS, default=list(SCREENED_METHODS)
    )
    args = ap.parse_args(argv)
    bench = Bench(args.suite, args.work, args.suite, [], force_profile=True)
    own = SUITES[args.suite].get("method_overrides", {})
    images = {} if args.screen_images is None else {"fidelity.screen_images": args.screen_images}
    bench.spec["method_overrides"] = {m: {**own.get(m, {}), **images} for m in args.methods}
    quiet = wait_for_quiet(bench.spec.get("quiet_wait_s", 300))
    _log("v2's search (to the end)")
    ref = _search(bench, args.budget, "optuna", None)
    rows = []
    for method in args.methods:
        _log(f"{method} search, stopped after {ref['wall_s']:.0f} s if not done by then")
        rows.append(_search(bench, args.budget, method, ref["wall_s"]))
    out = {
        "provenance": provenance(threads=1),
        "model": bench.cfg.model,
        "budget": args.budget,
        "parallel": bench.cfg.search.parallel,
        "screen_images": bench.spec["method_overrides"][args.methods[0]].get(
            "fidelity.screen_images"
        ),
        "other_cpus_before": quiet,
        "v2": ref,
        "screened": rows,
    }
    md = markdown(out)
    tag = f"-{args.screen_images}" if args.screen_images is not None else ""
    save(f"screen_rate-{bench.cfg.model}-{args.budget}{tag}", out, md, args.results)
    print(md)
    return out


if __name__ == "__main__":
    main()
