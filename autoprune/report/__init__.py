"""Reports people can look at: ``autoprune report RUN_DIR`` writes ``report.md`` and a
self-contained ``report.html`` (PNG figures embedded) from a run's records — trial log, applied
model's measurements, hardware profile and, when present, the sensitivity analysis."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoprune._io import write_text
from autoprune.budget import LatencyBudget
from autoprune.errors import ConfigError
from autoprune.hardware.timing import busy_warning
from autoprune.policy import PruningPolicy, kept_channels
from autoprune.report import plots


@dataclass
class Document:
    """A report as blocks, rendered to markdown and to HTML from the same content."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def text(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(("table", (list(header), [list(map(str, r)) for r in rows])))

    def image(self, path: Path, caption: str) -> None:
        self.blocks.append(("img", (path, caption)))

    def markdown(self) -> str:
        out = [f"# {self.title}"]
        for kind, value in self.blocks:
            if kind == "h2":
                out.append(f"## {value}")
            elif kind == "p":
                out.append(value)
            elif kind == "table":
                header, rows = value
                out.append(
                    "\n".join(
                        [
                            "| " + " | ".join(header) + " |",
                            "|" + "---|" * len(header),
                            *["| " + " | ".join(r) + " |" for r in rows],
                        ]
                    )
                )
            else:
                path, caption = value
                out.append(f"![{caption}]({path.name})\n\n*{caption}*")
        return "\n\n".join(out) + "\n"

    def html(self) -> str:
        esc = html.escape
        body = [f"<h1>{esc(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "h2":
                body.append(f"<h2>{esc(value)}</h2>")
            elif kind == "p":
                body.append(f"<p>{esc(value)}</p>")
            elif kind == "table":
                header, rows = value
                head = "".join(f"<th>{esc(h)}</th>" for h in header)
                cells = "".join(
                    "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows
                )
                body.append(f"<table><tr>{head}</tr>{cells}</table>")
            else:
                path, caption = value
                data = base64.b64encode(path.read_bytes()).decode()
                body.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}">'
                    f"<figcaption>{esc(caption)}</figcaption></figure>"
                )
        style = (
            "body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
            "padding:3px 8px;text-align:right}th{background:#f3f3f3}img{max-width:100%}"
            "figcaption{font-size:.9em;color:#555}"
        )
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(self.title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
        )


def add_summary(doc: Document, rep: dict[str, Any]) -> None:
    """Dense vs pruned as measured by ``autoprune apply`` (an ExportReport dict)."""
    d, p, dev = rep["dense"], rep["pruned"], rep["device"]
    doc.text(
        f"Device: {dev['name']} ({dev['device']}, {dev['threads']} thread(s), batch "
        f"{dev['batch']}); torch {dev['versions'].get('torch')}. Budget {rep['budget_ms']:.3f} ms"
        f" (timed beside the dense model at apply) — measured {p['latency_ms']:.3f} ms "
        f"({'within' if rep['within_budget'] else 'OVER'} budget; prediction error "
        f"{100 * rep['prediction_error']:+.1f} %)."
        + (f" **Caution:** {warning}." if (warning := busy_warning(dev.get("other_cpus"))) else "")
    )
    doc.table(
        ["", "dense", "pruned"],
        [
            *[
                (f"{label} top-1 (%)", f"{d[key]:.2f}", f"{p[key]:.2f}")
                for key, label in split_labels(rep).items()
            ],
            ("measured latency (ms)", f"{d['latency_ms']:.3f}", f"{p['latency_ms']:.3f}"),
            ("predicted latency (ms)", "", f"{rep['predicted_ms']:.3f}"),
            ("MACs (M)", f"{d['macs'] / 1e6:.2f}", f"{p['macs'] / 1e6:.2f}"),
            ("params (K)", f"{d['params'] / 1e3:.1f}", f"{p['params'] / 1e3:.1f}"),
            *_sparsity_rows(d, p),
        ],
    )
    if (recipe := _recipe_text(rep)) is not None:
        doc.text(recipe)
    fit = rep.get("device_fit") or []
    if len(fit) > 1:
        steps = ", ".join(f"{h['measured_ms']:.3f}" for h in fit)
        doc.text(
            f"The policy was adjusted on the device to meet the budget as measured: measured "
            f"{steps} ms over {len(fit)} steps (budget {fit[-1]['budget_ms']:.3f} ms)."
        )
    doc.table(["layer", "ratio"], [(k, f"{v:.3f}") for k, v in rep["policy"]["ratios"].items()])
    if rep.get("onnx_max_abs_diff") is not None:
        doc.text(
            f"ONNX parity (onnxruntime vs PyTorch): max |diff| = {rep['onnx_max_abs_diff']:.2e}"
        )


def split_labels(rep: dict[str, Any]) -> dict[str, str]:
    """``val_acc`` → "validation (2,000 test-set images)", … for the splits a report scored."""
    data = rep.get("data") or {}
    names = {"val": "validation", "test": "test", "holdout": "holdout"}
    out = {}
    for split, name in names.items():
        if f"{split}_acc" not in rep["dense"]:
            continue
        info = data.get(split)
        where = f" ({info['images']:,} {info['pool']}-set images)" if info else ""
        out[f"{split}_acc"] = name + where
    return out


def _recipe_text(rep: dict[str, Any]) -> str | None:
    r = rep.get("recipe") or {}
    if not r:
        return None
    length = f"{r['epochs']:g} epochs" if r.get("epochs") is not None else f"{r['steps']} steps"
    stop = f", early stop after {r['patience']} checks without gain" if r.get("patience") else ""
    return (
        f"Final fine-tune: {length}, batch {r['batch_size']}, lr {r['lr']} (cosine), "
        f"distillation {r['distill']} from the dense model ({r.get('distill_targets', 'online')} "
        f"targets){stop}.{_ran_text(rep.get('finetuned') or {})} The dense model is scored on "
        "every split, so a validation score near 100 % would show a split the checkpoint "
        "trained on."
    )


def _ran_text(done: dict[str, Any]) -> str:
    """What the fine-tune did: all its steps or an early stop, and which weights it kept."""
    if not done:
        return ""
    if done.get("val_acc") is None:  # no early stop: the final weights, unscored
        return f" It ran {done['steps']:,} steps."
    ran = (
        f"All {done['planned']:,} steps ran"
        if done["steps"] >= done["planned"]
        else f"Stopped early at step {done['steps']:,} of {done['planned']:,}"
    )
    kept = (
        "the final weights"
        if done["kept_step"] == done["steps"]
        else f"the weights of step {done['kept_step']:,}"
    )
    return f" {ran}; the model keeps {kept} (validation {done['val_acc']:.2f} %)."


def _sparsity_rows(d: dict[str, Any], p: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = [("conv/linear weight sparsity", f"{d['sparsity']:.1%}", f"{p['sparsity']:.1%}")]
    if "nonzero_params" in p:
        rows += [
            (
                "nonzero params (K)",
                f"{d['nonzero_params'] / 1e3:.1f}",
                f"{p['nonzero_params'] / 1e3:.1f}",
            ),
            (
                "model.pt size, raw / deflated (KB)",
                f"{d['file_bytes'] / 1e3:.0f} / {d['file_bytes_compressed'] / 1e3:.0f}",
                f"{p['file_bytes'] / 1e3:.0f} / {p['file_bytes_compressed'] / 1e3:.0f}",
            ),
        ]
    return rows


def summary_markdown(rep: dict[str, Any]) -> str:
    """The markdown summary written next to an export."""
    doc = Document(f"autoprune report: {rep['model']}")
    add_summary(doc, rep)
    return doc.markdown()


def _applied(run_dir: Path) -> dict[str, Any] | None:
    for sub in ("export", "final"):
        path = run_dir / sub / "report.json"
        if path.is_file():
            return json.loads(path.read_text())
    return None


@dataclass
class _Run:
    """What a report reads from a run directory."""

    cfg: Any
    info: dict[str, Any]
    records: list[dict[str, Any]]
    applied: dict[str, Any] | None
    out: Path

    @property
    def done(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["state"] == "COMPLETE"]

    @property
    def drift(self) -> float:
        return float(self.applied["drift"]) if self.applied else 1.0


def budget_text(info: dict[str, Any], applied: dict[str, Any] | None) -> str:
    """The budget on one time base: the fraction of dense latency and, once applied, the
    milliseconds measured then (the profile's milliseconds named only where the device has
    drifted from them by more than 5 %, with what to do about it)."""
    budget = LatencyBudget.parse(info["budget"])
    if budget.ms is not None:
        return f"budget {budget.ms:.3f} ms"
    share = f"budget {budget.fraction:.0%} of dense latency"
    if applied is None:
        return f"{share} ({info['budget_ms']:.3f} ms on the profile's time base)"
    text = f"{share} ({applied['budget_ms']:.3f} ms as measured by apply)"
    drift = float(applied.get("drift", 1.0))
    if abs(drift - 1) > 0.05:
        text += (
            f"; the device ran {abs(drift - 1):.0%} {'slower' if drift > 1 else 'faster'} at "
            f"apply than when profiled (the search's budget read {info['budget_ms']:.3f} ms): "
            "re-run `autoprune profile` if that lasts"
        )
    return text


def _intro(doc: Document, run: _Run) -> None:
    states = [r["state"] for r in run.records]
    rungs = run.cfg.fidelity.steps(run.cfg.short_finetune.steps)
    info = run.info
    doc.text(
        f"{len(states)} candidates ({states.count('PRUNED')} stopped early by the pruner, "
        f"{states.count('FAIL')} failed), {budget_text(info, run.applied)}, on "
        f"{info['device_name']} ({info['device']}, {info['threads']} thread(s), batch "
        f"{info['batch']}); each scored on validation after {' / '.join(map(str, rungs))} "
        "fine-tune steps while it stayed among the best (0: screened, not fine-tuned)."
    )
    if run.applied is not None:
        doc.heading("Result (measured on the device)")
        add_summary(doc, run.applied)


def _search_section(doc: Document, run: _Run, files: dict[str, Path]) -> list[dict[str, Any]]:
    """Accuracy vs latency, progress, learning curves and the best candidates."""
    rep, out = run.applied, run.out
    doc.heading("Accuracy vs latency")
    files["pareto"] = plots.plot_pareto(
        [(r["predicted_ms"] * run.drift, r["accuracy"]) for r in run.done],
        out / "pareto.png",
        dense=(rep["dense"]["latency_ms"], rep["dense"]["val_acc"]) if rep else None,
        exported=(rep["pruned"]["latency_ms"], rep["pruned"]["val_acc"]) if rep else None,
        budget_ms=rep["budget_ms"] if rep else run.info["budget_ms"],
    )
    doc.image(
        files["pareto"],
        "Every trial at its predicted latency (rescaled by the device's drift) and validation "
        "accuracy after the short fine-tune; the dense and exported models as measured.",
    )
    doc.heading("Search progress")
    files["progress"] = plots.plot_progress(
        [r.get("accuracy") if r["state"] == "COMPLETE" else None for r in run.records],
        out / "progress.png",
    )
    doc.image(
        files["progress"], "Validation accuracy of each candidate that reached the last rung."
    )
    files["curves"] = plots.plot_curves(
        [(r.get("curve") or [], r["state"]) for r in run.records], out / "curves.png"
    )
    doc.image(
        files["curves"],
        "Every candidate's validation accuracy at each fidelity rung it reached; the pruner "
        "stopped the red ones.",
    )
    best = sorted(run.done, key=lambda r: -r["accuracy"])[:5]
    doc.table(
        ["trial", "val top-1", "predicted ms", "MACs M"],
        [
            (
                r["trial"],
                f"{r['accuracy']:.2f}",
                f"{r['predicted_ms']:.3f}",
                f"{r['macs'] / 1e6:.2f}",
            )
            for r in best
        ],
    )
    return best


def _device_section(
    doc: Document, run: _Run, best: list[dict[str, Any]], files: dict[str, Path]
) -> None:
    """Channels kept per layer and predicted vs measured latency (needs the profile)."""
    profile = _profile(run.info)
    if profile is None:
        return
    rep = run.applied
    channels = {la["name"]: int(la["channels"]) for la in profile["layers"]}
    policy = PruningPolicy.from_dict(rep["policy"] if rep else best[0]["policy"])
    kept = {n: kept_channels(c, policy.ratio(n), policy.round_to) for n, c in channels.items()}
    doc.heading("Channels per layer")
    files["layers"] = plots.plot_layers(channels, kept, run.out / "layers.png")
    doc.image(files["layers"], "Output channels kept per prunable layer vs the dense model.")
    doc.heading("Latency predictor")
    groups = {"profile calibration (in-sample)": _calibration_points(profile)}
    if rep:
        fit = rep.get("device_fit") or []
        groups["device fit steps"] = [
            (h["measured_ms"], h["predicted_ms"] * run.drift) for h in fit
        ]
        groups["exported model"] = [(rep["pruned"]["latency_ms"], rep["predicted_ms"])]
    files["latency"] = plots.plot_latency(groups, run.out / "latency.png")
    doc.image(files["latency"], "Predicted vs measured whole-model latency.")


def _sync(run_dir: Path, info: dict[str, Any], storage: str | None) -> None:
    """A run whose study several drivers share: take in their candidates first, so the report
    agrees with the database (``storage`` gives the URL with its password, where the run's
    record has none)."""
    from autoprune.search.storage import is_shared, sync_run

    url = storage or info.get("storage")
    if not is_shared(url):
        return
    assert url is not None
    try:
        sync_run(run_dir, url, info.get("study", "autoprune"))
    except Exception as e:  # the report still renders what this driver has
        import warnings

        warnings.warn(
            f"could not read the shared study ({type(e).__name__}); reporting this "
            "driver's trials only",
            stacklevel=2,
        )


def build_report(
    run_dir: Path, out_dir: Path | None = None, storage: str | None = None
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the PNG figures for a search run into ``out_dir``
    (default ``RUN_DIR/report``); return their paths. A run sharing its study with other
    drivers first takes in their candidates from ``storage`` (default: the run's record)."""
    from autoprune.pipeline import load_run
    from autoprune.records import TRIALS, TrialLog
    from autoprune.sensitivity import SensitivityResult

    cfg, info = load_run(run_dir)
    _sync(run_dir, info, storage)
    records = TrialLog.read(run_dir / TRIALS)
    if not records:
        raise ConfigError(f"{run_dir} has no finished trials to report on")
    run = _Run(cfg, info, records, _applied(run_dir), out_dir or run_dir / "report")
    run.out.mkdir(parents=True, exist_ok=True)
    doc = Document(f"autoprune report: {info['model']} — {info['searcher']} search")
    files: dict[str, Path] = {}
    _intro(doc, run)
    best = _search_section(doc, run, files)
    _device_section(doc, run, best, files)
    sens_path = run_dir / "sensitivity.json"
    if sens_path.is_file():
        sens = SensitivityResult.load(sens_path)
        doc.heading("Per-layer sensitivity")
        files["sensitivity"] = plots.plot_sensitivity(
            sens.ratios, sens.accuracy, sens.dense_accuracy, run.out / "sensitivity.png"
        )
        doc.image(files["sensitivity"], "Validation accuracy with one layer pruned at a time.")
    files["markdown"] = write_text(run.out / "report.md", doc.markdown())
    files["html"] = write_text(run.out / "report.html", doc.html())
    return files


def _profile(info: dict[str, Any]) -> dict[str, Any] | None:
    path = Path(info.get("profile") or "")
    return json.loads(path.read_text()) if path.is_file() else None


def _calibration_points(profile: dict[str, Any]) -> list[tuple[float, float]]:
    cal = profile.get("calibration", {})
    coef, offset = cal.get("coef"), cal.get("offset", 0.0)
    if not coef:
        return []
    return [
        (meas, sum(c * x for c, x in zip(coef, xs, strict=False)) + offset)
        for *xs, meas in cal.get("points", [])
    ]


__all__ = ["Document", "add_summary", "build_report", "split_labels", "summary_markdown"]
