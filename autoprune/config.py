"""Search-space configs: YAML → frozen, validated dataclasses. Unknown keys are errors."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from autoprune.errors import ConfigError

if TYPE_CHECKING:
    from autoprune.hardware.device import DeviceSpec


@dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tune recipe.

    Args:
        steps: optimizer steps; if ``epochs`` is set it wins (epochs × batches per epoch).
        epochs: passes over the train split.
        batch_size: images per step.
        lr: peak learning rate, annealed to 0 by a cosine schedule.
        momentum: SGD momentum (Nesterov).
        weight_decay: L2 penalty.
        augment: random crop + flip.
        distill: weight of the KL term to the dense teacher's logits (0 = off).
        temperature: distillation temperature.
        distill_targets: ``cached`` looks the teacher's logits up from one pass over each train
            image and its mirror image (crop offsets ignored; see :class:`Teacher`), ``online``
            runs the teacher on every augmented batch (exact, slower).
        amp: mixed precision: bfloat16 autocast (float16 with loss scaling on GPUs without
            bfloat16).
        channels_last: train in the NHWC memory format (what GPU tensor cores prefer).
        reference_batch: the batch ``lr`` was tuned for; a larger ``batch_size`` scales the
            learning rate linearly (Goyal et al. 2017) and warms it up over the first 5 % of
            steps, so a GPU can train at batch 512 with the recipe tuned at 128 (``None``: lr
            as given).
        iterative_steps: prune → fine-tune rounds (1 = one-shot; see :mod:`autoprune.schedule`).
        patience: early stop after this many validation checks without improvement, keeping
            the best weights, the final ones included (0 = off; needs a validation split).
        eval_every: steps between validation checks (0 = once per epoch).
    """

    steps: int = 200
    epochs: float | None = None
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    distill: float = 0.0
    temperature: float = 4.0
    distill_targets: str = "cached"
    amp: bool = False
    channels_last: bool = False
    reference_batch: int | None = None
    iterative_steps: int = 1
    patience: int = 0
    eval_every: int = 0

    def total_steps(self, n_train: int) -> int:
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * math.ceil(n_train / self.batch_size)))
        return self.steps

    @property
    def peak_lr(self) -> float:
        """``lr``, scaled linearly from ``reference_batch`` to ``batch_size`` when set.

        >>> FinetuneConfig(lr=0.01, batch_size=512, reference_batch=128).peak_lr
        0.04
        """
        if self.reference_batch is None:
            return self.lr
        return self.lr * self.batch_size / self.reference_batch


@dataclass(frozen=True)
class DatasetConfig:
    """Where the images come from: ``name`` is a registered dataset (``cifar10``,
    ``imagefolder``) or ``package.module:factory`` (see :mod:`autoprune.data`)."""

    name: str = "cifar10"
    source: str = "bundled"  # cifar10: bundled | shared | exact | jpeg | torchvision
    root: str | None = None  # cifar10: the containers' folder; imagefolder: the tree's root
    val_size: float | None = None  # None = the whole validation pool (carved sources: 10 %)
    train_limit: int | None = None
    split_seed: int = 0
    image_size: int | None = None  # imagefolder: resize shorter side, center-crop (default 32)
    mean: list[float] | None = None  # per-channel normalization on the 0-1 scale
    std: list[float] | None = None  # (default: ImageNet's, what the bundled ResNets used)


@dataclass(frozen=True)
class LayersConfig:
    """Which layers are searched and how far each may be pruned (``min_keep`` = 1 - max ratio)."""

    include: list[str] | None = None
    exclude: list[str] = field(default_factory=list)
    min_keep: float = 0.2
    bounds: dict[str, float] = field(default_factory=dict)  # layer → its own min_keep


@dataclass(frozen=True)
class DeviceConfig:
    """The device spec latency is measured and budgeted on (``device``, ``threads``,
    ``batch``, ``runtime`` = the latency backend, ``dtype``, ``channels_last``: see
    :class:`~autoprune.hardware.device.DeviceSpec`), and where fine-tuning runs (``train``:
    auto = the GPU when there is one)."""

    device: str = "cpu"
    threads: int = 1
    batch: int = 1
    runtime: str = "torch"  # torch | cuda-graphs | torch-compile | onnxruntime | tensorrt
    dtype: str = "float32"  # float32 | float16 | bfloat16
    channels_last: bool = False
    train: str = "auto"  # auto | cpu | cuda[:N]

    def spec(self) -> DeviceSpec:
        from autoprune.hardware.device import DeviceSpec

        return DeviceSpec(
            self.device, self.threads, self.batch, self.runtime, self.dtype, self.channels_last
        )


@dataclass(frozen=True)
class SearchConfig:
    searcher: str = "optuna"  # optuna | amc | random | uniform | global
    sampler: str = "tpe"  # tpe | nsga2 | random (optuna only)
    trials: int = 40
    timeout_s: float | None = None  # stop asking for candidates after this long (None: never)
    seed: int = 0
    parallel: int = 1
    startup_trials: int = 10
    round_to: list[int] | None = None  # optuna: also search the channel multiple among these
    space: str = "layer"  # layer: a ratio per layer | stage: per output resolution and coupling
    # optuna: the first trials are these baselines' policies, so TPE starts from them
    warm_start: list[str] = field(default_factory=lambda: ["uniform", "global"])
    study: str = "autoprune"  # the study name several drivers join (--storage, --study)
    heartbeat_s: int = 30  # database storage: seconds between a running trial's heartbeats
    retries: int = 2  # ... and how often a dead driver's trial is queued again


@dataclass(frozen=True)
class FidelityConfig:
    """Multi-fidelity candidate evaluation (:mod:`autoprune.search.fidelity`): rung ``k``
    fine-tunes ``min_steps · reduction_factorᵏ`` steps; the pruner lets the best
    ``1 / reduction_factor`` of a rung go on. ``min_steps: null`` = one rung of
    ``short_finetune.steps``.

    ``screen`` adds a rung 0 that repairs each pruned candidate without a gradient step and
    scores it: ``bn`` re-estimates batch-norm statistics on ``calibration_images`` train images,
    ``reconstruct`` refits every layer to the dense model's outputs by least squares on them
    (:mod:`autoprune.reconstruct`), ``reconstruct_bn`` does both (batch norm last); only the
    best ``screen_keep`` share of the screened candidates goes on to the fine-tune rungs (which
    start from the plain pruned model, as the final fine-tune does), so a search can screen
    many more candidates. ``screen_images`` scores screens on a fixed sample of the validation
    split (``null``: all of it): scoring is most of a screen's time
    (benchmarks/results/screen_cost-*.md). ``promote`` says when a
    screened candidate may go on: ``lazy`` (ASHA) as soon as it ranks in the kept share of
    enough screens, ``deferred`` only once every candidate is screened, and each fine-tune rung
    likewise only once all its candidates are scored (synchronous successive halving: exactly
    the kept shares go on), so the fine-tunes of an improving sampler's passing leaders do not
    take the screens' time."""

    min_steps: int | None = None
    rungs: int = 3
    reduction_factor: int = 3
    pruner: str = "successive_halving"  # successive_halving | hyperband | none
    screen: str = "none"  # none | bn | reconstruct | reconstruct_bn
    screen_keep: float = 0.1
    calibration_images: int = 256
    screen_images: int | None = None
    promote: str = "lazy"  # lazy | deferred

    def steps(self, single: int) -> list[int]:
        from autoprune.search.fidelity import rung_steps

        steps = (
            [single]
            if self.min_steps is None
            else rung_steps(self.min_steps, self.rungs, self.reduction_factor)
        )
        return [0, *steps] if self.screen != "none" else steps

    def keep(self) -> list[float]:
        """The share of each rung's candidates that go on to the next rung."""
        fine = [1 / self.reduction_factor] * (self.rungs - 1 if self.min_steps else 0)
        return [self.screen_keep, *fine] if self.screen != "none" else fine


@dataclass(frozen=True)
class AMCConfig:
    """Agent settings of the AMC-style RL searcher (see README: AMC searcher)."""

    algorithm: str = "ddpg"  # ddpg | td3
    warmup_episodes: int = 10
    noise_sigma: float = 0.5
    noise_decay: float = 0.95
    learning_rate: float = 1e-3
    batch_size: int = 64
    buffer_size: int = 2000
    gamma: float = 1.0
    tau: float = 0.01
    reward: str = "acc"  # acc | error_log_cost
    net_arch: list[int] = field(default_factory=lambda: [300, 300])
    gradient_steps: int = 10


@dataclass(frozen=True)
class Config:
    """Everything one search needs; mirrors ``search_spaces/*.yaml``."""

    model: str = "resnet20"
    checkpoint: str | None = None
    num_classes: int = 10
    input_size: int | None = None
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    layers: LayersConfig = field(default_factory=LayersConfig)
    mode: str = "structured"  # structured | hybrid (+ magnitude sparsity at apply) | unstructured
    sparsity: float = 0.0  # hybrid/unstructured: share of remaining conv/linear weights zeroed
    sparsity_scope: str = "layer"  # layer (same share per layer) | global (one threshold)
    # channel multiple; None = the latency backend's (1 CPU, 8 GPU); auto = the period the
    # profile measured on this device (autoprune profile's channel sweep)
    round_to: int | str | None = None
    budget: str = "0.5"
    budget_margin: float = 0.03  # search aims this share under the budget (predictor error)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    profile: str | None = None
    profile_grid_points: int = 12
    profile_calibration: int = 18  # random policies timed whole to calibrate the table
    measure_seconds: float = 4.0  # apply: seconds each model is timed per measurement
    search: SearchConfig = field(default_factory=SearchConfig)
    amc: AMCConfig = field(default_factory=AMCConfig)
    fidelity: FidelityConfig = field(default_factory=FidelityConfig)
    short_finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(steps=100))
    final_finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(epochs=5))
    eval_batch_size: int = 512

    def max_ratio(self, layer_names: list[str]) -> dict[str, float]:
        """Per-layer maximal pruning ratio from ``min_keep`` and per-layer bounds."""
        out = {}
        for n in layer_names:
            keep = self.layers.bounds.get(n, self.layers.min_keep)
            out[n] = round(1.0 - keep, 6)
        return out

    def replace(self, **changes: Any) -> Config:
        """A copy with top-level or dotted keys changed, e.g.
        ``replace(**{"search.trials": 5})``."""
        return from_dict(set_dotted(to_dict(self), changes))


def set_dotted(data: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Set ``"a.b.c"``-style keys in the nested mapping ``data`` (in place; returned).

    >>> set_dotted({"search": {"trials": 40}}, {"search.trials": 5, "budget": "0.5"})
    {'search': {'trials': 5}, 'budget': '0.5'}
    """
    for key, value in changes.items():
        node = data
        *parents, last = key.split(".")
        for p in parents:
            child = node.get(p)
            if not isinstance(child, dict):
                child = node[p] = {}
            node = child
        node[last] = value
    return data


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, vt = typing.get_args(tp)
        return {str(k): _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if tp in (int, bool, str) and type(value) is tp:
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _build(cls: Any, data: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(data) - set(fields))  # YAML keys may be None, 1, …
    if unknown:
        raise ConfigError(
            f"{where or 'config'}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or 'config'}: {e}") from e


def from_dict(data: dict[str, Any]) -> Config:
    """A validated :class:`Config` from plain data (unknown keys are errors)."""
    cfg: Config = _build(Config, data, "")
    _validate(cfg)
    return cfg


def _validate_dataset(d: DatasetConfig) -> None:
    from autoprune.data import DATASETS

    if ":" not in d.name:  # a package.module:factory is checked when it is loaded
        DATASETS.check(d.name, "dataset.name")
    norm = [v for v in (d.mean, d.std) if v is not None]
    if norm and (len(norm) != 2 or len(norm[0]) != len(norm[1]) or min(norm[1]) <= 0):
        raise ConfigError(
            "dataset.mean and dataset.std: give both, one value per channel, std > 0"
        )


def _validate_search(s: SearchConfig) -> None:
    if s.heartbeat_s < 1 or s.retries < 0 or not s.study:
        raise ConfigError(
            "search.heartbeat_s must be ≥ 1, search.retries ≥ 0 and search.study non-empty"
        )
    if set(s.warm_start) - {"uniform", "global"}:
        raise ConfigError(f"search.warm_start takes uniform and/or global, got {s.warm_start}")
    if any(r < 1 for r in s.round_to or []):
        raise ConfigError(f"search.round_to choices must be ≥ 1, got {s.round_to}")


def _validate_fidelity(fid: FidelityConfig) -> None:
    if (
        (fid.min_steps is not None and fid.min_steps < 1)
        or fid.rungs < 1
        or fid.reduction_factor < 2
    ):
        raise ConfigError("fidelity: min_steps and rungs must be ≥ 1, reduction_factor ≥ 2")
    if fid.screen_images is not None and fid.screen_images < 1:
        raise ConfigError(f"fidelity.screen_images must be ≥ 1 or null, got {fid.screen_images}")
    if fid.calibration_images < 1 or not 0 < fid.screen_keep <= 1:
        raise ConfigError(
            "fidelity: calibration_images must be ≥ 1 and screen_keep lie in (0, 1], got "
            f"{fid.calibration_images} and {fid.screen_keep}"
        )


def _validate_timing(cfg: Config) -> None:
    """The latency side: margin, profile sizes, measurement time and channel rounding."""
    if cfg.measure_seconds <= 0:
        raise ConfigError(f"measure_seconds must be positive, got {cfg.measure_seconds}")
    if not 0 <= cfg.budget_margin < 0.5:
        raise ConfigError(f"budget_margin must lie in [0, 0.5), got {cfg.budget_margin}")
    if cfg.profile_grid_points < 2 or cfg.profile_calibration < 2:
        raise ConfigError(
            f"profile_grid_points and profile_calibration must be ≥ 2, got "
            f"{cfg.profile_grid_points} and {cfg.profile_calibration}"
        )
    if isinstance(cfg.round_to, str) and cfg.round_to != "auto":
        raise ConfigError(f"round_to takes a channel multiple ≥ 1 or auto, got {cfg.round_to!r}")
    if isinstance(cfg.round_to, int) and cfg.round_to < 1:
        raise ConfigError(f"round_to must be ≥ 1, got {cfg.round_to}")


def _validate(cfg: Config) -> None:
    if not 0 < cfg.layers.min_keep <= 1:
        raise ConfigError(f"layers.min_keep must lie in (0, 1], got {cfg.layers.min_keep}")
    for name, keep in cfg.layers.bounds.items():
        if not 0 < keep <= 1:
            raise ConfigError(f"layers.bounds.{name} (min keep) must lie in (0, 1], got {keep}")
    _validate_timing(cfg)
    _validate_search(cfg.search)
    if not 0 <= cfg.sparsity < 1 or (cfg.mode != "structured") != (cfg.sparsity > 0):
        raise ConfigError(
            f"sparsity must lie in [0, 1) and be > 0 exactly when mode is hybrid or "
            f"unstructured (mode {cfg.mode}, sparsity {cfg.sparsity})"
        )
    for key in ("short_finetune", "final_finetune"):
        ft = getattr(cfg, key)
        if ft.iterative_steps < 1 or ft.patience < 0 or ft.eval_every < 0:
            raise ConfigError(f"{key}: iterative_steps must be ≥ 1, patience and eval_every ≥ 0")
        if ft.distill_targets not in ("cached", "online"):
            raise ConfigError(
                f"{key}.distill_targets is {ft.distill_targets!r}; choose one of cached, online"
            )
    _validate_fidelity(cfg.fidelity)
    from autoprune.policy import MODES
    from autoprune.search import PRUNERS, RECOVERIES, SAMPLERS, SEARCHERS

    SEARCHERS.check(cfg.search.searcher, "search.searcher")
    cfg.device.spec()  # its own checks (runtime registered, dtype known…)
    _validate_dataset(cfg.dataset)
    choices = {
        "search.sampler": (cfg.search.sampler, SAMPLERS),
        "search.space": (cfg.search.space, ("layer", "stage")),
        "mode": (cfg.mode, MODES),
        "sparsity_scope": (cfg.sparsity_scope, ("layer", "global")),
        "amc.algorithm": (cfg.amc.algorithm, ("ddpg", "td3")),
        "amc.reward": (cfg.amc.reward, ("acc", "error_log_cost")),
        "fidelity.pruner": (cfg.fidelity.pruner, PRUNERS),
        "fidelity.screen": (cfg.fidelity.screen, RECOVERIES),
        "fidelity.promote": (cfg.fidelity.promote, ("lazy", "deferred")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key} is {value!r}; choose one of {', '.join(allowed)}")
    if cfg.search.trials < 1 or cfg.search.parallel < 1:
        raise ConfigError("search.trials and search.parallel must be ≥ 1")
    if cfg.search.timeout_s is not None and cfg.search.timeout_s <= 0:
        raise ConfigError(f"search.timeout_s must be positive, got {cfg.search.timeout_s:g}")


DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "search_spaces" / "resnet20_cifar10.yaml"


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read and validate a YAML search-space file, with dotted-key ``overrides`` applied."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"malformed YAML in {path}{at}: {getattr(e, 'problem', e)}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: top level must be a mapping of keys, got {type(data).__name__}"
        )
    return from_dict(set_dotted(data, overrides or {}))


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


__all__ = [
    "DEFAULT_CONFIG",
    "AMCConfig",
    "Config",
    "DatasetConfig",
    "DeviceConfig",
    "FidelityConfig",
    "FinetuneConfig",
    "LayersConfig",
    "SearchConfig",
    "from_dict",
    "load_config",
    "set_dotted",
    "to_dict",
]
