"""Layer-wise least-squares reconstruction of a pruned model (He et al. 2017; ThiNet): a cheap
way to give a pruned model back most of what removing channels took, with no gradient step.

Walking the pruned model in execution order, each conv/linear layer gets the weights that best
map *its own* inputs (the pruned model's, already reconstructed upstream) to the dense model's
outputs at the channels it kept, by ridge regression on a few hundred images. Errors do not
accumulate: every layer is fitted to the dense model, not to its pruned predecessor. Outputs are
matched before batch norm, so the kept batch-norm statistics stay valid. One dense and one pruned
forward pass plus one small linear solve per layer: seconds on a CPU for a CIFAR ResNet-56.

The search uses it to screen many candidates before fine-tuning any (``fidelity.screen``); the
fine-tune rungs start from the plain pruned model, as the final fine-tune does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Kept = Mapping[str, Sequence[int]]  # dense layer name → output channels the pruned model kept


def _fittable(module: nn.Module | None) -> bool:
    """Dense conv (not grouped) or linear layers with trainable, unmasked weights (the frozen
    channel selections of the CIFAR ResNets' shortcuts and magnitude-masked layers are left as
    they are)."""
    if hasattr(module, "weight_mask"):
        return False
    if isinstance(module, nn.Conv2d):
        return module.groups == 1 and module.weight.requires_grad
    return isinstance(module, nn.Linear) and module.weight.requires_grad


def _rows(x: torch.Tensor, module: nn.Module, where: torch.Tensor | None) -> torch.Tensor:
    """A layer's input as regression rows: im2col patches at the sampled output positions
    ``where`` (images × positions) for a conv, the features themselves for a linear layer."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    assert isinstance(module, nn.Conv2d) and where is not None
    padding = module.padding
    assert not isinstance(padding, str)  # "same"/"valid" convs are resolved by torch already
    cols = F.unfold(x, module.kernel_size, module.dilation, padding, module.stride)
    picked = cols.gather(2, where[:, None, :].expand(-1, cols.shape[1], -1))
    return picked.transpose(1, 2).reshape(-1, cols.shape[1])


def _targets(y: torch.Tensor, where: torch.Tensor | None) -> torch.Tensor:
    if where is None:
        return y.reshape(-1, y.shape[-1])
    flat = y.flatten(2)
    return flat.gather(2, where[:, None, :].expand(-1, flat.shape[1], -1)).transpose(1, 2)


def _solve(
    x: torch.Tensor, y: torch.Tensor, w0: torch.Tensor, b0: torch.Tensor | None, ridge: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Ridge regression of ``y`` on ``x``, shrunk towards the current weights ``w0`` (and bias):
    ``argmin ‖x·wᵀ + b − y‖² + λ‖w − w0‖²``, with λ relative to the mean input energy."""
    x, y = x.double(), y.reshape(x.shape[0], -1).double()
    w0 = w0.reshape(w0.shape[0], -1).double()
    if b0 is not None:
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        w0 = torch.cat([w0, b0.double()[:, None]], 1)
    gram = x.T @ x / len(x)
    lam = ridge * float(gram.diagonal().mean()) + 1e-12
    rhs = x.T @ y / len(x) + lam * w0.T
    w = torch.linalg.solve(gram + lam * torch.eye(len(gram), dtype=gram.dtype), rhs).T
    if b0 is None:
        return w, None
    return w[:, :-1], w[:, -1]


Targets = dict[str, torch.Tensor]
Where = dict[str, torch.Tensor | None]


def _dense_targets(
    dense: nn.Module, names: list[str], images: torch.Tensor, kept: Kept, positions: int, seed: int
) -> tuple[Targets, Where]:
    """One dense forward pass: each named layer's outputs at its kept channels, at
    ``positions`` sampled output positions per image (convs), and where those positions are."""
    gen = torch.Generator().manual_seed(seed)
    where: Where = {}
    targets: Targets = {}

    def grab(name: str):
        def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            pos = None
            if out.dim() == 4:
                area = out.shape[2] * out.shape[3]
                pos = torch.randint(area, (out.shape[0], min(positions, area)), generator=gen)
            where[name] = pos
            idx = torch.as_tensor(list(kept[name])) if name in kept else None
            y = out if idx is None else out.index_select(1, idx)
            targets[name] = _targets(y, pos)

        return hook

    handles = [dense.get_submodule(n).register_forward_hook(grab(n)) for n in names]
    try:
        dense(images)
    finally:
        for h in handles:
            h.remove()
    return targets, where


def _refit_in_order(
    pruned: nn.Module, names: list[str], images: torch.Tensor, targets: Targets, where: Where,
    ridge: float,
) -> None:  # fmt: skip
    """One pruned forward pass in which each named layer, just before it runs, is refitted on
    the inputs it actually receives (upstream layers already refitted)."""
    modules = dict(pruned.named_modules())

    def refit(name: str):
        def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
            assert isinstance(mod, (nn.Conv2d, nn.Linear))
            weight, bias = mod.weight, mod.bias
            w, b = _solve(_rows(inp[0], mod, where[name]), targets[name], weight, bias, ridge)
            weight.copy_(w.reshape(weight.shape).to(weight.dtype))
            if b is not None and bias is not None:
                bias.copy_(b.to(bias.dtype))

        return hook

    handles = [modules[n].register_forward_pre_hook(refit(n)) for n in names]
    try:
        pruned(images)
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def reconstruct(
    pruned: nn.Module,
    dense: nn.Module,
    images: torch.Tensor,
    kept: Kept,
    *,
    positions: int = 32,
    ridge: float = 0.05,
    seed: int = 0,
) -> int:
    """Refit every trainable conv/linear layer of ``pruned`` (in place) to reproduce ``dense``'s
    outputs at the kept channels; return how many layers were refitted.

    Args:
        pruned: the pruned model, its layers named as in ``dense``.
        dense: the dense model (not modified).
        images: calibration inputs (a few hundred train images, normalized, on the CPU).
        kept: per dense layer, the output channels ``pruned`` kept (absent: all).
        positions: output positions sampled per image and conv layer (rows of the regression).
        ridge: shrinkage towards the current weights, relative to the mean input energy.
        seed: the position sample.
    """
    dense.eval()
    pruned.eval()
    modules = dict(pruned.named_modules())
    names = [n for n, m in dense.named_modules() if _fittable(m) and _fittable(modules.get(n))]
    targets, where = _dense_targets(dense, names, images, kept, positions, seed)
    _refit_in_order(pruned, names, images, targets, where, ridge)
    return len(names)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> None:
    """Re-estimate every batch norm's running statistics on ``images`` (EagleEye's adaptive
    batch norm), weights untouched; the model is left in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    model.train()
    try:
        for chunk in images.split(batch_size):
            model(chunk)
    finally:
        for m, (momentum, _) in zip(bns, saved, strict=True):
            m.momentum = momentum
        model.eval()


__all__ = ["Kept", "recalibrate_bn", "reconstruct"]
