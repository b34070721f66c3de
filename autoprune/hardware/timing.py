"""Timing on a shared machine: interleaved rounds, a robust estimator, and a record of how busy
the rest of the machine was meanwhile. Backend-agnostic: callers pass zero-argument callables
and the backend's ``synchronize``."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Timing:
    """Latency of one call in milliseconds over ``runs`` timed calls in ``rounds`` rounds.

    ``ms`` (the number autoprune budgets, predicts and reports) is the median over rounds of each
    round's 10th percentile. On shared or virtualised CPUs interference only ever slows runs down,
    sometimes for whole seconds: the lower decile ignores short spikes (measured here: 2-4 %
    variation between repeats where the plain median varied 7-11 %), and the median over rounds,
    interleaved across the models being compared, ignores a slow window.
    """

    ms: float
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    rounds: int
    round_ms: tuple[float, ...] = ()  # each round's 10th percentile, in time order
    other_cpus: float | None = None  # CPUs kept busy by other work meanwhile (None: unknown)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "round_ms"}


def _cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds the whole machine has been busy, of which this process) — Linux only.
    Busy = user + nice + system + irq + softirq + steal in ``/proc/stat``; steal counts because
    a neighbouring VM taking our core slows timings just as a local process does."""
    import resource

    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    busy = sum(int(fields[i]) for i in (1, 2, 3, 6, 7, 8)) / ticks
    own = resource.getrusage(resource.RUSAGE_SELF)
    return busy, own.ru_utime + own.ru_stime


def busy_warning(other_cpus: float | None, threshold: float = 0.5) -> str | None:
    """A one-line caution when other work kept more than ``threshold`` CPUs busy on average
    during a measurement (:attr:`Timing.other_cpus`): latency then reads high, and budgets fit
    to it are too strict."""
    if other_cpus is None or other_cpus <= threshold:
        return None
    return (
        f"other processes kept {other_cpus:.1f} CPU(s) busy while latency was measured; "
        "numbers may read high: measure again on an idle machine"
    )


def paired_ratio(a: Timing, b: Timing) -> float:
    """Latency of ``a`` relative to ``b`` timed in the same interleaved rounds: the median of the
    per-round ratios. Neighbouring rounds see the same machine state, so on a drifting machine
    this varied ±1 % between repeats where the ratio of the two ``ms`` varied ±4 % (measured
    here, ResNet-20 vs a pruned copy, 20 rounds)."""
    if not a.round_ms or len(a.round_ms) != len(b.round_ms):
        return a.ms / b.ms
    return statistics.median(x / y for x, y in zip(a.round_ms, b.round_ms, strict=True))


def _timed_round(
    fn: Callable[[], Any], sync: Callable[[], Any], repeats: int, min_time_s: float
) -> list[float]:
    samples: list[float] = []
    start = time.perf_counter()
    cap = max(repeats, 2000)
    while len(samples) < repeats or (
        time.perf_counter() - start < min_time_s and len(samples) < cap
    ):
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def _p(samples: list[float], q: int) -> float:
    """The ``q``-th decile of the samples, interpolated between them (inclusive: it never leaves
    their range; the exclusive method extrapolates, and a few samples with one slow outlier,
    timed on a busy machine, once gave a negative 10th percentile)."""
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=10, method="inclusive")[q]


def time_many(
    fns: list[Callable[[], Any]],
    sync: Callable[[], Any] = lambda: None,
    *,
    warmup: int = 10,
    repeats: int = 30,
    min_time_s: float = 0.5,
    rounds: int = 5,
) -> list[Timing]:
    """Time several callables in interleaved rounds (``sync`` after each call: the backend's
    way to wait for asynchronous work, e.g. ``torch.cuda.synchronize``).

    Each callable is warmed up (``warmup`` calls, at least ``min_time_s / 4`` seconds), then timed
    for ``rounds`` rounds; in total at least ``repeats`` calls and ``min_time_s`` seconds each.
    """
    per_round = max(1, -(-repeats // rounds))
    before, t0 = _cpu_seconds(), time.perf_counter()
    samples: list[list[list[float]]] = [[] for _ in fns]
    for fn in fns:
        _timed_round(fn, sync, warmup, min_time_s / 4)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            samples[i].append(_timed_round(fn, sync, per_round, min_time_s / rounds))
    after, wall = _cpu_seconds(), time.perf_counter() - t0
    other = None
    if before and after and wall > 0:
        other = max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / wall)
    out = []
    for rs in samples:
        flat = [x for r in rs for x in r]
        lows = [_p(r, 0) for r in rs]
        out.append(
            Timing(
                statistics.median(lows),
                statistics.median(flat),
                _p(flat, 0),
                _p(flat, 8),
                len(flat),
                len(rs),
                tuple(lows),
                other,
            )
        )
    return out


__all__ = ["Timing", "busy_warning", "paired_ratio", "time_many"]
