"""Eager PyTorch on the CPU or a CUDA GPU (synchronized around every timed call)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from autoprune._device import on_device
from autoprune._threads import torch_threads
from autoprune.errors import ConfigError
from autoprune.hardware.backends._base import LatencyBackend, Runner

if TYPE_CHECKING:
    from autoprune.prunable import ModuleGeometry


def layer_module(g: ModuleGeometry, c_in: int, c_out: int) -> nn.Module:
    """A fresh conv (or linear) layer of ``g``'s geometry with ``c_in`` → ``c_out`` channels."""
    if g.kind == "linear":
        return nn.Linear(c_in, c_out)
    groups = c_in if g.depthwise else 1
    return nn.Conv2d(c_in, c_out, g.kernel, g.stride, g.padding, groups=groups, bias=False)


class TorchBackend(LatencyBackend):
    """Eager PyTorch (``inference_mode``) on ``cpu`` or ``cuda[:i]``."""

    name = "torch"

    def check(self) -> None:
        if self.spec.cuda and not torch.cuda.is_available():
            raise ConfigError(
                f"device {self.spec.device!r} requested but CUDA is not available here"
            )

    def _input(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(self.spec.batch, *shape, device=self.spec.device)

    def model_runner(self, model: nn.Module, input_shape: tuple[int, ...]) -> Runner:
        m, x = on_device(model, self.spec.device), self._input(input_shape)
        return lambda: m(x)

    def layer_runner(self, geometry: ModuleGeometry, c_in: int, c_out: int) -> Runner:
        op = layer_module(geometry, c_in, c_out).eval().to(self.spec.device)
        shape = (c_in,) if geometry.kind == "linear" else (c_in, *geometry.in_hw)
        x = self._input(shape)
        return lambda: op(x)

    def synchronize(self) -> None:
        if self.spec.cuda:
            torch.cuda.synchronize(self.spec.device)

    @contextmanager
    def session(self) -> Iterator[None]:
        with torch_threads(self.spec.threads), torch.inference_mode():
            yield

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.spec.cuda:
            out["versions"] = {
                **out["versions"],
                "cuda": str(torch.version.cuda),
                "cudnn": str(torch.backends.cudnn.version()),
                "driver": _driver_version(),
            }
        return out


class TorchCompileBackend(TorchBackend):
    """``torch.compile`` (Inductor) on the CPU or a GPU: whole models are compiled before they
    are timed (about 30 s each for a CIFAR ResNet-20 on 2 CPU cores). Single layers are timed
    eagerly — compiling each of a table's hundreds of ops would take hours — and the profile's
    calibration against compiled whole-model latency carries the difference."""

    name = "torch-compile"

    def model_runner(self, model: nn.Module, input_shape: tuple[int, ...]) -> Runner:
        m, x = on_device(model, self.spec.device), self._input(input_shape)
        if m is model:  # compiling wraps the module; leave the caller's object as it is
            import copy

            m = copy.deepcopy(model)
        compiled = torch.compile(m, dynamic=False)
        with torch.inference_mode():
            compiled(x)  # compile now, not inside the first timed call
        return lambda: compiled(x)


def _driver_version() -> str:
    """The NVIDIA driver version, if ``nvidia-smi`` is on the PATH."""
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "?"


__all__ = ["TorchBackend", "TorchCompileBackend", "layer_module"]
