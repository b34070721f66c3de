from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from autoprune.budget import LatencyBudget, check_feasible, fit_to_budget
from autoprune.errors import ConfigError, InfeasibleBudgetError, ProfileError
from autoprune.hardware import DeviceSpec, HardwareProfile, LUTPredictor, measure_latency
from autoprune.hardware.backends import backend_for
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


def test_the_device_spec_names_precision_and_memory_format() -> None:
    spec = DeviceSpec("cpu", 1, 8, "torch", "bfloat16", True)
    assert spec.tag == "cpu-t1-b8-bf16-cl" and DeviceSpec().tag == "cpu-t1-b1"
    assert spec.describe() == "cpu, 1 thread(s), batch 8, bfloat16, channels_last, torch"
    with pytest.raises(ConfigError, match="dtype must be one of"):
        DeviceSpec(dtype="int8")
    with pytest.raises(ConfigError, match="float16 is for GPUs"):
        backend_for(DeviceSpec(dtype="float16"))
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        backend_for(DeviceSpec(runtime="cuda-graphs"))
    with pytest.raises(ConfigError, match="float32 ONNX export"):
        backend_for(DeviceSpec(runtime="onnxruntime", dtype="bfloat16"))


def test_bfloat16_channels_last_profile_is_its_own_spec(tiny, tmp_path) -> None:
    """A profile timed in bfloat16 and NHWC records its spec; asking for float32 is refused."""
    from autoprune.hardware.profiler import profile_model

    spec = DeviceSpec("cpu", 1, 2, "torch", "bfloat16", True)
    prof = profile_model(
        "resnet8", tiny.model, tiny.layers, (3, 32, 32), spec, max_ratio=tiny.max_ratio,
        grid_points=2, calibration_policies=2, repeats=3, min_time_s=0.01, channel_sweep=False,
    )  # fmt: skip
    assert prof.spec == spec and prof.dtype == "bfloat16" and prof.channels_last
    assert 0 < prof.min_ms < prof.dense_ms
    assert next(tiny.model.parameters()).dtype == torch.float32  # the caller's model untouched
    prof.save(tmp_path / "p.json")
    again = HardwareProfile.load(tmp_path / "p.json")
    assert again.spec == spec
    with pytest.raises(ProfileError, match="dtype bfloat16 \\(wanted float32\\)"):
        again.check_matches(
            model="resnet8", spec=spec.replace(dtype="float32"), input_shape=(3, 32, 32)
        )


def test_reachable_range_and_its_warning(tiny) -> None:
    from autoprune.hardware.profile import reachable_lines

    prof = copy.deepcopy(tiny.profile)
    prof.dense_ms, prof.min_ms = 4.0, 1.0
    (line,) = reachable_lines(prof)
    assert "4.00× faster" in line and "smallest feasible budget is 25% of dense" in line
    prof.dense_ms, prof.min_ms = 1.10, 1.03
    prof.device, prof.batch = "cuda", 64
    lines = reachable_lines(prof)
    assert len(lines) == 2 and "at most 7% faster" in lines[1]
    assert "cuda-graphs" in lines[1] and "--dtype bfloat16" in lines[1]


def test_channel_period_from_a_real_sweep_and_from_timings(tiny) -> None:
    from autoprune.hardware.profiler import channel_period, period_gains, representative
    from autoprune.prunable import module_geometry

    geo = module_geometry(tiny.model, (3, 32, 32))
    reps = representative(tiny.layers, geo, count=1)
    assert reps and reps[0].kind == "conv"
    period, gains = channel_period(backend_for(DeviceSpec()), reps, repeats=3, min_time_s=0.005)
    assert period in (1, 2, 4, 8, 16, 32) and set(gains) == {reps[0].name}
    counts = list(range(16, 65))
    ms = [0.1 + 0.01 * c + (0.0 if c % 8 == 0 else 0.2) for c in counts]
    gains8 = period_gains(counts, ms)
    assert gains8[8] > 0.05 and abs(gains8[16]) < 0.01  # multiples of 16 are not faster than 8's
