"""The prepared GPU check: one script, one results archive, inside 9 minutes on one GPU.

    python -m benchmarks.gpu_check --out $OUT            # on a CUDA machine (≈ 8 min on an H200)
    python -m benchmarks.gpu_check --dry --out /tmp/gc   # the same code paths on a CPU, tiny

Sections, each timed and recorded even when one fails (its error is kept, the rest go on):

1. ``tests``: the CUDA tests (``pytest -m gpu``);
2. ``latency``: dense and maximal-pruning latency of ResNet-20 and ResNet-56 per backend
   (eager, CUDA graphs, ``torch.compile``) × precision (fp32, bf16) × batch (1, 64, 256), and
   the speed-up pruning can reach in each;
3. ``table``: the latency table at the best setting against 24 random policies timed whole
   (share within ±10 %, median and worst error);
4. ``channels``: the channel period the profile's sweep finds, and the rounding benchmark at
   batch 1 and 64;
5. ``training``: ResNet-20 fine-tuning images/s with the GPU recipe (data resident, bf16,
   channels_last, fused SGD, batch 512) against the plain one;
6. ``pipeline``: ``autoprune profile → search → apply → export`` through the CLI at a
   feasible budget.

Writes ``OUT/gpu-check.json``, ``OUT/gpu-check.md`` and ``OUT/gpu-check.tar.gz`` (everything,
for ``benchmarks/results/gpu-<date>.md``). ``--dry`` runs every section on the CPU with tiny
sizes, which the test suite does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoprune._io import write_json, write_text
from autoprune.errors import ConfigError
from autoprune.hardware.device import DeviceSpec
from autoprune.hardware.measure import measure_models
from autoprune.models import build_model
from autoprune.policy import PruningPolicy, random_policy
from autoprune.prunable import discover, module_geometry
from autoprune.pruning import apply_policy
from benchmarks._common import provenance, utc_now

REPO = Path(__file__).resolve().parent.parent
SHAPE = (3, 32, 32)


class Plan:
    """Sizes of every section: the full GPU run, or a tiny CPU dry run."""

    def __init__(self, dry: bool) -> None:
        self.dry = dry
        self.device = "cpu" if dry else "cuda"
        self.models = ["resnet8"] if dry else ["resnet20", "resnet56"]
        self.runtimes = ["torch"] if dry else ["torch", "cuda-graphs", "torch-compile"]
        # A CPU without native bfloat16 emulates it 9-17x slower: the dry run leaves it out there
        # (the suite's bfloat16 tests cover the code path).
        self.dtypes = ["float32", "bfloat16"] if not dry or native_bf16() else ["float32"]
        self.batches = [1, 4] if dry else [1, 64, 256]
        self.min_time = 0.02 if dry else 0.3
        self.policies = 4 if dry else 24
        self.train_steps = 3 if dry else 200
        self.train_batch = 32 if dry else 512


def _models(name: str) -> tuple[torch.nn.Module, torch.nn.Module, list[Any]]:
    """A model (random weights: latency does not depend on them), its maximal pruning (every
    layer keeps 20 %), and its prunable layers."""
    model = build_model(name, pretrained=False)
    layers = discover(model, SHAPE)
    maximal = apply_policy(
        model, PruningPolicy(name, {la.name: 0.8 for la in layers}), layers, SHAPE
    )
    return model, maximal, layers


def latency(plan: Plan) -> list[dict[str, Any]]:
    rows = []
    for name in plan.models:
        dense, maximal, _ = _models(name)
        for runtime in plan.runtimes:
            for dtype in plan.dtypes:
                for batch in plan.batches:
                    if runtime == "torch-compile" and batch != max(plan.batches):
                        continue  # compiling is slow: the largest batch only
                    spec = DeviceSpec(plan.device, 1, batch, runtime, dtype)
                    row: dict[str, Any] = {"model": name, "spec": spec.describe()}
                    try:
                        t_dense, t_max = measure_models(
                            [dense, maximal], SHAPE, spec, min_time_s=plan.min_time, rounds=3
                        )
                        row.update(
                            dense_ms=t_dense.ms,
                            maximal_ms=t_max.ms,
                            speed_up=t_dense.ms / t_max.ms,
                            dense_images_per_s=batch / t_dense.ms * 1e3,
                        )
                    except (ConfigError, RuntimeError) as e:
                        row["error"] = str(e).splitlines()[0]
                    rows.append(row)
                    print(f"  latency {row}", flush=True)
    return rows


def _best(rows: list[dict[str, Any]], plan: Plan) -> DeviceSpec:
    """The setting with the largest reachable speed-up for the last model at the largest batch
    (eager and CUDA graphs only: the table times layers through the same backend)."""
    ok = [
        r
        for r in rows
        if "speed_up" in r and r["model"] == plan.models[-1] and "torch-compile" not in r["spec"]
    ]
    best = max(ok, key=lambda r: r["speed_up"]) if ok else None
    runtime = "torch"
    dtype = "float32"
    if best is not None:
        runtime = best["spec"].rsplit(", ", 1)[-1]
        dtype = "bfloat16" if "bfloat16" in best["spec"] else "float32"
    return DeviceSpec(plan.device, 1, max(plan.batches) if plan.dry else 64, runtime, dtype)


def table(plan: Plan, spec: DeviceSpec) -> dict[str, Any]:
    from autoprune.hardware import LUTPredictor
    from autoprune.hardware.profiler import profile_model

    name = plan.models[-1]
    model, _, layers = _models(name)
    bounds = {la.name: 0.8 for la in layers}
    prof = profile_model(
        name, model, layers, SHAPE, spec, max_ratio=bounds,
        round_to=1 if plan.dry else 8, grid_points=4 if plan.dry else 8,
        calibration_policies=2 if plan.dry else 12, repeats=5 if plan.dry else 20,
        min_time_s=plan.min_time, channel_sweep=False,
    )  # fmt: skip
    predictor = LUTPredictor(prof)
    rng = np.random.default_rng(123)
    policies = [random_policy(name, bounds, rng, prof.round_to) for _ in range(plan.policies)]
    pruned = [apply_policy(model, p, layers, SHAPE) for p in policies]
    measured = measure_models(pruned, SHAPE, spec, min_time_s=plan.min_time, rounds=3)
    err = [predictor.predict(p) / t.ms - 1 for p, t in zip(policies, measured, strict=True)]
    return {
        "spec": spec.describe(),
        "model": name,
        "policies": len(err),
        "within_10pct": float(np.mean(np.abs(err) <= 0.10)),
        "median_abs_err": float(np.median(np.abs(err))),
        "worst_abs_err": float(np.max(np.abs(err))),
        "calibration_fit_err": prof.calibration["fit_median_rel_err"],
        "dense_ms": prof.dense_ms,
        "maximal_ms": prof.min_ms,
    }


def channels(plan: Plan, out: Path) -> dict[str, Any]:
    from autoprune.hardware.backends import backend_for
    from autoprune.hardware.profiler import channel_period, representative
    from benchmarks import channel_rounding

    name = plan.models[-1]
    model, _, layers = _models(name)
    reps = representative(layers, module_geometry(model, SHAPE))
    res: dict[str, Any] = {}
    for batch in (1, max(plan.batches)):
        backend = backend_for(DeviceSpec(plan.device, 1, batch))
        period, gains = channel_period(backend, reps, min_time_s=plan.min_time / 4)
        res[f"period_b{batch}"] = period
        res[f"gains_b{batch}"] = gains
        if not plan.dry:  # the rounding benchmark's two layers, every count (≈ 1 min each)
            channel_rounding.main(
                ["--device", plan.device, "--batch", str(batch), "--min-time", "0.1",
                 "--results", str(out)]
            )  # fmt: skip
    return res


def training(plan: Plan) -> list[dict[str, Any]]:
    from autoprune.config import FinetuneConfig
    from autoprune.data import load_cifar10
    from autoprune.finetune import finetune

    data = load_cifar10("bundled", train_limit=512 if plan.dry else None)
    rows = []
    recipes = {
        "plain (batch 128, fp32)": FinetuneConfig(steps=plan.train_steps, batch_size=128),
        "gpu recipe (batch 512, bf16, channels_last, fused SGD)": FinetuneConfig(
            steps=plan.train_steps, batch_size=plan.train_batch, amp="bfloat16" in plan.dtypes,
            channels_last=True, reference_batch=128,
        ),
    }  # fmt: skip
    for label, cfg in recipes.items():
        model = build_model(plan.models[0]).to(plan.device)
        warm = dataclasses.replace(cfg, steps=2)
        finetune(model, data.train, warm)  # first-call costs (cuDNN autotuning, copies) apart
        if plan.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        finetune(model, data.train, cfg)
        if plan.device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "recipe": label,
                "model": plan.models[0],
                "steps": cfg.steps,
                "batch": cfg.batch_size,
                "images_per_s": cfg.steps * cfg.batch_size / seconds,
            }
        )
        print(f"  training {rows[-1]}", flush=True)
    return rows


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 / AMX); elsewhere it is
    emulated, 9-17× slower than float32 (ResNet-8 at batch 1-4 on a 2-core AVX2 VM)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def readme_commands(dry: bool) -> list[list[str]]:
    """The commands of the README's "Targeting a GPU" block, as a CPU runs them when ``dry``
    (``cuda`` → ``cpu``, CUDA graphs → eager, one evaluation at a time, no GPU per trial, and
    float32 where the dry :class:`Plan` leaves bfloat16 out)."""
    text = (REPO / "README.md").read_text()
    block = text.split("### Targeting a GPU", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    swap = {"cuda": "cpu", "cuda-graphs": "torch"}
    if "bfloat16" not in Plan(dry).dtypes:  # the plan decides, here as in the table
        swap["bfloat16"] = "float32"
    out = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        for part in filter(None, (p.strip() for p in line.split("&&"))):
            words = part.split()
            if dry:
                words = [swap.get(w, w) for w in words]
                for flag, value in (("--parallel", "1"), ("--gpus-per-trial", None)):
                    if flag in words:
                        i = words.index(flag)
                        words[i : i + 2] = [flag, value] if value else []
            out.append(words)
    return out


def pipeline(plan: Plan, work: Path) -> dict[str, Any]:
    """The README's GPU commands (profile → search → apply → export), as written, on a small
    config (a few candidates, short fine-tunes) so they fit the check."""
    import yaml

    cfg = yaml.safe_load((REPO / "search_spaces/resnet20_cifar10.yaml").read_text())
    cfg.update(
        profile_grid_points=4, profile_calibration=2, measure_seconds=0.5 if plan.dry else 2
    )
    cfg["dataset"].update(val_size=128 if plan.dry else 256, train_limit=2048)
    cfg["search"].update(trials=3 if plan.dry else 4, startup_trials=2, warm_start=[])
    cfg["fidelity"] = {"min_steps": 10, "rungs": 2, "reduction_factor": 2}
    batch = 16 if plan.dry else 128
    cfg["final_finetune"] = {"steps": 5 if plan.dry else 20, "batch_size": batch}
    if plan.dry:
        cfg["short_finetune"]["batch_size"] = batch
        cfg["model"] = "resnet8"  # random weights: a check of the commands, not of accuracy
    path = work / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    steps = readme_commands(plan.dry)
    out: dict[str, Any] = {"commands": [" ".join(s) for s in steps]}
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    for words in steps:
        assert words[0] == "autoprune", words
        cmd = [sys.executable, "-m", "autoprune.cli", *words[1:]]
        if words[1] in ("profile", "search"):
            cmd += ["-c", str(path)]
        if words[1] == "profile":
            cmd += ["--sweep", "", "--min-time", str(plan.min_time)]
            cmd += ["--no-channel-sweep"] if plan.dry else []
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work, check=False)
        out[words[1]] = {"rc": res.returncode, "seconds": time.perf_counter() - t0,
                         "tail": (res.stdout + res.stderr)[-1500:]}  # fmt: skip
        if res.returncode:
            raise RuntimeError(f"`{' '.join(words)}` failed: {out[words[1]]['tail'][-300:]}")
    report = work / "runs/search/export/report.json"
    if report.is_file():
        out["report"] = json.loads(report.read_text())
    return out


def tests(plan: Plan) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]
    where = ["tests"]
    if plan.dry:  # the suite runs this script itself: only check the marker selects tests
        cmd.append("--collect-only")
        where = ["tests/test_devices.py"]
    res = subprocess.run([*cmd, *where], capture_output=True, text=True, cwd=REPO, check=False)
    return {"rc": res.returncode, "tail": res.stdout[-2000:]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--out", type=Path, required=True, help="folder for the results archive")
    ap.add_argument("--dry", action="store_true", help="CPU, tiny sizes (the test suite's)")
    ap.add_argument("--only", nargs="*", default=None, help="run only these sections")
    args = ap.parse_args(argv)
    plan = Plan(args.dry)
    if not plan.dry and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run with --dry for the CPU check")
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "provenance": provenance(plan.device, 1, None),
        "dry": plan.dry,
        "started": utc_now(),
        "sections": {},
    }
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    rows: list[dict[str, Any]] = []

    def timed() -> list[dict[str, Any]]:
        rows.extend(latency(plan))  # the table section times the best of these settings
        return rows

    sections: dict[str, Callable[[], Any]] = {
        "tests": lambda: tests(plan),
        "latency": timed,
        "table": lambda: table(plan, _best(rows, plan)),
        "channels": lambda: channels(plan, args.out),
        "training": lambda: training(plan),
        "pipeline": lambda: pipeline(plan, work),
    }
    for name, fn in sections.items():
        if args.only is not None and name not in args.only:
            continue
        t0 = time.perf_counter()
        print(f"[{utc_now()}] {name}", flush=True)
        try:
            value, error = fn(), None
        except Exception as e:  # one section's failure must not lose the others
            value, error = None, "".join(traceback.format_exception_only(e)).strip()
            traceback.print_exc()
        results["sections"][name] = {
            "seconds": time.perf_counter() - t0,
            "result": value,
            "error": error,
        }
        write_json(args.out / "gpu-check.json", results)
    write_text(args.out / "gpu-check.md", markdown(results))
    with tarfile.open(args.out / "gpu-check.tar.gz", "w:gz") as tar:
        for f in sorted(args.out.iterdir()):
            if f.name != "gpu-check.tar.gz":
                tar.add(f, arcname=f.name)
    return results


def markdown(results: dict[str, Any]) -> str:
    prov, sec = results["provenance"], results["sections"]
    md = [
        "# GPU check" + (" (CPU dry run)" if results["dry"] else ""),
        "",
        f"{prov['device_name']}; torch {prov['versions']['torch']}; commit "
        f"{prov['git_commit']}; {results['started']}.",
        "",
    ]
    for name, s in sec.items():
        md.append(
            f"## {name} ({s['seconds']:.0f} s)" + (f": failed, {s['error']}" if s["error"] else "")
        )
        md.append("")
        value = s["result"]
        if name == "latency" and value:
            md += ["| model | spec | dense ms | maximal ms | speed-up | dense img/s |",
                   "|---|---|---:|---:|---:|---:|"]  # fmt: skip
            for r in value:
                if "error" in r:
                    md.append(f"| {r['model']} | {r['spec']} | – | – | {r['error']} | – |")
                else:
                    md.append(
                        f"| {r['model']} | {r['spec']} | {r['dense_ms']:.3f} | "
                        f"{r['maximal_ms']:.3f} | {r['speed_up']:.2f}× | "
                        f"{r['dense_images_per_s']:.0f} |"
                    )
        elif name == "training" and value:
            md += ["| recipe | model | batch | images/s |", "|---|---|---:|---:|"]
            md += [
                f"| {r['recipe']} | {r['model']} | {r['batch']} | {r['images_per_s']:.0f} |"
                for r in value
            ]
        elif value is not None:
            md += ["```", json.dumps(value, indent=1, default=str)[:3000], "```"]
        md.append("")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
