"""Latency on a real device: measure, profile into a table, predict a policy's latency."""

from autoprune.hardware.measure import DeviceSpec, Timing, measure_latency
from autoprune.hardware.predictor import LatencyPredictor, LUTPredictor
from autoprune.hardware.profile import HardwareProfile, LayerTable, default_profile_path

__all__ = [
    "DeviceSpec",
    "HardwareProfile",
    "LUTPredictor",
    "LatencyPredictor",
    "LayerTable",
    "Timing",
    "default_profile_path",
    "measure_latency",
]
