"""Per-layer sensitivity: prune one layer at a time over a grid of ratios and score validation
accuracy, optionally after a few fine-tune steps. Tells which layers tolerate pruning, and can
bound the search (``min_keep`` per layer) so it does not waste trials where accuracy collapses.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprune._io import write_json
from autoprune.distributed import Pool, evaluate_all
from autoprune.errors import ConfigError
from autoprune.evaluate import Evaluator

if TYPE_CHECKING:
    from autoprune.config import Config
from autoprune.policy import PruningPolicy

FORMAT = "autoprune.sensitivity/1"


@dataclass
class SensitivityResult:
    """Validation accuracy (%) of the model with only ``layer`` pruned at each ``ratios[i]``."""

    model: str
    ratios: list[float]
    dense_accuracy: float
    accuracy: dict[str, list[float]]
    finetune_steps: int = 0
    channels: dict[str, int] = field(default_factory=dict)
    format: str = FORMAT

    def drop(self, layer: str) -> list[float]:
        """Accuracy lost (points) at each ratio."""
        return [self.dense_accuracy - a for a in self.accuracy[layer]]

    def bounds(self, max_drop: float, *, floor: float = 0.0) -> dict[str, float]:
        """Per-layer ``min_keep`` for the search: keep at least what the largest ratio that cost no
        more than ``max_drop`` points leaves (all of the layer if even the smallest ratio costs
        more), and never less than ``floor``."""
        out = {}
        for layer in self.accuracy:
            ok = [r for r, d in zip(self.ratios, self.drop(layer), strict=True) if d <= max_drop]
            out[layer] = round(max(1.0 - max(ok, default=0.0), floor), 4)
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> SensitivityResult:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read sensitivity file {path}: {e}") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"{path} is not an autoprune sensitivity file ({FORMAT})")
        return cls(**data)

    def markdown(self) -> str:
        head = " | ".join(f"{r:.0%}" for r in self.ratios)
        lines = [
            f"Validation top-1 (%) of {self.model} with one layer pruned "
            f"({self.finetune_steps} fine-tune steps after pruning); dense "
            f"{self.dense_accuracy:.2f} %.",
            "",
            f"| layer | channels | {head} |",
            "|---|---:|" + "---:|" * len(self.ratios),
        ]
        for layer, accs in self.accuracy.items():
            cells = " | ".join(f"{a:.2f}" for a in accs)
            lines.append(f"| {layer} | {self.channels.get(layer, '')} | {cells} |")
        return "\n".join(lines) + "\n"


def analyze(
    evaluator: Evaluator,
    model: str,
    pool: Pool,
    ratios: Sequence[float] = (0.2, 0.4, 0.6, 0.8),
    *,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    finetune_steps: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> SensitivityResult:
    """Score ``len(layers) × len(ratios)`` one-layer policies (plus the dense model) on ``pool``,
    each after ``finetune_steps`` steps of ``evaluator``'s recipe (0 = none), on the validation
    split only."""
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise ConfigError(f"sensitivity ratios must lie in (0, 1), got {list(ratios)}")
    names = list(layers or evaluator.layer_names)
    unknown = set(names) - set(evaluator.layer_names)
    if unknown:
        raise ConfigError(f"not prunable layers of {model!r}: {', '.join(sorted(unknown))}")
    policies = [PruningPolicy(model, {})] + [
        PruningPolicy(model, {n: float(r)}) for n in names for r in ratios
    ]
    outcomes = evaluate_all(pool, policies, seed=seed, steps=finetune_steps, progress=progress)
    accs = []
    for policy, (res, err) in zip(policies, outcomes, strict=True):
        if res is None:
            raise ConfigError(f"sensitivity evaluation of {policy.ratios} failed: {err}")
        accs.append(res.accuracy)
    k = len(ratios)
    return SensitivityResult(
        model,
        [float(r) for r in ratios],
        accs[0],
        {n: accs[1 + i * k : 1 + (i + 1) * k] for i, n in enumerate(names)},
        finetune_steps,
        {la.name: la.channels for la in evaluator.layers if la.name in names},
    )


def bounded(cfg: Config, path: str | Path, max_drop: float) -> Config:
    """``cfg`` with per-layer ``min_keep`` from the sensitivity analysis at ``path`` (a layer may
    lose at most ``max_drop`` points alone); bounds written in the config win."""
    sens = SensitivityResult.load(path)
    if sens.model != cfg.model:
        raise ConfigError(f"{path} analyses {sens.model!r}, the config prunes {cfg.model!r}")
    bounds = {**sens.bounds(max_drop, floor=cfg.layers.min_keep), **cfg.layers.bounds}
    return cfg.replace(**{"layers.bounds": bounds})


def run(
    cfg: Config,
    *,
    ratios: Sequence[float] = (0.2, 0.4, 0.6, 0.8),
    finetune_steps: int = 0,
    layers: Sequence[str] | None = None,
    parallel: int = 1,
    address: str | None = None,
    out: Path = Path("runs/sensitivity"),
    max_drop: float = 2.0,
    progress: Callable[[int, int], None] | None = None,
) -> SensitivityResult:
    """Analyse ``cfg``'s model and write ``sensitivity.json``/``.md``/``.png`` and ``bounds.yaml``
    (per-layer ``min_keep`` losing at most ``max_drop`` points) into ``out``."""
    import yaml

    from autoprune._io import write_text
    from autoprune.distributed import make_pool
    from autoprune.pipeline import ensure_profile
    from autoprune.report.plots import plot_sensitivity
    from autoprune.workspace import build_workspace

    ws = build_workspace(cfg)
    profile, _, _ = ensure_profile(ws)
    evaluator = ws.evaluator(ws.load_data(), profile)
    pool = make_pool(evaluator, parallel=parallel, address=address)
    try:
        res = analyze(
            evaluator, cfg.model, pool, ratios, layers=layers, seed=cfg.search.seed,
            finetune_steps=finetune_steps, progress=progress,
        )  # fmt: skip
    finally:
        pool.close()
    res.save(out / "sensitivity.json")
    write_text(out / "sensitivity.md", res.markdown())
    plot_sensitivity(res.ratios, res.accuracy, res.dense_accuracy, out / "sensitivity.png")
    bounds = res.bounds(max_drop, floor=cfg.layers.min_keep)
    write_text(
        out / "bounds.yaml",
        f"# min_keep per layer: at most {max_drop} points lost by pruning it alone\n"
        + yaml.safe_dump({"layers": {"bounds": bounds}}, sort_keys=False),
    )
    return res


__all__ = ["SensitivityResult", "analyze", "bounded", "run"]
