"""The benchmarks' own machinery: the runner's bookkeeping, the statistics behind every
results table, and results files that are what their raw rows render to."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autoprune.errors import AutopruneError
from benchmarks import _report, early_stop, latency_matched
from benchmarks._stats import bootstrap_ci, pack, paired_diff, spearman, spearman_ci, unpack

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def test_gpu_benchmark_suite_skips_cleanly_without_cuda(capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the suite would run for real")
    from benchmarks.run import main

    assert main(["--suite", "gpu"]) is None
    assert "needs a CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("module", "argv", "says"),
    [
        ("run", ["--suite", "smoke", "--budgets", "abc"], "cannot read latency budget 'abc'"),
        ("run", ["--suite", "smoke", "--final-epochs", "0"], "--final-epochs must be positive"),
        ("latency_matched", ["--name", "no-such-run"], "no benchmark results"),
    ],
)
def test_benchmark_bad_input_fails_up_front(tmp_path, capsys, module, argv, says) -> None:
    import importlib

    main = importlib.import_module(f"benchmarks.{module}").main
    with pytest.raises(SystemExit) as e:
        main([*argv, "--work", str(tmp_path / "work"), "--results", str(tmp_path)])
    assert e.value.code != 0
    assert says in capsys.readouterr().err + str(e.value.code)
    assert not (tmp_path / "work").exists()  # nothing loaded or written before the check


def test_latency_matched_render_without_timings_fails_clearly(tmp_path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"suite": "cpu-v2", "rows": []}))
    with pytest.raises(SystemExit) as e:
        latency_matched.main(["--name", "x", "--render", "--results", str(tmp_path)])
    assert "no timings" in str(e.value.code) and "run without --render" in str(e.value.code)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]  # nothing written


def test_benchmark_rerun_of_some_methods_keeps_the_other_rows(tmp_path) -> None:
    from benchmarks.run import merge_rows

    earlier = tmp_path / "cpu-v2.json"
    old = [
        {"budget": "0.7", "method": "optuna", "v": "old"},
        {"budget": "0.7", "method": "uniform", "v": "old"},
        {"budget": "0.5", "method": "uniform", "v": "old"},
    ]
    earlier.write_text(json.dumps({"suite": "cpu-v2", "rows": old}))
    new = [
        {"budget": "0.5", "method": "global", "v": "new"},
        {"budget": "0.5", "method": "uniform", "v": "new"},
    ]
    rows = merge_rows(new, earlier, "cpu-v2", ["0.7", "0.5"])
    assert [(r["budget"], r["method"], r["v"]) for r in rows] == [
        ("0.7", "optuna", "old"),
        ("0.7", "uniform", "old"),
        ("0.5", "uniform", "new"),
        ("0.5", "global", "new"),
    ]
    # another suite's file, or none, contributes nothing
    assert merge_rows(new, earlier, "smoke", ["0.5"]) == new[::-1]
    assert merge_rows(new, tmp_path / "absent.json", "cpu-v2", ["0.5"]) == new[::-1]


def test_more_seeds_and_a_longer_final_keep_the_suites_runs_apart() -> None:
    from benchmarks.run import SUITES, final_settings

    suite = SUITES["cpu-v2"]
    before = json.dumps(suite, sort_keys=True)
    assert final_settings(suite, None, None) == (suite, "")
    spec, tag = final_settings(suite, [0, 1, 2, 3], 14)
    assert spec["seeds"] == [0, 1, 2, 3] and spec["trials"] == suite["trials"]
    assert spec["final_epochs"] == {"0.7": 14, "0.5": 14} and tag == "-14ep"
    assert final_settings(suite, None, 8.5)[1] == "-8.5ep"
    spec, tag = final_settings(suite, None, 14, 0)
    assert spec["final_patience"] == 0 and tag == "-14ep-p0"
    assert final_settings(suite, None, None, 2)[1] == "-p2"
    with pytest.raises(AutopruneError, match="patience"):
        final_settings(suite, None, None, -1)
    assert json.dumps(suite, sort_keys=True) == before  # the suite itself is left as it was


def test_a_changed_final_recipe_is_never_scored_against_the_registered_claim() -> None:
    """The registration fixed cpu-v3's 8-epoch finals: a longer final is a follow-up, and its
    report says so instead of printing a verdict on the registered test."""
    from benchmarks._report import _preregistered
    from benchmarks.run import SUITES, final_settings

    suite = SUITES["cpu-v3"]
    assert final_settings(suite, [0], None)[0]["preregistered"] == suite["preregistered"]
    spec, tag = final_settings(suite, [0], 24)
    assert tag == "-24ep" and "preregistered" not in spec and "24ep" in spec["follow_up"]
    md = _preregistered({"settings": spec}, [], ("uniform",))
    assert md[0].startswith("A follow-up of a pre-registered suite, not part of its test")
    assert not any("claim" in line for line in md)
    assert "preregistered" in suite  # the suite itself keeps its registration


def test_correctness_vectors_survive_packing() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 8, 1017, 5000):
        v = rng.random(n) < 0.8
        assert np.array_equal(unpack(pack(v), n), v)


def test_bootstrap_interval_covers_the_accuracy_with_the_binomial_width() -> None:
    assert bootstrap_ci(np.ones(500, bool)) == (100.0, 100.0, 100.0)
    half = np.arange(2000) % 2 == 0
    mean, lo, hi = bootstrap_ci(half)
    expected = 2 * 1.96 * 100 * np.sqrt(0.25 / 2000)  # normal approximation, ≈ 4.4 points
    assert mean == 50.0 and lo < 50 < hi and abs((hi - lo) - expected) < 0.5


def test_paired_difference_is_tighter_than_the_unpaired_intervals() -> None:
    rng = np.random.default_rng(1)
    b = rng.random(5000) < 0.8
    a = b.copy()
    a[np.flatnonzero(~b)[:60]] = True  # a fixes 60 of b's errors and changes nothing else
    assert paired_diff(b, b) == (0.0, 0.0, 0.0)
    d, lo, hi = paired_diff(a, b)
    assert d == pytest.approx(1.2) and 0 < lo < d < hi
    # the two unpaired intervals overlap: only pairing resolves a 1.2-point difference
    assert bootstrap_ci(a)[1] < bootstrap_ci(b)[2]
    # seeds × images: the mean over seeds is what is compared
    two = np.stack([a, b])
    assert paired_diff(two, np.stack([b, b]))[0] == pytest.approx(0.6)


def test_seeds_that_disagree_widen_the_paired_interval() -> None:
    rng = np.random.default_rng(2)
    b = rng.random(5000) < 0.8
    fixed = np.flatnonzero(~b)
    a = b.copy()
    a[fixed[:60]] = True
    far = b.copy()
    far[fixed[:120]] = True
    # the same mean gain of 1.2 points: two seeds that agree, or one +2.4 and one +0.0 seed
    agree, disagree = np.stack([a, a]), np.stack([far, b])
    assert paired_diff(agree, b) == paired_diff(a, b)  # agreeing seeds add nothing
    d, lo, hi = paired_diff(disagree, b)
    d1, lo1, hi1 = paired_diff(agree, b)
    assert d == pytest.approx(d1) and hi - lo > 1.5 * (hi1 - lo1)


def test_spearman_ranks_with_ties() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 4, 9]) == pytest.approx(1.0)  # ranks, not values
    # ties share their mean rank: ranks (0.5, 0.5, 2) against (0, 1, 2)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(np.sqrt(3) / 2)


def test_proxy_frontier_keeps_what_nothing_cheaper_beats() -> None:
    from benchmarks.proxy import frontier

    proxies = {
        "MACs": {"spearman": 0.1, "seconds": None},  # untimed: not on the frontier
        "bn": {"spearman": 0.48, "seconds": 6.7},
        "reconstruct": {"spearman": 0.50, "seconds": 10.6},
        "reconstruct + 30 steps": {"spearman": 0.41, "seconds": 29.0},  # beaten by cheaper
        "rung 900": {"spearman": 0.90, "seconds": 500.0},
    }
    assert frontier(proxies) == ["bn", "reconstruct", "rung 900"]


def test_spearman_interval_is_wide_for_a_dozen_and_narrow_for_many() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=400)
    y = x + rng.normal(size=400)  # a true rank correlation of about +0.68
    lo, hi = spearman_ci(list(x[:12]), list(y[:12]), boot=500)
    lo_n, hi_n = spearman_ci(list(x), list(y), boot=500)
    assert lo < spearman(list(x[:12]), list(y[:12])) < hi
    assert lo_n < spearman(list(x), list(y)) < hi_n
    assert hi - lo > 0.3 > hi_n - lo_n  # twelve candidates cannot pin a rank correlation
    assert spearman_ci([1, 2, 3, 4], [1, 2, 3, 4], boot=200) == (1.0, 1.0)


@pytest.mark.parametrize(
    "name",
    [
        "cpu-v2",
        "cpu-v2-matched",
        "cpu-v2-matched-14ep",
        "cpu-v2-matched-70-14ep",
        "cpu-v2-matched-70-14ep-p0",
        "cpu-v2-screen",
        "cpu-v3",
        "cpu-v3-24ep",
    ],
)
def test_committed_results_markdown_is_what_its_json_renders_to(name: str) -> None:
    data = json.loads((RESULTS / f"{name}.json").read_text())
    assert _report.markdown(data) == (RESULTS / f"{name}.md").read_text()
    if not (RESULTS / f"latency_matched-{name}.json").exists():
        return
    # the latency-matched view joins its timings with the results file as it is now
    timings = json.loads((RESULTS / f"latency_matched-{name}.json").read_text())
    rendered = latency_matched.markdown(timings, data)
    assert rendered == (RESULTS / f"latency_matched-{name}.md").read_text()
    for r in data["rows"]:  # every row of the results file is in the accuracy table
        assert f"| {float(r['budget']):.0%} | {_report.LABEL[r['method']]} | " in rendered


@pytest.mark.parametrize("model", ["resnet56", "resnet20"])
def test_committed_proxy_study_scores_read_back_to_its_table(model: str) -> None:
    """Each proxy's scores read back from a committed study reproduce its Spearman and interval,
    and the study's markdown is what its JSON renders to: what the pooled table is built on."""
    from benchmarks import proxy

    data = json.loads((RESULTS / f"proxy-{model}-0.5.json").read_text())
    assert proxy._markdown(data) == (RESULTS / f"proxy-{model}-0.5.md").read_text()
    final = [c["final"]["val_acc"] for c in data["candidates"]]
    read = proxy.proxy_scores(data)
    assert set(read) | {"v1: 80 steps, memorized validation"} >= set(data["proxies"])
    for name, scores in read.items():
        assert spearman(scores, final) == pytest.approx(data["proxies"][name]["spearman"])
        assert spearman_ci(scores, final) == pytest.approx(data["proxies"][name]["spearman_ci"])


def test_pooled_proxy_table_is_what_the_committed_studies_give() -> None:
    from benchmarks import proxy_pool

    studies = [
        json.loads((RESULTS / f"proxy-{m}-0.5.json").read_text()) for m in ("resnet56", "resnet20")
    ]
    out = proxy_pool.pool(studies)
    committed = json.loads((RESULTS / "proxy-pooled-0.5.json").read_text())
    assert _leaves(json.loads(json.dumps(out["proxies"]))) == pytest.approx(
        _leaves(committed["proxies"])
    )  # the vectorized bootstrap sums in another order than the one that wrote the file
    row = out["proxies"]["rung 2: 900 steps"]
    assert row["share_of_last_rung"] == [1.0, 1.0]
    assert row["worst"] == min(row["spearman"]) and row["mean_ci"][0] < row["mean"]
    with pytest.raises(SystemExit, match="different budgets"):
        proxy_pool.pool([studies[0], {**studies[1], "budget": "0.35"}])


def _leaves(obj: object, path: str = "") -> dict[str, object]:
    """A nested JSON value as {path: leaf}, for comparing numbers with a tolerance."""
    if isinstance(obj, dict):
        return {k: v for key, sub in obj.items() for k, v in _leaves(sub, f"{path}/{key}").items()}
    if isinstance(obj, list):
        return {k: v for i, sub in enumerate(obj) for k, v in _leaves(sub, f"{path}[{i}]").items()}
    return {path: obj}


def test_early_stop_study_renders_the_committed_finals() -> None:
    """The early-stop comparison's pairs are the finals committed in its steps folder (the
    early-stop run and its patience-0 rerun of the same policy and seed), and its markdown is
    what its JSON renders to."""
    name = "early_stop-cpu-v2-matched-70-14ep"
    data = json.loads((RESULTS / f"{name}.json").read_text())
    assert early_stop.markdown(data) == (RESULTS / f"{name}.md").read_text()
    found = early_stop.pairs(RESULTS.parent.parent / data["steps"], data["tag"])
    assert len(found) >= 2 and data["pooled"]
    for pair, recorded in zip(found, data["pairs"], strict=True):
        assert (pair["method"], pair["seed"]) == (recorded["method"], recorded["seed"])
        assert pair["whole"]["steps_run"] == pair["whole"]["steps_planned"]  # patience 0
        for run in early_stop.RUNS:
            assert pair[run]["test_acc"] == recorded[run]["test"]
            assert pair[run]["holdout_acc"] == recorded[run]["holdout"]


def test_report_names_extra_seeds_early_stops_and_notes() -> None:
    """A later run that adds seeds to some rows says so in the text, each run's early stop is
    shown, and a results file's notes (e.g. which commit made which rows) are printed under its
    provenance."""
    data = json.loads((RESULTS / "cpu-v2-matched.json").read_text())
    for r in data["rows"]:
        r["finals"] = [f for f in r["finals"] if f["seed"] in data["settings"]["seeds"]]
    assert "also [" not in _report.markdown(data)
    row = data["rows"][0]
    row["finals"].append({**row["finals"][0], "seed": 7})
    row["finals"][0].update(steps_run=4000, steps_planned=5474, kept_step=2500)
    row["finals"][1].update(steps_run=5474, steps_planned=5474, kept_step=5474)
    data["notes"] = ["Seed 7 of one row came from another run."]
    md = _report.markdown(data)
    # every run says how far its final went and whose weights it kept; older runs: "–"
    assert "| 4,000 of 5,474, kept 2,500 |" in md and "| 5,474 |" in md and "| – |" in md
    assert "seeds [0, 1] (rows whose *seeds* column says more: also [7])" in md
    assert "\n\nSeed 7 of one row came from another run.\n\n" in md
    assert f"| {float(row['budget']):.0%} | {_report.LABEL[row['method']]} | 3 | " in md


def test_readme_result_rows_are_copied_from_rendered_results() -> None:
    """README's benchmark tables quote the results files; a row edited by hand, or left behind
    when a results file changed, fails here."""
    readme = (RESULTS.parent.parent / "README.md").read_text()
    rendered = "\n".join(p.read_text() for p in RESULTS.glob("*.md"))
    rows = [ln for ln in readme.splitlines() if ln.startswith(("| 70% |", "| 50% |", "| 35% |"))]
    assert len(rows) >= 10
    assert [r for r in rows if r not in rendered] == []


def test_gpu_check_dry_run_runs_every_section_and_the_readme_gpu_commands(tmp_path) -> None:
    """The prepared GPU check on the CPU: every section runs, one archive comes out, and its
    pipeline section runs the README's "Targeting a GPU" commands as written (cuda → cpu)."""
    import tarfile

    from benchmarks import gpu_check

    commands = gpu_check.readme_commands(dry=True)
    assert [c[1] for c in commands] == ["profile", "search", "apply", "export"]
    assert ["--device", "cpu"] == commands[1][2:4] and "--gpus-per-trial" not in commands[1]
    res = gpu_check.main(["--dry", "--out", str(tmp_path)])
    failed = {k: s["error"] for k, s in res["sections"].items() if s["error"]}
    assert not failed, failed
    assert set(res["sections"]) == {
        "tests",
        "latency",
        "table",
        "channels",
        "training",
        "pipeline",
    }
    for r in res["sections"]["latency"]["result"]:  # timed, so no speed is asserted here
        assert r["dense_ms"] > 0 and r["speed_up"] == r["dense_ms"] / r["maximal_ms"]
    report = res["sections"]["pipeline"]["result"]["report"]
    dtype = "bfloat16" if gpu_check.native_bf16() else "float32"  # as the block, or emulated
    assert report["pruned"]["latency_ms"] > 0 and report["device"]["dtype"] == dtype
    with tarfile.open(tmp_path / "gpu-check.tar.gz") as tar:
        assert {"gpu-check.json", "gpu-check.md"} <= set(tar.getnames())


def test_final_jobs_run_as_ray_tasks_resumable_and_clear_their_checkpoints(
    tiny, tmp_path: Path
) -> None:
    """The studies' finals (proxy, fine-tune length) run as Ray tasks, each saving its state
    after every epoch where it is told to (a session cut costs an epoch), and the checkpoint is
    removed once the result is handed back."""
    from autoprune.finetune import FinetuneConfig
    from autoprune.policy import PruningPolicy
    from benchmarks._final import FinalJob, run_finals

    policy = PruningPolicy("resnet8", {la.name: 0.3 for la in tiny.layers}).to_dict()
    job = FinalJob(tiny.model, tiny.layers, (3, 32, 32), tiny.data, None)
    recipe = FinetuneConfig(epochs=2, batch_size=64, lr=0.05)
    ckpts = [tmp_path / "a.ckpt", tmp_path / "b.ckpt"]
    written: dict[int, bool] = {}
    out = run_finals(
        job,
        [(policy, 0, recipe), (policy, 1, recipe)],
        done=lambda i, _result: written.update({i: ckpts[i].is_file()}),
        checkpoints=ckpts,
    )
    assert written == {0: True, 1: True} and not any(c.exists() for c in ckpts)
    assert [r["seed"] for r in out] == [0, 1] and not any(r["resumed"] for r in out)


def test_registered_v3_suite_keeps_the_screen_and_final_it_was_registered_with() -> None:
    """The ResNet-56 YAML's screen and final have moved on since benchmark v3 was registered; a
    resumed cpu-v3 run must still screen (reconstruction on 256 images, all of val) and
    fine-tune (8 epochs, whole schedule, batch 128, lr 0.01, distillation 0.5) as registered."""
    from autoprune.config import load_config
    from benchmarks.run import SUITES

    spec = SUITES["cpu-v3"]
    cfg = load_config(spec["config"]).replace(**spec["overrides"])
    fidelity, final = cfg.fidelity, cfg.final_finetune
    assert (fidelity.screen, fidelity.calibration_images, fidelity.screen_images) == (
        "reconstruct",
        256,
        None,
    )
    assert (final.epochs, final.patience, final.batch_size, final.lr, final.distill) == (
        8,
        0,
        128,
        0.01,
        0.5,
    )
