"""Property-based tests (hypothesis) for the parsers and the budget maths: budget strings, policy
files, config files and overrides, ``kept_channels`` and ``fit_to_budget``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from autoprune.budget import LatencyBudget, fit_to_budget, smallest_feasible
from autoprune.config import Config, from_dict, load_config, to_dict
from autoprune.errors import ConfigError, PolicyError
from autoprune.hardware.predictor import LatencyPredictor
from autoprune.policy import PruningPolicy, kept_channels

LAYERS = {"a": 16, "b": 32, "c": 64, "d": 10}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class LinearPredictor(LatencyPredictor):
    """Latency = offset + Σ weight × kept channels: monotone, like a real table."""

    def __init__(self, weights: Mapping[str, float], offset: float = 0.2) -> None:
        self.weights, self.offset = dict(weights), offset

    def kept(self, policy: PruningPolicy) -> dict[str, int]:
        return {n: kept_channels(c, policy.ratio(n), policy.round_to) for n, c in LAYERS.items()}

    def predict_kept(self, kept: Mapping[str, int]) -> float:
        return self.offset + sum(self.weights[n] * k for n, k in kept.items())


# -- budget strings -------------------------------------------------------------------------
@SETTINGS
@given(st.floats(min_value=1e-3, max_value=1e4, allow_nan=False))
def test_absolute_budget_round_trips(ms: float) -> None:
    assert LatencyBudget.parse(f"{ms!r}ms").ms == pytest.approx(ms)
    assert LatencyBudget.parse(f" {ms!r} MS ").resolve(dense_ms=123.0) == pytest.approx(ms)


@SETTINGS
@given(st.floats(min_value=1e-3, max_value=1.0, allow_nan=False))
def test_fractional_budget_round_trips(fraction: float) -> None:
    dense = 7.5
    assert LatencyBudget.parse(repr(fraction)).resolve(dense) == pytest.approx(fraction * dense)
    pct = LatencyBudget.parse(f"{fraction * 100!r}%").fraction
    assert pct == pytest.approx(fraction)


@SETTINGS
@given(st.text(max_size=12))
def test_any_budget_text_parses_or_is_a_config_error(text: str) -> None:
    try:
        budget = LatencyBudget.parse(text)
    except ConfigError:
        return
    assert (budget.ms or 0) > 0 or 0 < (budget.fraction or 0) <= 1


# -- policies ---------------------------------------------------------------------------------
ratios_st = st.dictionaries(
    st.sampled_from(sorted(LAYERS)), st.floats(min_value=0.0, max_value=0.999, allow_nan=False)
)


@SETTINGS
@given(ratios_st, st.sampled_from([1, 2, 4, 8]))
def test_policy_file_round_trips(ratios: dict[str, float], round_to: int) -> None:
    import tempfile

    policy = PruningPolicy("m", ratios, round_to=round_to, metadata={"note": "x"})
    with tempfile.TemporaryDirectory() as tmp:
        loaded = PruningPolicy.load(policy.save(Path(tmp) / "p.json"))
    assert loaded.to_dict() == policy.to_dict()


@SETTINGS
@given(st.one_of(st.floats(allow_nan=True), st.text(max_size=3), st.none()))
def test_policy_ratio_outside_range_is_refused(value: object) -> None:
    ok = isinstance(value, float) and not math.isnan(value) and 0 <= value < 1
    assume(not ok)
    with pytest.raises(PolicyError):
        PruningPolicy.from_dict(
            {"format": "autoprune.policy/1", "model": "m", "ratios": {"a": value}}
        )


@SETTINGS
@given(
    st.integers(min_value=1, max_value=512),
    st.floats(min_value=0, max_value=0.999),
    st.floats(min_value=0, max_value=0.999),
    st.sampled_from([1, 2, 4, 8, 16]),
)
def test_kept_channels_is_monotone_and_in_range(
    n: int, r1: float, r2: float, round_to: int
) -> None:
    lo, hi = sorted((r1, r2))
    k_lo, k_hi = kept_channels(n, lo, round_to), kept_channels(n, hi, round_to)
    assert 1 <= k_hi <= k_lo <= n


# -- fit_to_budget ----------------------------------------------------------------------------
@SETTINGS
@given(
    ratios_st,
    st.floats(min_value=0.0, max_value=1.0),
    st.floats(min_value=0.0, max_value=1.0),
    st.lists(st.floats(min_value=0.001, max_value=0.05), min_size=4, max_size=4),
)
def test_fit_to_budget_meets_the_budget_and_is_monotone(
    ratios: dict[str, float], s1: float, s2: float, weights: list[float]
) -> None:
    max_ratio = dict.fromkeys(LAYERS, 0.8)
    pred = LinearPredictor(dict(zip(sorted(LAYERS), weights, strict=True)))
    floor = pred.predict(PruningPolicy("m", max_ratio))
    dense = pred.predict(PruningPolicy("m", {}))
    low, high = sorted((floor + s1 * (dense - floor), floor + s2 * (dense - floor)))
    raw = PruningPolicy("m", {n: min(r, 0.8) for n, r in ratios.items()})
    tight, loose = (fit_to_budget(raw, max_ratio, pred, b) for b in (low, high))
    for fitted, budget in ((tight, low), (loose, high)):
        assert pred.predict(fitted) <= budget + 1e-9
        assert all(0 <= fitted.ratio(n) <= 0.8 + 1e-9 for n in LAYERS)
    # A looser budget never prunes a layer more, and never predicts slower than a tighter one.
    assert all(loose.ratio(n) <= tight.ratio(n) + 1e-9 for n in LAYERS)
    assert pred.predict(loose) >= pred.predict(tight) - 1e-9


@SETTINGS
@given(st.floats(min_value=-5, max_value=5), st.floats(min_value=0.01, max_value=5))
def test_smallest_feasible_finds_the_threshold(threshold: float, width: float) -> None:
    lo, hi = threshold - width, threshold + width
    found = smallest_feasible(lambda x: x >= threshold, lo, hi, iterations=50)
    assert found >= threshold and found - threshold <= 2 * width / 2**49 + 1e-12


# -- configs ----------------------------------------------------------------------------------
overrides_st = st.fixed_dictionaries(
    {
        "search.trials": st.integers(min_value=1, max_value=500),
        "search.parallel": st.integers(min_value=1, max_value=8),
        "budget": st.sampled_from(["0.5", "70%", "2.5ms", "0.9"]),
        "fidelity.min_steps": st.one_of(st.none(), st.integers(min_value=1, max_value=1000)),
        "fidelity.reduction_factor": st.integers(min_value=2, max_value=5),
        "layers.min_keep": st.floats(min_value=0.05, max_value=1.0),
        "final_finetune.lr": st.floats(min_value=1e-5, max_value=1.0),
    }
)


@SETTINGS
@given(overrides_st)
def test_config_overrides_round_trip(overrides: dict[str, object]) -> None:
    cfg = Config().replace(**overrides)
    assert from_dict(to_dict(cfg)) == cfg
    assert cfg.search.trials == overrides["search.trials"]
    text = yaml.safe_dump(to_dict(cfg))
    assert from_dict(yaml.safe_load(text)) == cfg


@SETTINGS
@given(
    st.dictionaries(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=12),
        st.one_of(st.integers(), st.text(max_size=5), st.floats(allow_nan=False), st.none()),
        max_size=3,
    )
)
def test_any_config_mapping_loads_or_is_a_config_error(data: dict[str, object]) -> None:
    try:
        from_dict(data)
    except ConfigError:
        pass


@SETTINGS
@given(st.text(max_size=60))
@example("?")  # a mapping whose only key is None (hypothesis found it)
@example("1: 2")
def test_any_yaml_text_loads_or_is_a_config_error(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError:
        pass
