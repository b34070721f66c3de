"""The user-facing steps, shared by the CLI, the demo and the Python API:
profile → search → apply (final fine-tune + re-measure) → export."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autoprune import distributed
from autoprune._io import write_json, write_text
from autoprune.config import Config, from_dict, to_dict
from autoprune.data import Splits
from autoprune.distributed import Pool, RayPool, SearchSummary, run_search
from autoprune.errors import ConfigError, PolicyError, ProfileError
from autoprune.hardware import HardwareProfile
from autoprune.records import BEST, RunLock, TrialLog
from autoprune.search import make_searcher
from autoprune.search.storage import masked
from autoprune.workspace import Workspace, build_workspace

Progress = Callable[[str, int, int], None]
RUN_CONFIG = "config.yaml"
RUN_INFO = "search.json"


def ensure_profile(
    ws: Workspace, *, force: bool = False, progress: Progress | None = None, **measure: Any
) -> tuple[HardwareProfile, Path, bool]:
    """Load the device profile for this config, measuring and saving it first if there is none
    for this model on this device at all. When there are profiles of this model on this device
    but for another spec (another batch, say), refuse: a profile for the spec the user did not
    ask for must not be measured silently."""
    path = ws.profile_path()
    if path.is_file():
        return ws.load_profile(path, force=force), path, False
    others = [] if ws.config.profile else ws.profiles_for_other_specs()
    if others:
        where, prof = others[0]
        raise ProfileError(
            f"no hardware profile of {ws.config.model} for {ws.device.describe()}; "
            f"{where} holds {prof.spec.describe()}: pass the flags that match it (e.g. --batch "
            f"{prof.batch}) or --profile {where}, or measure this setting with `autoprune "
            "profile` and the same flags"
        )
    profile = ws.measure_profile(progress=progress, **measure)
    profile.save(path)
    return profile, path, True


@dataclass(frozen=True)
class SearchOptions:
    """Run-time settings of one search (the config says what to search)."""

    run_dir: Path
    resume: bool = False
    address: str | None = None
    use_ray: bool = False
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_retries: int = 2
    storage: str | None = None
    force: bool = False
    trials: int | None = None  # overrides the config's (and on resume the saved run's) count


def _run_config(run_dir: Path, cfg: Config, opts: SearchOptions) -> Config:
    """The config of this search: on resume the saved one (``opts.trials`` may extend it)."""
    saved = run_dir / RUN_CONFIG
    if opts.resume:
        if not saved.is_file():
            raise ConfigError(f"nothing to resume: {run_dir} has no {RUN_CONFIG}")
        cfg = from_dict(yaml.safe_load(saved.read_text()))
    elif (run_dir / "trials.jsonl").exists():
        raise ConfigError(
            f"run directory {run_dir} already holds a search; pass --resume or "
            "choose another --run-dir"
        )
    return cfg if opts.trials is None else cfg.replace(**{"search.trials": opts.trials})


def make_pool(
    ws: Workspace, data: Splits, profile: HardwareProfile, opts: SearchOptions, parallel: int
) -> Pool:
    return distributed.make_pool(
        ws.evaluator(data, profile),
        parallel=parallel,
        use_ray=opts.use_ray,
        address=opts.address,
        cpus_per_trial=opts.cpus_per_trial,
        gpus_per_trial=opts.gpus_per_trial,
        max_retries=opts.max_retries,
    )


def fidelity_plan(cfg: Config) -> tuple[list[int | None], Any]:
    """The rungs (fine-tune steps) candidates are scored at, and the Optuna pruner between
    them; a multi-objective (NSGA-II) search cannot prune, so it scores at the last rung."""
    from autoprune.search.fidelity import make_pruner

    steps: list[int | None] = list(cfg.fidelity.steps(cfg.short_finetune.steps))
    if cfg.search.searcher == "optuna" and cfg.search.sampler == "nsga2":
        steps = steps[-1:]
    fid = cfg.fidelity
    keep = fid.keep() if fid.screen != "none" and len(steps) > 1 else None
    rungs = [s or 0 for s in steps] if keep else [s or 1 for s in steps]
    pruner = make_pruner(fid.pruner, rungs, fid.reduction_factor, keep, fid.promote == "deferred")
    return steps, pruner


def open_ledger(
    cfg: Config, run_dir: Path, attrs: dict[str, Any], storage: str | None = None
) -> tuple[Any, list[int | None]]:
    """The run's Optuna study (SQLite ``study.db`` in ``run_dir`` unless ``storage`` names
    another: a database server or journal file several drivers share, as ``search.study``) and
    the rungs its pruner works on. This driver is named by its host and run directory, so a
    resumed driver recognises its own trials."""
    from autoprune.search.fidelity import Ledger
    from autoprune.search.storage import open_storage, retrying

    steps, pruner = fidelity_plan(cfg)
    url = storage or f"sqlite:///{(run_dir / 'study.db').resolve()}"
    # Only the Optuna searcher proposes through the study, so only its trials can be failed
    # and queued again for another driver to take up; the others run as one driver.
    optuna_searcher = cfg.search.searcher == "optuna"
    store = open_storage(
        url, heartbeat_s=cfg.search.heartbeat_s if optuna_searcher else None,
        retries=cfg.search.retries,
    )  # fmt: skip
    multi = optuna_searcher and cfg.search.sampler == "nsga2"
    driver = f"{socket.gethostname()}:{run_dir.resolve()}"

    def ledger() -> Any:
        return Ledger(
            store, pruner, multi_objective=multi, attrs=attrs, study_name=cfg.search.study,
            driver=driver, exclusive=storage is None,
        )  # fmt: skip

    return retrying(ledger), steps


STUDY_ATTRS = ("model", "searcher", "budget", "budget_ms", "target_ms", "dense_ms", "device_name",
               "threads", "batch")  # fmt: skip


def _run_info(
    cfg: Config,
    ws: Workspace,
    data: Splits,
    profile: HardwareProfile,
    path: Path,
    budget_ms: float,
    storage: str | None = None,
) -> dict[str, Any]:
    """What ``search.json`` records about a search: the budget, the device, the data, the space,
    and the shared storage the study lives in (its URL without a password)."""
    return {
        "model": cfg.model,
        "searcher": cfg.search.searcher,
        "storage": None if storage is None else masked(storage),  # a shared study, if any
        "study": cfg.search.study,
        "budget": cfg.budget,
        "budget_ms": budget_ms,
        "target_ms": budget_ms * (1 - cfg.budget_margin),
        "dense_ms": profile.dense_ms,
        "profile": str(path),
        "device": profile.device,
        "device_name": profile.device_name,
        "threads": profile.threads,
        "batch": profile.batch,
        "data": data.describe(),
        "layers": ws.layer_names,
        "max_ratio": ws.max_ratio,
        "started": time.time(),
    }


def search(
    cfg: Config,
    opts: SearchOptions,
    *,
    progress: Progress | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    note: Callable[[str], None] | None = None,
) -> SearchSummary:
    """Search per-layer ratios under the latency budget; results land in ``opts.run_dir``
    (``note`` hears of a database connection being retried)."""
    run_dir = opts.run_dir
    # Everything that can be refused is checked before the run directory is touched.
    cfg = _run_config(run_dir, cfg, opts)
    if cfg.mode == "unstructured":
        raise ConfigError(
            "mode unstructured removes no channels, so latency on dense kernels does not change "
            "and there is nothing to search: use mode hybrid, or `autoprune apply` a policy"
        )
    ws = build_workspace(cfg)
    data = ws.load_data()
    profile, profile_path, _ = ensure_profile(ws, force=opts.force, progress=progress)
    budget_ms = ws.budget_ms(profile)
    with RunLock(run_dir):
        if not opts.resume:
            write_text(run_dir / RUN_CONFIG, yaml.safe_dump(to_dict(cfg), sort_keys=False))
        info = _run_info(cfg, ws, data, profile, profile_path, budget_ms, opts.storage)
        write_json(run_dir / RUN_INFO, info)
        attrs = {k: info[k] for k in STUDY_ATTRS}
        ledger, rungs = open_ledger(cfg, run_dir, attrs, opts.storage)
        # Aim a little under the budget so the measured latency lands inside it despite the
        # predictor's error (benchmarks/results/latency_predictor-*.md).
        ctx = ws.search_context(profile, info["target_ms"], run_dir)
        searcher = make_searcher(cfg.search.searcher, ctx, cfg)
        pool = make_pool(ws, data, profile, opts, cfg.search.parallel)
        parallel = min(cfg.search.parallel, pool.slots) if isinstance(pool, RayPool) else 1
        log = TrialLog(run_dir, searcher.name)
        try:
            return run_search(
                searcher, pool, log, cfg.search.trials, ledger=ledger, rungs=rungs,
                parallel=parallel, seed=cfg.search.seed, on_result=on_result, note=note,
                timeout_s=cfg.search.timeout_s,
            )  # fmt: skip
        finally:
            pool.close()


def load_run(run_dir: Path) -> tuple[Config, dict[str, Any]]:
    cfg_path, info_path = run_dir / RUN_CONFIG, run_dir / RUN_INFO
    if not cfg_path.is_file() or not info_path.is_file():
        raise ConfigError(
            f"{run_dir} is not an autoprune run directory (no {RUN_CONFIG}/{RUN_INFO})"
        )
    return from_dict(yaml.safe_load(cfg_path.read_text())), json.loads(info_path.read_text())


def best_policy_path(run_dir: Path) -> Path:
    path = run_dir / BEST
    if not path.is_file():
        raise PolicyError(f"{run_dir} has no {BEST} yet: no trial has finished")
    return path


__all__ = [
    "SearchOptions",
    "best_policy_path",
    "ensure_profile",
    "fidelity_plan",
    "load_run",
    "open_ledger",
    "search",
]
