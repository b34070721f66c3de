"""The ``autoprune`` command line. Every error is one line on stderr and a non-zero exit
(``--debug`` shows the traceback). Heavy modules are imported inside each command."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from autoprune.errors import AutopruneError

if TYPE_CHECKING:
    from autoprune.config import Config

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Search per-layer pruning ratios under a latency budget measured on your device.",
)
out = Console()
err = Console(stderr=True)
STATE = {"debug": False}
REPO_SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
DEFAULT_CONFIG = REPO_SPACES / "resnet20_cifar10.yaml"


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    STATE["debug"] = debug
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except AutopruneError as e:
        if STATE["debug"]:
            raise
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar fed by ``callback(task, done, total)``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    tasks: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    ) as bar:

        def callback(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        yield callback


def _config(path: Path | None, overrides: dict[str, Any]) -> Config:
    from autoprune.config import from_dict, load_config, to_dict

    cfg = load_config(path or DEFAULT_CONFIG)
    if overrides:
        d = to_dict(cfg)
        for key, value in overrides.items():
            if value is None:
                continue
            node = d
            *parents, last = key.split(".")
            for p in parents:
                node = node[p]
            node[last] = value
        cfg = from_dict(d)
    return cfg


ConfigOpt = typer.Option(
    None,
    "--config",
    "-c",
    help="Search-space YAML (default: search_spaces/resnet20_cifar10.yaml).",
    exists=False,
)


@app.command()
def profile(
    config: Path | None = ConfigOpt,
    model: str | None = typer.Option(None, help="Model name (overrides the config)."),
    checkpoint: str | None = typer.Option(None, help="Checkpoint to load (state dict)."),
    device: str | None = typer.Option(None, help="cpu or cuda[:N]."),
    threads: int | None = typer.Option(None, help="CPU threads to pin while timing."),
    batch: int | None = typer.Option(None, help="Batch size to time."),
    runtime: str | None = typer.Option(
        None, help="What runs the model: torch (eager) or onnxruntime (CPU)."
    ),
    grid_points: int | None = typer.Option(None, help="Channel counts timed per layer."),
    out_path: Path | None = typer.Option(None, "--out", help="Where to write the profile JSON."),
    min_time: float = typer.Option(
        0.5, help="Seconds each whole-model measurement runs at least."
    ),
    sweep: str = typer.Option(
        "1,16,64", help="Batch sizes for the dense model's throughput and peak memory ('' = none)."
    ),
) -> None:
    """Measure a per-layer latency table for a model on this device (hardware_profiles/*.json)."""
    with _errors():
        from autoprune.workspace import build_workspace

        cfg = _config(
            config,
            {
                "model": model,
                "checkpoint": checkpoint,
                "device.device": device,
                "device.threads": threads,
                "device.batch": batch,
                "device.runtime": runtime,
                "profile_grid_points": grid_points,
            },
        )
        from autoprune.errors import ConfigError

        try:
            batches = [int(b) for b in sweep.split(",") if b.strip()]
        except ValueError as e:
            raise ConfigError(f"--sweep takes batch sizes like 1,16,64: {e}") from e
        if any(b < 1 for b in batches):
            raise ConfigError("--sweep batch sizes must be at least 1")
        ws = build_workspace(cfg)
        with _progress() as cb:
            prof = ws.measure_profile(progress=cb, min_time_s=min_time, sweep=batches)
        path = out_path or ws.profile_path()
        prof.save(path)
        cal = prof.calibration
        out.print(
            f"profile written to [bold]{path}[/]\n"
            f"  device {prof.device_name} ({prof.device}, {prof.threads} thread(s), batch "
            f"{prof.batch})\n  dense {prof.dense_ms:.3f} ms, maximal pruning "
            f"{prof.min_ms:.3f} ms; calibration fit error {100 * cal['fit_median_rel_err']:.1f} %"
            f" (median over {cal['policies']} whole-model measurements)"
        )
        for row in prof.throughput:
            out.print(
                f"  batch {row['batch']:>4}: {row['ms']:.3f} ms, {row['images_per_s']:.0f} img/s, "
                f"peak memory {row['peak_mem_mb']:.0f} MB"
            )


@app.command()
def search(
    config: Path | None = ConfigOpt,
    budget: str | None = typer.Option(
        None, help="Latency budget: fraction of dense (0.5, 50%) or absolute (2.5ms)."
    ),
    searcher: str | None = typer.Option(None, help="optuna | amc | random | uniform | global."),
    sampler: str | None = typer.Option(None, help="Optuna sampler: tpe | nsga2 | random."),
    runtime: str | None = typer.Option(
        None, help="Budget latency for torch or onnxruntime (needs that profile)."
    ),
    trials: int | None = typer.Option(None, help="Number of candidate evaluations."),
    parallel: int | None = typer.Option(None, help="Evaluations in flight (Ray when > 1)."),
    seed: int | None = typer.Option(None, help="Search seed."),
    run_dir: Path = typer.Option(
        Path("runs/search"), help="Where the study, trial log and best policy go."
    ),
    resume: bool = typer.Option(False, help="Continue the search in --run-dir."),
    address: str | None = typer.Option(None, help="Ray cluster to join: auto or ray://host:port."),
    ray: bool = typer.Option(False, "--ray", help="Use Ray even with --parallel 1."),
    cpus_per_trial: float = typer.Option(1.0, help="CPUs each evaluation reserves."),
    gpus_per_trial: float = typer.Option(
        0.0, help="GPUs each evaluation reserves (fractions ok)."
    ),
    max_retries: int = typer.Option(2, help="Retries of an evaluation whose worker died."),
    storage: str | None = typer.Option(
        None,
        help="Optuna storage URL (default: SQLite in "
        "--run-dir; any SQLAlchemy URL to share a study).",
    ),
    force: bool = typer.Option(False, help="Use a hardware profile that does not match."),
    sensitivity: Path | None = typer.Option(
        None, help="sensitivity.json from `autoprune sensitivity`: bound each layer with it."
    ),
    max_drop: float = typer.Option(
        2.0, help="With --sensitivity: accuracy points a layer may lose alone at its bound."
    ),
) -> None:
    """Search per-layer pruning ratios under the latency budget predicted from the profile."""
    with _errors():
        from autoprune.pipeline import SearchOptions

        cfg = _config(
            config,
            {
                "budget": budget,
                "search.searcher": searcher,
                "search.sampler": sampler,
                "device.runtime": runtime,
                "search.parallel": parallel,
                "search.seed": seed,
            },
        )
        if sensitivity is not None:
            cfg = _bounds_from(cfg, sensitivity, max_drop)
        opts = SearchOptions(
            run_dir,
            resume=resume,
            address=address,
            use_ray=ray,
            cpus_per_trial=cpus_per_trial,
            gpus_per_trial=gpus_per_trial,
            max_retries=max_retries,
            storage=storage,
            force=force,
            trials=trials,
        )
        summary = _run_search(cfg, opts)
        _print_summary(summary, run_dir)


def _bounds_from(cfg: Config, path: Path, max_drop: float) -> Config:
    """Per-layer min_keep from a sensitivity analysis; bounds written in the config win."""
    from autoprune.errors import ConfigError
    from autoprune.sensitivity import SensitivityResult

    sens = SensitivityResult.load(path)
    if sens.model != cfg.model:
        raise ConfigError(f"{path} analyses {sens.model!r}, the config prunes {cfg.model!r}")
    bounds = {**sens.bounds(max_drop, floor=cfg.layers.min_keep), **cfg.layers.bounds}
    return cfg.replace(**{"layers.bounds": bounds})


def _run_search(cfg: Config, opts: Any) -> Any:
    from autoprune.pipeline import search as run

    with _progress() as cb:
        state: dict[str, Any] = {"best": None, "done": 0}

        def on_result(rec: dict[str, Any]) -> None:
            state["done"] += 1
            if rec["state"] == "COMPLETE" and (
                state["best"] is None or rec["accuracy"] > state["best"]
            ):
                state["best"] = rec["accuracy"]
            cb("search", state["done"], opts.trials or cfg.search.trials)
            out.log(_trial_line(rec, state["best"]), highlight=False)

        return run(cfg, opts, progress=cb, on_result=on_result)


def _trial_line(rec: dict[str, Any], best: float | None) -> str:
    """One line per finished candidate: its validation score at each rung it reached."""
    if rec["state"] == "FAIL":
        what = f"failed ({rec.get('error')})"
    else:
        curve = " → ".join(f"{acc:.2f}" for _, acc in rec.get("curve") or [])
        steps = "/".join(str(s) for s, _ in rec.get("curve") or [])
        verb = "stopped early" if rec["state"] == "PRUNED" else "val"
        what = f"{verb} {curve} % after {steps} steps"
    return f"trial {rec['trial']}: {what}" + (f"; best {best:.2f} %" if best is not None else "")


def _print_summary(summary: Any, run_dir: Path) -> None:
    best = summary.best
    state = "interrupted; finished trials saved" if summary.interrupted else "done"
    out.print(
        f"search {state}: {summary.finished} trials ({summary.failed} failed) in "
        f"{summary.seconds:.0f} s"
    )
    if best is not None:
        out.print(
            f"best: trial {best['trial']}, validation top-1 {best['accuracy']:.2f} %, "
            f"predicted {best['predicted_ms']:.3f} ms → {run_dir / 'best_policy.json'}"
        )
    if summary.interrupted:
        raise typer.Exit(130)


@app.command()
def apply(
    run_dir: Path = typer.Argument(..., help="A search run directory (or a policy JSON)."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Config (default: the run's saved config)."
    ),
    out_dir: Path | None = typer.Option(None, "--out", help="Output folder (default RUN/final)."),
    finetune: bool = typer.Option(True, help="Run the final fine-tune recipe."),
    force: bool = typer.Option(False, help="Use a hardware profile that does not match."),
    fit_device: bool = typer.Option(
        True,
        "--fit-device/--keep-policy",
        help="Adjust the policy until its measured latency meets the budget (default), or apply "
        "it exactly as saved.",
    ),
) -> None:
    """Apply the best policy, fit it to the budget as measured on the device, fine-tune it,
    re-measure its latency, save the model."""
    with _errors():
        report = _apply(run_dir, config, out_dir, finetune, force, fit_device)
        _print_report(report.to_dict())


def _apply(
    run_dir: Path,
    config: Path | None,
    out_dir: Path | None,
    finetune: bool,
    force: bool,
    fit_device: bool = True,
) -> Any:
    from autoprune.config import load_config
    from autoprune.export import apply_and_export
    from autoprune.pipeline import best_policy_path, ensure_profile, load_run
    from autoprune.policy import PruningPolicy
    from autoprune.workspace import build_workspace

    budget = None
    if run_dir.is_file():
        policy_path = run_dir
        cfg = load_config(config) if config else _config(None, {})
        target = out_dir or run_dir.parent / "final"
    else:
        saved, info = load_run(run_dir)
        cfg = load_config(config) if config else saved
        policy_path, target, budget = (
            best_policy_path(run_dir),
            out_dir or run_dir / "final",
            info["budget"],
        )
    policy = PruningPolicy.load(policy_path)
    ws = build_workspace(cfg)
    prof, _, _ = ensure_profile(ws, force=force)
    with _progress() as cb:
        return apply_and_export(
            ws,
            policy,
            prof,
            target,
            budget=budget,
            finetune_final=finetune,
            onnx=False,
            progress=cb,
            fit_device=fit_device,
        )


def _print_report(rep: dict[str, Any]) -> None:
    from rich.table import Table

    d, p = rep["dense"], rep["pruned"]
    t = Table(title=f"{rep['model']}: dense vs pruned")
    for col in ("", "dense", "pruned"):
        t.add_column(col, justify="right")
    from autoprune.report import split_labels

    for key, label in split_labels(rep).items():
        t.add_row(f"{label} top-1 %", f"{d[key]:.2f}", f"{p[key]:.2f}")
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
    from autoprune.hardware.timing import busy_warning

    warning = busy_warning(rep["device"].get("other_cpus"))
    if warning:
        err.print(f"[yellow]warning:[/] {warning}")
    for kind, path in rep.get("files", {}).items():
        out.print(f"  {kind}: {path}")


@app.command()
def sensitivity(
    config: Path | None = ConfigOpt,
    ratios: str = typer.Option("0.2,0.4,0.6,0.8", help="Comma-separated shares to remove."),
    finetune_steps: int = typer.Option(0, help="Fine-tune steps after pruning (0 = none)."),
    layer: list[str] = typer.Option([], help="Only these layers (repeatable; default all)."),
    parallel: int = typer.Option(1, help="Evaluations in flight (Ray when > 1)."),
    address: str | None = typer.Option(None, help="Ray cluster to join: auto or ray://host:port."),
    out_dir: Path = typer.Option(Path("runs/sensitivity"), "--out", help="Output folder."),
    max_drop: float = typer.Option(2.0, help="Accuracy points for the suggested bounds."),
) -> None:
    """Prune each layer alone over a grid of ratios and score validation accuracy: a table,
    accuracy-vs-ratio curves, and per-layer bounds for `search --sensitivity`."""
    with _errors():
        import dataclasses

        import yaml

        from autoprune._io import write_text
        from autoprune.distributed import LocalPool, RayPool
        from autoprune.errors import ConfigError
        from autoprune.pipeline import ensure_profile
        from autoprune.report.plots import plot_sensitivity
        from autoprune.sensitivity import analyze
        from autoprune.workspace import build_workspace

        try:
            grid = [float(r) for r in ratios.split(",") if r.strip()]
        except ValueError as e:
            raise ConfigError(f"--ratios must be numbers like 0.2,0.4: {e}") from e
        cfg = _config(config, {})
        ws = build_workspace(cfg)
        prof, _, _ = ensure_profile(ws)
        evaluator = ws.evaluator(ws.load_data(), prof)
        evaluator.finetune_cfg = dataclasses.replace(
            cfg.short_finetune, steps=finetune_steps, epochs=None
        )
        use_ray = parallel > 1 or address is not None
        pool = (
            RayPool(evaluator, address=address, slots=parallel)
            if use_ray
            else LocalPool(evaluator)
        )
        try:
            with _progress() as cb:
                res = analyze(
                    evaluator,
                    cfg.model,
                    pool,
                    grid,
                    layers=layer or None,
                    seed=cfg.search.seed,
                    progress=lambda d, n: cb("sensitivity", d, n),
                )
        finally:
            pool.close()
        res.save(out_dir / "sensitivity.json")
        write_text(out_dir / "sensitivity.md", res.markdown())
        plot_sensitivity(res.ratios, res.accuracy, res.dense_accuracy, out_dir / "sensitivity.png")
        bounds = res.bounds(max_drop, floor=cfg.layers.min_keep)
        write_text(
            out_dir / "bounds.yaml",
            f"# min_keep per layer: at most {max_drop} points lost by pruning it alone\n"
            + yaml.safe_dump({"layers": {"bounds": bounds}}, sort_keys=False),
        )
        out.print(res.markdown())
        out.print(
            f"written to [bold]{out_dir}[/] (sensitivity.json/.md/.png, bounds.yaml); use "
            f"`autoprune search --sensitivity {out_dir / 'sensitivity.json'} --max-drop "
            f"{max_drop}` to bound the search"
        )


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A search run directory."),
    out_dir: Path | None = typer.Option(None, "--out", help="Output folder (default RUN/report)."),
) -> None:
    """Write report.md and a self-contained report.html with plots: accuracy vs latency, search
    progress, channels per layer, predicted vs measured latency, sensitivity (if analysed)."""
    with _errors():
        from autoprune.report import build_report

        files = build_report(run_dir, out_dir)
        for kind, path in files.items():
            out.print(f"  {kind}: {path}")


@app.command()
def export(
    run_dir: Path = typer.Argument(
        ..., help="A search run directory (after `apply`) or an applied folder."
    ),
    out_dir: Path | None = typer.Option(None, "--out", help="Output folder (default RUN/export)."),
    onnx: bool = typer.Option(
        True, help="Also write ONNX, checked against PyTorch with onnxruntime."
    ),
) -> None:
    """Export an applied policy: reloadable model.pt, best_policy.json, model.onnx, report.md."""
    with _errors():
        from autoprune.export import export_dir

        src = run_dir / "final" if (run_dir / "final").is_dir() else run_dir
        dst = out_dir or (src.parent / "export" if src.name == "final" else src / "export")
        rep = export_dir(src, dst, onnx=onnx)
        _print_report(rep)
        out.print(f"exported to [bold]{dst}[/]")


@app.command()
def demo(
    run_dir: Path = typer.Option(Path("runs/demo"), help="Where the demo writes its run."),
    trials: int | None = typer.Option(None, help="Candidates (default: the config's, 12)."),
    parallel: int | None = typer.Option(None, help="Evaluations in flight (Ray workers)."),
    searcher: str | None = typer.Option(None, help="optuna | amc | random | uniform | global."),
    budget: str | None = typer.Option(None, help="Latency budget (default: the config's, 0.6)."),
) -> None:
    """Offline end-to-end demo on the bundled ResNet-20 and CIFAR-10 images: profile, search,
    apply, export, report — under 10 minutes on 2 CPU cores."""
    with _errors():
        import shutil

        from autoprune.pipeline import SearchOptions
        from autoprune.workspace import build_workspace

        cfg = _config(
            DEFAULT_CONFIG,
            {
                "search.trials": trials,
                "search.parallel": parallel,
                "search.searcher": searcher,
                "budget": budget,
            },
        )
        if run_dir.exists():
            shutil.rmtree(run_dir)
        ws = build_workspace(cfg)
        if ws.profile_path().is_file():
            out.print(f"latency profile of this processor: {ws.profile_path()}")
        else:  # a quick profile of this processor (the device fit corrects what it misses)
            out.rule("0/5 profile this processor (quick)")
            cfg = cfg.replace(profile=str(run_dir / "profile.json"), profile_grid_points=6)
            with _progress() as cb:
                build_workspace(cfg).measure_profile(
                    repeats=10, min_time_s=0.25, progress=cb, sweep=[]
                ).save(run_dir / "profile.json")
        out.rule("1/5 search")
        summary = _run_search(cfg, SearchOptions(run_dir, use_ray=cfg.search.parallel > 1))
        _print_summary(summary, run_dir)
        out.rule("2/5 apply: fit to the measured budget, final fine-tune, re-measure")
        rep = _apply(run_dir, None, None, True, False)
        out.rule("3/5 export")
        from autoprune.export import export_dir

        full = export_dir(run_dir / "final", run_dir / "export", onnx=True)
        out.rule("4/5 report")
        from autoprune.report import build_report

        files = build_report(run_dir)
        out.rule("5/5 result")
        _print_report(full)
        out.print(
            f"exports in [bold]{run_dir / 'export'}[/] (model.pt, best_policy.json, "
            f"model.onnx, report.md); latency {rep.pruned['latency_ms']:.3f} ms; plots and "
            f"report in [bold]{files['html']}[/]"
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
