"""Searches on a cluster: several drivers on one study in PostgreSQL, faults survived, and what
a second and third driver buy.

    python -m benchmarks.cluster [--trials 36] [--steps 20]   # ~10 min on 2 cores

On this machine, with a PostgreSQL server and a Ray cluster head (6 CPUs) started for the run:

1. *fault run*: 3 drivers × 2 workers (``autoprune search --storage postgresql://… --address
   … --parallel 2``) on one study; driver 0 killed with SIGKILL while it runs a trial; the
   database restarted once under the two others; then driver 0 resumed and ``autoprune report``
   run from every driver's folder. Recorded: trials, their fates, retries, candidates
   evaluated twice, trials left unaccounted, whether every driver reads the same best policy.
2. *scaling*: the same search with 1 driver × 6 workers and with 3 drivers × 2 workers (same
   total workers), wall time from the first start to the last finish → trials per hour.

Candidates are the bundled ResNet-20 on 2,048 bundled train images, ``--steps`` fine-tune steps
(batch 32), scored on 256 validation images: small, so the figures show the drivers' cost.
Writes ``benchmarks/results/cluster.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import yaml

from autoprune.config import set_dotted
from autoprune.search.storage import open_storage
from benchmarks._common import RESULTS, provenance, save
from benchmarks._services import PostgresServer, RayHead

REPO = Path(__file__).resolve().parent.parent


def write_config(folder: Path, trials: int, steps: int, **changes: Any) -> Path:
    """A small search config (bundled ResNet-20 and images) for ``trials`` candidates."""
    cfg = yaml.safe_load((REPO / "search_spaces/resnet20_cifar10.yaml").read_text())
    cfg.update(profile=str(folder / "profile.json"), profile_grid_points=3, budget="0.8")
    cfg["dataset"].update(val_size=256, train_limit=2048)
    cfg["search"].update(trials=trials, startup_trials=4, heartbeat_s=2, retries=3)
    cfg["short_finetune"].update(steps=steps, batch_size=32)
    cfg["fidelity"] = {"min_steps": max(1, steps // 2), "rungs": 2, "reduction_factor": 2}
    set_dotted(cfg, changes)
    path = folder / f"cfg-{trials}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "autoprune.cli", *args]


def env() -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}


def driver(cfg: Path, run: Path, storage: str, study: str, *extra: str) -> subprocess.Popen[str]:
    """``autoprune search`` as a separate process (a driver), output captured."""
    return subprocess.Popen(
        cli("search", "-c", str(cfg), "--run-dir", str(run), "--storage", storage,
            "--study", study, *extra),
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def finish(procs: list[subprocess.Popen[str]], timeout: float = 900) -> None:
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        if p.returncode:
            raise RuntimeError(f"a driver failed ({p.returncode}):\n{out[-3000:]}")


def study_of(storage: str, name: str) -> optuna.Study:
    store = open_storage(storage)
    assert store is not None
    return optuna.load_study(study_name=name, storage=store)


def accounting(study: optuna.Study) -> dict[str, Any]:
    """Every trial's fate: recorded candidates (COMPLETE, PRUNED, or FAIL from the evaluation),
    trials failed because their driver died and queued again, trials abandoned before they
    held a candidate, trials given back as surplus, trials left unaccounted (still running or
    queued, or failed without a record or a retry), and candidates evaluated twice."""
    trials = study.get_trials(deepcopy=False)
    # A retry names every trial it stands for: Optuna's callback keeps the whole chain (a retry
    # that failed too, retried again) in ``retry_history``; the ledger's own in ``requeued_from``.
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    retried |= {t.user_attrs["requeued_from"] for t in trials if "requeued_from" in t.user_attrs}
    recorded = [t for t in trials if "record" in t.user_attrs]
    # Asked for, then lost by its driver (a dropped connection, a kill) before it held
    # parameters: no candidate, never counted towards the search's trials, not queued again.
    abandoned = [t.number for t in trials if t.state.name == "FAIL" and not t.params]
    # Asked for by a driver that had counted a free place another driver took at the same
    # moment: given back (the later trial number gives way), no candidate.
    surplus = [t.number for t in trials if t.state.name == "FAIL" and t.user_attrs.get("surplus")]
    unaccounted = [
        f"{t.number} {t.state.name}"
        for t in trials
        if t.state.name not in ("COMPLETE", "PRUNED", "FAIL")
        or (
            t.state.name == "FAIL"
            and "record" not in t.user_attrs
            and t.number not in retried
            and t.number not in abandoned
            and t.number not in surplus
        )
    ]
    params = Counter(json.dumps(t.params, sort_keys=True) for t in recorded)
    return {
        "trials": len(trials),
        "states": dict(Counter(t.state.name for t in trials)),
        "recorded": len(recorded),
        "retried": len(retried),
        "abandoned": len(abandoned),
        "surplus": len(surplus),
        "evaluated_twice": sum(n - 1 for n in params.values()),
        "unaccounted": unaccounted,
        "recording_drivers": len({t.user_attrs.get("driver") for t in recorded}),
    }


def running_in(storage: str, study: str, run: Path) -> bool:
    try:
        trials = study_of(storage, study).get_trials(deepcopy=False)
    except Exception:  # not created yet
        return False
    return any(  # a candidate being evaluated: parameters, a trial number, a driver
        t.state.name == "RUNNING"
        and t.params
        and "trial" in t.user_attrs
        and str(t.user_attrs.get("driver", "")).endswith(str(run))
        for t in trials
    )


def fault_run(
    cfg: Path, folder: Path, pg: PostgresServer, ray: str, study: str = "faults"
) -> dict[str, Any]:
    """3 drivers × 2 workers; driver 0 SIGKILLed mid-trial; the database restarted; driver 0
    resumed; a report from every driver's folder. Returns the figures."""
    runs = [(folder / f"driver{i}").resolve() for i in range(3)]
    extra = ("--address", ray, "--parallel", "2")
    t0 = time.perf_counter()
    procs = [driver(cfg, run, pg.url, study, *extra) for run in runs]
    deadline = time.monotonic() + 300
    while not running_in(pg.url, study, runs[0]):
        if procs[0].poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("driver 0 never ran a trial")
        time.sleep(0.2)
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait()
    killed_at = time.perf_counter() - t0
    pg.restart()
    restarted_at = time.perf_counter() - t0
    finish(procs[1:])
    finish([driver(cfg, runs[0], pg.url, study, "--resume")])
    out = subprocess.PIPE
    reports = [
        subprocess.Popen(cli("report", str(r)), env=env(), stdout=out, text=True) for r in runs
    ]
    finish(reports)
    best = [json.loads((run / "best_policy.json").read_text()) for run in runs]
    logs = [len((run / "trials.jsonl").read_text().splitlines()) for run in runs]
    return {
        "drivers": 3,
        "workers_per_driver": 2,
        "killed": 1,
        "killed_at_s": killed_at,
        "database_restarts": 1,
        "restarted_at_s": restarted_at,
        "seconds": time.perf_counter() - t0,
        **accounting(study_of(pg.url, study)),
        "same_best_policy_everywhere": all(b == best[0] for b in best),
        "trial_log_lines_per_driver": logs,
    }


def scaling_run(
    cfg: Path, folder: Path, pg: PostgresServer, ray: str, drivers: int, workers: int
) -> dict[str, Any]:
    study = f"scale-{drivers}x{workers}"
    t0 = time.perf_counter()
    procs = [
        driver(cfg, folder / f"{study}-{i}", pg.url, study, "--address", ray,
               "--parallel", str(workers))
        for i in range(drivers)
    ]  # fmt: skip
    finish(procs)
    seconds = time.perf_counter() - t0
    acc = accounting(study_of(pg.url, study))
    return {
        "drivers": drivers,
        "workers_per_driver": workers,
        "seconds": seconds,
        "trials": acc["recorded"],
        "trials_per_hour": acc["recorded"] / seconds * 3600,
        "evaluated_twice": acc["evaluated_twice"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--trials", type=int, default=36)
    ap.add_argument("--steps", type=int, default=20, help="fine-tune steps per candidate")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="autoprune-cluster-"))
    cfg = write_config(folder, args.trials, args.steps)
    subprocess.run(
        cli("profile", "-c", str(cfg), "--sweep", "", "--no-channel-sweep", "--min-time", "0.1"),
        env=env(), check=True, capture_output=True,
    )  # fmt: skip
    pg, head = PostgresServer(folder), RayHead(cpus=6)
    try:
        faults = fault_run(cfg, folder, pg, head.address)
        print(f"fault run: {faults}", flush=True)
        scaling = [scaling_run(cfg, folder, pg, head.address, d, w) for d, w in ((1, 6), (3, 2))]
        print(f"scaling: {scaling}", flush=True)
    finally:
        head.stop()
        pg.stop()
    out = {
        "trials": args.trials,
        "steps": args.steps,
        "faults": faults,
        "scaling": scaling,
        "provenance": provenance("cpu", 1, None),
    }
    save("cluster", out, markdown(out), folder=args.results)
    return out


def markdown(out: dict[str, Any]) -> str:
    f, prov = out["faults"], out["provenance"]
    md = [
        "# Searches on a cluster: one study in PostgreSQL, several drivers",
        "",
        f"{prov['device_name']} ({prov['cpu_count']} cores); PostgreSQL and a Ray head (6 CPUs) "
        f"on this machine; torch {prov['versions']['torch']}, optuna "
        f"{prov['versions']['optuna']}; commit {prov['git_commit']}; {prov['date']}. "
        f"{out['trials']} candidates per search: bundled ResNet-20, {out['steps']} fine-tune "
        "steps on 2,048 bundled train images, 256 validation images.",
        "",
        *(line for note in out.get("notes", []) for line in (note, "")),
        "## Faults",
        "",
        "| drivers × workers | killed (SIGKILL, mid-trial) | database restarts | trials | "
        "recorded candidates | failed with a dead driver, queued again | evaluated twice | "
        "unaccounted | same best policy from every driver |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {f['drivers']} × {f['workers_per_driver']} | {f['killed']} (at "
        f"{f['killed_at_s']:.0f} s) | {f['database_restarts']} (at {f['restarted_at_s']:.0f} s) | "
        f"{f['trials']} | {f['recorded']} | {f['retried']} | {f['evaluated_twice']} | "
        f"{len(f['unaccounted'])} | {'yes' if f['same_best_policy_everywhere'] else 'NO'} |",
        "",
        f"Trial states: {f['states']}; every driver's trial log after `autoprune report`: "
        f"{f['trial_log_lines_per_driver']} lines.",
        "",
        "## Scaling (same total workers)",
        "",
        "| drivers × workers | wall s | candidates | candidates per hour | evaluated twice |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in out["scaling"]:
        md.append(
            f"| {s['drivers']} × {s['workers_per_driver']} | {s['seconds']:.0f} | {s['trials']} | "
            f"{s['trials_per_hour']:.0f} | {s['evaluated_twice']} |"
        )
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
