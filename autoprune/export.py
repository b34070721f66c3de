"""Apply a policy for real, fine-tune, re-measure on the device, and export the result:
``best_policy.json``, ``model.pt`` (state dict, rebuilt from the policy), ``model.onnx``, report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autoprune._io import write_json, write_with
from autoprune.budget import LatencyBudget, fit_to_budget
from autoprune.errors import CheckpointError, PolicyError
from autoprune.finetune import accuracy
from autoprune.hardware import HardwareProfile, LUTPredictor
from autoprune.hardware.measure import measure_models
from autoprune.hardware.timing import Timing, paired_ratio
from autoprune.models import build_model, load_state_dict
from autoprune.policy import PruningPolicy
from autoprune.prunable import discover
from autoprune.pruning import apply_policy, count_macs_params, sparsity_report, with_sparsity
from autoprune.schedule import prune_and_finetune
from autoprune.workspace import Workspace

Progress = Callable[[str, int, int], None]
POLICY, MODEL, ONNX, REPORT = "best_policy.json", "model.pt", "model.onnx", "report.json"


@dataclass
class ExportReport:
    """Dense vs pruned, measured on the device; accuracy on validation and (only here) test."""

    model: str
    policy: dict[str, Any]
    budget_ms: float  # resolved against the dense model timed now, beside the pruned one

    dense: dict[str, float]
    pruned: dict[str, float]
    predicted_ms: float  # the profile's prediction, rescaled by the device's drift since profiling
    device: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    predicted_ms_profile: float = 0.0  # the prediction as the profile made it
    drift: float = 1.0  # dense latency now / dense latency when profiled
    onnx_max_abs_diff: float | None = None
    seconds: float = 0.0
    device_fit: list[dict[str, float]] = field(default_factory=list)  # see fit_on_device
    data: dict[str, Any] = field(default_factory=dict)  # splits: sizes, where they come from
    recipe: dict[str, Any] = field(default_factory=dict)  # the final fine-tune's settings

    @property
    def within_budget(self) -> bool:
        return self.pruned["latency_ms"] <= self.budget_ms

    @property
    def prediction_error(self) -> float:
        return (self.predicted_ms - self.pruned["latency_ms"]) / self.pruned["latency_ms"]

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "within_budget": self.within_budget,
            "prediction_error": self.prediction_error,
        }


def disk_size(model: nn.Module) -> dict[str, int]:
    """Bytes of the saved state dict, raw and deflate-compressed (what zeroed weights save)."""
    import io
    import zlib

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    raw = buf.getvalue()
    return {"file_bytes": len(raw), "file_bytes_compressed": len(zlib.compress(raw, 6))}


def check_policy_fits(policy: PruningPolicy, ws: Workspace) -> None:
    if policy.model != ws.config.model:
        raise PolicyError(
            f"policy is for model {policy.model!r}, but the config prunes {ws.config.model!r}"
        )
    policy.check_layers(ws.layer_names)


def load_pruned_model(
    policy_path: str | Path,
    state_path: str | Path,
    *,
    num_classes: int = 10,
    input_size: int | None = None,
) -> nn.Module:
    """Rebuild a pruned model with no pickled code: dense architecture from the registry, the
    policy's channel counts, then the saved tensors (``weights_only=True``)."""
    from autoprune.models import model_spec

    policy = PruningPolicy.load(policy_path)
    spec = model_spec(policy.model, num_classes, input_size)
    dense = build_model(policy.model, num_classes, pretrained=False)
    layers = discover(dense, spec.input_shape)
    structured = PruningPolicy(
        policy.model,
        policy.ratios,
        "structured" if policy.mode != "unstructured" else "unstructured",
        policy.round_to,
    )
    model = apply_policy(dense, structured, layers, spec.input_shape)
    state = load_state_dict(state_path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{state_path} does not fit the pruned architecture of "
            f"{policy_path}: {str(e).splitlines()[0]}"
        ) from e
    return model.eval()


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> float:
    """Write ONNX (dynamic batch) and return the max |ONNX − PyTorch| on a random batch of 2."""
    from autoprune.hardware.backends.ort import session, to_onnx

    x = torch.randn(2, *input_shape)
    write_with(path, lambda tmp: to_onnx(model, x, tmp, dynamic_batch=True))
    got = session(path, threads=1).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = model.eval()(x).numpy()
    diff = float(np.abs(got - want).max())
    if diff > 1e-3:
        path.unlink(missing_ok=True)
        raise PolicyError(f"ONNX output differs from PyTorch by {diff:.2e}; export refused")
    return diff


MEASURE = {"min_time_s": 4.0, "rounds": 20}  # ~10 s for a dense/pruned pair


def resolve_measured(budget: LatencyBudget, dense: Timing, pruned: Timing) -> float:
    """The budget in ms for a pruned model timed beside the dense one. A fractional budget is
    judged on the paired per-round ratio (robust to drift): the pruned model is within it exactly
    when ``paired_ratio(pruned, dense) <= fraction``."""
    if budget.ms is not None:
        return budget.ms
    return float(budget.fraction) * pruned.ms / paired_ratio(pruned, dense)  # type: ignore[arg-type]


def fit_on_device(
    ws: Workspace,
    policy: PruningPolicy,
    profile: HardwareProfile,
    budget: LatencyBudget,
    *,
    margin: float,
    measure_kwargs: dict[str, Any],
    max_steps: int = 5,
    progress: Progress | None = None,
) -> tuple[PruningPolicy, list[dict[str, float]]]:
    """Close the loop on the device: time the pruned model beside the dense one and, while its
    measured share of the budget is not within ``margin / 2`` of ``1 − margin``, move the policy
    along its :func:`fit_to_budget` path to a new predicted latency (secant steps, bracketed once
    both sides are seen). The table predicts well on average (median error ~3 %) but one model
    can be 10 % off; some seconds of timing make the exported policy meet the budget *as
    measured*, and use it. Returns the policy and one record per timing; stays within the bounds.
    """
    predictor = LUTPredictor(profile)
    report = progress or (lambda *_: None)
    label = "fitting the budget on the device (timings)"
    goal, tol = 1.0 - margin, max(margin / 2, 0.005)
    current, history = policy, []
    seen: list[tuple[float, float, PruningPolicy]] = []  # (predicted ms, share of budget, policy)
    for _ in range(max_steps):
        pruned = apply_policy(ws.model, current, ws.layers, ws.input_shape)
        t_dense, t_pruned = measure_models(
            [ws.model, pruned], ws.input_shape, profile.spec, **measure_kwargs
        )
        budget_ms = resolve_measured(budget, t_dense, t_pruned)
        share = t_pruned.ms / budget_ms
        predicted = predictor.predict(current)
        history.append(
            {"predicted_ms": predicted, "measured_ms": t_pruned.ms, "budget_ms": budget_ms}
        )
        seen.append((predicted, share, current))
        if abs(share - goal) <= tol:
            report(label, len(history), len(history))
            return current, history
        report(label, len(history), max_steps)
        under = [x for x in seen if x[1] < goal]
        over = [x for x in seen if x[1] > goal]
        if under and over:  # interpolate between the closest points on either side
            (p0, s0, _), (p1, s1, _) = (
                max(under, key=lambda x: x[1]),
                min(over, key=lambda x: x[1]),
            )
            target = p0 + (goal - s0) * (p1 - p0) / (s1 - s0)
        else:  # measured ≈ k · predicted: aim the prediction at goal × budget / k
            target = predicted * goal / share
        nxt = fit_to_budget(policy, ws.max_ratio, predictor, target)
        if any(nxt.ratios == x[2].ratios for x in seen):  # channel steps: nothing new to try
            break
        current = nxt
    # Not converged (noise or channel granularity): the fullest candidate that met the goal's
    # tolerance from below, else the leanest one measured.
    safe = [x for x in seen if x[1] <= goal + tol]
    pick = max(safe, key=lambda x: x[1]) if safe else min(seen, key=lambda x: x[1])
    report(label, len(history), len(history))
    return pick[2], history


def apply_and_export(
    ws: Workspace,
    policy: PruningPolicy,
    profile: HardwareProfile,
    out_dir: Path,
    *,
    budget: str | None = None,
    finetune_final: bool = True,
    onnx: bool = True,
    progress: Progress | None = None,
    measure_kwargs: dict[str, Any] | None = None,
    fit_device: bool = True,
) -> ExportReport:
    """Prune ``ws.model`` with ``policy``, fine-tune with the final recipe, score, time, export.

    With ``fit_device`` (default) a structured policy is first adjusted so that its *measured*
    latency meets the budget (:func:`fit_on_device`); the exported policy records the steps.
    """
    start = time.perf_counter()
    report = progress or (lambda *_: None)
    check_policy_fits(policy, ws)
    data = ws.load_data()
    cfg = ws.config
    budget_spec = LatencyBudget.parse(budget or cfg.budget)
    measure_kwargs = measure_kwargs or MEASURE
    fit_history: list[dict[str, float]] = []
    if fit_device and policy.mode != "unstructured":
        policy, fit_history = fit_on_device(
            ws,
            policy,
            profile,
            budget_spec,
            margin=cfg.budget_margin,
            measure_kwargs=measure_kwargs,
            progress=progress,
        )
        if len(fit_history) > 1:
            policy = policy.with_metadata(device_fit=fit_history)
    if cfg.mode != "structured" and not policy.sparsity:  # magnitude sparsity on top, for size
        policy = with_sparsity(policy, ws.model, cfg.sparsity, cfg.sparsity_scope)
    dense = ws.model
    pruned = apply_policy(dense, policy, ws.layers, ws.input_shape)
    before = accuracy(pruned, data.val, cfg.eval_batch_size)  # one-shot, before fine-tuning
    if finetune_final:
        pruned = prune_and_finetune(
            dense,
            policy,
            ws.layers,
            ws.input_shape,
            data.train,
            cfg.final_finetune,
            seed=cfg.search.seed,
            teacher=dense,
            val=data.val,
            progress=lambda s, n, _loss: report("final fine-tune", s, n),
        )
    report("measuring latency", 0, 1)
    t_dense, t_pruned = measure_models(
        [dense, pruned],
        ws.input_shape,
        profile.spec,
        **measure_kwargs,
    )
    # Shared machines drift: compare with the dense model measured in the same interleaved rounds,
    # so a fractional budget means "this share of the dense model's latency" now, as promised.
    relative = paired_ratio(t_pruned, t_dense)
    drift = t_pruned.ms / relative / profile.dense_ms
    budget_ms = resolve_measured(budget_spec, t_dense, t_pruned)
    predicted = LUTPredictor(profile).predict(policy)
    report("measuring latency", 1, 1)

    def stats(model: nn.Module, timing: Any) -> dict[str, float]:
        macs, params = count_macs_params(model, ws.input_shape)
        sparse = sparsity_report(model)
        return {
            **{
                f"{name}_acc": accuracy(model, split, cfg.eval_batch_size)
                for name, split in data.reported().items()
            },
            "latency_ms": timing.ms,
            "latency_median_ms": timing.median_ms,
            "macs": macs,
            "params": params,
            "nonzero_params": params - sparse.zeros,
            "sparsity": sparse.sparsity,
            **disk_size(model),
        }

    result = ExportReport(
        model=cfg.model,
        policy=policy.to_dict(),
        budget_ms=budget_ms,
        dense=stats(dense, t_dense),
        pruned={
            **stats(pruned, t_pruned),
            "val_acc_before_ft": before,
            "relative_latency": relative,
        },
        predicted_ms=predicted * drift,
        predicted_ms_profile=predicted,
        drift=drift,
        device={
            "device": profile.device,
            "name": profile.device_name,
            "threads": profile.threads,
            "batch": profile.batch,
            "versions": profile.versions,
            "other_cpus": t_pruned.other_cpus,  # interference while measuring
        },
        data=data.describe(),
        recipe=asdict(cfg.final_finetune) if finetune_final else {},
        device_fit=fit_history,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    policy.save(out_dir / POLICY)
    write_with(out_dir / MODEL, lambda p: torch.save(pruned.state_dict(), p))
    result.files = {"policy": str(out_dir / POLICY), "model": str(out_dir / MODEL)}
    if onnx:
        result.onnx_max_abs_diff = export_onnx(pruned, ws.input_shape, out_dir / ONNX)
        result.files["onnx"] = str(out_dir / ONNX)
    result.seconds = time.perf_counter() - start
    write_json(out_dir / REPORT, result.to_dict())
    result.files["report"] = str(out_dir / REPORT)
    return result


def export_dir(src: Path, dst: Path, *, onnx: bool = True) -> dict[str, Any]:
    """Export an applied run (``src`` holds best_policy.json, model.pt, report.json): reload the
    model from policy + tensors (proving it reloads), write ONNX with a parity check and a
    markdown report into ``dst``."""
    import json
    import shutil

    for name in (POLICY, MODEL, REPORT):
        if not (src / name).is_file():
            raise PolicyError(f"{src} has no {name}: run `autoprune apply` first")
    rep = json.loads((src / REPORT).read_text())
    policy = PruningPolicy.load(src / POLICY)
    from autoprune.models import model_spec

    spec = model_spec(policy.model)
    model = load_pruned_model(src / POLICY, src / MODEL)
    dst.mkdir(parents=True, exist_ok=True)
    if src.resolve() != dst.resolve():
        for name in (POLICY, MODEL):
            write_with(dst / name, lambda p, n=name: shutil.copyfile(src / n, p))
    if onnx:
        rep["onnx_max_abs_diff"] = export_onnx(model, spec.input_shape, dst / ONNX)
        rep.setdefault("files", {})["onnx"] = str(dst / ONNX)
    write_json(dst / REPORT, rep)
    from autoprune._io import write_text
    from autoprune.report import summary_markdown

    write_text(dst / "report.md", summary_markdown(rep))
    return rep


__all__ = [
    "ExportReport",
    "apply_and_export",
    "export_dir",
    "export_onnx",
    "fit_on_device",
    "load_pruned_model",
]
