"""How well does the hardware profile predict real latency? Predicted vs measured for random
policies, measured interleaved on the profile's device.

    python -m benchmarks.latency_predictor [--config search_spaces/resnet20_cifar10.yaml] [--n 50]

Writes ``benchmarks/results/latency_predictor-<device>-<model>.{json,md,png}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from autoprune.config import load_config
from autoprune.hardware import LUTPredictor
from autoprune.hardware.measure import measure_models
from autoprune.pipeline import ensure_profile
from autoprune.policy import random_policy
from autoprune.pruning import apply_policy
from autoprune.workspace import build_workspace
from benchmarks._common import RESULTS, provenance, save


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="search_spaces/resnet20_cifar10.yaml")
    ap.add_argument("--n", type=int, default=50, help="random policies")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--runtime", default=None, choices=["torch", "onnxruntime"])
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timing per model")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    if args.threads or args.batch or args.runtime:
        cfg = cfg.replace(
            **{
                "device.threads": args.threads or cfg.device.threads,
                "device.batch": args.batch or cfg.device.batch,
                "device.runtime": args.runtime or cfg.device.runtime,
            }
        )
    ws = build_workspace(cfg)
    profile, path, measured = ensure_profile(ws)
    pred = LUTPredictor(profile)
    rng = np.random.default_rng(args.seed)
    policies = [
        random_policy(cfg.model, ws.max_ratio, rng, profile.round_to) for _ in range(args.n)
    ]
    models = [apply_policy(ws.model, p, ws.layers, ws.input_shape) for p in policies]
    t_dense, *timings = measure_models(
        [ws.model, *models],
        ws.input_shape,
        profile.spec,
        min_time_s=args.min_time,
        rounds=args.rounds,
    )
    drift = t_dense.ms / profile.dense_ms  # the shared machine's speed now vs when profiled
    predicted = np.array([pred.predict(p) for p in policies]) * drift
    measured_ms = np.array([t.ms for t in timings])
    rel = (predicted - measured_ms) / measured_ms
    absrel = np.abs(rel)
    raw_rel = np.abs(predicted / drift - measured_ms) / measured_ms
    summary = {
        "model": cfg.model,
        "profile": str(path),
        "profile_measured_now": measured,
        "policies": args.n,
        "seed": args.seed,
        "median_abs_rel_err": float(np.median(absrel)),
        "p90_abs_rel_err": float(np.percentile(absrel, 90)),
        "max_abs_rel_err": float(absrel.max()),
        "mean_signed_rel_err": float(rel.mean()),
        "dense_ms_profile": profile.dense_ms,
        "dense_ms_now": t_dense.ms,
        "drift": drift,
        "median_abs_rel_err_without_drift_correction": float(np.median(raw_rel)),
    }
    data: dict[str, Any] = {
        "summary": summary,
        "provenance": provenance(profile.device, profile.threads, profile.batch),
        "points": [
            {"predicted_ms": float(a), "measured_ms": float(b), "median_ms": t.median_ms}
            for a, b, t in zip(predicted, measured_ms, timings, strict=False)
        ],
    }
    tag = f"latency_predictor-{profile.spec.tag}-{cfg.model}"
    prov = data["provenance"]
    md = (
        f"# Latency predictor accuracy: {cfg.model} on {profile.device_name}\n\n"
        f"{profile.device} ({profile.runtime}), {profile.threads} thread(s), batch "
        f"{profile.batch}; torch "
        f"{prov['versions']['torch']}; commit {prov['git_commit']}; {prov['date']}.\n\n"
        f"| policies | median abs. error | p90 | worst | mean signed |\n"
        f"|---:|---:|---:|---:|---:|\n"
        f"| {args.n} | {100 * summary['median_abs_rel_err']:.1f} % | "
        f"{100 * summary['p90_abs_rel_err']:.1f} % | {100 * summary['max_abs_rel_err']:.1f} % | "
        f"{100 * summary['mean_signed_rel_err']:+.1f} % |\n\n"
        f"Each latency: median over {args.rounds} interleaved rounds of the round's 10th "
        f"percentile, ≥ {args.min_time} s per model. Predictions are rescaled by the machine's "
        f"drift since profiling (the dense model, measured in the same rounds: "
        f"{t_dense.ms:.3f} ms now vs {profile.dense_ms:.3f} ms in the profile, ×{drift:.3f}); "
        f"without that correction the median error is "
        f"{100 * summary['median_abs_rel_err_without_drift_correction']:.1f} %.\n\n"
        f"![scatter]({tag}.png)\n"
    )
    save(tag, data, md)
    _plot(predicted, measured_ms, RESULTS / f"{tag}.png", f"{cfg.model} · {profile.spec.tag}")
    print(md)
    return data


def _plot(pred: np.ndarray, meas: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(meas, pred, s=14)
    lo, hi = min(meas.min(), pred.min()) * 0.95, max(meas.max(), pred.max()) * 1.05
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set(xlabel="measured latency (ms)", ylabel="predicted latency (ms)", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
