"""``autoprune demo``: the whole pipeline offline on the bundled ResNet-20 and CIFAR-10 images —
profile (if this processor has none), search, apply, export, report — in minutes on a CPU."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoprune import api
from autoprune.config import DEFAULT_CONFIG, load_config
from autoprune.pipeline import SearchOptions
from autoprune.workspace import build_workspace

Progress = Callable[[str, int, int], None]


@dataclass
class DemoResult:
    search: Any  # SearchSummary
    applied: Any  # ExportReport
    exported: dict[str, Any]
    report: dict[str, Path]


def run_demo(
    run_dir: Path,
    overrides: dict[str, Any],
    *,
    step: Callable[[str], None],
    progress: Callable[[], AbstractContextManager[Progress]],
    on_result: Callable[[dict[str, Any]], None] | None = None,
    note: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo into ``run_dir`` (emptied first). ``step(title)`` announces each stage,
    ``note(text)`` says what it found; ``progress()`` opens a progress display for the long
    ones."""
    cfg = load_config(DEFAULT_CONFIG, overrides)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    ws = build_workspace(cfg)
    if ws.profile_path().is_file():
        note(f"latency profile of this processor: {ws.profile_path()}")
    else:  # a quick profile of this processor (the device fit corrects what it misses)
        step("0/5 profile this processor (quick)")
        cfg = cfg.replace(profile=str(run_dir / "profile.json"), profile_grid_points=6)
        with progress() as cb:
            quick = build_workspace(cfg).measure_profile(
                repeats=10, min_time_s=0.25, progress=cb, sweep=[], channel_sweep=False
            )
        quick.save(run_dir / "profile.json")
    step("1/5 search")
    with progress() as cb:
        summary = api.search(
            cfg,
            SearchOptions(run_dir, use_ray=cfg.search.parallel > 1),
            progress=cb,
            on_result=on_result,
        )
    if summary.interrupted:
        raise KeyboardInterrupt
    step("2/5 apply: fit to the measured budget, final fine-tune, re-measure")
    with progress() as cb:
        # One final fine-tune, not two: the rule check would take the demo past 10 minutes;
        # the search's closing line still compares its best with the rules' policies.
        applied = api.apply(run_dir, progress=cb, rule_check=False)
    step("3/5 export")
    exported = api.export(run_dir)
    step("4/5 report")
    files = api.report(run_dir)
    return DemoResult(summary, applied, exported, files)


__all__ = ["DemoResult", "run_demo"]
