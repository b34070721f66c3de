"""The cheap first rung and the spaces a search can win in: least-squares reconstruction of a
pruned model, the screening rung and its pruner, grouped search spaces, CMA-ES and global LAMP."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import torch_pruning as tp

from autoprune.config import Config, load_config
from autoprune.data import load_cifar10
from autoprune.data.splits import normalize
from autoprune.distributed import LocalPool, run_search
from autoprune.errors import ConfigError
from autoprune.evaluate import Evaluator
from autoprune.finetune import FinetuneConfig, accuracy
from autoprune.models import build_model
from autoprune.pipeline import fidelity_plan
from autoprune.policy import PruningPolicy
from autoprune.prunable import build_graph, discover, root_group
from autoprune.pruning import apply_policy, channel_scores, make_permanent
from autoprune.reconstruct import recalibrate_bn, reconstruct
from autoprune.records import TrialLog
from autoprune.search import make_searcher
from autoprune.search.baselines import lamp
from autoprune.search.fidelity import Ledger, RungPruner
from autoprune.workspace import build_workspace
from tests.conftest import FakeEvaluator, write_config

SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def resnet20():
    """The bundled pretrained ResNet-20, its layers, and a few hundred real bundled images."""
    model = build_model("resnet20")
    data = load_cifar10("bundled", val_size=300, train_limit=512)
    return model, discover(model, SHAPE), data


def test_pruning_records_which_channels_each_layer_kept(resnet20) -> None:
    model, layers, _ = resnet20
    policy = PruningPolicy("resnet20", {la.name: 0.5 for la in layers})
    kept: dict[str, list[int]] = {}
    pruned = apply_policy(model, policy, layers, SHAPE, kept=kept)
    # The stem's input is the image: its kept rows are the dense rows it kept.
    stem = kept["conv1"]
    assert len(stem) == 8 and pruned.conv1.weight.shape[0] == 8
    assert torch.equal(pruned.conv1.weight, model.conv1.weight[stem])
    # A block's first conv lost outputs (its own group) and inputs (the stem's group).
    name = "layer1.0.conv1"
    dense = model.get_submodule(name).weight[kept[name]][:, stem]
    assert torch.equal(pruned.get_submodule(name).weight, dense)
    # Every conv whose outputs shrank is in the map, with the count it kept.
    for n, m in pruned.named_modules():
        if isinstance(m, torch.nn.Conv2d) and m.out_channels < model.get_submodule(n).out_channels:
            assert len(kept[n]) == m.out_channels


def test_reconstruction_recovers_much_of_what_pruning_took(resnet20) -> None:
    """Least squares on 256 train images, no gradient step: far above the raw pruned model and
    above batch-norm re-estimation, and each refitted layer reproduces the dense outputs better."""
    model, layers, data = resnet20
    policy = PruningPolicy("resnet20", {la.name: 0.4 for la in layers})
    images = next(iter(data.train.batches(256)))[0]
    raw = apply_policy(model, policy, layers, SHAPE)
    bn = apply_policy(model, policy, layers, SHAPE)
    recalibrate_bn(bn, images)
    kept: dict[str, list[int]] = {}
    fitted = apply_policy(model, policy, layers, SHAPE, kept=kept)
    refitted = reconstruct(fitted, model, images, kept)
    assert refitted == sum(1 for _ in _trainable_convs(model)) + 1  # every conv + the linear
    acc = {k: accuracy(m, data.val) for k, m in (("raw", raw), ("bn", bn), ("ls", fitted))}
    assert acc["ls"] > acc["bn"] + 5 and acc["ls"] > acc["raw"] + 20, acc
    assert _logit_error(fitted, model, data) < 0.5 * _logit_error(raw, model, data)


def _trainable_convs(model):
    return (
        m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.requires_grad
    )


def _logit_error(pruned, dense, data) -> float:
    x = next(iter(data.val.batches(128)))[0]
    with torch.no_grad():
        return float((pruned(x) - dense(x)).pow(2).mean())


def test_evaluator_screens_with_no_fine_tune_step(tiny) -> None:
    ev = Evaluator(
        tiny.model, tiny.layers, SHAPE, tiny.data.train, tiny.data.val, tiny.predictor,
        FinetuneConfig(steps=2, batch_size=16), screen="reconstruct", calibration_images=64,
    )  # fmt: skip
    policy = PruningPolicy("resnet8", {la.name: 0.5 for la in tiny.layers})
    screened, tuned = ev(policy, 0, 0), ev(policy, 0, 2)
    assert screened.steps == 0 and tuned.steps == 2
    assert screened.accuracy == ev(policy, 0, 0).accuracy  # a pure function of its inputs
    # The screen's repair is for the screening rung only: fine-tune rungs start from the plain
    # pruned model, as the final fine-tune does.
    plain = Evaluator(
        tiny.model, tiny.layers, SHAPE, tiny.data.train, tiny.data.val, tiny.predictor,
        FinetuneConfig(steps=2, batch_size=16),
    )  # fmt: skip
    assert plain(policy, 0, 2).accuracy == tuned.accuracy
    # Screens may score on a fixed sample of the validation split; fine-tune rungs use all of it.
    few = Evaluator(
        tiny.model, tiny.layers, SHAPE, tiny.data.train, tiny.data.val, tiny.predictor,
        FinetuneConfig(steps=2, batch_size=16), screen="reconstruct", calibration_images=64,
        screen_images=7,
    )  # fmt: skip
    assert len(few.screen_val) == 7 < len(few.val)
    repaired = make_permanent(few.prune(policy, "reconstruct"))
    assert few(policy, 0, 0).accuracy == accuracy(repaired, few.screen_val) != screened.accuracy
    assert few(policy, 0, 2).accuracy == tuned.accuracy
    with pytest.raises(ValueError, match="recover"):
        Evaluator(
            tiny.model, tiny.layers, SHAPE, tiny.data.train, tiny.data.val, tiny.predictor,
            recover="magic",
        )  # fmt: skip


def test_reconstruct_bn_reestimates_batch_norm_after_the_refit(tiny) -> None:
    ev = Evaluator(
        tiny.model, tiny.layers, SHAPE, tiny.data.train, tiny.data.val, tiny.predictor,
        FinetuneConfig(steps=2, batch_size=16), calibration_images=64,
    )  # fmt: skip
    policy = PruningPolicy("resnet8", {la.name: 0.5 for la in tiny.layers})
    both, refit = ev.prune(policy, "reconstruct_bn"), ev.prune(policy, "reconstruct")
    split = tiny.data.train
    recalibrate_bn(refit, normalize(split.x[ev.calibration], split.mean, split.std))
    for a, b in zip(both.state_dict().values(), refit.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    plain = ev.prune(policy, "reconstruct").state_dict()
    stats = [k for k in plain if "running" in k]
    assert any(not torch.equal(both.state_dict()[k], plain[k]) for k in stats)


def _study_with(values: dict[int, float], step: int = 0) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for v in values.values():
        t = study.ask()
        t.report(v, step)
        study.tell(t, state=optuna.trial.TrialState.PRUNED)
    return study


def test_rung_pruner_keeps_the_best_share_of_each_rung() -> None:
    pruner = RungPruner([0, 10, 30], [0.25, 0.5])
    study = _study_with(dict(enumerate([50.0, 40.0, 30.0, 20.0, 10.0, 5.0, 2.0])))

    def decide(value: float, step: int = 0) -> bool:
        t = study.ask()
        t.report(value, step)
        frozen = study.get_trials(deepcopy=False)[-1]
        study.tell(t, state=optuna.trial.TrialState.PRUNED)
        return pruner.prune(study, frozen)

    assert not decide(45.0)  # 2nd of 8: within the best quarter
    assert decide(35.0)  # 4th of 9: not within floor(9 / 4) = 2
    assert not decide(1.0, step=30)  # the last rung never prunes
    lone = RungPruner([0, 10], [0.1])
    study = _study_with({0: 1.0})
    assert not lone.prune(study, study.trials[0])  # the best so far always goes on
    with pytest.raises(ValueError):
        RungPruner([0, 10, 30], [0.5])


def test_screen_adds_a_rung_zero_with_its_own_keep_share(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path)).replace(
        **{"fidelity.screen": "reconstruct", "fidelity.screen_keep": 0.2}
    )
    steps, pruner = fidelity_plan(cfg)
    assert steps == [0, 1, 2] and isinstance(pruner, RungPruner)
    assert pruner.keep == [0.2, 0.5] and not pruner.defer
    _, pruner = fidelity_plan(cfg.replace(**{"fidelity.promote": "deferred"}))
    assert isinstance(pruner, RungPruner) and pruner.defer
    with pytest.raises(ConfigError, match="fidelity.promote is 'eager'; choose one of lazy"):
        cfg.replace(**{"fidelity.promote": "eager"})


def test_screening_search_fine_tunes_only_the_best_screened(tiny, tmp_path: Path) -> None:
    """A real search with a screening rung: every candidate is scored at step 0, and only about
    the best share goes on to the fine-tune rungs."""
    ctx = tiny.context(tmp_path)
    searcher = make_searcher("random", ctx, Config())
    log = TrialLog(tmp_path, searcher.name)
    rungs = [0, 2, 4]
    ledger = Ledger(f"sqlite:///{tmp_path / 'study.db'}", RungPruner(rungs, [0.1, 0.5]))
    fake = FakeEvaluator(tiny.predictor, [la.name for la in tiny.layers])
    run_search(searcher, LocalPool(fake), log, 16, ledger=ledger, rungs=rungs)
    recs = sorted(log.records, key=lambda r: r["trial"])  # one at a time: screening order
    curves = [r["curve"] for r in recs]
    assert len(curves) == 16 and all(c[0][0] == 0 for c in curves)
    screened = [c[0][1] for c in curves]
    # Keeping 1 in 10 of 16, lazily: nothing goes on before 10 screens exist; then the best of
    # those goes on, and after it each new best — no earlier leader that the tenth overtook.
    for i, curve in enumerate(curves):
        assert (len(curve) > 1) == (screened[i] == max(screened[: max(i + 1, 10)])), i
    eager = sum(screened[i] == max(screened[: i + 1]) for i in range(16))
    assert 1 <= sum(len(c) > 1 for c in curves) <= eager
    states = {t.state.name for t in ledger.study.trials}
    assert states <= {"COMPLETE", "PRUNED"}  # none left waiting


def test_deferred_promotion_screens_every_candidate_before_any_fine_tune(
    tiny, tmp_path: Path
) -> None:
    """Two phases: all 16 candidates are screened first (two at a time), then exactly the best
    quarter of them goes on to the fine-tune rungs, and the best half of those to the last."""
    ctx = tiny.context(tmp_path)
    searcher = make_searcher("random", ctx, Config())
    log = TrialLog(tmp_path, searcher.name)
    rungs = [0, 2, 4]
    pruner = RungPruner(rungs, [0.25, 0.5], defer=True)
    ledger = Ledger(f"sqlite:///{tmp_path / 'study.db'}", pruner)
    fake = FakeEvaluator(tiny.predictor, [la.name for la in tiny.layers])
    calls: list[int | None] = []

    def evaluate(policy: PruningPolicy, seed: int, steps: int | None):
        calls.append(steps)
        return fake(policy, seed, steps)

    run_search(searcher, LocalPool(evaluate), log, 16, ledger=ledger, rungs=rungs, parallel=2)
    assert calls[:16] == [0] * 16 and calls[16:20] == [2] * 4 and calls[20:] == [4, 4]
    screened = {r["trial"]: r["curve"][0][1] for r in log.records}
    best = sorted(screened, key=screened.__getitem__)[-4:]
    assert sorted(r["trial"] for r in log.records if len(r["curve"]) > 1) == sorted(best)
    assert {t.state.name for t in ledger.study.trials} == {"COMPLETE", "PRUNED"}


def test_a_killed_drivers_waiting_screen_is_queued_again_on_resume(tmp_path: Path) -> None:
    """A candidate killed while it waited after its screen (as the best of a deferred search
    do) is queued again with its parameters; its failed trial's score competes no more."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    pruner = RungPruner([0, 10], [0.5], defer=True)
    before = Ledger(storage, pruner, driver="me", exclusive=True)
    waiting = before.study.ask()
    waiting.suggest_float("a", 0.0, 1.0)
    waiting.report(90.0, 0)
    waiting.set_user_attr("driver", "me")
    Ledger(storage, pruner, driver="me", exclusive=True).recover([])
    old, copy = before.study.get_trials(deepcopy=False)
    assert old.state.name == "FAIL" and copy.state.name == "WAITING"
    assert copy.system_attrs["fixed_params"] == old.params
    assert copy.user_attrs["requeued_from"] == old.number
    rerun = before.study.ask()  # the queued copy comes first, and is screened again
    assert rerun.suggest_float("a", 0.0, 1.0) == old.params["a"]
    rerun.report(80.0, 0)
    trials = before.study.get_trials(deepcopy=False)
    assert pruner.decide(trials, trials[-1], planned=2, final=True) == "go"  # 90 is gone


def test_lazy_promotion_waits_until_the_share_means_something() -> None:
    pruner = RungPruner([0, 10, 30], [0.1, 0.5])
    study = _study_with(dict(enumerate([50.0, 40.0])))
    for value in (55.0, 45.0):
        t = study.ask()
        t.report(value, 0)
    trials = study.get_trials(deepcopy=False)
    best, second = trials[-2], trials[-1]  # of 4 scores, where a 10 % share keeps none yet
    assert pruner.decide(trials, best) == "go"  # eager (Optuna's prune): the best goes on
    assert pruner.decide(trials, second) == "stop"
    assert pruner.decide(trials, best, planned=100) == "wait"
    assert pruner.decide(trials, second, planned=100) == "wait"  # 10 of 100 may still go on
    assert pruner.decide(trials, best, planned=100, final=True) == "go"
    assert pruner.decide(trials, second, planned=100, final=True) == "stop"
    assert pruner.decide(trials, second, planned=10) == "stop"  # 1 of 10 kept: it is beaten
    study = _study_with(dict(enumerate([float(v) for v in range(10)])))
    t = study.ask()
    t.report(20.0, 0)
    trials = study.get_trials(deepcopy=False)
    assert pruner.decide(trials, trials[-1], planned=100) == "go"  # best of 11: 1 kept
    t = study.ask(fixed_distributions={})
    t.set_user_attr("warm_start", "uniform")
    t.report(-1.0, 0)
    trials = study.get_trials(deepcopy=False)
    assert pruner.decide(trials, trials[-1], planned=100) == "go"  # rules are the yardstick
    deferred = RungPruner([0, 10, 30], [0.1, 0.5], defer=True)
    best = max(trials[:-1], key=lambda t: t.intermediate_values[0])
    assert deferred.decide(trials, best, planned=100) == "wait"  # a screen waits for them all
    assert deferred.decide(trials, best, planned=100, final=True) == "go"
    assert deferred.decide(trials, trials[0], planned=10) == "stop"  # beaten by the one kept


def test_stage_space_groups_layers_by_resolution_and_coupling(tmp_path: Path) -> None:
    ws = build_workspace(load_config(write_config(tmp_path, **{"search.space": "stage"})))
    groups = ws.space_groups()
    assert sorted(groups) == sorted(
        ["32x32", "32x32-coupled", "16x16", "16x16-coupled", "8x8", "8x8-coupled"]
    )
    assert groups["32x32-coupled"] == ["conv1"] and len(groups["8x8"]) == 3
    assert sorted(n for names in groups.values() for n in names) == sorted(ws.layer_names)


@pytest.mark.parametrize("sampler", ["tpe", "cmaes"])
def test_grouped_search_proposes_one_ratio_per_group(tiny, tmp_path: Path, sampler) -> None:
    base = tiny.context(tmp_path)
    names = base.layers
    groups = {"early": names[: len(names) // 2], "late": names[len(names) // 2 :]}
    ctx = dataclasses.replace(base, groups=groups)
    cfg = Config().replace(**{"search.sampler": sampler, "search.startup_trials": 2})
    for name in ("optuna", "random"):
        run = tmp_path / f"{name}-{sampler}"
        run.mkdir()
        ctx = dataclasses.replace(ctx, run_dir=run)
        searcher = make_searcher(name, ctx, cfg)
        log = TrialLog(run, searcher.name)
        ledger = Ledger(f"sqlite:///{run / 'study.db'}", optuna.pruners.NopPruner())
        fake = FakeEvaluator(tiny.predictor, names)
        summary = run_search(searcher, LocalPool(fake), log, 6, ledger=ledger, rungs=[2])
        assert summary.finished == 6
        for rec in log.records:
            ratios = rec["policy"]["ratios"]
            for members in groups.values():
                assert len({round(ratios[n], 9) for n in members}) == 1, (name, ratios)
            assert rec["predicted_ms"] <= ctx.budget_ms + 1e-9


def test_lamp_is_torch_prunings_lamp_importance(resnet20) -> None:
    """LAMP from the stored (mean-normalized) channel magnitudes equals Torch-Pruning's own."""
    model, layers, _ = resnet20
    ours = channel_scores(model, layers, SHAPE)
    dg = build_graph(model, SHAPE)
    imp = tp.importance.LAMPImportance(p=2)
    for la in layers[:4]:
        theirs = imp(root_group(dg, model.get_submodule(la.name), list(range(la.channels))))
        assert np.allclose(lamp(np.asarray(ours[la.name])), theirs.numpy(), rtol=1e-4)


def test_global_lamp_and_magnitude_meet_the_budget_differently(tiny, tmp_path: Path) -> None:
    ctx = tiny.context(tmp_path)
    policies = {n: make_searcher(n, ctx, Config()).ask().policy for n in ("global", "lamp")}
    for p in policies.values():
        assert tiny.predictor.predict(p) <= ctx.budget_ms + 1e-9
    assert policies["global"].ratios != policies["lamp"].ratios
