"""Contract suites: what every registered searcher, latency backend and dataset must do. A new
plug-in gets these tests by being registered. Searchers run against a closed-form evaluator
(the contract is control flow); backends and datasets run for real."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from autoprune.config import AMCConfig, Config, DatasetConfig
from autoprune.data import DATASETS, load_dataset
from autoprune.distributed import LocalPool, run_search
from autoprune.errors import ConfigError
from autoprune.hardware.backends import BACKENDS, backend_for
from autoprune.hardware.device import DeviceSpec
from autoprune.hardware.timing import time_many
from autoprune.policy import PruningPolicy
from autoprune.prunable import ModuleGeometry
from autoprune.records import TrialLog
from autoprune.search import SEARCHERS, make_searcher
from autoprune.search.fidelity import Ledger, make_pruner
from tests.conftest import FakeEvaluator

FAST_AMC = AMCConfig(warmup_episodes=2, batch_size=8, net_arch=[16], gradient_steps=1)
SINGLE = {"uniform", "global", "lamp"}  # searchers with exactly one candidate


class TestSearcherContract:
    """In-bounds policies on the budget, reproducible per seed, a failing evaluation recorded
    and survived, and a resumed run that repeats nothing."""

    @pytest.fixture(params=SEARCHERS.names())
    def name(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    def _run(self, tiny, run_dir: Path, name: str, n: int, fail_on: int | None = None):
        run_dir.mkdir(parents=True, exist_ok=True)
        ctx = tiny.context(run_dir)
        cfg = dataclasses.replace(Config(), amc=FAST_AMC)
        searcher = make_searcher(name, ctx, cfg)
        log = TrialLog(run_dir, searcher.name)
        ledger = Ledger(f"sqlite:///{run_dir / 'study.db'}", make_pruner("none", [1], 2))
        fake = FakeEvaluator(tiny.predictor, [la.name for la in tiny.layers], fail_on)
        summary = run_search(searcher, LocalPool(fake), log, n, ledger=ledger, rungs=[2])
        return ctx, summary, log

    def test_proposes_policies_within_bounds_on_the_budget(self, tiny, tmp_path, name) -> None:
        ctx, summary, log = self._run(tiny, tmp_path, name, 4)
        assert summary.finished == (1 if name in SINGLE else 4)
        for rec in log.records:
            policy = PruningPolicy.from_dict(rec["policy"])
            assert all(0 <= policy.ratio(n) <= ctx.max_ratio[n] + 1e-9 for n in ctx.layers)
            assert rec["predicted_ms"] <= ctx.budget_ms + 1e-9

    def test_same_seed_same_proposals(self, tiny, tmp_path, name) -> None:
        runs = [self._run(tiny, tmp_path / str(i), name, 3)[2] for i in range(2)]
        a, b = (
            [json.dumps(r["policy"]["ratios"], sort_keys=True) for r in log.records]
            for log in runs
        )
        assert a == b

    def test_failing_evaluation_is_recorded_and_survived(self, tiny, tmp_path, name) -> None:
        _, summary, log = self._run(tiny, tmp_path, name, 3, fail_on=1)
        assert (
            log.records[0]["state"] == "FAIL"
            and "simulated out of memory" in log.records[0]["error"]
        )
        assert summary.failed == 1
        if name not in SINGLE:
            assert summary.finished == 3 and log.records[-1]["state"] == "COMPLETE"

    def test_resume_repeats_nothing(self, tiny, tmp_path, name) -> None:
        self._run(tiny, tmp_path, name, 2)
        log = self._run(tiny, tmp_path, name, 4)[2]
        trials = [r["trial"] for r in log.records]
        assert len(trials) == len(set(trials)) == (1 if name in SINGLE else 4)


class _Probe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


CONV = ModuleGeometry("conv", "conv", 16, 16, 3, 1, 1, 1, (8, 8))
LINEAR = ModuleGeometry("fc", "linear", 16, 10, 1, 1, 0, 1, (1, 1))


class TestLatencyBackendContract:
    """Runs whole models and single layers on the CPU without touching the caller's model,
    describes the device, and refuses a device it cannot use. A backend that cannot run on
    this machine's CPU (TensorRT needs a GPU) runs only the last test here."""

    @pytest.fixture(params=BACKENDS.names())
    def runtime(self, request: pytest.FixtureRequest) -> str:
        name = str(request.param)
        if request.function.__name__ != "test_refuses_a_device_it_cannot_use":
            try:
                backend_for(DeviceSpec("cpu", 1, 1, name))
            except ConfigError as e:
                pytest.skip(f"{name} cannot run here: {e}")
        return name

    def test_runs_a_model_without_moving_or_changing_it(self, runtime: str) -> None:
        backend = backend_for(DeviceSpec("cpu", 1, 2, runtime))
        model = _Probe().train()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        run = backend.model_runner(model, (3, 8, 8))
        with backend.session():
            (timing,) = time_many([run], backend.synchronize, repeats=3, min_time_s=0.01, rounds=1)
        assert timing.ms > 0
        assert model.training and next(model.parameters()).device.type == "cpu"
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    @pytest.mark.parametrize("geometry", [CONV, LINEAR], ids=["conv", "linear"])
    def test_runs_one_resized_layer(self, runtime: str, geometry: ModuleGeometry) -> None:
        backend = backend_for(DeviceSpec("cpu", 1, 1, runtime))
        run = backend.layer_runner(geometry, 8, 4)
        with backend.session():
            run()
            (timing,) = time_many([run], backend.synchronize, repeats=3, min_time_s=0.01, rounds=1)
        assert timing.ms > 0

    def test_describes_the_device(self, runtime: str) -> None:
        info = backend_for(DeviceSpec("cpu", 1, 1, runtime)).describe()
        assert info["runtime"] == runtime and info["device"] == "cpu" and info["device_name"]
        assert {"torch", "python"} <= set(info["versions"])

    def test_refuses_a_device_it_cannot_use(self, runtime: str) -> None:
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        with pytest.raises(ConfigError):
            backend_for(DeviceSpec("cuda", 1, 1, runtime))


class TestDatasetContract:
    """Non-empty splits of uint8 N×C×H×W images and int64 labels, the rows each split holds
    recorded, and the held-out splits disjoint from each other."""

    @pytest.fixture(params=DATASETS.names())
    def splits(self, request: pytest.FixtureRequest, tmp_path_factory):
        """A small instance of each registered dataset (a new one adds its line here)."""
        from tests.test_datasets import write_tree

        small = {
            "cifar10": lambda: DatasetConfig(val_size=64, train_limit=128),
            "imagefolder": lambda: DatasetConfig(
                name="imagefolder",
                root=str(
                    write_tree(tmp_path_factory.mktemp("tree"), {"train": 8, "val": 4, "test": 4})
                ),
                image_size=24,
            ),
        }
        assert request.param in small, f"give dataset {request.param!r} a contract config"
        return load_dataset(small[request.param]())

    def test_splits_hold_images_and_labels(self, splits) -> None:
        for name, split in {"train": splits.train, **splits.reported()}.items():
            assert len(split) > 0, name
            assert split.x.dtype == torch.uint8 and split.x.dim() == 4, name
            assert split.y.dtype == torch.int64 and len(split.y) == len(split.x), name
            x, labels = next(split.batches(4))
            assert (
                labels.dtype == torch.int64
                and x.dtype == torch.float32
                and x.shape[1:] == split.x.shape[1:]
            )

    def test_held_out_splits_are_disjoint(self, splits) -> None:
        info = splits.describe()
        held = {n: set(splits.rows[n][1].tolist()) for n in splits.reported() if n in splits.rows}
        for a in held:
            assert info[a]["images"] == len(held[a])
            for b in held:
                if a < b and splits.rows[a][0] == splits.rows[b][0]:
                    assert not held[a] & held[b], (a, b)
