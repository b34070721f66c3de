"""The bad-input table: each wrong input given to the real CLI, with the one line it prints, its
exit code, and whether anything was written. ``tests/test_bad_inputs.py`` asserts every row of
the same :data:`CASES` (one parametrized test each), so the table and the tests cannot drift.

    python -m benchmarks.bad_inputs        # about a minute; writes results/bad_inputs.{json,md}
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from autoprune.config import set_dotted

REPO = Path(__file__).resolve().parent.parent

Invoke = Callable[[list[str]], tuple[int, list[str]]]
"""Runs the CLI with these arguments; returns the exit code and the non-empty stderr lines."""


@dataclass(frozen=True)
class Case:
    name: str
    phrase: str  # what the one line must say
    args: Callable[[Path], list[str]]  # CLI arguments, given the prepared folder
    locked: bool = False  # run while another search holds the run directory


def config(tmp: Path, name: str = "ok", **changes: object) -> str:
    """A small valid ResNet-8 config (profile in ``tmp``) with dotted-key ``changes``."""
    cfg = yaml.safe_load((REPO / "search_spaces/resnet20_cifar10.yaml").read_text())
    cfg.update(profile=str(tmp / "profile.json"), profile_grid_points=3, model="resnet8")
    cfg.update(budget="0.8")
    cfg["dataset"].update(val_size=64, train_limit=128)
    cfg["search"].update(trials=2, parallel=1)
    cfg["short_finetune"].update(steps=1, batch_size=16)
    cfg["fidelity"] = {"min_steps": None}
    set_dotted(cfg, changes)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _search(tmp: Path, name: str, *extra: str, **changes: object) -> list[str]:
    return ["search", "-c", config(tmp, name, **changes), "--run-dir", str(tmp / "run"), *extra]


def _apply(tmp: Path, policy: str) -> list[str]:
    return ["apply", str(tmp / policy), "-c", config(tmp), "--out", str(tmp / "out")]


CASES: list[Case] = [
    Case(
        "malformed YAML",
        "malformed YAML",
        lambda t: ["search", "-c", str(t / "bad.yaml"), "--run-dir", str(t / "run")],
    ),
    Case("unknown model", "unknown model 'resnet21'", lambda t: _search(t, "m", model="resnet21")),
    Case("unknown config key", "unknown key(s) serach", lambda t: _search(t, "k", serach=1)),
    Case(
        "unknown layer in bounds",
        "'layer9.conv1' in the config is not a prunable layer",
        lambda t: _search(t, "l", **{"layers.bounds": {"layer9.conv1": 0.5}}),
    ),
    Case(
        "bound outside (0, 1]",
        "min_keep must lie in (0, 1]",
        lambda t: _search(t, "b", **{"layers.min_keep": 0}),
    ),
    Case(
        "screen scored on no images",
        "fidelity.screen_images must be ≥ 1 or null, got 0",
        lambda t: _search(t, "s", **{"fidelity.screen": "bn", "fidelity.screen_images": 0}),
    ),
    Case(
        "budget below the reachable minimum",
        "is infeasible: maximal pruning allowed by the bounds reaches",
        lambda t: _search(t, "ok", "--budget", "0.01"),
    ),
    Case(
        "budget that is not a number",
        "cannot read latency budget 'fast'",
        lambda t: _search(t, "ok", "--budget", "fast"),
    ),
    Case(
        "profile for another thread count",
        "recorded for threads 1 (wanted 2)",
        lambda t: _search(t, "th", **{"device.threads": 2}),
    ),
    Case(
        "truncated checkpoint",
        "cannot load checkpoint",
        lambda t: _search(t, "c", checkpoint=str(t / "trunc.th")),
    ),
    Case(
        "checkpoint whose pickle carries code",
        "nothing in it was run",
        lambda t: _search(t, "e", checkpoint=str(t / "evil.th")),
    ),
    Case(
        "empty dataset",
        "is empty (0 train, 0 test images)",
        lambda t: _search(t, "d", **{"dataset.root": str(t / "empty.npz")}),
    ),
    Case(
        "missing dataset",
        "dataset file not found",
        lambda t: _search(t, "d2", **{"dataset.source": "exact", "dataset.root": str(t / "no")}),
    ),
    Case("ratio outside [0, 1)", "it must lie in [0, 1)", lambda t: _apply(t, "ratio.json")),
    Case(
        "policy for another model",
        "policy is for model 'resnet20', but the config prunes 'resnet8'",
        lambda t: _apply(t, "other.json"),
    ),
    Case(
        "unknown searcher",
        "search.searcher is 'grid'",
        lambda t: _search(t, "ok", "--searcher", "grid"),
    ),
    Case(
        "unstructured mode searched",
        "there is nothing to search",
        lambda t: _search(t, "u", mode="unstructured", sparsity=0.5),
    ),
    Case(
        "apply on a folder that is no run",
        "not an autoprune run directory",
        lambda t: ["apply", str(t)],
    ),
    Case(
        "run directory in use by another search",
        "is in use by another search",
        lambda t: _search(t, "ok"),
        locked=True,
    ),
]


def prepare(tmp: Path, invoke: Invoke) -> None:
    """Write the inputs the cases point at (and a real fast profile for the valid config)."""
    code, lines = invoke(["profile", "-c", config(tmp), "--min-time", "0.05", "--sweep", ""])
    assert code == 0, lines
    (tmp / "bad.yaml").write_text("model: [resnet20\n")
    (tmp / "trunc.th").write_bytes(b"\x80\x02}q\x00")  # a pickle cut short
    (tmp / "evil.th").write_bytes(_pickle_that_runs_code())
    z, none = np.zeros((0, 3072), dtype=np.uint8), np.zeros(0, dtype=np.int64)
    empty: dict[str, Any] = {
        f"{k}_{f}": a
        for k in ("train", "val", "holdout")
        for f, a in (
            ("jpeg", z[:, 0]),
            ("offsets", np.zeros(1, dtype=np.int64)),
            ("y", none),
            ("index", none),
        )
    }
    np.savez(tmp / "empty.npz", test_x=z, test_y=none, test_index=none, **empty)
    for name, model, ratios in (
        ("ratio.json", "resnet8", {"layer1.0.conv1": 1.2}),
        ("other.json", "resnet20", {}),
    ):
        policy = {"format": "autoprune.policy/1", "model": model, "ratios": ratios}
        (tmp / name).write_text(json.dumps(policy))


def _pickle_that_runs_code() -> bytes:
    """A torch checkpoint whose unpickling would call ``print``: loading must refuse it."""
    import io

    import torch

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    buf = io.BytesIO()
    torch.save({"w": Evil()}, buf)
    return buf.getvalue()


def run_case(case: Case, tmp: Path, invoke: Invoke) -> dict:
    """Run one case; report its exit code, its stderr line(s) and whether it wrote output."""
    from autoprune.records import RunLock

    run = tmp / "run"
    with RunLock(run) if case.locked else nullcontext():
        code, lines = invoke(case.args(tmp))
    written = (tmp / "out").exists() or (
        run.exists() and any(p.name != ".lock" for p in run.iterdir())
    )
    if run.exists() and not written:  # leave the folder as the next case expects it: absent
        (run / ".lock").unlink(missing_ok=True)
        run.rmdir()
    return {"input": case.name, "exit": code, "lines": lines, "wrote": written}


def subprocess_cli(args: list[str]) -> tuple[int, list[str]]:
    res = subprocess.run(
        [sys.executable, "-m", "autoprune.cli", *args], capture_output=True, text=True, cwd=REPO
    )
    return res.returncode, [x for x in res.stderr.splitlines() if x.strip()]


def main() -> None:
    from benchmarks._common import provenance, save

    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        prepare(tmp, subprocess_cli)
        for case in CASES:
            row = run_case(case, tmp, subprocess_cli)
            row["message"] = " ".join(row.pop("lines")).replace(t, "<tmp>")
            rows.append(row)
            print(f"{row['exit']} {case.name}: {row['message']}", flush=True)
    prov = provenance()
    md = [
        "# Bad input → one line, non-zero exit, nothing written",
        "",
        f"`python -m benchmarks.bad_inputs`, commit {prov['git_commit']}, {prov['date']}. "
        "Every row is also a test (`tests/test_bad_inputs.py`).",
        "",
        "| input | exit | message (stderr) | output written |",
        "|---|---:|---|---|",
        *[
            f"| {r['input']} | {r['exit']} | {r['message']} | {'yes' if r['wrote'] else 'no'} |"
            for r in rows
        ],
    ]
    save("bad_inputs", {"rows": rows, "provenance": prov}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
