"""The compute device (where fine-tuning and scoring run), resolved once, and mixed precision.

Latency is measured on ``device.device`` through a latency backend; fine-tuning runs on
``device.train`` (``auto``: the GPU when there is one). Models are moved as copies: the dense
model stays where its owner put it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from autoprune.errors import ConfigError


def resolve_device(name: str) -> str:
    """``auto`` → ``cuda`` when CUDA is available, else ``cpu``; ``cuda[:i]`` must exist here."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here")
    if not (name == "cpu" or name.startswith("cuda")):
        raise ConfigError(f"compute device must be auto, cpu or cuda[:N], got {name!r}")
    return name


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters live (CPU for a model without parameters)."""
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def probe_input(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """A batch-1 input of zeros on ``model``'s device (for tracing and shape checks)."""
    return torch.zeros(1, *input_shape, device=model_device(model))


def on_device(model: nn.Module, device: str | torch.device) -> nn.Module:
    """``model`` in eval mode on ``device``: the model itself when it already is, else a copy
    (never moved or switched to eval in place under its owner)."""
    import copy

    here = model_device(model) == torch.device(device)
    if here and not model.training:
        return model
    return copy.deepcopy(model).eval().to(device)


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager[object]:
    """Mixed precision for the forward pass: bfloat16 (no loss scaling needed), or float16 on a
    GPU without bfloat16."""
    if not enabled:
        return nullcontext()
    fp16 = device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.autocast(device.type, dtype=torch.float16 if fp16 else torch.bfloat16)


def free_cuda_memory() -> None:
    """Return cached blocks to the driver after a candidate ran out of GPU memory."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = [
    "autocast",
    "free_cuda_memory",
    "model_device",
    "on_device",
    "probe_input",
    "resolve_device",
]
