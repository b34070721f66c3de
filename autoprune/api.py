"""The public Python API: one function per CLI command, each what the command does minus the
printing. ``from autoprune import api``::

    cfg = load_config("search_spaces/resnet20_cifar10.yaml")
    api.profile(cfg)                                   # hardware_profiles/…json
    api.search(cfg, SearchOptions(Path("runs/x")))     # runs/x/{study.db, trials.jsonl, …}
    api.apply("runs/x")                                # runs/x/final/ (fit, fine-tune, measure)
    api.export("runs/x")                               # runs/x/export/ (model.pt, ONNX, report)
    api.report("runs/x")                               # runs/x/report/ (report.html, plots)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from autoprune.apply import apply
from autoprune.config import Config
from autoprune.errors import ConfigError
from autoprune.export import export
from autoprune.hardware.profile import HardwareProfile
from autoprune.pipeline import SearchOptions, search
from autoprune.sensitivity import SensitivityResult
from autoprune.sensitivity import run as sensitivity
from autoprune.workspace import build_workspace

Progress = Callable[[str, int, int], None]


def profile(
    cfg: Config,
    *,
    out: str | Path | None = None,
    min_time_s: float = 0.5,
    sweep: Sequence[int] = (1, 16, 64),
    progress: Progress | None = None,
    channel_sweep: bool = True,
) -> tuple[HardwareProfile, Path]:
    """Measure the latency table of ``cfg``'s model on its device and save it (default: this
    processor's file in ``hardware_profiles/``); returns the profile and where it went.
    ``channel_sweep`` also finds the device's fast channel multiple (``round_to: auto``)."""
    if any(b < 1 for b in sweep):
        raise ConfigError(f"sweep batch sizes must be at least 1, got {list(sweep)}")
    ws = build_workspace(cfg)
    measured = ws.measure_profile(
        progress=progress, min_time_s=min_time_s, sweep=list(sweep), channel_sweep=channel_sweep
    )
    path = Path(out) if out else ws.profile_path()
    measured.save(path)
    return measured, path


def report(
    run_dir: str | Path, out: str | Path | None = None, storage: str | None = None
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the plots of a search run; returns their paths
    (a run sharing its study with other drivers reads theirs from ``storage`` first)."""
    from autoprune.report import build_report

    return build_report(Path(run_dir), Path(out) if out else None, storage)


__all__ = [
    "SearchOptions",
    "SensitivityResult",
    "apply",
    "export",
    "profile",
    "report",
    "search",
    "sensitivity",
]
