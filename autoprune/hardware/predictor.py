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
    """Table latencies of the resized layers, mapped to whole-model latency by the profile's fit.

    Timing a layer alone adds its own call overhead and misses what runs around it (batch norm,
    activations, residual adds, whose cost follows the layer's output size), so the prediction is
    ``coef[0] * Σ table + coef[1] * Σ output activations (M) + offset``, fitted on whole-model
    measurements when the profile was made.
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
        cal = profile.calibration
        self.coef = [float(c) for c in cal.get("coef", [cal.get("scale", 1.0), 0.0])]
        self.offset = float(cal.get("offset", 0.0))

    def kept(self, policy: PruningPolicy) -> dict[str, int]:
        if policy.mode == "unstructured":
            return dict(self.channels)
        return {
            n: kept_channels(c, policy.ratio(n), policy.round_to) for n, c in self.channels.items()
        }

    def module_channels(self, module: str, kept: Mapping[str, int]) -> tuple[float, float]:
        """(in, out) channels of a resized module given kept counts per layer."""
        t = self._tables[module]
        c_in, c_out = float(max(t.grid_in)), float(max(t.grid_out))
        c_out -= sum(
            self.channels[n] - kept.get(n, self.channels[n]) for n in self._outs.get(module, [])
        )
        c_in -= sum(
            self.channels[n] - kept.get(n, self.channels[n]) for n in self._ins.get(module, [])
        )
        if t.depthwise:
            c_in = c_out = min(c_in, c_out)
        return c_in, c_out

    def features(self, kept: Mapping[str, int]) -> list[float]:
        """Uncalibrated features: Σ table latency (ms) and Σ output activations (millions)."""
        table = act = 0.0
        for m, t in self._tables.items():
            c_in, c_out = self.module_channels(m, kept)
            table += _interp2(t, c_in, c_out)
            if t.kind == "conv":
                h, w = ((d + 2 * t.padding - t.kernel) // t.stride + 1 for d in t.in_hw)
                act += c_out * h * w / 1e6
        return [table, act]

    def predict_kept(self, kept: Mapping[str, int]) -> float:
        return (
            sum(c * f for c, f in zip(self.coef, self.features(kept), strict=False)) + self.offset
        )


__all__ = ["LUTPredictor", "LatencyPredictor"]
