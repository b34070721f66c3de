"""Measure a :class:`HardwareProfile`: time each resized layer over its channel grid, then
calibrate the table against whole-model measurements of random policies."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping

import numpy as np
from torch import nn

from autoprune.hardware.backends import backend_for
from autoprune.hardware.backends._base import LatencyBackend
from autoprune.hardware.device import DeviceSpec
from autoprune.hardware.measure import measure_models, throughput_sweep
from autoprune.hardware.predictor import LUTPredictor
from autoprune.hardware.profile import HardwareProfile, LayerTable
from autoprune.hardware.timing import time_many
from autoprune.policy import PruningPolicy, kept_channels, random_policy
from autoprune.prunable import ModuleGeometry, PrunableLayer, module_geometry
from autoprune.pruning import apply_policy

Progress = Callable[[str, int, int], None]


def channel_grid(n: int, max_ratio: float, round_to: int, points: int) -> list[int]:
    """Up to ``points`` kept-channel counts spanning what the search can produce for ``n``
    channels."""
    reachable = sorted(
        {kept_channels(n, r, round_to) for r in np.linspace(0, max_ratio, 4 * n + 1)}
    )
    if len(reachable) <= points:
        return reachable
    pick = np.unique(np.round(np.linspace(0, len(reachable) - 1, points)).astype(int))
    return [reachable[i] for i in pick]


def _time_op(
    backend: LatencyBackend, g: ModuleGeometry, c_in: int, c_out: int, repeats: int, min_s: float
) -> float:
    fn = backend.layer_runner(g, c_in, c_out)
    return time_many(
        [fn], backend.synchronize, warmup=5, repeats=repeats, min_time_s=min_s, rounds=3
    )[0].ms


def _tables(
    layers: list[PrunableLayer],
    geo: dict[str, ModuleGeometry],
    max_ratio: Mapping[str, float],
    round_to: int,
    points: int,
) -> list[tuple[ModuleGeometry, LayerTable]]:
    grids_out: dict[str, list[int]] = {}
    grids_in: dict[str, list[int]] = {}
    for lay in layers:
        grid = channel_grid(lay.channels, max_ratio[lay.name], round_to, points)
        for m in lay.outs:
            grids_out[m] = grid
        for m in lay.ins:
            grids_in[m] = grid
    shared: dict[tuple, tuple[ModuleGeometry, LayerTable]] = {}
    for name in sorted(set(grids_out) | set(grids_in), key=list(geo).index):
        g = geo[name]
        gi, go = grids_in.get(name, [g.in_channels]), grids_out.get(name, [g.out_channels])
        if g.depthwise:
            gi = go = sorted(set(gi) | set(go)) if (name in grids_in or name in grids_out) else gi
            gi = [c for c in gi if c <= g.in_channels]
            go = [c for c in go if c <= g.out_channels]
        key = (
            g.kind,
            g.in_channels,
            g.out_channels,
            g.kernel,
            g.stride,
            g.padding,
            g.depthwise,
            g.in_hw,
            tuple(gi),
            tuple(go),
        )
        if key in shared:
            shared[key][1].modules.append(name)
            continue
        table = LayerTable(
            [name], g.kind, g.kernel, g.stride, g.padding, g.depthwise, list(g.in_hw), gi, go, []
        )
        shared[key] = (g, table)
    return list(shared.values())


def _measure_tables(
    backend: LatencyBackend,
    tables: list[tuple[ModuleGeometry, LayerTable]],
    repeats: int,
    min_time_s: float,
    report: Progress,
) -> None:
    """Fill each table's latency grid, one layer-sized op at a time."""
    total = sum(len(t.grid_in) * len(t.grid_out) for _, t in tables)
    done = 0
    with backend.session():
        for g, t in tables:
            for ci in t.grid_in:
                row = []
                for co in t.grid_out:
                    c_in, c_out = (min(ci, co), min(ci, co)) if g.depthwise else (ci, co)
                    row.append(_time_op(backend, g, c_in, c_out, repeats, min_time_s))
                    done += 1
                    report("layer table", done, total)
                t.ms.append(row)


def _new_profile(
    model_name: str,
    input_shape: tuple[int, ...],
    spec: DeviceSpec,
    backend: LatencyBackend,
    layers: list[PrunableLayer],
    tables: list[tuple[ModuleGeometry, LayerTable]],
    max_ratio: Mapping[str, float],
    round_to: int,
) -> HardwareProfile:
    """The profile with its tables filled, before calibration."""
    described = backend.describe()
    return HardwareProfile(
        model=model_name,
        input_shape=list(input_shape),
        device=spec.device,
        device_name=described["device_name"],
        threads=spec.threads,
        batch=spec.batch,
        runtime=spec.runtime,
        dtype=spec.dtype,
        channels_last=spec.channels_last,
        round_to=round_to,
        max_ratio=dict(max_ratio),
        layers=[
            {"name": la.name, "channels": la.channels, "outs": list(la.outs), "ins": list(la.ins)}
            for la in layers
        ],
        tables=[t for _, t in tables],
        dense_ms=0.0,
        min_ms=0.0,
        calibration={},
        versions=described["versions"],
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


def profile_model(
    model_name: str,
    model: nn.Module,
    layers: list[PrunableLayer],
    input_shape: tuple[int, ...],
    spec: DeviceSpec,
    *,
    max_ratio: Mapping[str, float],
    round_to: int = 1,
    grid_points: int = 12,
    calibration_policies: int = 18,
    repeats: int = 30,
    min_time_s: float = 0.5,
    seed: int = 0,
    progress: Progress | None = None,
    sweep: list[int] | None = None,
    channel_sweep: bool = True,
) -> HardwareProfile:
    """Measure the latency table and its calibration for ``model`` on ``spec``, and the device's
    fast channel multiple (:func:`channel_period`).

    Args:
        max_ratio: per-layer maximal pruning ratio the search may use (sets the channel grid).
        grid_points: channel counts timed per dimension; the predictor interpolates between them.
        calibration_policies: random policies measured whole to fit the table to real latency.
        repeats: timed runs per measurement (the median is kept).
        min_time_s: each whole-model measurement runs at least this long (a layer a quarter).
        sweep: batch sizes at which to record the dense model's throughput and peak memory.
        channel_sweep: time representative layers at every channel count to find the period.
    """
    report = progress or (lambda *_: None)
    geo = module_geometry(model, input_shape)
    tables = _tables(layers, geo, max_ratio, round_to, grid_points)
    backend = backend_for(spec)
    _measure_tables(backend, tables, repeats, min_time_s / 4, report)
    profile = _new_profile(
        model_name, input_shape, spec, backend, layers, tables, max_ratio, round_to
    )
    if channel_sweep:
        period, gains = channel_period(backend, representative(layers, geo), report=report)
        profile.channel_period = period
        profile.notes["channel_period_gain"] = gains
    calibrate(
        profile,
        model,
        layers,
        input_shape,
        calibration_policies,
        repeats,
        min_time_s,
        seed,
        report,
    )
    if sweep:
        n = len(set(sweep))
        report("batch sweep", 0, n)
        profile.throughput = throughput_sweep(
            model, input_shape, spec, sweep, progress=lambda d, t: report("batch sweep", d, t)
        )
    return profile


PERIODS = (2, 4, 8, 16, 32)
PERIOD_GAIN = 0.05  # multiples must run this much faster than their neighbours


def representative(
    layers: list[PrunableLayer], geo: Mapping[str, ModuleGeometry], count: int = 3
) -> list[ModuleGeometry]:
    """Up to ``count`` dense, non-grouped convs the search resizes, of distinct shapes, widest
    first: what the channel sweep times."""
    seen, out = set(), []
    for la in sorted(layers, key=lambda la: -la.channels):
        g = geo.get(la.name)
        if g is None or g.kind != "conv" or g.depthwise:
            continue
        key = (g.in_channels, g.out_channels, g.kernel, g.stride, g.in_hw)
        if key not in seen:
            seen.add(key)
            out.append(g)
    return out[:count]


def period_gains(counts: list[int], ms: list[float]) -> dict[int, float]:
    """How much faster (share of the median latency) output channel counts that are multiples of
    ``p`` run than the odd multiples of ``p / 2`` next to them, for each candidate period, after
    removing the linear trend of latency in the channel count.

    >>> counts = list(range(8, 33))
    >>> ms = [1 + 0.05 * c + (0 if c % 4 == 0 else 0.3) for c in counts]
    >>> {p: round(g, 2) + 0 for p, g in period_gains(counts, ms).items()}
    {2: 0.14, 4: 0.14, 8: 0.0, 16: 0.0}
    """
    c, t = np.asarray(counts, dtype=float), np.asarray(ms, dtype=float)
    slope, icpt = np.polyfit(c, t, 1)
    resid = t - (slope * c + icpt)
    out = {}
    for p in PERIODS:
        on = resid[c % p == 0]
        off = resid[c % p == p // 2]
        if len(on) >= 2 and len(off) >= 2:
            out[p] = float((np.median(off) - np.median(on)) / np.median(t))
    return out


def channel_period(
    backend: LatencyBackend,
    geometries: list[ModuleGeometry],
    *,
    repeats: int = 10,
    min_time_s: float = 0.02,
    report: Progress | None = None,
) -> tuple[int, dict[str, dict[int, float]]]:
    """The device's fast channel multiple: each representative layer timed at every output
    channel count from a quarter of its width up, and the largest period whose multiples run at
    least :data:`PERIOD_GAIN` faster than their neighbours in the median over layers (1: none
    does). Returns the period and each layer's gains, recorded in the profile."""
    gains: dict[str, dict[int, float]] = {}
    total = sum(g.out_channels - max(1, g.out_channels // 4) + 1 for g in geometries)
    done = 0
    with backend.session():
        for g in geometries:
            counts = list(range(max(1, g.out_channels // 4), g.out_channels + 1))
            ms = []
            for co in counts:
                ms.append(_time_op(backend, g, g.in_channels, co, repeats, min_time_s))
                done += 1
                if report is not None:
                    report("channel sweep", done, total)
            gains[g.name] = period_gains(counts, ms)
    period = 1
    for p in PERIODS:
        seen = [d[p] for d in gains.values() if p in d]
        if seen and float(np.median(seen)) >= PERIOD_GAIN:
            period = p
    return period, gains


def robust_fit(features: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Least squares ``y ≈ features @ coef + offset``, refitted once without outliers (residual
    beyond 3 robust standard deviations: a measurement caught in a slow window). Latency grows
    with every feature, so a coefficient the noise drove below zero is fixed at zero and the
    rest refitted: a few calibration points timed on a busy machine cannot make the table
    predict less for a bigger model (or a negative latency).

    >>> X = np.array([[1.0, 5.0], [2.0, 1.0], [3.0, 4.0], [4.0, 2.0]])
    >>> coef, offset = robust_fit(X, np.array([2.0, 3.0, 4.0, 5.0]))
    >>> bool(coef.min() >= 0)
    True
    """
    X = np.hstack([features, np.ones((len(y), 1))])
    free = np.ones(features.shape[1], dtype=bool)
    keep = np.ones(len(y), dtype=bool)
    for _ in range(features.shape[1] + 1):
        cols = np.append(free, True)
        for _ in range(2):
            sol = np.zeros(X.shape[1])
            sol[cols], *_ = np.linalg.lstsq(X[keep][:, cols], y[keep], rcond=None)
            resid = y - X @ sol
            mad = 1.4826 * np.median(np.abs(resid[keep] - np.median(resid[keep]))) + 1e-9
            keep = np.abs(resid) <= 3 * mad
            if keep.sum() < cols.sum() + 2:
                keep = np.ones(len(y), dtype=bool)
                break
        negative = free & (sol[:-1] < 0)
        if not negative.any():
            break
        free &= ~negative
    return sol[:-1], float(sol[-1])


def calibrate(
    profile: HardwareProfile,
    model: nn.Module,
    layers: list[PrunableLayer],
    input_shape: tuple[int, ...],
    n_policies: int,
    repeats: int,
    min_time_s: float,
    seed: int,
    report: Progress,
) -> None:
    """Fit whole-model latency of dense, maximal and random policies on the predictor's features
    (Σ table latency, Σ output activations) with :func:`robust_fit`."""
    rng = np.random.default_rng(seed)
    names = [la.name for la in layers]
    policies = [
        PruningPolicy(profile.model, {}, round_to=profile.round_to),
        PruningPolicy(profile.model, dict(profile.max_ratio), round_to=profile.round_to),
    ] + [
        random_policy(profile.model, profile.max_ratio, rng, profile.round_to)
        for _ in range(n_policies)
    ]
    raw = LUTPredictor(profile)
    models = [
        apply_policy(model, pol, layers, input_shape) if pol.ratios else model for pol in policies
    ]
    report("calibration", 0, len(policies))
    timings = measure_models(
        models, input_shape, profile.spec, repeats=repeats, min_time_s=min_time_s
    )
    report("calibration", len(policies), len(policies))
    feats = np.array([raw.features(raw.kept(p)) for p in policies])
    y = np.array([t.ms for t in timings])
    coef, offset = robust_fit(feats, y)
    fitted = feats @ coef + offset
    profile.dense_ms, profile.min_ms = float(y[0]), float(y[1])
    profile.calibration = {
        "method": "robust least squares of whole-model latency on [Σ layer-table ms, Σ output "
        "activations (M)] + offset",
        "coef": [float(c) for c in coef],
        "offset": offset,
        "policies": len(y),
        "fit_median_rel_err": float(np.median(np.abs(fitted - y) / y)),
        "points": [[*map(float, f), float(m)] for f, m in zip(feats, y, strict=False)],
        "layers": names,
    }


__all__ = [
    "calibrate",
    "channel_grid",
    "channel_period",
    "period_gains",
    "profile_model",
    "representative",
]
