"""Final fine-tunes as Ray tasks: several (policy, seed, recipe) jobs in parallel, one thread
each, for the benchmarks that need many final models (proxy study, fine-tune length curve)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from autoprune._threads import torch_threads
from autoprune.data import Splits
from autoprune.finetune import FinetuneConfig, Teacher, accuracy
from autoprune.policy import PruningPolicy
from autoprune.prunable import PrunableLayer
from autoprune.schedule import prune_and_finetune
from autoprune.search import Searcher
from benchmarks._common import FORCE_PROFILE_HELP, RESULTS
from benchmarks.run import Bench


@dataclass
class FinalJob:
    """Everything a final fine-tune needs; shipped once to the Ray object store."""

    model: nn.Module
    layers: list[PrunableLayer]
    input_shape: tuple[int, ...]
    data: Splits
    teacher: Teacher | None

    def run(
        self,
        policy: dict[str, Any],
        seed: int,
        recipe: dict[str, Any],
        checkpoint: Path | None = None,
    ) -> dict[str, Any]:
        """One final fine-tune on one thread (``checkpoint``: resumable epoch by epoch; the
        caller removes it once the result is saved)."""
        t0 = time.perf_counter()
        resumed = checkpoint is not None and checkpoint.is_file()
        cfg = FinetuneConfig(**recipe)
        with torch_threads(1):
            model = prune_and_finetune(
                self.model,
                PruningPolicy.from_dict(policy),
                self.layers,
                self.input_shape,
                self.data.train,
                cfg,
                seed=seed,
                teacher=self.teacher or self.model,
                val=self.data.val,
                checkpoint=checkpoint,
            )
            scores = {f"{k}_acc": accuracy(model, s) for k, s in self.data.reported().items()}
        seconds = time.perf_counter() - t0  # this process's part, if resumed
        return {"seed": seed, "recipe": recipe, "finetune_s": seconds, "resumed": resumed} | scores


class _StudyParser(argparse.ArgumentParser):
    """Fills ``--work`` from ``--suite`` where it is not given."""

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        out = super().parse_args(args, namespace)
        if out.work is None:
            out.work = Path("runs/bench") / out.suite
        return out


def study_parser(description: str) -> argparse.ArgumentParser:
    """The options every study on a suite's work folder shares (budget, suite, folders, and
    ``--force-profile`` for a folder whose profile was recorded on another processor)."""
    ap = _StudyParser(description=description, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--budget", default="0.5")
    ap.add_argument("--suite", default="cpu-v2")
    ap.add_argument("--work", type=Path, default=None, help="default: runs/bench/SUITE")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--force-profile", action="store_true", help=FORCE_PROFILE_HELP)
    return ap


def study_bench(args: argparse.Namespace) -> Bench:
    """The suite a :func:`study_parser` command names, on its work folder (no methods: a study
    picks its own policies)."""
    return Bench(args.suite, args.work, args.suite, [], force_profile=args.force_profile)


def proposals(searcher: Searcher, n: int) -> list[PruningPolicy]:
    """The first ``n`` policies ``searcher`` proposes (a study's fixed candidates)."""
    out: list[PruningPolicy] = []
    for _ in range(n):
        proposal = searcher.ask()
        if proposal is None:
            raise RuntimeError(f"{type(searcher).__name__} proposed {len(out)} of {n} policies")
        out.append(proposal.policy)
    return out


def _task(
    job: FinalJob,
    policy: dict[str, Any],
    seed: int,
    recipe: dict[str, Any],
    checkpoint: Path | None,
) -> Any:
    return job.run(policy, seed, recipe, checkpoint)


def run_finals(
    job: FinalJob,
    todo: list[tuple[dict[str, Any], int, FinetuneConfig]],
    *,
    done: Callable[[int, dict[str, Any]], None] | None = None,
    checkpoints: list[Path] | None = None,
) -> list[dict[str, Any]]:
    """Run every (policy, seed, recipe) in ``todo`` on a local Ray, one per CPU at a time;
    ``done(i, result)`` is called as each finishes (results come back in ``todo`` order).
    ``checkpoints`` (one per job) make them resumable; each is removed after its ``done``."""
    import ray

    from autoprune.distributed import init_ray

    init_ray()
    try:
        ref = ray.put(job)
        task = ray.remote(_task).options(num_cpus=1)
        ckpts: list[Path | None] = list(checkpoints) if checkpoints else [None] * len(todo)
        pending = {
            task.remote(ref, p, s, asdict(r), c): i
            for i, ((p, s, r), c) in enumerate(zip(todo, ckpts, strict=True))
        }
        out: dict[int, dict[str, Any]] = {}
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready)
            out[i] = ray.get(ready)
            if done is not None:
                done(i, out[i])
            ckpt = ckpts[i]
            if ckpt is not None:
                ckpt.unlink(missing_ok=True)
        return [out[i] for i in range(len(todo))]
    finally:
        ray.shutdown()


__all__ = ["FinalJob", "proposals", "run_finals", "study_parser"]
