"""Apply a :class:`PruningPolicy`: remove channels with torch-pruning, or mask weights by
magnitude."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune as nn_prune

from autoprune._device import probe_input
from autoprune.errors import PolicyError
from autoprune.policy import Mode, PruningPolicy, kept_channels
from autoprune.prunable import ROOT_TYPES, PrunableLayer, build_graph, root_group


@dataclass(frozen=True)
class SparsityReport:
    """Zeroed share of the weights of conv/linear layers after unstructured pruning."""

    zeros: int
    total: int

    @property
    def sparsity(self) -> float:
        return self.zeros / max(self.total, 1)


def _importance() -> tp.importance.Importance:
    # Torch-Pruning's group L2 magnitude, normalized by the group mean so that scores of different
    # layers are comparable (what its global pruning ranks on).
    return tp.importance.GroupMagnitudeImportance(p=2, normalizer="mean")


def channel_scores(
    model: nn.Module, layers: list[PrunableLayer], input_shape: tuple[int, ...]
) -> dict[str, list[float]]:
    """Per-channel importance of each prunable layer of the dense model: the ranking
    :func:`prune_structured` removes channels by, comparable across layers."""
    model = copy.deepcopy(model).eval()
    dg = build_graph(model, input_shape)
    imp = _importance()
    return {
        la.name: imp(
            root_group(dg, model.get_submodule(la.name), list(range(la.channels)))
        ).tolist()
        for la in layers
    }


def prune_structured(
    model: nn.Module,
    policy: PruningPolicy,
    layers: list[PrunableLayer],
    input_shape: tuple[int, ...],
    *,
    inplace: bool = False,
    kept: dict[str, list[int]] | None = None,
) -> nn.Module:
    """Physically remove the lowest-L2-magnitude channels of each layer, as the policy says.

    Coupled channels (residual adds, depthwise groups) are removed together through the
    dependency group. The pruned model is checked with a forward pass before it is returned.
    ``kept``, if given, receives the output channels each conv/linear layer kept (layers that
    lost none are absent), what :func:`autoprune.reconstruct.reconstruct` needs.
    """
    policy.check_layers([layer.name for layer in layers])
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    with torch.no_grad():
        out_shape = model(probe_input(model, input_shape)).shape
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    dg = build_graph(model, input_shape)
    names = {m: n for n, m in model.named_modules()}
    importance = _importance()
    for layer in layers:
        keep = kept_channels(layer.channels, policy.ratio(layer.name), policy.round_to)
        if keep >= layer.channels:
            continue
        module = model.get_submodule(layer.name)
        scores = importance(root_group(dg, module, list(range(layer.channels))))
        drop = torch.argsort(scores)[: layer.channels - keep].tolist()
        group = root_group(dg, module, drop)
        if kept is not None:
            _record_kept(group, dg, names, kept)
        group.prune(record_history=False)
    for n, p in model.named_parameters():  # pruning re-creates parameters; keep frozen ones frozen
        if n in frozen:
            p.requires_grad_(False)
    check_forward(model, input_shape, out_shape)
    return model


def _record_kept(
    group: tp.Group,
    dg: tp.DependencyGraph,
    names: dict[nn.Module, str],
    kept: dict[str, list[int]],
) -> None:
    """Note the output channels each conv/linear layer of ``group`` keeps (a layer's outputs
    belong to one group only, so its indices still count from the dense layer)."""
    for dep, idxs in group:
        mod = dep.target.module
        if isinstance(mod, ROOT_TYPES) and dg.is_out_channel_pruning_fn(dep.handler):
            width = mod.out_channels if isinstance(mod, nn.Conv2d) else mod.out_features
            drop = set(idxs)
            kept[names[mod]] = [i for i in range(width) if i not in drop]


def check_forward(model: nn.Module, input_shape: tuple[int, ...], out_shape: torch.Size) -> None:
    """Run a forward pass; raise :class:`PolicyError` if it fails or the output shape changed."""
    try:
        with torch.no_grad():
            out = model(probe_input(model, input_shape))
    except RuntimeError as e:
        raise PolicyError(f"pruned model does not run: {str(e).splitlines()[0]}") from e
    if out.shape != out_shape:
        raise PolicyError(f"pruned model output shape {tuple(out.shape)} != {tuple(out_shape)}")


def prune_unstructured(
    model: nn.Module,
    sparsity: dict[str, float],
    *,
    global_: bool = False,
    permanent: bool = True,
) -> nn.Module:
    """Zero the smallest-magnitude weights of the named conv/linear layers (in place).

    With ``global_`` the per-layer amounts are replaced by one global threshold at the mean amount.
    With ``permanent=False`` the masks stay attached (``torch.nn.utils.prune``), so fine-tuning
    cannot regrow pruned weights; call :func:`make_permanent` afterwards.
    """
    modules = dict(model.named_modules())
    targets = []
    for name, amount in sparsity.items():
        mod = modules.get(name)
        if not isinstance(mod, ROOT_TYPES):
            raise PolicyError(
                f"unstructured pruning needs a conv/linear layer, {name!r} is not one"
            )
        targets.append((name, mod, amount))
    if global_ and targets:
        amount = sum(a for *_, a in targets) / len(targets)
        nn_prune.global_unstructured(
            [(m, "weight") for _, m, _ in targets],
            pruning_method=nn_prune.L1Unstructured,
            amount=amount,
        )
    else:
        for _, mod, amount in targets:
            nn_prune.l1_unstructured(mod, "weight", amount=amount)
    if permanent:
        make_permanent(model)
    return model


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold attached magnitude masks into the weights (a no-op for layers without masks)."""
    for mod in model.modules():
        if hasattr(mod, "weight_mask"):
            nn_prune.remove(mod, "weight")
    return model


def sparsity_report(model: nn.Module) -> SparsityReport:
    zeros = total = 0
    for m in model.modules():
        if isinstance(m, ROOT_TYPES):
            zeros += int((m.weight == 0).sum())
            total += m.weight.numel()
    return SparsityReport(zeros, total)


def apply_policy(
    model: nn.Module,
    policy: PruningPolicy,
    layers: list[PrunableLayer],
    input_shape: tuple[int, ...],
    *,
    permanent: bool = True,
    kept: dict[str, list[int]] | None = None,
) -> nn.Module:
    """Return a pruned copy of ``model``: channels first (structured/hybrid; ``kept`` as in
    :func:`prune_structured`), then masks (kept attached with ``permanent=False``, for
    fine-tuning; see :func:`prune_unstructured`)."""
    pruned = copy.deepcopy(model)
    if policy.mode in ("structured", "hybrid"):
        pruned = prune_structured(pruned, policy, layers, input_shape, inplace=True, kept=kept)
    return apply_sparsity(pruned, policy, permanent=permanent)


def apply_sparsity(
    model: nn.Module, policy: PruningPolicy, *, permanent: bool = True
) -> nn.Module:
    """Zero the policy's share of weights by magnitude, per layer or with one global threshold
    (``metadata["sparsity_scope"] == "global"``), in place."""
    if policy.sparsity:
        scope = policy.metadata.get("sparsity_scope", "layer")
        prune_unstructured(
            model, dict(policy.sparsity), global_=scope == "global", permanent=permanent
        )
    return model


def with_sparsity(
    policy: PruningPolicy, model: nn.Module, sparsity: float, scope: str = "layer"
) -> PruningPolicy:
    """``policy`` plus ``sparsity`` on every trainable conv/linear layer of ``model`` (frozen ones,
    like the CIFAR ResNets' channel-selection shortcuts, are left alone)."""
    names = [
        n for n, m in model.named_modules() if isinstance(m, ROOT_TYPES) and m.weight.requires_grad
    ]
    mode: Mode = "unstructured" if not any(policy.ratios.values()) else "hybrid"
    return PruningPolicy(
        policy.model,
        {} if mode == "unstructured" else dict(policy.ratios),
        mode,
        policy.round_to,
        {n: sparsity for n in names},
        {**policy.metadata, "sparsity_scope": scope},
    )


def count_macs_params(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """MACs at batch 1 and parameter count."""
    macs, params = tp.utils.count_ops_and_params(model, probe_input(model, input_shape))
    return int(macs), int(params)


__all__ = [
    "SparsityReport",
    "apply_policy",
    "apply_sparsity",
    "channel_scores",
    "check_forward",
    "count_macs_params",
    "make_permanent",
    "prune_structured",
    "prune_unstructured",
    "sparsity_report",
    "with_sparsity",
]
