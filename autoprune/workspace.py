"""``Workspace``: everything a search, apply or export needs, built once from a :class:`Config`."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from autoprune._device import resolve_device
from autoprune.budget import LatencyBudget, check_feasible
from autoprune.config import Config
from autoprune.data import class_count, load_dataset
from autoprune.data.splits import Splits
from autoprune.errors import ConfigError, ProfileError
from autoprune.evaluate import Evaluator
from autoprune.finetune import Teacher
from autoprune.hardware.backends import backend_for
from autoprune.hardware.device import DeviceSpec
from autoprune.hardware.predictor import LUTPredictor
from autoprune.hardware.profile import HardwareProfile, default_profile_path
from autoprune.models import ModelSpec, build_model, model_spec
from autoprune.prunable import PrunableLayer, discover, module_geometry
from autoprune.pruning import channel_scores
from autoprune.search._base import SearchContext, stage_groups

Progress = Callable[[str, int, int], None]


@dataclass
class Workspace:
    config: Config
    spec: ModelSpec
    model: nn.Module
    layers: list[PrunableLayer]
    max_ratio: dict[str, float]
    device: DeviceSpec

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.spec.input_shape

    @property
    def layer_names(self) -> list[str]:
        return [la.name for la in self.layers]

    def load_data(self) -> Splits:
        """The config's dataset (see :data:`autoprune.data.DATASETS`), checked against the
        model: same input shape, as many classes as the model has outputs."""
        data = load_dataset(self.config.dataset)
        if data.input_shape != tuple(self.input_shape):
            shape = "×".join(map(str, data.input_shape))
            want = "×".join(map(str, self.input_shape))
            raise ConfigError(
                f"dataset images are {shape} but model {self.config.model!r} takes {want}: "
                f"set input_size: {data.input_shape[-1]} (or dataset.image_size)"
            )
        if data.classes and len(data.classes) != self.config.num_classes:
            raise ConfigError(
                f"the dataset has {len(data.classes)} classes but num_classes is "
                f"{self.config.num_classes}"
            )
        return data

    def profile_path(self) -> Path:
        """Where this config's profile lives: ``profile:`` if set, else the first profile in
        ``hardware_profiles/`` recorded for this model, setting and processor (several
        machines' profiles can sit side by side), else where a new one would be written."""
        if self.config.profile:
            return Path(self.config.profile)
        default = default_profile_path(self.config.model, self.device)
        for path in [default, *sorted(default.parent.glob(f"{default.stem}-*.json"))]:
            try:
                self.load_profile(path)
            except ProfileError:
                continue
            return path
        if not default.exists():
            return default
        name = re.sub(r"\((r|tm)\)", "", self.device_name.lower())
        slug = "-".join(re.findall(r"[a-z0-9]+", name))
        return default.with_name(f"{default.stem}-{slug}.json")

    def profiles_for_other_specs(self) -> list[tuple[Path, HardwareProfile]]:
        """Profiles in ``hardware_profiles/`` of this model on this very device (same processor
        or GPU) but measured for another spec (batch, threads, precision, memory format or
        runtime): their presence means a user profiled one setting and asked for another."""
        default = default_profile_path(self.config.model, self.device)
        found = []
        safe = default.stem.rsplit("-", 1)[-1]
        for path in sorted(default.parent.glob(f"*{safe}*.json")):
            try:
                prof = HardwareProfile.load(path)
            except ProfileError:
                continue
            same_device = prof.device.split(":")[0] == self.device.device.split(":")[0]
            if (
                prof.model == self.config.model
                and same_device
                and prof.device_name == self.device_name
                and prof.spec != self.device
            ):
                found.append((path, prof))
        return found

    @property
    def round_to(self) -> int:
        """Channel counts are multiples of this: the config's ``round_to``, else the latency
        backend's default (1 on CPUs, 8 on GPUs); with searched choices, their smallest.
        ``auto`` before a profile exists: the backend's default (see :meth:`round_to_for`)."""
        return self.round_to_for(None)

    def round_to_for(self, profile: HardwareProfile | None) -> int:
        """:attr:`round_to`, with ``round_to: auto`` resolved to the channel period ``profile``
        measured on this device (the backend's default if it measured none)."""
        if self.config.search.round_to:
            return min(self.config.search.round_to)
        rt = self.config.round_to
        if isinstance(rt, int):
            return rt
        if rt == "auto" and profile is not None and profile.channel_period:
            return profile.channel_period
        return backend_for(self.device).default_round_to

    @property
    def compute(self) -> str:
        """Where fine-tuning and scoring run (``device.train`` resolved: auto → the GPU when
        there is one)."""
        return resolve_device(self.config.device.train)

    @property
    def device_name(self) -> str:
        from autoprune.hardware.device import device_name

        return device_name(self.device.device)

    def measure_profile(
        self,
        *,
        repeats: int = 30,
        min_time_s: float = 0.5,
        progress: Progress | None = None,
        sweep: list[int] | None = None,
        channel_sweep: bool = True,
    ) -> HardwareProfile:
        from autoprune.hardware.profiler import profile_model

        return profile_model(
            self.config.model,
            self.model,
            self.layers,
            self.input_shape,
            self.device,
            max_ratio=self.max_ratio,
            round_to=self.round_to,
            grid_points=self.config.profile_grid_points,
            calibration_policies=self.config.profile_calibration,
            repeats=repeats,
            min_time_s=min_time_s,
            progress=progress,
            sweep=sweep,
            channel_sweep=channel_sweep,
        )

    def load_profile(
        self, path: str | Path | None = None, *, force: bool = False
    ) -> HardwareProfile:
        """Load the device profile and refuse one that does not describe this model and setting."""
        profile = HardwareProfile.load(path or self.profile_path())
        profile.check_matches(
            model=self.config.model, spec=self.device, input_shape=self.input_shape, force=force
        )
        have = {la["name"]: la["channels"] for la in profile.layers}
        want = {la.name: la.channels for la in self.layers}
        if have != want and not force:
            raise ProfileError(
                "hardware profile covers other layers than this config searches; "
                "re-run `autoprune profile` with this config or pass --force"
            )
        short = [n for n, r in self.max_ratio.items() if profile.max_ratio.get(n, 0) + 1e-9 < r]
        if short and not force:
            raise ProfileError(
                f"hardware profile's channel grid stops short of the bound of layer "
                f"{short[0]!r}; re-run `autoprune profile` with this config"
            )
        return profile

    def budget_ms(self, profile: HardwareProfile, budget: str | None = None) -> float:
        """Resolve the config's (or given) budget against the profile's measured dense latency and
        check it is reachable."""
        ms = LatencyBudget.parse(budget or self.config.budget).resolve(profile.dense_ms)
        check_feasible(
            LUTPredictor(profile),
            self.config.model,
            self.max_ratio,
            ms,
            self.round_to_for(profile),
        )
        return ms

    def search_context(
        self, profile: HardwareProfile, budget_ms: float, run_dir: Path, seed: int | None = None
    ) -> SearchContext:
        """What a searcher needs: layers, bounds, predictor, budget and its run directory."""
        cfg = self.config
        return SearchContext(
            cfg.model,
            self.layer_names,
            self.max_ratio,
            self.round_to_for(profile),
            LUTPredictor(profile),
            budget_ms,
            run_dir,
            cfg.search.seed if seed is None else seed,
            channel_scores=channel_scores(self.model, self.layers, self.input_shape),
            round_to_choices=tuple(cfg.search.round_to or ()),
            groups=self.space_groups(),
        )

    def space_groups(self) -> dict[str, list[str]]:
        """The search space's dimensions (``search.space``): ``{}`` for one per layer, or the
        layers grouped by output resolution and residual coupling (``stage``)."""
        if self.config.search.space == "layer":
            return {}
        geo = module_geometry(self.model, self.input_shape)

        def out_hw(name: str) -> tuple[int, int]:
            g = geo[name]
            side = [(s + 2 * g.padding - g.kernel) // g.stride + 1 for s in g.in_hw]
            return (side[0], side[1]) if g.kind == "conv" else (1, 1)

        names = self.layer_names
        coupled = {la.name for la in self.layers if len(la.outs) > 1}
        return stage_groups(names, {n: out_hw(n) for n in names}, coupled)

    def evaluator(
        self,
        data: Splits,
        profile: HardwareProfile,
        threads: int | None = None,
        teacher: Teacher | None = None,
    ) -> Evaluator:
        """The candidate evaluator: short fine-tune on train, score on validation."""
        return Evaluator(
            self.model,
            self.layers,
            self.input_shape,
            data.train,
            data.val,
            LUTPredictor(profile),
            self.config.short_finetune,
            threads=threads,
            eval_batch_size=self.config.eval_batch_size,
            teacher=teacher,
            device=self.compute,
            screen=self.config.fidelity.screen,
            calibration_images=self.config.fidelity.calibration_images,
            screen_images=self.config.fidelity.screen_images,
        )


def build_workspace(cfg: Config) -> Workspace:
    """Build the model, discover its prunable layers and resolve per-layer bounds."""
    spec = model_spec(cfg.model, cfg.num_classes, cfg.input_size or cfg.dataset.image_size)
    classes = class_count(cfg.dataset)  # before the checkpoint: its error would say less
    if classes is not None and classes != cfg.num_classes:
        raise ConfigError(
            f"the dataset has {classes} classes but num_classes is {cfg.num_classes}"
        )
    model = build_model(cfg.model, cfg.num_classes, cfg.checkpoint)
    layers = discover(
        model, spec.input_shape, include=cfg.layers.include, exclude=cfg.layers.exclude
    )
    if not layers:
        raise ConfigError(f"model {cfg.model!r} has no prunable layers under this config")
    names = {la.name for la in layers}
    for name in list(cfg.layers.bounds) + list(cfg.layers.include or []):
        if name not in names:
            raise ConfigError(
                f"layer {name!r} in the config is not a prunable layer of {cfg.model!r}"
            )
    dev = cfg.device.spec()
    backend_for(dev)  # refuse a device this machine lacks before anything is built
    resolve_device(cfg.device.train)
    return Workspace(cfg, spec, model, layers, cfg.max_ratio([la.name for la in layers]), dev)


__all__ = ["Workspace", "build_workspace"]
