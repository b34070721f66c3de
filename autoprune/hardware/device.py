"""Where latency is measured: the device, CPU threads, batch size and the runtime (latency
backend) that executes the model, plus the provenance recorded with every number."""

from __future__ import annotations

import platform
from dataclasses import dataclass

from autoprune.errors import ConfigError


@dataclass(frozen=True)
class DeviceSpec:
    """``cpu`` or ``cuda[:i]``, CPU threads, batch size, and the runtime executing the model: a
    name in :data:`autoprune.hardware.backends.BACKENDS` (eager PyTorch, ONNX Runtime, …).

    Construction checks only what needs nothing installed; whether the runtime can run on this
    device here is checked by :func:`autoprune.hardware.backends.backend_for`.
    """

    device: str = "cpu"
    threads: int = 1
    batch: int = 1
    runtime: str = "torch"

    def __post_init__(self) -> None:
        from autoprune.hardware.backends import BACKENDS

        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.runtime not in BACKENDS:
            raise ConfigError(
                f"runtime must be one of {', '.join(BACKENDS.names())}, got {self.runtime!r}"
            )
        if self.threads < 1 or self.batch < 1:
            raise ConfigError("threads and batch must be at least 1")

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def tag(self) -> str:
        """A short file-name-safe id, e.g. ``cpu-t1-b1``."""
        dev = self.device.replace(":", "")
        tag = f"{dev}-t{self.threads}-b{self.batch}" if dev == "cpu" else f"{dev}-b{self.batch}"
        prefix = {"torch": "", "onnxruntime": "ort-"}.get(self.runtime, f"{self.runtime}-")
        return prefix + tag


def device_name(device: str) -> str:
    """Human-readable processor name (CPU model from /proc/cpuinfo, or the CUDA device name)."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    """Library versions recorded with every measured number."""
    import numpy
    import torch
    import torch_pruning

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_pruning": getattr(torch_pruning, "__version__", "?"),
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


__all__ = ["DeviceSpec", "device_name", "versions"]
