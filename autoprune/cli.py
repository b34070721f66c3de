"""The ``autoprune`` command line: a thin shell over :mod:`autoprune.api` that reads flags,
shows progress and prints results. Every error is one line on stderr and exit code 2
(``--debug`` shows the traceback). Heavy modules are imported inside each command."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from autoprune import _display as ui
from autoprune.errors import AutopruneError

if TYPE_CHECKING:
    from autoprune.config import Config

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstrings wrap at 100 columns: single newlines are not breaks
    help="Search per-layer pruning ratios under a latency budget measured on your device.",
)


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    """Search per-layer pruning ratios under a latency budget measured on your device."""
    import warnings

    from autoprune.errors import MemorizedValidationWarning

    shown = warnings.showwarning

    def one_line(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, MemorizedValidationWarning):  # ours: one clean line
            ui.err.print(f"[yellow]warning:[/] {escape(str(message))}")
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line


@contextmanager
def _errors(ctx: typer.Context) -> Iterator[None]:
    try:
        yield
    except AutopruneError as e:
        if ctx.find_root().params.get("debug"):
            raise
        ui.err.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        ui.err.print("interrupted")
        raise typer.Exit(130) from None


def _config(path: Path | None, overrides: dict[str, Any]) -> Config:
    """The YAML (default: the bundled ResNet-20 one) with the flags that were given."""
    from autoprune.config import DEFAULT_CONFIG, load_config

    return load_config(
        path or DEFAULT_CONFIG, {k: v for k, v in overrides.items() if v is not None}
    )


def _numbers(text: str, usage: str) -> list[float]:
    """Comma-separated numbers from a flag; a one-line error naming the flag otherwise."""
    from autoprune.errors import ConfigError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise ConfigError(f"{usage}: {e}") from e


ConfigOpt = typer.Option(
    None,
    "--config",
    "-c",
    help="Search-space YAML (default: search_spaces/resnet20_cifar10.yaml).",
)
# The device spec: what deployment runs, so what is timed and budgeted (YAML `device:`). Every
# command that times takes the same flags, and a profile recorded for another spec is refused.
DeviceOpt = typer.Option(None, help="Latency device: cpu or cuda[:N].")
ThreadsOpt = typer.Option(None, help="CPU threads to time with.")
BatchOpt = typer.Option(None, help="Batch size to time.")
RuntimeOpt = typer.Option(
    None, help="Latency backend: torch | cuda-graphs | torch-compile | onnxruntime | tensorrt."
)
DtypeOpt = typer.Option(None, help="Precision timed: float32 | float16 | bfloat16.")
ChannelsLastOpt = typer.Option(
    None, "--channels-last/--contiguous", help="Memory format timed (default: the config's)."
)
ProfileOpt = typer.Option(None, "--profile", help="The hardware profile JSON to use.")
SearcherOpt = typer.Option(None, help="optuna | amc | random | uniform | global | lamp.")


def _spec(
    device: str | None = None,
    threads: int | None = None,
    batch: int | None = None,
    runtime: str | None = None,
    dtype: str | None = None,
    channels_last: bool | None = None,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Config overrides from the device-spec flags that were given."""
    return {
        "device.device": device, "device.threads": threads, "device.batch": batch,
        "device.runtime": runtime, "device.dtype": dtype, "device.channels_last": channels_last,
        "profile": None if profile is None else str(profile),
    }  # fmt: skip


@app.command()
def profile(
    ctx: typer.Context,
    config: Path | None = ConfigOpt,
    model: str | None = typer.Option(None, help="Model name (overrides the config)."),
    checkpoint: str | None = typer.Option(None, help="Checkpoint to load (state dict)."),
    device: str | None = DeviceOpt,
    threads: int | None = ThreadsOpt,
    batch: int | None = BatchOpt,
    runtime: str | None = RuntimeOpt,
    dtype: str | None = DtypeOpt,
    channels_last: bool | None = ChannelsLastOpt,
    grid_points: int | None = typer.Option(None, help="Channel counts timed per layer."),
    calibration: int | None = typer.Option(
        None, help="Random policies timed whole to calibrate the table (default 18)."
    ),
    out_path: Path | None = typer.Option(None, "--out", help="Where to write the profile JSON."),
    min_time: float = typer.Option(0.5, help="Seconds each whole-model measurement runs."),
    sweep: str = typer.Option("1,16,64", help="Batches for throughput/peak memory ('' = none)."),
    channel_sweep: bool = typer.Option(
        True, help="Find the fast channel multiple (round_to: auto) with a short sweep."
    ),
) -> None:
    """Measure a per-layer latency table for a model on this device (hardware_profiles/*.json)."""
    with _errors(ctx):
        from autoprune import api

        cfg = _config(config, {
            "model": model, "checkpoint": checkpoint,
            **_spec(device, threads, batch, runtime, dtype, channels_last),
            "profile_grid_points": grid_points, "profile_calibration": calibration,
        })  # fmt: skip
        batches = [int(b) for b in _numbers(sweep, "--sweep takes batch sizes like 1,16,64")]
        with ui.progress() as cb:
            prof, path = api.profile(
                cfg, out=out_path, min_time_s=min_time, sweep=batches, progress=cb,
                channel_sweep=channel_sweep,
            )  # fmt: skip
        ui.print_profile(prof, path)


@app.command()
def search(
    ctx: typer.Context,
    config: Path | None = ConfigOpt,
    budget: str | None = typer.Option(None, help="Latency budget: 0.5, 50% or 2.5ms."),
    searcher: str | None = SearcherOpt,
    sampler: str | None = typer.Option(None, help="Optuna sampler: tpe | nsga2 | cmaes | random."),
    device: str | None = DeviceOpt,
    threads: int | None = ThreadsOpt,
    batch: int | None = BatchOpt,
    runtime: str | None = RuntimeOpt,
    dtype: str | None = DtypeOpt,
    channels_last: bool | None = ChannelsLastOpt,
    profile: Path | None = ProfileOpt,
    trials: int | None = typer.Option(None, help="Number of candidates."),
    timeout: float | None = typer.Option(
        None, help="Seconds after which no new candidate starts (those started finish)."
    ),
    parallel: int | None = typer.Option(None, help="Evaluations in flight (Ray when > 1)."),
    seed: int | None = typer.Option(None, help="Search seed."),
    run_dir: Path = typer.Option(Path("runs/search"), help="Where the study and trials go."),
    resume: bool = typer.Option(False, help="Continue the search in --run-dir."),
    address: str | None = typer.Option(None, help="Ray cluster to join: auto or ray://host:port."),
    ray: bool = typer.Option(False, "--ray", help="Use Ray even with --parallel 1."),
    cpus_per_trial: float = typer.Option(1.0, help="CPUs each evaluation reserves."),
    gpus_per_trial: float = typer.Option(0.0, help="GPUs each evaluation reserves (0.25 …)."),
    max_retries: int = typer.Option(2, help="Retries of an evaluation whose worker died."),
    storage: str | None = typer.Option(
        None,
        help="Optuna storage: sqlite:///F (default: RUN/study.db), postgresql://… or "
        "journal:PATH; drivers sharing one join the same study.",
    ),
    study: str | None = typer.Option(None, help="Study name drivers sharing --storage join."),
    force: bool = typer.Option(False, help="Use a hardware profile that does not match."),
    sensitivity: Path | None = typer.Option(None, help="Bound layers by a sensitivity.json."),
    max_drop: float = typer.Option(2.0, help="With --sensitivity: points a layer may lose alone."),
) -> None:
    """Search per-layer pruning ratios under the latency budget predicted from the profile."""
    with _errors(ctx):
        from autoprune import api
        from autoprune.sensitivity import bounded

        cfg = _config(config, {
            "budget": budget, "search.searcher": searcher, "search.sampler": sampler,
            "search.parallel": parallel, "search.seed": seed, "search.study": study,
            "search.timeout_s": timeout,
            **_spec(device, threads, batch, runtime, dtype, channels_last, profile),
        })  # fmt: skip
        if sensitivity is not None:
            cfg = bounded(cfg, sensitivity, max_drop)
        opts = api.SearchOptions(
            run_dir, resume=resume, address=address, use_ray=ray, cpus_per_trial=cpus_per_trial,
            gpus_per_trial=gpus_per_trial, max_retries=max_retries, storage=storage,
            force=force, trials=trials,
        )  # fmt: skip
        live = ui.Live(trials or cfg.search.trials)
        with live.progress() as cb:
            summary = api.search(cfg, opts, progress=cb, on_result=live.on_result, note=live.note)
        ui.print_summary(summary, run_dir)


@app.command()
def apply(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="A search run directory (or a policy JSON)."),
    config: Path | None = typer.Option(None, "-c", "--config", help="Config (default: run's)."),
    out_dir: Path | None = typer.Option(None, "--out", help="Output folder (default RUN/final)."),
    finetune: bool = typer.Option(True, help="Run the final fine-tune recipe."),
    force: bool = typer.Option(False, help="Use a hardware profile that does not match."),
    fit_device: bool = typer.Option(
        True, "--fit-device/--keep-policy", help="Fit the policy to the measured budget."
    ),
    profile: Path | None = ProfileOpt,
    rule_check: bool = typer.Option(
        True,
        help="When the search beat a hand-made rule's policy it evaluated, fine-tune both and "
        "keep the better on validation (twice the final's time).",
    ),
) -> None:
    """Apply the best policy: fit it to the measured budget, fine-tune, re-measure, save.

    The policy is moved until its latency measured beside the dense model meets the budget, then
    fine-tuned with the final recipe, timed again, and saved with its report data. A search's
    lead over a hand-made rule at its last rung can vanish or reverse in the final fine-tune,
    so by default the best rule's policy the search evaluated goes through the final too, and
    the one better on validation is kept (both in RUN/final/contenders/)."""
    with _errors(ctx):
        from autoprune import api

        with ui.progress() as cb:
            rep = api.apply(
                run_dir, config=config, out=out_dir, finetune=finetune, force=force,
                fit_device=fit_device, progress=cb, profile=profile, rule_check=rule_check,
            )  # fmt: skip
        ui.print_report(rep.to_dict())


@app.command()
def sensitivity(
    ctx: typer.Context,
    config: Path | None = ConfigOpt,
    ratios: str = typer.Option("0.2,0.4,0.6,0.8", help="Comma-separated shares to remove."),
    finetune_steps: int = typer.Option(0, help="Fine-tune steps after pruning (0 = none)."),
    layer: list[str] = typer.Option([], help="Only these layers (repeatable; default all)."),
    parallel: int = typer.Option(1, help="Evaluations in flight (Ray when > 1)."),
    address: str | None = typer.Option(None, help="Ray cluster to join: auto or ray://host:port."),
    out_dir: Path = typer.Option(Path("runs/sensitivity"), "--out", help="Output folder."),
    max_drop: float = typer.Option(2.0, help="Accuracy points for the suggested bounds."),
) -> None:
    """Per-layer sensitivity: prune each layer alone over a grid of ratios.

    Scores validation accuracy for each; writes a table, accuracy-vs-ratio curves, and per-layer
    bounds for `search --sensitivity`."""
    with _errors(ctx):
        from autoprune import api

        grid = _numbers(ratios, "--ratios must be numbers like 0.2,0.4")
        with ui.progress() as cb:
            res = api.sensitivity(
                _config(config, {}), ratios=grid, finetune_steps=finetune_steps,
                layers=layer or None, parallel=parallel, address=address, out=out_dir,
                max_drop=max_drop, progress=lambda d, n: cb("sensitivity", d, n),
            )  # fmt: skip
        ui.print_sensitivity(res, out_dir, max_drop)


@app.command()
def report(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="A search run directory."),
    out_dir: Path | None = typer.Option(None, "--out", help="Output folder (default RUN/report)."),
    storage: str | None = typer.Option(
        None, help="The shared study's storage URL, with its password (default: the run's)."
    ),
) -> None:
    """Write report.md and a self-contained report.html with plots.

    Plots: accuracy vs latency, search progress, learning curves, channels per layer, predicted
    vs measured latency, sensitivity."""
    with _errors(ctx):
        from autoprune import api

        for kind, path in api.report(run_dir, out_dir, storage).items():
            ui.out.print(escape(f"  {kind}: {path}"))


@app.command()
def export(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="A search run (after `apply`) or an applied folder."),
    out_dir: Path | None = typer.Option(None, "--out", help="Output folder (default RUN/export)."),
    onnx: bool = typer.Option(True, help="Also write ONNX, checked against PyTorch."),
) -> None:
    """Export an applied policy: reloadable model.pt, best_policy.json, model.onnx, report.md."""
    with _errors(ctx):
        from autoprune import api

        rep = api.export(run_dir, out=out_dir, onnx=onnx)
        ui.print_report(rep)
        ui.out.print(f"exported to [bold]{escape(str(Path(rep['files']['policy']).parent))}[/]")


@app.command()
def demo(
    ctx: typer.Context,
    run_dir: Path = typer.Option(Path("runs/demo"), help="Where the demo writes its run."),
    trials: int | None = typer.Option(None, help="Candidates (default: the config's, 10)."),
    parallel: int | None = typer.Option(None, help="Evaluations in flight (Ray workers)."),
    searcher: str | None = SearcherOpt,
    budget: str | None = typer.Option(None, help="Latency budget (default: the config's, 0.8)."),
    device: str | None = DeviceOpt,
    threads: int | None = ThreadsOpt,
    batch: int | None = BatchOpt,
    runtime: str | None = RuntimeOpt,
    dtype: str | None = DtypeOpt,
    profile: Path | None = ProfileOpt,
) -> None:
    """Offline end-to-end demo on the bundled ResNet-20 and CIFAR-10 images (< 10 min, 2 CPUs).

    Runs profile, search, apply, export and report in turn."""
    with _errors(ctx):
        from autoprune.config import DEFAULT_CONFIG, load_config
        from autoprune.demo import run_demo

        overrides = {
            "search.trials": trials, "search.parallel": parallel,
            "search.searcher": searcher, "budget": budget,
            **_spec(device, threads, batch, runtime, dtype, None, profile),
        }  # fmt: skip
        given = {k: v for k, v in overrides.items() if v is not None}
        live = ui.Live(load_config(DEFAULT_CONFIG, given).search.trials)
        res = run_demo(
            run_dir, given, step=live.step, progress=live.progress, on_result=live.on_result,
            note=live.note,
        )  # fmt: skip
        ui.print_demo(res, run_dir)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
