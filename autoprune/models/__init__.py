"""Model registry: CIFAR ResNets, torchvision classifiers by name, and user ``module:factory``."""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from autoprune.errors import CheckpointError, ConfigError
from autoprune.models.cifar_resnet import CifarResNet, to_prunable_shortcuts
from autoprune.models.cifar_vgg import CifarVGG

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SHARED_PRETRAINED = (
    Path(__file__).resolve().parents[2].parent / "shared/data/pretrained/akamaster_resnet_cifar10"
)

_CIFAR_CKPT = {
    "resnet20": "resnet20-12fca82f.th",
    "resnet32": "resnet32-d509ac18.th",
    "resnet44": "resnet44-014dd654.th",
    "resnet56": "resnet56-4bfd9763.th",
}


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of autoprune needs to know about a model besides its modules."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int


def _cifar_factory(depth: int) -> Callable[..., nn.Module]:
    def make(num_classes: int = 10, **_: object) -> nn.Module:
        return CifarResNet(depth, num_classes)

    return make


def _vgg_factory(depth: int, width: float) -> Callable[..., nn.Module]:
    def make(num_classes: int = 10, **_: object) -> nn.Module:
        return CifarVGG(depth, num_classes, width)

    return make


_REGISTRY: dict[str, tuple[Callable[..., nn.Module], tuple[int, int, int]]] = {
    **{f"resnet{d}": (_cifar_factory(d), (3, 32, 32)) for d in (8, 14, 20, 32, 44, 56)},
    "cifar_vgg11": (_vgg_factory(11, 1.0), (3, 32, 32)),
    "cifar_vgg16": (_vgg_factory(16, 1.0), (3, 32, 32)),
    "cifar_vgg11_s": (_vgg_factory(11, 0.125), (3, 32, 32)),  # 1/8 width, for quick trials
}


def list_models() -> list[str]:
    """Names accepted by :func:`build_model` (plus any torchvision classifier and ``module:factory``)."""
    return sorted(_REGISTRY)


def _torchvision_names() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def _resolve(name: str) -> tuple[Callable[..., nn.Module], tuple[int, int, int]]:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"cannot import model factory {name!r}: {e}") from e
        return factory, (3, 32, 32)
    if name.startswith("tv:") or name in _torchvision_names():
        import torchvision

        tv = name.removeprefix("tv:")

        def make(num_classes: int = 1000, **_: object) -> nn.Module:
            return torchvision.models.get_model(tv, weights=None, num_classes=num_classes)

        return make, (3, 224, 224)
    known = [*list_models(), "<torchvision name>", "package.module:factory"]
    close = difflib.get_close_matches(name, list(_REGISTRY) + _torchvision_names(), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(f"unknown model {name!r}{hint}; known: {', '.join(known)}")


def model_spec(name: str, num_classes: int = 10, input_size: int | None = None) -> ModelSpec:
    _, shape = _resolve(name)
    if input_size is not None:
        shape = (shape[0], input_size, input_size)
    return ModelSpec(name, shape, num_classes)


def default_checkpoint(name: str) -> Path | None:
    """The bundled or shared pretrained checkpoint for a CIFAR ResNet, if one exists here."""
    file = _CIFAR_CKPT.get(name)
    if file is None:
        return None
    for folder in (ASSETS, SHARED_PRETRAINED):
        if (folder / file).is_file():
            return folder / file
    return None


def _load_error(e: Exception) -> str:
    text = str(e).strip()
    if "Weights only load failed" in text:  # torch's message is many lines; the point is:
        match = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        what = f"references {match.group(1)}" if match else "holds pickled objects"
        return f"the file {what}, not only tensors (refused by weights_only=True; nothing in it was run)"
    return text.splitlines()[0] if text else type(e).__name__


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict safely (``weights_only=True``), unwrapping ``{'state_dict': ...}`` and ``module.``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise CheckpointError(f"cannot load checkpoint {path} safely: {_load_error(e)}") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def build_model(
    name: str,
    num_classes: int = 10,
    checkpoint: str | Path | None = None,
    pretrained: bool = True,
) -> nn.Module:
    """Build a model by name and load weights (``checkpoint``, else the bundled one if ``pretrained``).

    Raises:
        ConfigError: unknown name.
        CheckpointError: the checkpoint is unsafe, corrupt or does not fit the model.
    """
    factory, _ = _resolve(name)
    model = factory(num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model factory {name!r} returned {type(model).__name__}, not nn.Module")
    ckpt = (
        checkpoint
        if checkpoint is not None
        else (default_checkpoint(name) if pretrained else None)
    )
    if ckpt is not None:
        state = load_state_dict(ckpt)
        if isinstance(model, CifarResNet) and any(".shortcut." in k for k in state):
            to_prunable_shortcuts(model)  # saved in the prunable form (e.g. by autoprune export)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            raise CheckpointError(
                f"checkpoint {ckpt} does not fit model {name!r}: {lines[-1] if lines else e}"
            ) from e
    if isinstance(model, CifarResNet):
        to_prunable_shortcuts(model)  # akamaster format: convert after loading
    return model.eval()


__all__ = [
    "ModelSpec",
    "build_model",
    "default_checkpoint",
    "list_models",
    "load_state_dict",
    "model_spec",
]
