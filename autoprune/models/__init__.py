"""Model registry: CIFAR ResNets, torchvision classifiers by name, and user ``module:factory``."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from autoprune.errors import CheckpointError, ConfigError
from autoprune.models._entry import ModelEntry
from autoprune.models.cifar_resnet import CifarResNet, to_prunable_shortcuts
from autoprune.registry import Registry, import_factory

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SHARED_PRETRAINED = (
    Path(__file__).resolve().parents[2].parent / "shared/data/pretrained/akamaster_resnet_cifar10"
)


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of autoprune needs to know about a model besides its modules."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int


MODELS: Registry[ModelEntry] = Registry(
    "model",
    {
        **{
            f"resnet{d}": f"autoprune.models.cifar_resnet:resnet{d}"
            for d in (8, 14, 20, 32, 44, 56)
        },
        "cifar_vgg11": "autoprune.models.cifar_vgg:vgg11",
        "cifar_vgg16": "autoprune.models.cifar_vgg:vgg16",
        "cifar_vgg11_s": "autoprune.models.cifar_vgg:vgg11_s",
    },
)


def list_models() -> list[str]:
    """Names accepted by :func:`build_model` (plus any torchvision classifier and
    ``module:factory``)."""
    return sorted(MODELS.names())


def _torchvision_names() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def _torchvision(name: str, num_classes: int = 1000) -> nn.Module:
    import torchvision

    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def _resolve(name: str) -> ModelEntry:
    """A registered name, a user ``package.module:factory``, or any torchvision classifier."""
    if name in MODELS:
        return MODELS.get(name)
    if ":" in name:
        return ModelEntry(import_factory(name, "model factory"))
    if name.startswith("tv:") or name in _torchvision_names():
        return ModelEntry(_torchvision, (3, 224, 224), None, (("name", name.removeprefix("tv:")),))
    known = [*list_models(), "<torchvision name>", "package.module:factory"]
    close = difflib.get_close_matches(name, [*MODELS.names(), *_torchvision_names()], n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(f"unknown model {name!r}{hint}; known: {', '.join(known)}")


def model_spec(name: str, num_classes: int = 10, input_size: int | None = None) -> ModelSpec:
    shape = _resolve(name).input_shape
    if input_size is not None:
        shape = (shape[0], input_size, input_size)
    return ModelSpec(name, shape, num_classes)


def default_checkpoint(name: str) -> Path | None:
    """The bundled or shared pretrained checkpoint of a registered model, if one exists here."""
    file = MODELS.get(name).checkpoint if name in MODELS else None
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
        return (
            f"the file {what}, not only tensors "
            "(refused by weights_only=True; nothing in it was run)"
        )
    return text.splitlines()[0] if text else type(e).__name__


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict safely (``weights_only=True``), unwrapping ``{'state_dict': ...}`` and
    ``module.``."""
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
    """Build a model by name and load weights (``checkpoint``, else the bundled one if
    ``pretrained``).

    Raises:
        ConfigError: unknown name.
        CheckpointError: the checkpoint is unsafe, corrupt or does not fit the model.
    """
    model = _resolve(name).build(num_classes)
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
    "MODELS",
    "ModelEntry",
    "ModelSpec",
    "build_model",
    "default_checkpoint",
    "list_models",
    "load_state_dict",
    "model_spec",
]
