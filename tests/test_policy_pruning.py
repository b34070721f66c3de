from __future__ import annotations

import doctest
from pathlib import Path

import pytest
import torch

import autoprune.budget
import autoprune.policy
from autoprune.errors import PolicyError
from autoprune.models import build_model
from autoprune.policy import PruningPolicy, kept_channels, uniform
from autoprune.prunable import discover
from autoprune.pruning import apply_policy, count_macs_params, sparsity_report


@pytest.mark.parametrize("module", [autoprune.policy, autoprune.budget])
def test_doctests(module) -> None:
    assert doctest.testmod(module).failed == 0


def test_policy_json_round_trip_is_atomic(tmp_path: Path) -> None:
    p = PruningPolicy("resnet20", {"layer1.0.conv1": 0.25}, round_to=2, metadata={"trial": 3})
    path = p.save(tmp_path / "p.json")
    assert PruningPolicy.load(path) == p
    assert [f.name for f in tmp_path.iterdir()] == ["p.json"]  # no temporary left behind


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, float("nan"), "0.5", True])
def test_ratio_outside_unit_interval_is_refused(ratio) -> None:
    with pytest.raises(PolicyError, match="layer 'a'"):
        PruningPolicy("m", {"a": ratio})


def test_policy_checks(tmp_path: Path) -> None:
    p = PruningPolicy("m", {"a": 0.5})
    with pytest.raises(PolicyError, match="does not have as prunable: zz"):
        PruningPolicy("m", {"zz": 0.1}).check_layers(["a"])
    with pytest.raises(PolicyError, match="above its bound 0.4"):
        p.check_layers(["a"], {"a": 0.4})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PolicyError, match="not valid JSON"):
        PruningPolicy.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(PolicyError, match="not an autoprune policy"):
        PruningPolicy.load(tmp_path / "other.json")
    assert kept_channels(64, 0.8, round_to=8) == 16 and kept_channels(10, 0.99) == 1


def test_structured_pruning_removes_channels_and_keeps_residuals_consistent() -> None:
    model = build_model("resnet20")
    layers = discover(model, (3, 32, 32))
    names = [la.name for la in layers]
    assert len(layers) == 12 and "layer2.0.shortcut" in names and "conv1" in names
    pruned = apply_policy(model, uniform("resnet20", names, 0.5), layers, (3, 32, 32))
    assert pruned.conv1.out_channels == 8 and pruned.layer3[2].conv2.out_channels == 32
    assert pruned.layer3[0].conv1.out_channels == 32
    macs, params = count_macs_params(pruned, (3, 32, 32))
    macs0, params0 = count_macs_params(model, (3, 32, 32))
    assert macs < 0.35 * macs0 and params < 0.35 * params0
    assert pruned(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert not pruned.layer2[0].shortcut.weight.requires_grad  # the selection stays frozen
    assert model.conv1.out_channels == 16  # the dense model is untouched


def test_unstructured_and_hybrid_sparsity() -> None:
    model = build_model("resnet8", pretrained=False)
    layers = discover(model, (3, 32, 32))
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    sparse = apply_policy(
        model,
        PruningPolicy("resnet8", {}, "unstructured", sparsity=dict.fromkeys(convs[:3], 0.5)),
        layers,
        (3, 32, 32),
    )
    rep = sparsity_report(sparse)
    assert rep.zeros > 0 and 0 < rep.sparsity < 0.5
    hybrid = apply_policy(
        model,
        PruningPolicy("resnet8", {layers[1].name: 0.5}, "hybrid", sparsity={convs[-1]: 0.3}),
        layers,
        (3, 32, 32),
    )
    assert count_macs_params(hybrid, (3, 32, 32))[0] < count_macs_params(model, (3, 32, 32))[0]
    assert sparsity_report(hybrid).zeros > 0


def test_mobilenet_v2_depthwise_groups_stay_consistent() -> None:
    model = build_model("mobilenet_v2", num_classes=10, pretrained=False)
    layers = discover(model, (3, 32, 32))
    pruned = apply_policy(
        model, uniform("mobilenet_v2", [la.name for la in layers], 0.3), layers, (3, 32, 32)
    )
    for m in pruned.modules():
        if isinstance(m, torch.nn.Conv2d) and m.groups > 1:
            assert m.groups == m.in_channels == m.out_channels
    assert pruned(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
