"""Apply a policy for real, in named steps: fit it to the budget as measured on the device,
fine-tune it with the final recipe, measure it beside the dense model, and write the result
(``best_policy.json``, ``model.pt``, ``report.json``). :func:`apply` is the public entry."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune._io import write_json, write_with
from autoprune.budget import LatencyBudget, fit_to_budget
from autoprune.data.splits import Splits
from autoprune.errors import PolicyError
from autoprune.finetune import FinetuneResult, accuracy
from autoprune.hardware.measure import measure_models
from autoprune.hardware.predictor import LUTPredictor
from autoprune.hardware.profile import HardwareProfile
from autoprune.hardware.timing import Timing, paired_ratio
from autoprune.policy import PruningPolicy
from autoprune.pruning import apply_policy, count_macs_params, sparsity_report, with_sparsity
from autoprune.schedule import prune_and_finetune
from autoprune.workspace import Workspace

Progress = Callable[[str, int, int], None]
POLICY, MODEL, REPORT = "best_policy.json", "model.pt", "report.json"
CONTENDERS = "contenders"  # each policy of a rule check, applied in full, in its own folder
CHECKPOINT = "finetune.ckpt"  # the final fine-tune's state while it runs
MEASURE = {"min_time_s": 4.0, "rounds": 20}  # ~10 s for a dense/pruned pair (measure_seconds)


@dataclass
class ExportReport:
    """Dense vs pruned, measured on the device; accuracy on every split (test only here)."""

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
    finetuned: dict[str, Any] = field(default_factory=dict)  # what it did: FinetuneResult
    contest: dict[str, Any] = field(default_factory=dict)  # see apply_contest

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


def resolve_measured(budget: LatencyBudget, dense: Timing, pruned: Timing) -> float:
    """The budget in ms for a pruned model timed beside the dense one. A fractional budget is
    judged on the paired per-round ratio (robust to drift): the pruned model is within it exactly
    when ``paired_ratio(pruned, dense) <= fraction``."""
    if budget.fraction is None:
        return float(budget.ms)  # type: ignore[arg-type]
    return budget.fraction * pruned.ms / paired_ratio(pruned, dense)


def _next_target(
    seen: list[tuple[float, float, PruningPolicy]], goal: float, predicted: float, share: float
) -> float:
    """The predicted latency to aim at next: interpolate between the closest measurements on
    either side of ``goal`` once both are seen, else assume measured ≈ k · predicted."""
    under = [x for x in seen if x[1] < goal]
    over = [x for x in seen if x[1] > goal]
    if under and over:
        (p0, s0, _), (p1, s1, _) = max(under, key=lambda x: x[1]), min(over, key=lambda x: x[1])
        return p0 + (goal - s0) * (p1 - p0) / (s1 - s0)
    return predicted * goal / share


class _Fit:
    """One policy's way to the budget in :func:`fit_on_device`."""

    def __init__(self, policy: PruningPolicy) -> None:
        self.start = self.current = policy
        self.history: list[dict[str, float]] = []
        self.seen: list[tuple[float, float, PruningPolicy]] = []  # (predicted, share, policy)
        self.converged = False  # a timing landed within the tolerance: keep the current policy
        self.stuck = False  # the next step repeats a measured policy (channel granularity)

    @property
    def active(self) -> bool:
        return not (self.converged or self.stuck)

    def result(self, goal: float, tol: float) -> tuple[PruningPolicy, list[dict[str, float]]]:
        if self.converged:
            return self.current, self.history
        # Not converged (noise or channel granularity): the fullest candidate that met the
        # goal's tolerance from below, else the leanest one measured.
        safe = [x for x in self.seen if x[1] <= goal + tol]
        pick = max(safe, key=lambda x: x[1]) if safe else min(self.seen, key=lambda x: x[1])
        return pick[2], self.history


def fit_on_device(
    ws: Workspace,
    policies: list[PruningPolicy],
    profile: HardwareProfile,
    budget: LatencyBudget,
    *,
    margin: float,
    measure_kwargs: dict[str, Any],
    max_steps: int = 5,
    progress: Progress | None = None,
) -> list[tuple[PruningPolicy, list[dict[str, float]]]]:
    """Close the loop on the device: time each pruned model beside the dense one and, while its
    measured share of the budget is not within ``margin / 2`` of ``1 − margin``, move the policy
    along its :func:`fit_to_budget` path to a new predicted latency (secant steps, bracketed once
    both sides are seen). The table predicts well on average (median error ~3 %) but one model
    can be 10 % off; some seconds of timing make the exported policy meet the budget *as
    measured*, and use it. Returns, per policy, the fitted policy and one record per timing;
    stays within the bounds.

    Every timing round measures the dense model and each policy not yet fitted interleaved, so
    several policies are fitted against the same state of the device: on a machine whose speed
    drifts between sessions (a shared or virtual CPU), policies fitted one after another can
    receive latencies a few % apart; fitted together they get the same measured latency."""
    predictor = LUTPredictor(profile)
    report = progress or (lambda *_: None)
    label = "fitting the budget on the device (timings)"
    goal, tol = 1.0 - margin, max(margin / 2, 0.005)
    fits = [_Fit(p) for p in policies]
    for step in range(max_steps):
        todo = [f for f in fits if f.active]
        if not todo:
            break
        pruned = [apply_policy(ws.model, f.current, ws.layers, ws.input_shape) for f in todo]
        t_dense, *timed = measure_models(
            [ws.model, *pruned], ws.input_shape, profile.spec, **measure_kwargs
        )
        for f, t in zip(todo, timed, strict=True):
            budget_ms = resolve_measured(budget, t_dense, t)
            share, predicted = t.ms / budget_ms, predictor.predict(f.current)
            f.history.append(
                {"predicted_ms": predicted, "measured_ms": t.ms, "budget_ms": budget_ms}
            )
            f.seen.append((predicted, share, f.current))
            if abs(share - goal) <= tol:
                f.converged = True
                continue
            target = _next_target(f.seen, goal, predicted, share)
            nxt = fit_to_budget(f.start, ws.max_ratio, predictor, target)
            f.stuck = any(nxt.ratios == x[2].ratios for x in f.seen)
            if not f.stuck:
                f.current = nxt
        report(label, step + 1, max_steps)
    report(label, max_steps, max_steps)
    return [f.result(goal, tol) for f in fits]


def final_finetune(
    ws: Workspace,
    policy: PruningPolicy,
    data: Splits,
    *,
    progress: Progress | None = None,
    checkpoint: Path | None = None,
) -> tuple[nn.Module, FinetuneResult]:
    """``ws.model`` pruned to ``policy`` and fine-tuned with the config's final recipe,
    distilled from the dense model, early-stopped on validation; and what the fine-tune did
    (``checkpoint``: resumable epoch by epoch, see :func:`autoprune.finetune.finetune`)."""
    report = progress or (lambda *_: None)
    done: list[FinetuneResult] = []
    model = prune_and_finetune(
        ws.model,
        policy,
        ws.layers,
        ws.input_shape,
        data.train,
        ws.config.final_finetune,
        seed=ws.config.search.seed,
        teacher=ws.model,
        val=data.val,
        progress=lambda s, n, _loss: report("final fine-tune", s, n),
        device=ws.compute,
        on_result=done.append,
        checkpoint=checkpoint,
    )
    return model, done[0]


@dataclass(frozen=True)
class Measured:
    """A pruned model timed beside the dense one, and what that says about the budget."""

    dense: Timing
    pruned: Timing
    relative: float  # pruned ÷ dense, paired round by round
    drift: float  # dense latency now ÷ when profiled
    budget_ms: float
    predicted_profile_ms: float


def measure_pairs(
    ws: Workspace,
    pruned: list[nn.Module],
    policies: list[PruningPolicy],
    profile: HardwareProfile,
    budget: LatencyBudget,
    measure_kwargs: dict[str, Any],
) -> list[Measured]:
    """Time each pruned model interleaved with the dense model, all in the same rounds.
    Shared machines drift, so a fractional budget means "this share of the dense model's
    latency" as measured now; pruned models timed together are judged on the same state of
    the device."""
    t_dense, *timed = measure_models(
        [ws.model, *pruned], ws.input_shape, profile.spec, **measure_kwargs
    )
    predictor, out = LUTPredictor(profile), []
    for policy, t in zip(policies, timed, strict=True):
        relative = paired_ratio(t, t_dense)
        drift = t.ms / relative / profile.dense_ms
        budget_ms = resolve_measured(budget, t_dense, t)
        out.append(Measured(t_dense, t, relative, drift, budget_ms, predictor.predict(policy)))
    return out


def measure_pair(
    ws: Workspace,
    pruned: nn.Module,
    policy: PruningPolicy,
    profile: HardwareProfile,
    budget: LatencyBudget,
    measure_kwargs: dict[str, Any],
) -> Measured:
    """Time ``pruned`` interleaved with the dense model (:func:`measure_pairs` for one)."""
    return measure_pairs(ws, [pruned], [policy], profile, budget, measure_kwargs)[0]


def model_stats(ws: Workspace, model: nn.Module, data: Splits, timing: Timing) -> dict[str, float]:
    """Accuracy on every reported split, latency, size and sparsity of one model."""
    macs, params = count_macs_params(model, ws.input_shape)
    sparse = sparsity_report(model)
    batch = ws.config.eval_batch_size
    return {
        **{
            f"{name}_acc": accuracy(model, split, batch) for name, split in data.reported().items()
        },
        "latency_ms": timing.ms,
        "latency_median_ms": timing.median_ms,
        "macs": macs,
        "params": params,
        "nonzero_params": params - sparse.zeros,
        "sparsity": sparse.sparsity,
        **disk_size(model),
    }


def write_applied(
    out_dir: Path, policy: PruningPolicy, model: nn.Module, result: ExportReport
) -> ExportReport:
    """Write ``best_policy.json``, ``model.pt`` (state dict) and ``report.json``, each
    atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    policy.save(out_dir / POLICY)
    write_with(out_dir / MODEL, lambda p: torch.save(model.state_dict(), p))
    return _write_report(out_dir, result, {"policy": POLICY, "model": MODEL})


def _write_report(out_dir: Path, result: ExportReport, files: dict[str, str]) -> ExportReport:
    """Write ``report.json`` naming the files already written into ``out_dir`` (kind → file
    name), atomically, and add itself to ``result.files``."""
    result.files = {kind: str(out_dir / name) for kind, name in files.items()}
    write_json(out_dir / REPORT, result.to_dict())
    result.files["report"] = str(out_dir / REPORT)
    return result


@dataclass
class _Applied:
    """One policy on its way through :func:`_apply_together`."""

    policy: PruningPolicy
    out_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)  # the device fit's timings
    model: nn.Module | None = None
    before: float = 0.0  # validation accuracy pruned, before the final fine-tune
    done: FinetuneResult | None = None


def _named(report: Progress, name: str, label: str, done: int, total: int) -> None:
    report(f"{label} ({name})", done, total)


def _deployable(ws: Workspace, policy: PruningPolicy, data: Splits) -> PruningPolicy:
    """``policy`` with the config's magnitude sparsity on top (for size) and what a deployment
    needs to rebuild and feed the model without the config."""
    cfg = ws.config
    if cfg.mode != "structured" and not policy.sparsity:
        policy = with_sparsity(policy, ws.model, cfg.sparsity, cfg.sparsity_scope)
    return policy.with_metadata(
        input_shape=list(ws.input_shape),
        num_classes=cfg.num_classes,
        classes=list(data.classes),
        **data.normalization,
    )


def _apply_together(
    ws: Workspace,
    jobs: dict[str, tuple[PruningPolicy, Path]],
    profile: HardwareProfile,
    *,
    budget: str | None = None,
    finetune_final: bool = True,
    progress: Progress | None = None,
    measure_kwargs: dict[str, Any] | None = None,
    fit_device: bool = True,
    onnx: bool = False,
) -> dict[str, ExportReport]:
    """The steps of :func:`apply_and_export` for one or more policies (name → policy, output
    folder): fitted to the budget in the same timing rounds, each fine-tuned in turn, all timed
    in the same rounds beside the dense model, which is scored once. Policies compared with
    each other thus meet the budget on the same state of the device."""
    start, report = time.perf_counter(), progress or (lambda *_: None)
    for policy, _ in jobs.values():
        check_policy_fits(policy, ws)
    data, cfg = ws.load_data(), ws.config
    budget_spec = LatencyBudget.parse(budget or cfg.budget)
    measure_kwargs = measure_kwargs or {**MEASURE, "min_time_s": cfg.measure_seconds}
    runs = {name: _Applied(policy, Path(out)) for name, (policy, out) in jobs.items()}
    to_fit = [r for r in runs.values() if fit_device and r.policy.mode != "unstructured"]
    if to_fit:
        fitted = fit_on_device(
            ws, [r.policy for r in to_fit], profile, budget_spec, margin=cfg.budget_margin,
            measure_kwargs=measure_kwargs, progress=progress,
        )  # fmt: skip
        for r, (policy, history) in zip(to_fit, fitted, strict=True):
            r.policy = policy.with_metadata(device_fit=history) if len(history) > 1 else policy
            r.history = history
    for name, r in runs.items():
        r.policy = _deployable(ws, r.policy, data)
        r.model = apply_policy(ws.model, r.policy, ws.layers, ws.input_shape)
        r.before = accuracy(r.model, data.val, cfg.eval_batch_size)  # one-shot
        if finetune_final:  # a killed fine-tune goes on from its last epoch
            named = partial(_named, report, name) if len(runs) > 1 else report
            r.model, r.done = final_finetune(
                ws, r.policy, data, progress=named, checkpoint=r.out_dir / CHECKPOINT
            )
    report("measuring latency", 0, 1)
    models = [r.model for r in runs.values() if r.model is not None]
    measured = measure_pairs(
        ws, models, [r.policy for r in runs.values()], profile, budget_spec, measure_kwargs
    )
    report("measuring latency", 1, 1)
    dense = model_stats(ws, ws.model, data, measured[0].dense)
    results = {}
    for (name, r), m, model in zip(runs.items(), measured, models, strict=True):
        result = _result(ws, r, profile, data, m, dense)
        result.seconds = time.perf_counter() - start
        results[name] = write_applied(r.out_dir, r.policy, model, result)
        (r.out_dir / CHECKPOINT).unlink(missing_ok=True)
        if onnx:
            _add_onnx(result, model, ws.input_shape, r.policy, r.out_dir, start)
    return results


def _result(
    ws: Workspace,
    r: _Applied,
    profile: HardwareProfile,
    data: Splits,
    m: Measured,
    dense: dict[str, float],
) -> ExportReport:
    assert r.model is not None
    return ExportReport(
        model=ws.config.model,
        policy=r.policy.to_dict(),
        budget_ms=m.budget_ms,
        dense=dense,
        pruned={
            **model_stats(ws, r.model, data, m.pruned),
            "val_acc_before_ft": r.before,
            "relative_latency": m.relative,
        },
        predicted_ms=m.predicted_profile_ms * m.drift,
        predicted_ms_profile=m.predicted_profile_ms,
        drift=m.drift,
        device={**profile.describe(), "other_cpus": m.pruned.other_cpus},
        device_fit=r.history,
        data=data.describe(),
        # The recipe as it ran: its step count is the schedule's length (epochs × batches when
        # epochs are set), not the unused ``steps`` default.
        recipe={**asdict(ws.config.final_finetune), "steps": r.done.planned} if r.done else {},
        finetuned=asdict(r.done) if r.done else {},
    )


def apply_and_export(
    ws: Workspace,
    policy: PruningPolicy,
    profile: HardwareProfile,
    out_dir: Path,
    **kwargs: Any,
) -> ExportReport:
    """Fit ``policy`` to the budget on the device (unless ``fit_device`` is off or it removes no
    channels), add the config's magnitude sparsity, fine-tune with the final recipe, measure
    beside the dense model, score every split, and write the result into ``out_dir`` (with
    ``onnx``, also ``model.onnx``, checked against PyTorch). Keywords: see
    :func:`_apply_together` (``budget``, ``finetune_final``, ``progress``, ``measure_kwargs``,
    ``fit_device``, ``onnx``)."""
    return _apply_together(ws, {"policy": (policy, out_dir)}, profile, **kwargs)["policy"]


def apply_contest(
    ws: Workspace,
    policies: dict[str, PruningPolicy],
    profile: HardwareProfile,
    out_dir: Path,
    **kwargs: Any,
) -> ExportReport:
    """Apply each policy in full into ``out_dir/contenders/NAME`` — fitted to the budget in the
    same timing rounds, each fine-tuned with the final recipe, all measured in the same rounds
    beside the dense model — and keep the one with the highest validation accuracy after its
    final fine-tune: a search's lead at a short rung can vanish in the final (benchmark v3,
    ResNet-56 at 50 %), so the search's best is checked against the best hand-made rule's
    policy it evaluated. The kept one's files are copied into ``out_dir``; its report says what
    was compared (``contest``). Ties keep the first."""
    jobs = {name: (policy, out_dir / CONTENDERS / name) for name, policy in policies.items()}
    reports = _apply_together(ws, jobs, profile, **kwargs)
    kept = max(reports, key=lambda name: reports[name].pruned["val_acc"])
    result = reports[kept]
    result.contest = {
        "kept": kept,
        "by": "validation accuracy after the final fine-tune",
        "contenders": {
            name: {
                "val_acc": rep.pruned["val_acc"],
                "latency_ms": rep.pruned["latency_ms"],
                "budget_ms": rep.budget_ms,
                "folder": str(out_dir / CONTENDERS / name),
            }
            for name, rep in reports.items()
        },
    }
    source = out_dir / CONTENDERS / kept
    files = {kind: Path(path).name for kind, path in result.files.items() if kind != "report"}
    for name in files.values():
        write_with(out_dir / name, partial(shutil.copyfile, source / name))
    return _write_report(out_dir, result, files)


def _add_onnx(
    result: ExportReport,
    pruned: nn.Module,
    input_shape: tuple[int, ...],
    policy: PruningPolicy,
    out_dir: Path,
    start: float,
) -> None:
    """Export ``model.onnx`` beside an applied policy (checked against PyTorch) and record it
    in the report."""
    from autoprune.export import ONNX, export_onnx, onnx_metadata

    result.onnx_max_abs_diff = export_onnx(
        pruned, input_shape, out_dir / ONNX, onnx_metadata(policy)
    )
    result.files["onnx"] = str(out_dir / ONNX)
    result.seconds = time.perf_counter() - start
    write_json(out_dir / REPORT, result.to_dict())


def apply(
    target: str | Path,
    *,
    config: str | Path | None = None,
    out: str | Path | None = None,
    finetune: bool = True,
    force: bool = False,
    fit_device: bool = True,
    progress: Progress | None = None,
    profile: str | Path | None = None,
    rule_check: bool = True,
) -> ExportReport:
    """Apply a search's best policy (``target`` = its run directory; the run's config and
    budget) or a policy JSON (``config`` or the default config) and write it into ``out``
    (default ``RUN/final``, or ``final`` beside the policy file); ``profile`` names the
    hardware profile (default: the config's). With ``rule_check``, when the search evaluated a
    hand-made rule's policy and found a better one, both go through the final fine-tune and
    the one better on validation is kept (:func:`apply_contest`; twice the final's time)."""
    from autoprune.config import DEFAULT_CONFIG, load_config
    from autoprune.pipeline import best_policy_path, ensure_profile, load_run
    from autoprune.workspace import build_workspace

    target, budget = Path(target), None
    if target.is_file():
        cfg = load_config(config or DEFAULT_CONFIG)
        policy_path, out_dir = target, Path(out or target.parent / "final")
    else:
        saved, info = load_run(target)
        cfg = load_config(config) if config else saved
        policy_path, out_dir = best_policy_path(target), Path(out or target / "final")
        budget = info["budget"]
    policy = PruningPolicy.load(policy_path)
    ws = build_workspace(cfg if profile is None else cfg.replace(profile=str(profile)))
    prof, _, _ = ensure_profile(ws, force=force)
    kwargs: dict[str, Any] = {
        "budget": budget, "finetune_final": finetune, "progress": progress,
        "fit_device": fit_device,
    }  # fmt: skip
    rule = rule_contender(target) if rule_check and finetune and not target.is_file() else None
    if rule is not None:
        name = rule.metadata["warm_start"]
        return apply_contest(ws, {"search": policy, name: rule}, prof, out_dir, **kwargs)
    return apply_and_export(ws, policy, prof, out_dir, **kwargs)


def rule_contender(run_dir: Path) -> PruningPolicy | None:
    """The best hand-made rule's policy a search evaluated (its warm start), when the search's
    best candidate is another policy: what :func:`apply` checks that candidate against."""
    from autoprune.records import TRIALS, TrialLog, best_and_rule

    pair = best_and_rule(TrialLog.read(run_dir / TRIALS))
    if pair is None or pair[0] is pair[1]:
        return None
    return PruningPolicy.from_dict(pair[1]["policy"])


__all__ = [
    "MEASURE",
    "ExportReport",
    "apply",
    "apply_and_export",
    "apply_contest",
    "check_policy_fits",
    "final_finetune",
    "fit_on_device",
    "measure_pair",
    "measure_pairs",
    "model_stats",
    "resolve_measured",
    "rule_contender",
    "write_applied",
]
