"""What the CLI shows: progress bars with ETA, one line per finished candidate, result tables.
Plain text only: names are escaped, so ``pkg.mod:factory`` or ``[x]`` print as written."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from autoprune.records import rule_verdict

# Piped or logged output is not wrapped at 80 columns mid-phrase: a line stays one line.
out = Console(highlight=False, emoji=False, log_path=False, soft_wrap=not sys.stdout.isatty())
err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=not sys.stderr.isatty())


@contextmanager
def progress() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar (with ETA) fed by ``callback(task, done, total)``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    tasks: dict[str, Any] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    eta = (TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, *eta, console=err, transient=False) as bar:

        def callback(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(escape(name), total=total)
            bar.update(tasks[name], completed=done, total=total)

        yield callback


def trial_printer(bar: Callable[[], Callable[[str, int, int], None]], total: int) -> Any:
    """Prints one line per finished candidate and advances the search bar ``bar()``."""
    state: dict[str, Any] = {"best": None, "done": 0}

    def on_result(rec: dict[str, Any]) -> None:
        state["done"] += 1
        if rec["state"] == "COMPLETE" and (
            state["best"] is None or rec["accuracy"] > state["best"]
        ):
            state["best"] = rec["accuracy"]
        bar()("search", state["done"], total)
        if rec["state"] == "FAIL":
            what = f"failed ({rec.get('error')})"
        else:
            curve = " → ".join(f"{acc:.2f}" for _, acc in rec.get("curve") or [])
            steps = "/".join(str(s) for s, _ in rec.get("curve") or [])
            verb = "stopped early" if rec["state"] == "PRUNED" else "val"
            what = f"{verb} {curve} % after {steps} steps"
        best = f"; best {state['best']:.2f} %" if state["best"] is not None else ""
        out.log(escape(f"trial {rec['trial']}: {what}{best}"))

    return on_result


def print_summary(summary: Any, run_dir: Path) -> None:
    best = summary.best
    state = "interrupted; finished trials saved" if summary.interrupted else "done"
    if summary.timed_out:
        state = "stopped asking at the timeout, done"
    out.print(
        f"search {state}: {summary.finished} trials ({summary.failed} failed) in "
        f"{summary.seconds:.0f} s"
    )
    if best is not None:
        out.print(
            f"best: trial {best['trial']}, validation top-1 {best['accuracy']:.2f} %, "
            f"predicted {best['predicted_ms']:.3f} ms → {run_dir / 'best_policy.json'}"
        )
    verdict = rule_verdict(summary.records)
    if verdict is not None:
        out.print(verdict)
    if summary.interrupted:
        raise typer.Exit(130)


def print_demo(res: Any, run_dir: Path) -> None:
    """The demo's closing summary: the search, dense vs pruned, and where everything went."""
    print_summary(res.search, run_dir)
    out.rule("5/5 result")
    print_report(res.exported)
    out.print(
        f"exports in [bold]{escape(str(run_dir / 'export'))}[/] (model.pt, best_policy.json, "
        f"model.onnx, report.md); plots and report in [bold]{escape(str(res.report['html']))}[/]"
    )


def print_report(rep: dict[str, Any]) -> None:
    from rich.table import Table

    from autoprune.hardware.timing import busy_warning
    from autoprune.report import split_labels

    d, p = rep["dense"], rep["pruned"]
    t = Table(title=escape(f"{rep['model']}: dense vs pruned"))
    for col in ("", "dense", "pruned"):
        t.add_column(col, justify="right")
    for key, label in split_labels(rep).items():
        t.add_row(escape(f"{label} top-1 %"), f"{d[key]:.2f}", f"{p[key]:.2f}")
    t.add_row("measured latency ms", f"{d['latency_ms']:.3f}", f"{p['latency_ms']:.3f}")
    t.add_row("predicted latency ms", "", f"{rep['predicted_ms']:.3f}")
    t.add_row("budget ms", "", f"{rep['budget_ms']:.3f}")
    t.add_row("MACs M", f"{d['macs'] / 1e6:.2f}", f"{p['macs'] / 1e6:.2f}")
    t.add_row("params K", f"{d['params'] / 1e3:.1f}", f"{p['params'] / 1e3:.1f}")
    out.print(t)
    ok = "within" if rep["within_budget"] else "OVER"
    out.print(
        f"measured {p['latency_ms']:.3f} ms vs budget {rep['budget_ms']:.3f} ms: {ok} budget;"
        f" prediction error {100 * rep['prediction_error']:+.1f} %"
    )
    if contest := rep.get("contest"):
        scores = ", ".join(
            f"{name} {c['val_acc']:.2f} %" for name, c in contest["contenders"].items()
        )
        out.print(escape(f"kept the {contest['kept']} policy: {contest['by']}: {scores}"))
    if warning := busy_warning(rep["device"].get("other_cpus")):
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    for kind, path in rep.get("files", {}).items():
        out.print(escape(f"  {kind}: {path}"))


class Live:
    """Progress bars opened stage by stage, and one line per finished candidate that also
    advances the open bar (``total`` candidates)."""

    def __init__(self, total: int) -> None:
        self.bar: Callable[[str, int, int], None] = lambda *_: None
        self.on_result = trial_printer(lambda: self.bar, total)

    @contextmanager
    def progress(self) -> Iterator[Callable[[str, int, int], None]]:
        with progress() as cb:
            self.bar = cb
            yield cb

    @staticmethod
    def step(title: str) -> None:
        out.rule(escape(title))

    @staticmethod
    def note(text: str) -> None:
        out.print(escape(text))


def print_sensitivity(res: Any, out_dir: Path, max_drop: float) -> None:
    out.print(escape(res.markdown()))
    out.print(
        f"written to [bold]{out_dir}[/] (sensitivity.json/.md/.png, bounds.yaml); use "
        f"`autoprune search --sensitivity {out_dir / 'sensitivity.json'} --max-drop "
        f"{max_drop}` to bound the search"
    )


def print_profile(prof: Any, path: Path) -> None:
    """Where a measured profile went and what it says: the calibrated dense and maximal-pruning
    latency (timed interleaved with the calibration's pruned models), what pruning can reach,
    the fast channel multiple, and the dense model timed alone at each batch of the sweep."""
    from autoprune.hardware.profile import reachable_lines

    cal = prof.calibration
    out.print(
        f"profile written to [bold]{escape(str(path))}[/]\n  device "
        f"{escape(prof.device_name)} ({escape(prof.spec.describe())})\n"
        f"  dense {prof.dense_ms:.3f} ms, maximal pruning {prof.min_ms:.3f} ms (timed "
        f"interleaved with {cal['policies']} calibration models); calibration fit error "
        f"{100 * cal['fit_median_rel_err']:.1f} % (median)"
    )
    for line in reachable_lines(prof):
        (err if line.startswith("warning") else out).print(f"  {escape(line)}")
    if prof.channel_period:
        out.print(
            f"  channel counts run fastest in multiples of {prof.channel_period} here "
            "(`round_to: auto` uses it)"
            if prof.channel_period > 1
            else "  no channel multiple runs faster here (`round_to: auto` keeps 1)"
        )
    if prof.throughput:
        out.print("  dense model timed alone at each batch (throughput sweep):")
    for row in prof.throughput:
        out.print(
            f"  batch {row['batch']:>4}: {row['ms']:.3f} ms, {row['images_per_s']:.0f} img/s, "
            f"peak memory {row['peak_mem_mb']:.0f} MB"
        )


__all__ = [
    "Live",
    "err",
    "out",
    "print_profile",
    "print_report",
    "print_sensitivity",
    "print_summary",
    "progress",
    "trial_printer",
]
