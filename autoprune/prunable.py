"""Discover the prunable channel groups of a model with torch-pruning's DependencyGraph.

Each group is named by the module path of its root layer (the conv/linear whose output channels it
prunes); those names are the keys of :class:`~autoprune.policy.PruningPolicy`. A group is kept only
if pruning one of its channels yields a model that still runs and keeps its output shape: this
drops groups torch-pruning cannot keep consistent (e.g. the zero-pad shortcut of CIFAR ResNets)
and the classifier's output.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from autoprune._device import probe_input

ROOT_TYPES = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class ModuleGeometry:
    """Shape facts of one conv/linear layer in the dense model (for the latency table and AMC)."""

    name: str
    kind: str  # "conv" | "linear"
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    groups: int
    in_hw: tuple[int, int]

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and self.groups > 1 and self.groups == self.in_channels


@dataclass(frozen=True)
class PrunableLayer:
    """One prunable channel group: its root layer, channel count and the modules it resizes."""

    name: str
    channels: int
    outs: tuple[str, ...] = field(default=())  # modules whose output channels shrink
    ins: tuple[str, ...] = field(default=())  # modules whose input channels shrink


def module_geometry(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, ModuleGeometry]:
    """Record every conv/linear layer's shape with one forward pass at batch 1."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(
            lambda mod, inp, out, n=n: shapes.__setitem__(n, tuple(inp[0].shape))
        )
        for n, m in model.named_modules()
        if isinstance(m, ROOT_TYPES)
    ]
    try:
        with torch.no_grad():
            model.eval()(probe_input(model, input_shape))
    finally:
        for h in hooks:
            h.remove()
    geo = {}
    for name, m in model.named_modules():
        if name not in shapes:
            continue
        if isinstance(m, nn.Conv2d):
            geo[name] = ModuleGeometry(
                name, "conv", m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0],
                int(m.padding[0]), m.groups, (shapes[name][2], shapes[name][3]),
            )  # fmt: skip
        elif isinstance(m, nn.Linear):
            geo[name] = ModuleGeometry(
                name, "linear", m.in_features, m.out_features, 1, 1, 0, 1, (1, 1)
            )
    return geo


def build_graph(model: nn.Module, input_shape: tuple[int, ...]) -> tp.DependencyGraph:
    return tp.DependencyGraph().build_dependency(
        model, example_inputs=probe_input(model, input_shape), verbose=False
    )


def root_group(dg: tp.DependencyGraph, module: nn.Module, idxs: list[int]) -> tp.Group:
    """The dependency group that removes output channels ``idxs`` of ``module``."""
    pruner = dg.get_pruner_of_module(module)
    return dg.get_pruning_group(module, pruner.prune_out_channels, idxs)


def _still_valid(
    model: nn.Module, name: str, input_shape: tuple[int, ...], out_shape: torch.Size
) -> bool:
    trial = copy.deepcopy(model)
    dg = build_graph(trial, input_shape)
    root_group(dg, trial.get_submodule(name), [0]).prune(record_history=False)
    try:
        with torch.no_grad():
            out = trial(probe_input(trial, input_shape))
    except RuntimeError:
        return False
    return out.shape == out_shape


def discover(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
) -> list[PrunableLayer]:
    """List the model's prunable channel groups in execution order.

    Args:
        model: the dense model (not modified).
        input_shape: one input without the batch dimension, e.g. ``(3, 32, 32)``.
        include: keep only these root-layer names (all found groups if ``None``).
        exclude: drop these root-layer names.
    """
    model = model.eval()
    dg = build_graph(model, input_shape)
    names = {m: n for n, m in model.named_modules()}
    with torch.no_grad():
        out_shape = model(probe_input(model, input_shape)).shape
    order = {n: i for i, n in enumerate(module_geometry(model, input_shape))}
    found = []
    for group in dg.get_all_groups(root_module_types=ROOT_TYPES):
        root = names[group[0].dep.target.module]
        if (include is not None and root not in include) or (exclude and root in exclude):
            continue
        outs: list[str] = []
        ins: list[str] = []
        for dep, _ in group:
            mod = dep.target.module
            if not isinstance(mod, ROOT_TYPES):
                continue
            (outs if dg.is_out_channel_pruning_fn(dep.handler) else ins).append(names[mod])
        if len(group[0].idxs) < 2 or not _still_valid(model, root, input_shape, out_shape):
            continue
        found.append((root, len(group[0].idxs), tuple(outs), tuple(ins)))
    found.sort(key=lambda f: order.get(f[0], 0))
    return [PrunableLayer(n, c, o, s) for n, c, o, s in found]


__all__ = [
    "ModuleGeometry",
    "PrunableLayer",
    "build_graph",
    "discover",
    "module_geometry",
    "root_group",
]
