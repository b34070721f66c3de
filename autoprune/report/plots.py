"""The report's figures, each a PNG written atomically. Inputs are plain records (trial log lines,
report dicts), so a figure can be redrawn from a finished run without loading any model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autoprune._io import write_with


def _figure(width: float = 6.4, height: float = 4.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    ax.grid(alpha=0.3)
    return fig, ax


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (latency, accuracy) points no other point beats on both (lower latency, higher acc)."""
    front: list[tuple[float, float]] = []
    for lat, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((lat, acc))
    return front


def plot_curves(curves: Sequence[tuple[Sequence[Sequence[float]], str]], path: Path) -> Path:
    """Every candidate's validation accuracy against fine-tune steps (the fidelity rungs it
    reached), coloured by how it ended (COMPLETE, PRUNED)."""
    fig, ax = _figure()
    colors = {"COMPLETE": "C0", "PRUNED": "C3"}
    seen: set[str] = set()
    for curve, state in curves:
        if not curve:
            continue
        steps, acc = zip(*curve, strict=True)
        ax.plot(
            steps,
            acc,
            "o-",
            color=colors.get(state, "C7"),
            alpha=0.6,
            ms=3,
            lw=1,
            label=None if state in seen else state.lower(),
        )
        seen.add(state)
    positive = [s for curve, _ in curves for s, _ in curve if s > 0]
    if any(s == 0 for curve, _ in curves for s, _ in curve):  # a screening rung: no step yet
        ax.set_xscale("symlog", linthresh=min(positive, default=1))
    else:
        ax.set_xscale("log")
    ax.set_xlabel("fine-tune steps (fidelity rung; 0: screened, not fine-tuned)")
    ax.set_ylabel("validation top-1 (%)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_pareto(
    trials: Sequence[tuple[float, float]],
    path: Path,
    *,
    dense: tuple[float, float] | None = None,
    exported: tuple[float, float] | None = None,
    budget_ms: float | None = None,
) -> Path:
    """Accuracy × latency: every trial (predicted latency, short fine-tune), their Pareto front,
    and the dense and exported models (measured latency, final accuracy)."""
    fig, ax = _figure()
    if trials:
        ax.scatter(
            *zip(*trials, strict=True), s=14, alpha=0.5, label="trials (predicted, short FT)"
        )
        front = pareto_front(trials)
        ax.step(*zip(*front, strict=True), where="post", color="C0", lw=1.2, label="Pareto front")
    if dense:  # solid black, drawn on top and never clipped at the axes' edge
        ax.scatter(
            [dense[0]], [dense[1]], marker="*", s=220, c="black", edgecolors="black",
            alpha=1.0, zorder=6, clip_on=False, label="dense (measured)",
        )  # fmt: skip
    if exported:
        ax.scatter(
            *exported,
            marker="D",
            s=70,
            color="C3",
            zorder=5,
            label="exported (measured, final FT)",
        )
    if budget_ms:
        ax.axvline(budget_ms, ls="--", color="C3", alpha=0.6, label="budget")
    ax.margins(0.08)  # room around the extreme points (the dense model is one)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("Accuracy vs latency")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_layers(dense: Mapping[str, int], kept: Mapping[str, int], path: Path) -> Path:
    """Kept channels per prunable layer vs the dense model."""
    import numpy as np

    names = list(dense)
    x = np.arange(len(names))
    fig, ax = _figure(max(6.4, 0.45 * len(names)), 4.2)
    ax.bar(x - 0.2, [dense[n] for n in names], 0.4, label="dense", color="0.75")
    ax.bar(x + 0.2, [kept.get(n, dense[n]) for n in names], 0.4, label="pruned", color="C0")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("output channels")
    ax.set_title("Channels kept per layer")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_progress(accuracies: Sequence[float | None], path: Path) -> Path:
    """Each trial's validation accuracy in finishing order, and the best so far (failed: gaps)."""
    fig, ax = _figure()
    xs = [i + 1 for i, a in enumerate(accuracies) if a is not None]
    ys = [a for a in accuracies if a is not None]
    best, run = [], float("-inf")
    for y in ys:
        run = max(run, y)
        best.append(run)
    ax.scatter(xs, ys, s=12, alpha=0.5, label="trial")
    ax.plot(xs, best, color="C3", lw=1.5, label="best so far")
    ax.set_xlabel("trial (finishing order)")
    ax.set_ylabel("validation top-1 (%) after short FT")
    ax.set_title("Search progress")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_latency(
    groups: Mapping[str, Sequence[tuple[float, float]]], path: Path, *, title: str = ""
) -> Path:
    """Predicted vs measured latency (ms), one colour per group, with y = x and ±5 %."""
    import numpy as np

    fig, ax = _figure(5.0, 4.6)
    allv = [v for pts in groups.values() for p in pts for v in p]
    for label, pts in groups.items():
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=18, alpha=0.7, label=label)
    if allv:
        lim = np.array([min(allv) * 0.9, max(allv) * 1.1])
        ax.plot(lim, lim, "k-", lw=0.8)
        ax.fill_between(lim, lim * 0.95, lim * 1.05, color="k", alpha=0.08, label="±5 %")
        ax.set_xlim(*lim)
        ax.set_ylim(*lim)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title or "Latency predictor")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def plot_sensitivity(
    ratios: Sequence[float], accuracy: Mapping[str, Sequence[float]], dense: float, path: Path
) -> Path:
    """Validation accuracy vs pruning ratio, one curve per layer pruned alone."""
    fig, ax = _figure(7.0, 4.6)
    xs = [0.0, *ratios]
    for i, (layer, accs) in enumerate(accuracy.items()):
        ax.plot(xs, [dense, *accs], marker="o", ms=3, lw=1, color=f"C{i % 10}", label=layer)
    ax.set_xlabel("share of the layer's channels removed")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("Per-layer sensitivity")
    ax.legend(fontsize=6, ncol=2, loc="lower left")
    return _save(fig, path)


__all__ = [
    "pareto_front",
    "plot_latency",
    "plot_layers",
    "plot_pareto",
    "plot_progress",
    "plot_sensitivity",
]
