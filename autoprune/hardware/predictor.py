"""Predict a policy's latency from a hardware profile: interpolated layer table + calibration."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from autoprune.hardware.profile import HardwareProfile, LayerTable
from autoprune.policy import PruningPolicy, kept_channels


class LatencyPredictor(ABC):
    """Maps a policy (or per-layer kept channel counts) to predicted latency in ms."""

    @abstractmethod
    def predict_kept(self, kept: Mapping[str, int]) -> float:
        """Latency when each named layer keeps ``kept[name]`` channels (others stay dense)."""

    def predict(self, policy: PruningPolicy) -> float:
        return self.predict_kept(self.kept(policy))

    @abstractmethod
    def kept(self, policy: PruningPolicy) -> dict[str, int]:
        """Kept channel count per layer under ``policy``."""


def _interp2(t: LayerTable, c_in: float, c_out: float) -> float:
    ms = np.asarray(t.ms)
    rows = [np.interp(c_out, t.grid_out, ms[i]) for i in range(len(t.grid_in))]
    return float(np.interp(c_in, t.grid_in, rows))


class LUTPredictor(LatencyPredictor):
    """Sum of the table latencies of every resized layer, mapped by the profile's linear calibration.

    Timing a layer alone adds its own call overhead and misses the unchanged layers, so the raw sum is
    fitted to whole-model measurements: ``latency = scale * sum + offset``.
    """

    def __init__(self, profile: HardwareProfile) -> None:
        self.profile = profile
        self.channels = {lay["name"]: int(lay["channels"]) for lay in profile.layers}
        self._outs: dict[str, list[str]] = {}
        self._ins: dict[str, list[str]] = {}
        for lay in profile.layers:
            for m in lay["outs"]:
                self._outs.setdefault(m, []).append(lay["name"])
            for m in lay["ins"]:
                self._ins.setdefault(m, []).append(lay["name"])
        self._tables = {m: t for t in profile.tables for m in t.modules}
        self.scale = float(profile.calibration.get("scale", 1.0))
        self.offset = float(profile.calibration.get("offset", 0.0))

    def kept(self, policy: PruningPolicy) -> dict[str, int]:
        if policy.mode == "unstructured":
            return dict(self.channels)
        return {n: kept_channels(c, policy.ratio(n), policy.round_to) for n, c in self.channels.items()}

    def module_channels(self, module: str, kept: Mapping[str, int]) -> tuple[float, float]:
        """(in, out) channels of a resized module given kept counts per layer."""
        t = self._tables[module]
        c_in, c_out = float(max(t.grid_in)), float(max(t.grid_out))
        c_out -= sum(self.channels[n] - kept.get(n, self.channels[n]) for n in self._outs.get(module, []))
        c_in -= sum(self.channels[n] - kept.get(n, self.channels[n]) for n in self._ins.get(module, []))
        if t.depthwise:
            c_in = c_out = min(c_in, c_out)
        return c_in, c_out

    def raw_sum(self, kept: Mapping[str, int]) -> float:
        """Uncalibrated sum of table latencies over the resized modules."""
        return sum(_interp2(t, *self.module_channels(m, kept)) for m, t in self._tables.items())

    def predict_kept(self, kept: Mapping[str, int]) -> float:
        return self.scale * self.raw_sum(kept) + self.offset


__all__ = ["LUTPredictor", "LatencyPredictor"]
