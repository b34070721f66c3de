"""Fine-tuning speed on the CPU, this checkout against another commit (before/after a change).

    python -m benchmarks.finetune_speed --against cd36b2d^ [--steps 60] [--rounds 5]

Times the search's fine-tune (bundled ResNet-20, batch 128, augmentation, fp32, 1 thread) in
fresh processes, alternating this checkout and a worktree of ``--against`` round by round so
that a machine whose speed drifts, or that is busy with something else, slows both alike; the
medians and their ratio go to ``results/finetune_speed.{json,md}``. Each process warms up with
a few steps first (first-call costs apart).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._common import RESULTS, provenance, save

REPO = Path(__file__).resolve().parent.parent

# Runs in the tree under test, through APIs both sides of the comparison have.
TIMER = """
import dataclasses, json, sys, time, torch
torch.set_num_threads(1)
from autoprune.config import FinetuneConfig
from autoprune.data.cifar10 import load_cifar10
from autoprune.finetune import finetune
from autoprune.models import build_model
steps, batch = int(sys.argv[1]), int(sys.argv[2])
data = load_cifar10("bundled")
model = build_model("resnet20")
cfg = FinetuneConfig(steps=steps, batch_size=batch)
finetune(model, data.train, dataclasses.replace(cfg, steps=3))
t0 = time.perf_counter()
finetune(model, data.train, cfg)
print(json.dumps({"images_per_s": steps * batch / (time.perf_counter() - t0)}))
"""


def time_tree(tree: Path, steps: int, batch: int) -> float:
    """Images per second of one fresh process fine-tuning with the code in ``tree``."""
    out = subprocess.run(
        [sys.executable, "-c", TIMER, str(steps), str(batch)],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--against", required=True, help="the commit to compare with (git rev)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--note", default="", help="conditions to record with the numbers")
    args = ap.parse_args(argv)
    rev = subprocess.run(
        ["git", "rev-parse", "--short", args.against],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    speeds: dict[str, list[float]] = {"this checkout": [], rev: []}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(old), rev],
            cwd=REPO, check=True, capture_output=True,
        )  # fmt: skip
        try:
            for r in range(args.rounds):
                for label, tree in (("this checkout", REPO), (rev, old)):
                    speeds[label].append(time_tree(tree, args.steps, args.batch))
                    print(f"round {r + 1}: {label}: {speeds[label][-1]:.0f} images/s", flush=True)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(old)], cwd=REPO, check=False
            )
    medians = {k: statistics.median(v) for k, v in speeds.items()}
    ratio = medians["this checkout"] / medians[rev]
    out = {
        "provenance": provenance("cpu", threads=1, batch=args.batch),
        "against": rev,
        "steps": args.steps,
        "rounds": speeds,
        "median_images_per_s": medians,
        "ratio": ratio,
        "note": args.note,
    }
    md = [
        "# Fine-tuning speed on the CPU: this checkout against an earlier commit",
        "",
        f"{out['provenance']['device_name']}, 1 thread, ResNet-20, batch {args.batch}, "
        f"{args.steps} steps per process after 3 warm-up steps, {args.rounds} rounds alternating "
        f"the two trees; commit {out['provenance']['git_commit']} against {rev}; "
        f"{out['provenance']['date']}.",
        "",
        "| code | images/s per round | median |",
        "|---|---|---:|",
        *(
            f"| {k} | {', '.join(f'{s:.0f}' for s in v)} | {medians[k]:.0f} |"
            for k, v in speeds.items()
        ),
        "",
        f"Ratio (this checkout / {rev}): **{ratio:.3f}**.",
        *(["", args.note] if args.note else []),
    ]
    save("finetune_speed", out, "\n".join(md) + "\n", folder=args.results)
    print("\n".join(md))
    return out


if __name__ == "__main__":
    main()
