"""The bad-input table: each wrong input given to the real CLI, with the one line it prints and
its exit code, and whether anything was written. (The same cases are asserted in the tests.)

    python -m benchmarks.bad_inputs        # about a minute; writes results/bad_inputs.md
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from benchmarks._common import provenance, save

REPO = Path(__file__).resolve().parent.parent


def _config(tmp: Path, name: str, **changes: object) -> Path:
    cfg = yaml.safe_load((REPO / "search_spaces/resnet20_cifar10.yaml").read_text())
    cfg.update(profile=str(tmp / "profile.json"), profile_grid_points=3, model="resnet8")
    cfg.update(budget="0.8")
    cfg["dataset"].update(val_size=64, train_limit=128)
    cfg["search"].update(trials=2, parallel=1)
    cfg["short_finetune"].update(steps=1, batch_size=16)
    for key, value in changes.items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(*args: str) -> tuple[int, str]:
    res = subprocess.run(
        [sys.executable, "-m", "autoprune.cli", *args], capture_output=True, text=True, cwd=REPO
    )
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    return res.returncode, " ".join(lines[-1:]) if lines else ""


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        ok = _config(tmp, "ok")
        assert _cli("profile", "-c", str(ok), "--min-time", "0.05", "--sweep", "")[0] == 0
        (tmp / "bad.yaml").write_text("model: [resnet20\n")
        (tmp / "trunc.th").write_bytes(b"\x80\x02}q\x00")
        import torch

        class Evil:
            def __reduce__(self):
                return (print, ("code ran",))

        torch.save({"w": Evil()}, tmp / "evil.th")
        z = np.zeros((0, 3072), dtype=np.uint8)
        np.savez(tmp / "empty.npz", train_x=z, train_y=z[:, 0], test_x=z, test_y=z[:, 0])
        (tmp / "ratio.json").write_text(
            json.dumps(
                {
                    "format": "autoprune.policy/1",
                    "model": "resnet8",
                    "ratios": {"layer1.0.conv1": 1.2},
                }
            )
        )
        (tmp / "other.json").write_text(
            json.dumps({"format": "autoprune.policy/1", "model": "resnet20", "ratios": {}})
        )
        run = str(tmp / "run")
        cases = [
            ("malformed YAML", ["search", "-c", str(tmp / "bad.yaml"), "--run-dir", run]),
            (
                "unknown model",
                ["search", "-c", str(_config(tmp, "m", model="resnet21")), "--run-dir", run],
            ),
            (
                "unknown config key",
                ["search", "-c", str(_config(tmp, "k", serach=1)), "--run-dir", run],
            ),
            (
                "unknown layer in bounds",
                [
                    "search",
                    "-c",
                    str(_config(tmp, "l", **{"layers.bounds": {"layer9.conv1": 0.5}})),
                    "--run-dir",
                    run,
                ],
            ),
            (
                "bound outside (0, 1]",
                [
                    "search",
                    "-c",
                    str(_config(tmp, "b", **{"layers.min_keep": 0})),
                    "--run-dir",
                    run,
                ],
            ),
            (
                "budget below the reachable minimum",
                ["search", "-c", str(ok), "--run-dir", run, "--budget", "0.01"],
            ),
            (
                "budget that is not a number",
                ["search", "-c", str(ok), "--run-dir", run, "--budget", "fast"],
            ),
            (
                "profile for another thread count",
                [
                    "search",
                    "-c",
                    str(_config(tmp, "th", **{"device.threads": 2})),
                    "--run-dir",
                    run,
                ],
            ),
            (
                "truncated checkpoint",
                [
                    "search",
                    "-c",
                    str(_config(tmp, "c", checkpoint=str(tmp / "trunc.th"))),
                    "--run-dir",
                    run,
                ],
            ),
            (
                "checkpoint whose pickle carries code",
                [
                    "search",
                    "-c",
                    str(_config(tmp, "e", checkpoint=str(tmp / "evil.th"))),
                    "--run-dir",
                    run,
                ],
            ),
            (
                "empty dataset",
                [
                    "search",
                    "-c",
                    str(_config(tmp, "d", **{"dataset.root": str(tmp / "empty.npz")})),
                    "--run-dir",
                    run,
                ],
            ),
            (
                "missing dataset",
                [
                    "search",
                    "-c",
                    str(
                        _config(
                            tmp,
                            "d2",
                            **{"dataset.source": "exact", "dataset.root": str(tmp / "nope")},
                        )
                    ),
                    "--run-dir",
                    run,
                ],
            ),
            (
                "ratio outside [0, 1)",
                ["apply", str(tmp / "ratio.json"), "-c", str(ok), "--out", str(tmp / "o")],
            ),
            (
                "policy for another model",
                ["apply", str(tmp / "other.json"), "-c", str(ok), "--out", str(tmp / "o")],
            ),
            (
                "unknown searcher",
                ["search", "-c", str(ok), "--run-dir", run, "--searcher", "grid"],
            ),
            (
                "unstructured mode searched",
                [
                    "search",
                    "-c",
                    str(_config(tmp, "u", mode="unstructured", sparsity=0.5)),
                    "--run-dir",
                    run,
                ],
            ),
            ("apply on a folder that is no run", ["apply", str(tmp)]),
        ]
        for what, args in cases:
            code, line = _cli(*args)
            written = (tmp / "run").exists() or (tmp / "o").exists()
            rows.append({"input": what, "exit": code, "message": line, "wrote": written})
            print(f"{code} {what}: {line}", flush=True)
    prov = provenance()
    md = [
        "# Bad input → one line, non-zero exit, nothing written",
        "",
        f"`python -m benchmarks.bad_inputs`, commit {prov['git_commit']}, {prov['date']}.",
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
