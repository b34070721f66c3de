"""What a search produces: one candidate's result (:class:`EvalResult`), the run directory's
trial log (JSONL, one line per finished trial), best policy, and a lock. Torch-free."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprune.errors import RunLockedError
from autoprune.policy import PruningPolicy

if TYPE_CHECKING:
    from autoprune.search._base import Proposal

TRIALS = "trials.jsonl"
BEST = "best_policy.json"
# Benchmark v3 (ResNet-56, CIFAR-10): the search's lead over the best rule at the 900-step rung
# and after the 8-epoch final, at two budgets (README, Results).
V3_LEADS = (
    "benchmark v3, ResNet-56: at 50 % of dense latency +6.1 points at the 900-step rung, +0.13 "
    "within noise after the final; at 35 % +6.4 at the rung, -2.79 within noise after the final "
    "(3 seeds each)"
)


@contextmanager
def _no_interrupt() -> Iterator[None]:
    """Hold Ctrl-C back until the block is done, so a trial's line and the best policy it makes
    are written together (a SIGINT in between would leave a best trial with no best file)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@dataclass(frozen=True)
class EvalResult:
    """What one candidate scored after ``steps`` fine-tune steps; ``accuracy`` is on the
    validation split (0-100)."""

    policy: dict[str, Any]
    accuracy: float
    predicted_ms: float
    macs: int
    params: int
    kept: dict[str, int]
    seed: int
    finetune_s: float
    eval_s: float
    steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunLock:
    """An exclusive ``flock`` on ``run_dir/.lock`` so two searches never share a run directory."""

    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(fd)
            raise RunLockedError(
                f"run directory {self.path.parent} is in use by another search"
            ) from e
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _rank(rec: dict[str, Any]) -> tuple[float, int]:
    """Best first: the most accurate, and of equals the earliest trial, so every driver of a
    shared study picks the same one whatever order its log holds them in."""
    return float(rec["accuracy"]), -int(rec["trial"])


class TrialLog:
    """Append-only JSONL of finished trials; each line is flushed and fsynced before the next
    trial.

    A line half-written by a killed process is ignored on reading. The best trial is the most
    accurate COMPLETE one (scored at the last fidelity rung).
    """

    def __init__(self, run_dir: Path, searcher: str) -> None:
        self.path = run_dir / TRIALS
        self.best_path = run_dir / BEST
        self.searcher = searcher
        self.records = self.read(self.path)
        self.best = max(
            (r for r in self.records if r["state"] == "COMPLETE"), key=_rank, default=None
        )

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        if not path.is_file():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def make(
        self,
        proposal: Proposal,
        result: EvalResult | None,
        error: str | None,
        seconds: float,
        *,
        state: str | None = None,
        curve: list[tuple[int, float]] | None = None,
    ) -> dict[str, Any]:
        """One finished candidate's record: ``state`` COMPLETE (scored at the last rung),
        PRUNED (stopped early; ``accuracy`` is its last rung's score) or FAIL; ``curve`` holds
        (fine-tune steps, validation accuracy) for every rung it finished."""
        state = state or ("COMPLETE" if result is not None else "FAIL")
        rec: dict[str, Any] = {
            "trial": proposal.trial,
            "searcher": self.searcher,
            "state": state,
            "time": time.time(),
            "seconds": round(seconds, 3),
            "params": dict(proposal.params),
            "policy": proposal.policy.to_dict(),
        }
        if result is not None:
            rec.update(
                accuracy=result.accuracy,
                predicted_ms=result.predicted_ms,
                macs=result.macs,
                params_count=result.params,
                kept=result.kept,
                seed=result.seed,
                finetune_s=result.finetune_s,
                eval_s=result.eval_s,
                steps=result.steps,
                curve=[list(p) for p in curve or [(result.steps, result.accuracy)]],
            )
        else:
            rec["error"] = error or "failed"
            if curve:  # the rungs it finished before failing
                rec["curve"] = [list(p) for p in curve]
        return rec

    def append(self, rec: dict[str, Any]) -> dict[str, Any]:
        """Append ``rec`` (fsynced) and update ``best_policy.json`` if it is the best."""
        with _no_interrupt():
            with self.path.open("a") as f:
                f.write(json.dumps(rec) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.records.append(rec)
            self._consider(rec)
        return rec

    def _consider(self, rec: dict[str, Any]) -> None:
        if rec["state"] == "COMPLETE" and (self.best is None or _rank(rec) > _rank(self.best)):
            self.best = rec
            PruningPolicy.from_dict(rec["policy"]).with_metadata(
                val_accuracy=rec["accuracy"],
                predicted_ms=rec["predicted_ms"],
                macs=rec["macs"],
            ).save(self.best_path)

    def sync(self, records: list[dict[str, Any]]) -> int:
        """Take in the records of a shared study (every driver's): the ones this log lacks are
        appended, so ``trials.jsonl`` and ``best_policy.json`` agree with the database whichever
        driver's run directory is read. Returns how many were added."""
        have = {int(r["trial"]) for r in self.records}
        new = sorted(
            (r for r in records if int(r["trial"]) not in have), key=lambda r: int(r["trial"])
        )
        for rec in new:
            self.append(rec)
        return len(new)


def best_and_rule(
    records: list[dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The search's best record and the best hand-made rule's (a warm-start policy) among those
    that reached the last rung, or ``None`` without such a rule."""
    done = [r for r in records if r["state"] == "COMPLETE"]
    rules = [r for r in done if r["policy"].get("metadata", {}).get("warm_start")]
    if not rules:
        return None
    return max(done, key=lambda r: r["accuracy"]), max(rules, key=lambda r: r["accuracy"])


def rule_verdict(records: list[dict[str, Any]]) -> str | None:
    """One line comparing the search's best candidate with the hand-made rules' policies it
    evaluated first (Optuna's warm start), on their last-rung validation scores: a user should
    know when ``--searcher global`` would have given as much in a minute, and that a lead at a
    short rung is no proof (benchmark v3 saw one shrink to noise at 50 %). ``None`` without a
    rule that reached the last rung.

    >>> recs = [{"state": "COMPLETE", "accuracy": 70.0, "policy": {"metadata": {}}},
    ...         {"state": "COMPLETE", "accuracy": 71.5,
    ...          "policy": {"metadata": {"warm_start": "global"}}}]
    >>> rule_verdict(recs).split(":")[0]
    "the best candidate is the global rule's policy (71.50 %)"
    """
    pair = best_and_rule(records)
    if pair is None:
        return None
    best, rule = pair
    name = rule["policy"]["metadata"]["warm_start"]
    if best is rule:
        return (
            f"the best candidate is the {name} rule's policy ({rule['accuracy']:.2f} %): the "
            f"search found nothing better; `--searcher {name}` gives it without searching"
        )
    return (
        f"the search beat the best hand-made rule ({name}, {rule['accuracy']:.2f} %) by "
        f"{best['accuracy'] - rule['accuracy']:+.2f} points of validation accuracy at the last "
        f"rung; a lead there can vanish or turn into a loss in the final fine-tune ({V3_LEADS}), "
        f"so `autoprune apply` fine-tunes the {name} rule's policy too and keeps whichever "
        "scores higher on validation"
    )


__all__ = [
    "BEST",
    "TRIALS",
    "EvalResult",
    "RunLock",
    "TrialLog",
    "best_and_rule",
    "rule_verdict",
]
