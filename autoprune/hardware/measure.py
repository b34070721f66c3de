"""Time whole models on a device through its latency backend: interleaved rounds, warm-up,
the robust estimator of :mod:`autoprune.hardware.timing`, and a batch sweep."""

from __future__ import annotations

import resource
from collections.abc import Callable
from typing import Any

from torch import nn

from autoprune.hardware.backends import backend_for
from autoprune.hardware.device import DeviceSpec
from autoprune.hardware.timing import Timing, time_many


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
    """Latency of one forward pass of each model at ``spec.batch``, measured interleaved. The
    models are left where and as they are (a backend copies what must live elsewhere)."""
    backend = backend_for(spec)
    fns = [backend.model_runner(m, input_shape) for m in models]
    with backend.session():
        return time_many(
            fns,
            backend.synchronize,
            warmup=warmup,
            repeats=repeats,
            min_time_s=min_time_s,
            rounds=rounds,
        )


def _peak_memory_mb(spec: DeviceSpec) -> float:
    if spec.cuda:
        import torch

        return torch.cuda.max_memory_allocated(spec.device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def throughput_sweep(
    model: nn.Module,
    input_shape: tuple[int, ...],
    spec: DeviceSpec,
    batches: list[int],
    *,
    min_time_s: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, float]]:
    """Latency, images/s and peak memory of the whole model at each batch size.

    Peak memory is what the device's allocator reports (CUDA: ``max_memory_allocated`` for that
    batch) or, on CPU, the process's peak resident set so far (``ru_maxrss``, monotone over the
    sweep, model and data included): an upper bound a deployment can plan with.
    """
    out = []
    todo = sorted(set(batches))
    for b in todo:
        if spec.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(spec.device)
        at_b = spec.replace(batch=b)
        (t,) = measure_models([model], input_shape, at_b, min_time_s=min_time_s, rounds=5)
        out.append(
            {
                "batch": b,
                "ms": t.ms,
                "images_per_s": b / t.ms * 1e3,
                "peak_mem_mb": _peak_memory_mb(spec),
            }
        )
        if progress is not None:
            progress(len(out), len(todo))
    return out


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    spec: DeviceSpec = DeviceSpec(),
    **kwargs: Any,
) -> Timing:
    """Latency of one forward pass of ``model`` (see :func:`measure_models` for the options)."""
    return measure_models([model], input_shape, spec, **kwargs)[0]


__all__ = ["measure_latency", "measure_models", "throughput_sweep"]
