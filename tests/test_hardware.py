from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoprune.budget import LatencyBudget, check_feasible, fit_to_budget
from autoprune.errors import ConfigError, InfeasibleBudgetError, ProfileError
from autoprune.hardware import DeviceSpec, HardwareProfile, LUTPredictor, measure_latency
from autoprune.policy import PruningPolicy, random_policy


def test_profile_round_trip_and_provenance(tiny, tmp_path: Path) -> None:
    path = tiny.profile.save(tmp_path / "p.json")
    loaded = HardwareProfile.load(path)
    assert loaded.to_dict() == tiny.profile.to_dict()
    assert loaded.device == "cpu" and loaded.threads == 1 and loaded.batch == 1
    assert {"torch", "python", "torch_pruning"} <= set(loaded.versions)
    assert loaded.dense_ms > loaded.min_ms > 0


def test_profile_for_another_setting_is_refused(tiny) -> None:
    prof = tiny.profile
    for spec, what in [
        (DeviceSpec("cpu", 2, 1), "threads 1"),
        (DeviceSpec("cpu", 1, 8), "batch 1"),
    ]:
        with pytest.raises(ProfileError, match=what):
            prof.check_matches(model="resnet8", spec=spec, input_shape=(3, 32, 32))
        prof.check_matches(model="resnet8", spec=spec, input_shape=(3, 32, 32), force=True)
    import dataclasses

    elsewhere = dataclasses.replace(prof, device_name="Some Other CPU")
    with pytest.raises(ProfileError, match="device_name Some Other CPU"):
        elsewhere.check_matches(model="resnet8", spec=DeviceSpec(), input_shape=(3, 32, 32))
    with pytest.raises(ProfileError, match="model resnet8"):
        prof.check_matches(model="resnet20", spec=DeviceSpec(), input_shape=(3, 32, 32))


def test_malformed_profiles(tmp_path: Path, tiny) -> None:
    (tmp_path / "a.json").write_text("[1, 2")
    with pytest.raises(ProfileError, match="not valid JSON"):
        HardwareProfile.load(tmp_path / "a.json")
    d = tiny.profile.to_dict()
    del d["tables"]
    (tmp_path / "b.json").write_text(json.dumps(d))
    with pytest.raises(ProfileError, match="malformed"):
        HardwareProfile.load(tmp_path / "b.json")
    with pytest.raises(ProfileError, match="not found"):
        HardwareProfile.load(tmp_path / "missing.json")


def test_predictor_orders_dense_above_maximal_pruning(tiny) -> None:
    pred = LUTPredictor(tiny.profile)
    dense = pred.predict(PruningPolicy("resnet8", {}))
    floor = pred.predict(PruningPolicy("resnet8", tiny.max_ratio))
    assert floor < dense
    assert dense == pytest.approx(tiny.profile.dense_ms, rel=0.35)


def test_budget_parsing_feasibility_and_fit(tiny) -> None:
    assert LatencyBudget.parse("50%").resolve(4.0) == 2.0
    assert LatencyBudget.parse("1.5ms").ms == 1.5
    for bad in ("fast", "0", "1.5", "-2ms"):
        with pytest.raises(ConfigError):
            LatencyBudget.parse(bad)
    pred = LUTPredictor(tiny.profile)
    floor = pred.predict(PruningPolicy("resnet8", tiny.max_ratio))
    with pytest.raises(InfeasibleBudgetError, match=f"reaches {floor:.3f} ms"):
        check_feasible(pred, "resnet8", tiny.max_ratio, floor * 0.5)
    import numpy as np

    budget = (floor + tiny.profile.dense_ms) / 2
    rng = np.random.default_rng(0)
    for _ in range(5):
        fitted = fit_to_budget(
            random_policy("resnet8", tiny.max_ratio, rng), tiny.max_ratio, pred, budget
        )
        assert pred.predict(fitted) <= budget + 1e-9
        assert all(0 <= fitted.ratio(n) <= b for n, b in tiny.max_ratio.items())


def test_measure_latency_runs_enough(tiny) -> None:
    t = measure_latency(
        tiny.model, (3, 32, 32), DeviceSpec(), repeats=10, min_time_s=0.01, rounds=2
    )
    assert t.runs >= 10 and t.rounds == 2 and 0 < t.p10_ms <= t.median_ms <= t.p90_ms


def test_measurement_reports_interference_from_other_processes() -> None:
    """A busy process beside the measurement shows up as other CPUs busy, and as a warning."""
    import subprocess
    import sys

    import torch

    from autoprune.hardware.measure import measure_models
    from autoprune.hardware.timing import busy_warning

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        (t,) = measure_models([model], (3, 16, 16), min_time_s=1.0, rounds=2)
    finally:
        spin.kill()
        spin.wait()
    if t.other_cpus is None:  # no /proc/stat on this platform
        pytest.skip("CPU accounting needs Linux /proc/stat")
    assert t.other_cpus > 0.5
    assert "busy while latency was measured" in busy_warning(t.other_cpus)
    assert busy_warning(0.1) is None
