"""``HardwareProfile``: a measured per-layer latency table for one model on one device, as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autoprune._io import read_json, write_json
from autoprune.errors import ProfileError
from autoprune.hardware.device import DeviceSpec, device_name

FORMAT = "autoprune.profile/1"


@dataclass
class LayerTable:
    """Latency (ms) of conv/linear layers sharing one geometry, over a grid of channel counts."""

    modules: list[str]
    kind: str
    kernel: int
    stride: int
    padding: int
    depthwise: bool
    in_hw: list[int]
    grid_in: list[int]
    grid_out: list[int]
    ms: list[list[float]]  # ms[i][j] at grid_in[i], grid_out[j]


@dataclass
class HardwareProfile:
    """Everything the latency predictor needs, plus the provenance of every number in it."""

    model: str
    input_shape: list[int]
    device: str
    device_name: str
    threads: int
    batch: int
    round_to: int
    max_ratio: dict[str, float]
    layers: list[dict[str, Any]]  # name, channels, outs, ins
    tables: list[LayerTable]
    dense_ms: float
    min_ms: float
    calibration: dict[str, Any]
    versions: dict[str, str]
    created: str
    notes: dict[str, Any] = field(default_factory=dict)
    throughput: list[dict[str, float]] = field(default_factory=list)  # dense model, batch sweep
    runtime: str = "torch"
    dtype: str = "float32"
    channels_last: bool = False
    channel_period: int | None = None  # fast channel multiple measured here (round_to: auto)

    @property
    def spec(self) -> DeviceSpec:
        """The measurement setting (readable anywhere: whether it can run here is checked only
        when something is measured)."""
        return DeviceSpec(
            self.device, self.threads, self.batch, self.runtime, self.dtype, self.channels_last
        )

    @property
    def reachable(self) -> tuple[float, float]:
        """Dense latency and the fastest the search bounds allow (maximal pruning), in ms."""
        return self.dense_ms, self.min_ms

    def describe(self) -> dict[str, Any]:
        """The device this profile was measured on, for reports."""
        return {
            "device": self.device,
            "name": self.device_name,
            "threads": self.threads,
            "batch": self.batch,
            "runtime": self.runtime,
            "dtype": self.dtype,
            "channels_last": self.channels_last,
            "versions": self.versions,
        }

    def check_matches(
        self, *, model: str, spec: DeviceSpec, input_shape: tuple[int, ...], force: bool = False
    ) -> None:
        """Refuse a profile recorded for another model, processor, thread count, batch or input."""
        wanted = {
            "model": model,
            "device": spec.device,
            "device_name": device_name(spec.device) if spec.device == "cpu" else self.device_name,
            "threads": spec.threads,
            "batch": spec.batch,
            "runtime": spec.runtime,
            "dtype": spec.dtype,
            "channels_last": spec.channels_last,
            "input_shape": list(input_shape),
        }
        have = {
            "model": self.model,
            "device": self.device,
            "device_name": self.device_name,
            "threads": self.threads,
            "batch": self.batch,
            "runtime": self.runtime,
            "dtype": self.dtype,
            "channels_last": self.channels_last,
            "input_shape": list(self.input_shape),
        }
        diff = [f"{k} {have[k]} (wanted {wanted[k]})" for k in wanted if have[k] != wanted[k]]
        if spec.device.startswith("cuda"):
            diff = [d for d in diff if not d.startswith("threads")]
        if diff and not force:
            raise ProfileError(
                "hardware profile was recorded for " + ", ".join(diff) + "; re-run `autoprune "
                "profile` for this setting or pass --force"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"format": FORMAT, **d}

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> HardwareProfile:
        d = read_json(path, ProfileError, "hardware profile")
        if not isinstance(d, dict) or d.pop("format", None) != FORMAT:
            raise ProfileError(f"{path} is not an autoprune hardware profile ({FORMAT})")
        try:
            d["tables"] = [LayerTable(**t) for t in d["tables"]]
            return cls(**d)
        except (TypeError, KeyError) as e:
            raise ProfileError(f"hardware profile {path} is malformed: {e}") from e


SPEED_UP_WARNING = 1.25  # below this reachable speed-up (20 % faster) a profile warns


def reachable_lines(profile: HardwareProfile) -> list[str]:
    """What pruning can reach on this device: dense and maximal-pruning latency, the smallest
    feasible budget, and a warning naming what would help when the reachable speed-up is under
    20 % (latency bound by per-kernel overhead, not by the channels pruning removes)."""
    dense, floor = profile.reachable
    share = floor / dense if dense > 0 else 1.0
    lines = [
        f"reachable: dense {dense:.3f} ms → maximal pruning {floor:.3f} ms ({1 / share:.2f}× "
        f"faster); the smallest feasible budget is {share:.0%} of dense ({floor:.3f} ms)"
    ]
    if dense / max(floor, 1e-12) < SPEED_UP_WARNING:
        spec = profile.spec
        helps = []
        if spec.cuda and spec.runtime == "torch":
            helps.append("--runtime cuda-graphs or torch-compile (one launch per call)")
        if spec.batch < 64:
            helps.append(f"a larger --batch than {spec.batch}")
        if spec.dtype == "float32":
            helps.append("--dtype bfloat16" + (" or float16" if spec.cuda else ""))
        lines.append(
            f"warning: pruning makes this model at most {dense / max(floor, 1e-12) - 1:.0%} "
            f"faster on {spec.describe()}: its latency is bound by per-call overhead, not by "
            "the channels pruning removes"
            + (f"; what would help: {', '.join(helps)}" if helps else "")
        )
    return lines


def default_profile_path(
    model: str, spec: DeviceSpec, root: str | Path = "hardware_profiles"
) -> Path:
    """``hardware_profiles/<device>-<model>.json``, e.g. ``cpu-t1-b1-resnet20.json``."""
    safe = model.replace(":", "_").replace("/", "_")
    return Path(root) / f"{spec.tag}-{safe}.json"


__all__ = ["HardwareProfile", "LayerTable", "default_profile_path", "reachable_lines"]
