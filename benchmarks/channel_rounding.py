"""Does a layer run faster at channel counts that are multiples of 8? Single-layer latency
against output channels, on every latency backend that runs on this machine.

    python -m benchmarks.channel_rounding [--threads 1] [--batch 1]   # ~5 min on 2 cores
    python -m benchmarks.channel_rounding --device cuda --batch 64    # a GPU (and --batch 1)

Two 3×3 convolutions: ResNet-20's last stage (64 → c_out at 8×8) and an ImageNet-sized one
(128 → c_out at 28×28), c_out over every count from 3/4 of the width to the full width. A
backend where rounding matters shows steps at multiples of 8 (or 16, 32); where it does not,
latency grows smoothly and ``round_to: 1`` loses nothing. Writes
``benchmarks/results/channel_rounding.{json,md,png}`` (on a GPU ``channel_rounding-cuda-b<B>``).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from autoprune.errors import ConfigError
from autoprune.hardware.backends import BACKENDS, backend_for
from autoprune.hardware.device import DeviceSpec
from autoprune.hardware.timing import time_many
from autoprune.prunable import ModuleGeometry
from benchmarks._common import RESULTS, provenance, save

LAYERS = {
    "resnet20 layer3 (64→c, 8×8)": ModuleGeometry("l3", "conv", 64, 64, 3, 1, 1, 1, (8, 8)),
    "imagenet-size (128→c, 28×28)": ModuleGeometry("l", "conv", 128, 128, 3, 1, 1, 1, (28, 28)),
}


def sweep(
    runtime: str, threads: int, batch: int, min_time_s: float, device: str = "cpu"
) -> dict[str, list[float]]:
    """Latency (ms) of each layer at every output channel count from 3/4 width to full."""
    backend = backend_for(DeviceSpec(device, threads, batch, runtime))
    out: dict[str, list[float]] = {}
    for name, g in LAYERS.items():
        counts = list(range(g.out_channels * 3 // 4, g.out_channels + 1))
        fns = [backend.layer_runner(g, g.in_channels, c) for c in counts]
        with backend.session():
            timings = time_many(fns, backend.synchronize, min_time_s=min_time_s, rounds=5)
        out[name] = [t.ms for t in timings]
    return out


def rounding_gain(counts: list[int], ms: list[float], multiple: int) -> dict[str, float]:
    """What rounding a channel count that is not a multiple of ``multiple`` buys: ``up`` =
    latency at the next multiple up ÷ latency at the count (≈ 1: the extra channels are free),
    ``down`` = latency at the multiple below ÷ latency at the count (< 1: rounding down saves).
    Medians over the counts strictly between two multiples in the sweep."""
    at = dict(zip(counts, ms, strict=True))
    inner = [
        c
        for c in counts
        if c % multiple and c // multiple * multiple in at and -(-c // multiple) * multiple in at
    ]
    up = [at[-(-c // multiple) * multiple] / at[c] for c in inner]
    down = [at[c // multiple * multiple] / at[c] for c in inner]
    return {"up": statistics.median(up), "down": statistics.median(down), "down_min": min(down)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds of timing per count")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder for results files")
    args = ap.parse_args(argv)
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for runtime in BACKENDS.names():
        if runtime == "torch-compile":
            skipped[runtime] = "times single layers eagerly (as torch), by design"
            continue
        try:
            results[runtime] = sweep(runtime, args.threads, args.batch, args.min_time, args.device)
        except ConfigError as e:
            skipped[runtime] = str(e)
        print(f"{runtime}: {'done' if runtime in results else skipped[runtime]}", flush=True)
    out = {
        "threads": args.threads,
        "batch": args.batch,
        "layers": {n: [g.in_channels, g.out_channels, list(g.in_hw)] for n, g in LAYERS.items()},
        "ms": results,
        "gain": {
            rt: {
                name: {
                    str(m): rounding_gain(
                        list(
                            range(
                                LAYERS[name].out_channels * 3 // 4, LAYERS[name].out_channels + 1
                            )
                        ),
                        ms,
                        m,
                    )
                    for m in (8, 16)
                }
                for name, ms in per.items()
            }
            for rt, per in results.items()
        },
        "skipped": skipped,
        "provenance": provenance(args.device, args.threads, args.batch),
    }
    name = "channel_rounding"
    if args.device != "cpu":
        name += f"-{args.device.replace(':', '')}-b{args.batch}"
    save(name, out, _markdown(out, name), folder=args.results)
    _plot(out, args.results / f"{name}.png")
    return out


def _markdown(out: dict[str, Any], name: str = "channel_rounding") -> str:
    prov = out["provenance"]
    md = [
        "# Single-layer latency vs output channels: does rounding to multiples of 8 matter?",
        "",
        f"{prov['device_name']} ({prov['cpu_count']} cores), {out['threads']} thread(s), batch "
        f"{out['batch']}; torch {prov['versions']['torch']}; commit {prov['git_commit']}; "
        f"{prov['date']}. Each count timed in 5 interleaved rounds (median of per-round 10th "
        "percentiles). For a count between two multiples of *m*: *up* = latency at the next "
        "multiple ÷ latency at the count (≈ 1.00: the extra channels come free), *down* = "
        "latency at the multiple below ÷ latency at the count (< 1: rounding down saves; "
        "median and best case).",
        "",
        "| backend | layer | m | up | down (median) | down (best) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for rt, per in out["gain"].items():
        for name, by_m in per.items():
            for m, g in by_m.items():
                md.append(
                    f"| {rt} | {name} | {m} | {g['up']:.3f} | {g['down']:.3f} | "
                    f"{g['down_min']:.3f} |"
                )
    for rt, why in out["skipped"].items():
        md.append(f"\n{rt}: not measured here ({why}).")
    md += ["", f"![latency vs channels]({name}.png)", "", "## Every count (ms)", ""]
    for name, (_c_in, c_out, _hw) in out["layers"].items():
        counts = list(range(c_out * 3 // 4, c_out + 1))
        rts = [rt for rt in out["ms"] if name in out["ms"][rt]]
        md += [f"### {name}", "", "| c_out | " + " | ".join(rts) + " |",
               "|---:|" + "---:|" * len(rts)]  # fmt: skip
        for i, c in enumerate(counts):
            mark = " ◆" if c % 8 == 0 else ""
            md.append(
                f"| {c}{mark} | "
                + " | ".join(f"{out['ms'][rt][name][i]:.4f}" for rt in rts)
                + " |"
            )
        md.append("")
    return "\n".join(md) + "\n"


def _plot(out: dict[str, Any], path: Path = RESULTS / "channel_rounding.png") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from autoprune._io import write_with

    names = list(out["layers"])
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.4))
    for ax, name in zip(axes, names, strict=True):
        c_out = out["layers"][name][1]
        counts = list(range(c_out * 3 // 4, c_out + 1))
        for rt, per in out["ms"].items():
            ax.plot(counts, per[name], ".-", label=rt)
        for c in counts:
            if c % 8 == 0:
                ax.axvline(c, color="gray", lw=0.5, alpha=0.5)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("output channels (grey: multiples of 8)")
        ax.set_ylabel("ms")
        ax.legend(fontsize=8)
    fig.tight_layout()
    write_with(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


if __name__ == "__main__":
    main()
