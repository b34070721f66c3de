from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from autoprune.apply import CONTENDERS, apply_and_export, apply_contest, rule_contender
from autoprune.cli import app
from autoprune.config import load_config
from autoprune.errors import PolicyError
from autoprune.export import export_dir, load_pruned_model
from autoprune.policy import PruningPolicy
from autoprune.workspace import build_workspace
from tests.conftest import FAST_PROFILE, profile_for, write_config

runner = CliRunner()


def _cli(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_apply_export_reload_and_onnx_parity(tmp_path: Path) -> None:
    cfg_path = write_config(tmp_path, model="resnet8")
    ws = build_workspace(load_config(cfg_path))
    profile = ws.measure_profile(**FAST_PROFILE)
    policy = PruningPolicy("resnet8", dict.fromkeys(ws.layer_names, 0.5))
    rep = apply_and_export(
        ws, policy, profile, tmp_path / "final", measure_kwargs={"min_time_s": 0.02, "rounds": 2}
    )
    assert rep.pruned["macs"] < rep.dense["macs"] and "within_budget" in rep.to_dict()
    assert {"val_acc", "test_acc", "holdout_acc"} <= set(rep.dense) <= set(rep.pruned)
    assert rep.data["val"] == {"images": 64, "pool": "test"} and rep.recipe["steps"] == 2
    assert (rep.finetuned["steps"], rep.finetuned["planned"], rep.finetuned["kept_step"]) == (
        2,
    ) * 3
    out = export_dir(tmp_path / "final", tmp_path / "export")
    assert out["onnx_max_abs_diff"] < 1e-3 and (tmp_path / "export/report.md").is_file()
    assert "It ran 2 steps." in (tmp_path / "export/report.md").read_text()
    state = torch.load(tmp_path / "export/model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    model = load_pruned_model(tmp_path / "export/best_policy.json", tmp_path / "export/model.pt")
    # The reloaded model is the applied one: same accuracy on the same data.
    from autoprune.finetune import accuracy

    data = ws.load_data()
    assert accuracy(model, data.test) == pytest.approx(rep.pruned["test_acc"])
    with pytest.raises(PolicyError, match="policy is for model 'resnet20'"):
        apply_and_export(ws, PruningPolicy("resnet20", {}), profile, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_rule_contender_is_the_best_rule_the_search_beat(tmp_path: Path) -> None:
    def rec(acc: float, rule: str | None = None, state: str = "COMPLETE") -> str:
        meta = {"warm_start": rule} if rule else {}
        policy = PruningPolicy("resnet8", {"conv1": acc / 100}, metadata=meta).to_dict()
        return json.dumps({"state": state, "accuracy": acc, "policy": policy})

    log = tmp_path / "trials.jsonl"
    log.write_text(
        "\n".join([rec(60, "uniform"), rec(64, "global"), rec(70), rec(90, state="PRUNED")])
    )
    rule = rule_contender(tmp_path)
    assert (
        rule is not None
        and rule.metadata["warm_start"] == "global"
        and rule.ratios["conv1"] == 0.64
    )
    log.write_text("\n".join([rec(60, "uniform"), rec(71, "global"), rec(70)]))
    assert rule_contender(tmp_path) is None  # the rule is the best: nothing to check
    log.write_text(rec(70))
    assert rule_contender(tmp_path) is None  # no rule evaluated


def test_apply_contest_keeps_the_policy_better_on_validation(tmp_path: Path) -> None:
    ws = build_workspace(load_config(write_config(tmp_path, model="resnet8")))
    profile = ws.measure_profile(**FAST_PROFILE)
    policies = {
        "search": PruningPolicy("resnet8", dict.fromkeys(ws.layer_names, 0.75)),
        "uniform": PruningPolicy("resnet8", dict.fromkeys(ws.layer_names, 0.25)),
    }
    out = tmp_path / "final"
    rep = apply_contest(
        ws, policies, profile, out, measure_kwargs={"min_time_s": 0.02, "rounds": 2}
    )
    scores = {n: c["val_acc"] for n, c in rep.contest["contenders"].items()}
    assert set(scores) == set(policies) and rep.contest["kept"] == max(scores, key=scores.get)
    kept = out / CONTENDERS / rep.contest["kept"]
    for name in ("best_policy.json", "model.pt"):  # the kept contender's files, copied
        assert (out / name).read_bytes() == (kept / name).read_bytes()
        assert all((out / CONTENDERS / n / name).is_file() for n in policies)
    saved = json.loads((out / "report.json").read_text())
    # Timed in the same rounds, beside one dense timing, scored once.
    dense = [
        json.loads((out / CONTENDERS / n / "report.json").read_text())["dense"] for n in policies
    ]
    assert dense[0] == dense[1] == saved["dense"]
    assert saved["contest"] == rep.contest and saved["pruned"]["val_acc"] == max(scores.values())
    model = load_pruned_model(out / "best_policy.json", out / "model.pt")
    from autoprune.finetune import accuracy

    assert accuracy(model, ws.load_data().val) == pytest.approx(max(scores.values()))


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    commands = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert len(commands) >= 7
    for command in commands:
        res = _cli(command, "--help")
        assert res.exit_code == 0 and "Usage" in res.output, command
        assert f"`autoprune {command}" in readme, f"README does not document {command}"


def _one_line_error(res, phrase: str) -> None:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and phrase in lines[0], res.output


def test_search_apply_export_and_resume_rules_through_cli(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, model="resnet8")
    profile_for(cfg)
    run = tmp_path / "run"
    assert _cli("search", "-c", str(cfg), "--run-dir", str(run)).exit_code == 0
    assert len((run / "trials.jsonl").read_text().splitlines()) == 3
    _one_line_error(_cli("search", "-c", str(cfg), "--run-dir", str(run)), "--resume")
    assert (
        _cli(
            "search", "-c", str(cfg), "--run-dir", str(run), "--resume", "--trials", "4"
        ).exit_code
        == 0
    )
    assert len((run / "trials.jsonl").read_text().splitlines()) == 4
    written = {}
    for args in (("apply", str(run)), ("export", str(run)), ("report", str(run))):
        res = _cli(*args)
        assert res.exit_code == 0, res.output
        written[args[0]] = _printed_paths(res.output, tmp_path)
    assert (run / "export/model.onnx").is_file()
    # Every path a command prints after writing exists, and is that command's own output.
    for command, folder in (("apply", "final"), ("export", "export"), ("report", "report")):
        paths = written[command]
        assert paths and {p if p.is_dir() else p.parent for p in paths} == {run / folder}
        assert all(p.is_dir() or p.stat().st_size > 0 for p in paths), paths
    onnx_meta = _onnx_metadata(run / "export/model.onnx")
    policy = json.loads((run / "export/best_policy.json").read_text())
    assert json.loads(onnx_meta["autoprune.policy"])["ratios"] == policy["ratios"]
    assert json.loads(onnx_meta["autoprune.input_shape"]) == [3, 32, 32]
    assert json.loads(onnx_meta["autoprune.mean"]) == policy["metadata"]["mean"]
    assert len(json.loads(onnx_meta["autoprune.classes"])) == 10
    html = (run / "report/report.html").read_text()
    md = (run / "report/report.md").read_text()
    for fig in ("pareto", "progress", "curves", "layers", "latency"):
        assert (run / f"report/{fig}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"]({fig}.png)" in md
    assert html.count("data:image/png;base64,") == 5  # self-contained
    assert "measured latency" in md and "Final fine-tune: 2 steps" in md
    # The dense model is scored on every split, validation on test-set images it never saw.
    for label in ("validation (64 test-set images)", "test (1,017 test-set", "holdout (2,000"):
        assert label in md


def _printed_paths(output: str, root: Path) -> list[Path]:
    """Paths under ``root`` that a command printed (one per line, after a label)."""
    found = []
    for line in output.splitlines():
        for word in line.replace("(", " ").replace(")", " ").split():
            if word.startswith(str(root)):
                found.append(Path(word.rstrip(".,;:")))
    return found


def _onnx_metadata(path: Path) -> dict[str, str]:
    import onnxruntime

    sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(sess.get_modelmeta().custom_metadata_map)


def test_cli_import_stays_light() -> None:
    code = (
        "import sys, autoprune.cli; heavy = [m for m in ('ray', 'stable_baselines3', "
        "'onnxruntime', 'matplotlib', 'optuna') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_names_print_as_written_no_emoji_or_markup() -> None:
    """A model named ``mymodels:factory`` (rich would render ``:factory:`` as an emoji) or with
    brackets prints exactly as written."""
    from autoprune import _display as ui

    stats = {"val_acc": 1.0, "latency_ms": 1.0, "macs": 1e6, "params": 1e3}
    rep = {
        "model": "mymodels:factory:[bold]x",
        "dense": stats,
        "pruned": stats,
        "predicted_ms": 1.0,
        "budget_ms": 1.0,
        "within_budget": True,
        "prediction_error": 0.0,
        "device": {},
        "files": {"policy": "runs/[x]/best_policy.json"},
    }
    with ui.out.capture() as cap:
        ui.print_report(rep)
    text = cap.get()
    assert "mymodels:factory:[bold]x: dense vs pruned" in text
    assert "runs/[x]/best_policy.json" in text and "🏭" not in text
