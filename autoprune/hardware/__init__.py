"""Latency on a real device: backends that run models, timing, profiles (per-layer tables) and
the predictor that adds a policy up from them.

Names are imported on first use, so ``import autoprune.hardware`` (and the config, which reads
the backend registry) pulls in no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DeviceSpec": "autoprune.hardware.device",
    "HardwareProfile": "autoprune.hardware.profile",
    "LayerTable": "autoprune.hardware.profile",
    "default_profile_path": "autoprune.hardware.profile",
    "LatencyPredictor": "autoprune.hardware.predictor",
    "LUTPredictor": "autoprune.hardware.predictor",
    "Timing": "autoprune.hardware.timing",
    "measure_latency": "autoprune.hardware.measure",
    "measure_models": "autoprune.hardware.measure",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'autoprune.hardware' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = sorted(_EXPORTS)
