"""Latency backends: what executes a model (or one layer) while it is timed.

One module per backend and one line in :data:`BACKENDS`; a profile names its backend, and the
runtime of a :class:`~autoprune.hardware.device.DeviceSpec` picks one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autoprune.registry import Registry

if TYPE_CHECKING:
    from autoprune.hardware.backends._base import LatencyBackend
    from autoprune.hardware.device import DeviceSpec

BACKENDS: Registry[type[LatencyBackend]] = Registry(
    "latency backend",
    {
        "torch": "autoprune.hardware.backends.eager:TorchBackend",
        "cuda-graphs": "autoprune.hardware.backends.eager:CudaGraphsBackend",
        "torch-compile": "autoprune.hardware.backends.eager:TorchCompileBackend",
        "onnxruntime": "autoprune.hardware.backends.ort:OnnxRuntimeBackend",
        "tensorrt": "autoprune.hardware.backends.ort:TensorRTBackend",
    },
)


def backend_for(spec: DeviceSpec) -> LatencyBackend:
    """The backend ``spec.runtime`` names, checked to run on ``spec.device`` here."""
    return BACKENDS.get(spec.runtime)(spec)


__all__ = ["BACKENDS", "backend_for"]
