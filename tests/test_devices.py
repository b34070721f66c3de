"""The device plumbing: fine-tuning and scoring run on the compute device, the dense model is
never moved or changed in place, a candidate that runs out of GPU memory is a failed trial and
the search goes on. The CUDA tests run where CUDA exists and skip cleanly elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoprune.distributed import LocalPool, run_search
from autoprune.errors import ConfigError, EvaluationError
from autoprune.evaluate import Evaluator
from autoprune.policy import PruningPolicy
from autoprune.records import TrialLog
from autoprune.search.baselines import RandomSearcher

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _snapshot(model: torch.nn.Module) -> tuple:
    return (
        model.training,
        [(p.device, p.data_ptr()) for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
    )


def _unchanged(model: torch.nn.Module, snap: tuple) -> bool:
    training, where, state = snap
    now = model.state_dict()
    return (
        model.training == training
        and [(p.device, p.data_ptr()) for p in model.parameters()] == where
        and all(torch.equal(now[k], v) for k, v in state.items())
    )


def _evaluator(tiny, device: str, distill_targets: str = "cached") -> Evaluator:
    from autoprune.config import FinetuneConfig

    ft = FinetuneConfig(steps=2, batch_size=16, distill=0.5, distill_targets=distill_targets)
    return Evaluator(
        tiny.model, tiny.layers, (3, 32, 32), tiny.data.train, tiny.data.val, tiny.predictor, ft,
        device=device,
    )  # fmt: skip


@pytest.mark.parametrize("targets", ["cached", "online"])
def test_evaluation_on_the_compute_device_leaves_the_dense_model_alone(tiny, targets) -> None:
    snap = _snapshot(tiny.model)
    ev = _evaluator(tiny, "cpu", targets)
    res = ev(PruningPolicy("resnet8", dict.fromkeys(tiny.max_ratio, 0.5)), seed=1)
    assert 0 <= res.accuracy <= 100 and res.steps == 2
    assert _unchanged(tiny.model, snap)


def test_final_recipe_returns_a_cpu_model_and_leaves_the_dense_model_alone(tiny) -> None:
    from autoprune.config import FinetuneConfig
    from autoprune.schedule import prune_and_finetune

    snap = _snapshot(tiny.model)
    policy = PruningPolicy("resnet8", dict.fromkeys(tiny.max_ratio, 0.5))
    for rounds in (1, 2):
        cfg = FinetuneConfig(steps=2, batch_size=16, distill=0.5, iterative_steps=rounds)
        model = prune_and_finetune(
            tiny.model, policy, tiny.layers, (3, 32, 32), tiny.data.train, cfg,
            teacher=tiny.model, device="cpu",
        )  # fmt: skip
        assert next(model.parameters()).device.type == "cpu"
    assert _unchanged(tiny.model, snap)


class _OutOfMemory(Evaluator):
    """Runs out of GPU memory on its second candidate (the error type CUDA raises)."""

    calls = 0

    def _evaluate(self, policy, seed, steps):
        type(self).calls += 1
        if type(self).calls == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super()._evaluate(policy, seed, steps)


def test_a_candidate_out_of_gpu_memory_fails_and_the_search_goes_on(tiny, tmp_path: Path) -> None:
    ev = _OutOfMemory(
        tiny.model, tiny.layers, (3, 32, 32), tiny.data.train, tiny.data.val, tiny.predictor,
        _evaluator(tiny, "cpu").finetune_cfg,
    )  # fmt: skip
    _OutOfMemory.calls = 1  # the next call is the second
    with pytest.raises(EvaluationError, match="out of GPU memory: CUDA out of memory"):
        ev(PruningPolicy("resnet8", {}))
    _OutOfMemory.calls = 0
    log = TrialLog(tmp_path, "random")
    summary = run_search(RandomSearcher(tiny.context(tmp_path)), LocalPool(ev), log, 3)
    assert [r["state"] for r in log.records] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert "out of GPU memory" in log.records[1]["error"] and summary.failed == 1


def test_a_missing_gpu_is_a_one_line_config_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from autoprune.config import DEFAULT_CONFIG, load_config
    from autoprune.workspace import build_workspace

    with pytest.raises(ConfigError, match="CUDA is not available"):
        build_workspace(load_config(DEFAULT_CONFIG, {"device.train": "cuda"}))
    with pytest.raises(ConfigError, match="CUDA is not available"):
        build_workspace(load_config(DEFAULT_CONFIG, {"device.device": "cuda"}))
    ws = build_workspace(load_config(DEFAULT_CONFIG, {"device.train": "auto"}))
    assert ws.compute == "cpu"


@pytest.mark.gpu
@cuda
def test_cuda_evaluation_final_recipe_and_timing(tiny) -> None:
    from autoprune.hardware.device import DeviceSpec
    from autoprune.hardware.measure import measure_models

    snap = _snapshot(tiny.model)
    for targets in ("cached", "online"):
        res = _evaluator(tiny, "cuda", targets)(PruningPolicy("resnet8", {}), seed=0)
        assert 0 <= res.accuracy <= 100
    (t,) = measure_models([tiny.model], (3, 32, 32), DeviceSpec("cuda", 1, 8), min_time_s=0.05)
    assert t.ms > 0 and _unchanged(tiny.model, snap)


@pytest.mark.gpu
@cuda
def test_cuda_mixed_precision_fine_tune(tiny) -> None:
    from autoprune.config import FinetuneConfig
    from autoprune.finetune import accuracy, finetune

    model = tiny.evaluator().prune(PruningPolicy("resnet8", {})).cuda()
    finetune(model, tiny.data.train, FinetuneConfig(steps=3, batch_size=16, amp=True))
    assert 0 <= accuracy(model, tiny.data.val) <= 100


def _lrs(cfg, total: int) -> list[float]:
    from autoprune.finetune import _optimizer

    model = torch.nn.Linear(2, 2)
    opt, sched = _optimizer(model, cfg, total, torch.device("cpu"))
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_large_batch_recipe_scales_and_warms_up_the_learning_rate() -> None:
    from autoprune.config import FinetuneConfig

    plain = _lrs(FinetuneConfig(lr=0.01, batch_size=128), 100)
    assert plain[0] == 0.01 and plain[-1] < 1e-3  # the cosine schedule as before
    big = _lrs(FinetuneConfig(lr=0.01, batch_size=512, reference_batch=128), 100)
    assert big[0] == pytest.approx(0.04 / 5) and max(big) == pytest.approx(0.04)
    assert big.index(max(big)) == 5 and big[-1] < 4e-3  # 5 % warm-up, then cosine


def test_gpu_recipe_features_run_on_the_cpu_too(tiny) -> None:
    """bfloat16 autocast, channels_last and the scaled large-batch rate train on a CPU (the
    same code a GPU runs; the CUDA test below adds data resident on the device)."""
    import pickle

    from autoprune.config import FinetuneConfig
    from autoprune.finetune import accuracy, finetune

    model = tiny.evaluator().prune(PruningPolicy("resnet8", {"layer1.0.conv1": 0.5}))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = FinetuneConfig(
        steps=3, batch_size=32, amp=True, channels_last=True, reference_batch=16, lr=0.01
    )
    res = finetune(model, tiny.data.train, cfg)
    assert res.steps == 3 and any(
        not torch.equal(before[k], v) for k, v in model.state_dict().items()
    )
    assert 0 <= accuracy(model, tiny.data.val) <= 100
    split = tiny.data.train
    assert split.on("cpu") is split
    assert torch.equal(pickle.loads(pickle.dumps(split)).x, split.x)


@pytest.mark.gpu
@cuda
def test_cuda_data_resident_channels_last_bf16_fine_tune(tiny) -> None:
    from autoprune.config import FinetuneConfig
    from autoprune.finetune import accuracy, finetune

    model = tiny.evaluator().prune(PruningPolicy("resnet8", {})).cuda()
    cfg = FinetuneConfig(steps=3, batch_size=64, amp=True, channels_last=True, reference_batch=16)
    finetune(model, tiny.data.train, cfg)
    assert tiny.data.train.on("cuda").x.is_cuda and not tiny.data.train.x.is_cuda
    assert 0 <= accuracy(model, tiny.data.val) <= 100
