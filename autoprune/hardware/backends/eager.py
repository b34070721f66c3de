"""PyTorch on the CPU or a CUDA GPU: eager, CUDA graphs (one captured launch per call) and
``torch.compile``, in the spec's precision and memory format (synchronized around every timed
call on a GPU)."""

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


def deployed(model: nn.Module, device: str, dtype: str, channels_last: bool) -> nn.Module:
    """``model`` as deployment runs it: on ``device``, in eval mode, in ``dtype`` and memory
    format (a copy unless it already is all that; the caller's model is never changed)."""
    want = getattr(torch, dtype)
    m = on_device(model, device)
    if want == torch.float32 and not channels_last:
        return m
    if m is model:
        import copy

        m = copy.deepcopy(model)
    m = m.to(dtype=want)
    return m.to(memory_format=torch.channels_last) if channels_last else m


class TorchBackend(LatencyBackend):
    """Eager PyTorch (``inference_mode``) on ``cpu`` or ``cuda[:i]``, in the spec's precision
    (float32, float16 on GPUs, bfloat16) and memory format."""

    name = "torch"

    def check(self) -> None:
        if self.spec.cuda and not torch.cuda.is_available():
            raise ConfigError(
                f"device {self.spec.device!r} requested but CUDA is not available here"
            )
        if self.spec.dtype == "float16" and not self.spec.cuda:
            raise ConfigError(
                "dtype float16 is for GPUs (CPU kernels emulate it slowly); use bfloat16 or "
                "float32 on a CPU"
            )

    def _input(self, shape: tuple[int, ...]) -> torch.Tensor:
        x = torch.randn(
            self.spec.batch, *shape, device=self.spec.device, dtype=getattr(torch, self.spec.dtype)
        )
        if self.spec.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _deployed(self, model: nn.Module) -> nn.Module:
        return deployed(model, self.spec.device, self.spec.dtype, self.spec.channels_last)

    def model_runner(self, model: nn.Module, input_shape: tuple[int, ...]) -> Runner:
        m, x = self._deployed(model), self._input(input_shape)
        return lambda: m(x)

    def layer_runner(self, geometry: ModuleGeometry, c_in: int, c_out: int) -> Runner:
        op = self._deployed(layer_module(geometry, c_in, c_out).eval())
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


class CudaGraphsBackend(TorchBackend):
    """The eager model captured once into a CUDA graph and replayed: one launch per call
    instead of one per kernel, which is what removes the host overhead that makes a small
    network's eager latency blind to pruning on a fast GPU. Layers are captured the same way.
    GPUs only."""

    name = "cuda-graphs"

    def check(self) -> None:
        if not self.spec.cuda:
            raise ConfigError(
                "runtime cuda-graphs needs a CUDA device (--device cuda); on a CPU use torch, "
                "torch-compile or onnxruntime"
            )
        super().check()

    def _captured(self, fn: Runner) -> Runner:
        stream = torch.cuda.Stream(self.spec.device)
        stream.wait_stream(torch.cuda.current_stream(self.spec.device))
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):  # warm up (cuDNN picks its algorithms) outside the capture
                fn()
        torch.cuda.current_stream(self.spec.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode():
            fn()
        return graph.replay

    def model_runner(self, model: nn.Module, input_shape: tuple[int, ...]) -> Runner:
        return self._captured(super().model_runner(model, input_shape))

    def layer_runner(self, geometry: ModuleGeometry, c_in: int, c_out: int) -> Runner:
        return self._captured(super().layer_runner(geometry, c_in, c_out))


class TorchCompileBackend(TorchBackend):
    """``torch.compile`` (Inductor) on the CPU or a GPU: whole models are compiled before they
    are timed (about 30 s each for a CIFAR ResNet-20 on 2 CPU cores), on a GPU in the
    ``reduce-overhead`` mode (CUDA graphs). Single layers are timed eagerly — compiling each of
    a table's hundreds of ops would take hours — and the profile's calibration against compiled
    whole-model latency carries the difference."""

    name = "torch-compile"

    def model_runner(self, model: nn.Module, input_shape: tuple[int, ...]) -> Runner:
        m, x = self._deployed(model), self._input(input_shape)
        if m is model:  # compiling wraps the module; leave the caller's object as it is
            import copy

            m = copy.deepcopy(model)
        mode = "reduce-overhead" if self.spec.cuda else None
        compiled = torch.compile(m, dynamic=False, mode=mode)
        with torch.inference_mode():
            for _ in range(3 if self.spec.cuda else 1):  # compile (and record graphs) now
                compiled(x)
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


__all__ = ["CudaGraphsBackend", "TorchBackend", "TorchCompileBackend", "deployed", "layer_module"]
