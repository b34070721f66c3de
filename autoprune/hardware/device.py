"""Where latency is measured: the device, CPU threads, batch size and the runtime (latency
backend) that executes the model, plus the provenance recorded with every number."""

from __future__ import annotations

import platform
from dataclasses import dataclass

from autoprune.errors import ConfigError

DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")
SHORT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


@dataclass(frozen=True)
class DeviceSpec:
    """What deployment runs, and so what is timed: ``cpu`` or ``cuda[:i]``, CPU threads, batch
    size, the runtime executing the model (a name in
    :data:`autoprune.hardware.backends.BACKENDS`: eager PyTorch, CUDA graphs, ONNX Runtime, …),
    the precision of weights and activations, and the memory format (``channels_last``: NHWC,
    what tensor cores and oneDNN prefer).

    Construction checks only what needs nothing installed; whether the runtime can run on this
    device here is checked by :func:`autoprune.hardware.backends.backend_for`.
    """

    device: str = "cpu"
    threads: int = 1
    batch: int = 1
    runtime: str = "torch"
    dtype: str = "float32"
    channels_last: bool = False

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
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def tag(self) -> str:
        """A short file-name-safe id, e.g. ``cpu-t1-b1`` or ``cuda-graphs-cuda-b64-bf16-cl``
        (precision and memory format only when not the defaults)."""
        dev = self.device.replace(":", "")
        tag = f"{dev}-t{self.threads}-b{self.batch}" if dev == "cpu" else f"{dev}-b{self.batch}"
        prefix = {"torch": "", "onnxruntime": "ort-"}.get(self.runtime, f"{self.runtime}-")
        if self.dtype != "float32":
            tag += f"-{SHORT[self.dtype]}"
        return prefix + tag + ("-cl" if self.channels_last else "")

    def describe(self) -> str:
        """One line naming the spec, e.g. ``cuda, batch 64, bfloat16, channels_last, torch``."""
        where = self.device if self.cuda else f"cpu, {self.threads} thread(s)"
        fmt = ", channels_last" if self.channels_last else ""
        return f"{where}, batch {self.batch}, {self.dtype}{fmt}, {self.runtime}"

    def replace(self, **changes: object) -> DeviceSpec:
        """A copy with ``changes`` (e.g. another batch for a throughput sweep)."""
        from dataclasses import replace

        return replace(self, **changes)  # type: ignore[arg-type]


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


__all__ = ["DTYPES", "DeviceSpec", "device_name", "versions"]
