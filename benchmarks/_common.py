"""Shared helpers for benchmarks: provenance of every number, and writing results files."""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
from pathlib import Path
from typing import Any

from autoprune._io import write_json, write_text
from autoprune.hardware.device import device_name, versions

RESULTS = Path(__file__).resolve().parent / "results"


FORCE_PROFILE_HELP = (
    "use the work folder's device profile although it was recorded on another processor (a run\n"
    "resumed on a new machine): its fits stand; what is timed now is timed here, and the\n"
    "results' provenance names this machine"
)


def provenance(
    device: str = "cpu", threads: int | None = None, batch: int | None = None
) -> dict[str, Any]:
    """Device, threads, batch, library versions, git commit and time for a results file."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    import optuna
    import torch

    return {
        "device": device,
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "batch": batch,
        "versions": {
            **versions(),
            "optuna": optuna.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "git_commit": commit,
        "date": utc_now(),
    }


def wait_for_quiet(
    max_wait_s: float = 900.0, threshold: float = 0.3, window_s: float = 5.0
) -> float:
    """Before a latency measurement: wait (up to ``max_wait_s``) until other processes keep
    fewer than ``threshold`` CPUs busy over ``window_s``; return the CPUs they kept busy in the
    last window (recorded with the numbers). Other work on a 2-core machine slows timings."""
    import time

    from autoprune.hardware.timing import _cpu_seconds

    deadline = time.monotonic() + max_wait_s
    while True:
        before, t0 = _cpu_seconds(), time.monotonic()
        time.sleep(window_s)
        after, wall = _cpu_seconds(), time.monotonic() - t0
        if before is None or after is None:
            return 0.0
        busy = max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / wall)
        if busy < threshold or time.monotonic() > deadline:
            return busy


def utc_now() -> str:
    """The time a number was taken, ISO 8601 in UTC."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def save(
    name: str, data: dict[str, Any], markdown: str, folder: Path = RESULTS
) -> tuple[Path, Path]:
    """Write ``<folder>/<name>.json`` and ``<folder>/<name>.md`` atomically."""
    return write_json(folder / f"{name}.json", data), write_text(folder / f"{name}.md", markdown)
