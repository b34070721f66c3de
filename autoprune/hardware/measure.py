"""Time a whole model or one layer on a device: warm-up, then the median of repeated runs."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from autoprune._threads import torch_threads
from autoprune.errors import ConfigError


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


RUNTIMES = ("torch", "onnxruntime")


@dataclass(frozen=True)
class DeviceSpec:
    """Where latency is measured: ``cpu`` or ``cuda[:i]``, CPU threads, batch size, and the
    runtime executing the model (eager PyTorch, or ONNX Runtime's CPU provider)."""

    device: str = "cpu"
    threads: int = 1
    batch: int = 1
    runtime: str = "torch"

    def __post_init__(self) -> None:
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.runtime not in RUNTIMES:
            raise ConfigError(
                f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}"
            )
        if self.runtime == "onnxruntime" and self.device != "cpu":
            raise ConfigError("the onnxruntime runtime is measured on the cpu device only")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r} requested but CUDA is not available here")
        if self.threads < 1 or self.batch < 1:
            raise ConfigError("threads and batch must be at least 1")

    @property
    def tag(self) -> str:
        """A short file-name-safe id, e.g. ``cpu-t1-b1``."""
        dev = self.device.replace(":", "")
        tag = f"{dev}-t{self.threads}-b{self.batch}" if dev == "cpu" else f"{dev}-b{self.batch}"
        return "ort-" + tag if self.runtime == "onnxruntime" else tag


def device_name(device: str) -> str:
    """Human-readable processor name (CPU model from /proc/cpuinfo, or the CUDA device name)."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    """Library versions recorded with every measured number."""
    import numpy
    import torch_pruning

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_pruning": getattr(torch_pruning, "__version__", "?"),
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


pinned_threads = torch_threads  # historical name


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
    return statistics.quantiles(samples, n=10)[q] if len(samples) >= 2 else samples[0]


def time_many(
    fns: list[Callable[[], Any]],
    device: str,
    *,
    warmup: int = 10,
    repeats: int = 30,
    min_time_s: float = 0.5,
    rounds: int = 5,
) -> list[Timing]:
    """Time several callables in interleaved rounds (CUDA synchronized around each call).

    Each callable is warmed up (``warmup`` calls, at least ``min_time_s / 4`` seconds), then timed
    for ``rounds`` rounds; in total at least ``repeats`` calls and ``min_time_s`` seconds each.
    """
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
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


def measure_models(
    models: list[nn.Module],
    input_shape: tuple[int, ...],
    spec: DeviceSpec = DeviceSpec(),
    *,
    warmup: int = 10,
    repeats: int = 30,
    min_time_s: float = 0.5,
    rounds: int = 5,
) -> list[Timing]:
    """Latency of one forward pass of each model at ``spec.batch``, measured interleaved."""
    x = torch.randn(spec.batch, *input_shape, device=spec.device)
    models = [m.eval().to(spec.device) for m in models]
    if spec.runtime == "onnxruntime":
        from autoprune.hardware.ort import model_runner

        fns = [model_runner(m, x, spec.threads) for m in models]
    else:
        fns = [lambda m=m: m(x) for m in models]
    with pinned_threads(spec.threads), torch.inference_mode():
        return time_many(
            fns,
            spec.device,
            warmup=warmup,
            repeats=repeats,
            min_time_s=min_time_s,
            rounds=rounds,
        )


def throughput_sweep(
    model: nn.Module,
    input_shape: tuple[int, ...],
    spec: DeviceSpec,
    batches: list[int],
    *,
    min_time_s: float = 1.0,
) -> list[dict[str, float]]:
    """Latency, images/s and peak memory of the whole model at each batch size.

    Peak memory is what the device's allocator reports (CUDA: ``max_memory_allocated`` for that
    batch) or, on CPU, the process's peak resident set so far (``ru_maxrss``, monotone over the
    sweep, model and data included): an upper bound a deployment can plan with.
    """
    import resource

    cuda = spec.device.startswith("cuda")
    out = []
    for b in sorted(set(batches)):
        if cuda:
            torch.cuda.reset_peak_memory_stats(spec.device)
        (t,) = measure_models(
            [model],
            input_shape,
            DeviceSpec(spec.device, spec.threads, b, spec.runtime),
            min_time_s=min_time_s,
            rounds=5,
        )
        peak = (
            torch.cuda.max_memory_allocated(spec.device) / 2**20
            if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        )
        out.append({"batch": b, "ms": t.ms, "images_per_s": b / t.ms * 1e3, "peak_mem_mb": peak})
    return out


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    spec: DeviceSpec = DeviceSpec(),
    **kwargs: Any,
) -> Timing:
    """Latency of one forward pass of ``model`` (see :func:`measure_models` for the options)."""
    return measure_models([model], input_shape, spec, **kwargs)[0]


__all__ = [
    "RUNTIMES",
    "DeviceSpec",
    "Timing",
    "device_name",
    "measure_latency",
    "measure_models",
    "paired_ratio",
    "pinned_threads",
    "throughput_sweep",
    "time_many",
    "versions",
]
