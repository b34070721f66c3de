"""Faults through the real CLI: a Ray worker killed mid-trial on a two-node local cluster is
retried, and a driver killed with SIGKILL resumes with no trial lost or run twice."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from autoprune.config import load_config
from autoprune.workspace import build_workspace

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PYTHONUNBUFFERED": "1",
}


def _config(tmp_path: Path, trials: int, steps: int, parallel: int) -> Path:
    """A small real search: ResNet-8 (random init), real bundled CIFAR-10, a fast real profile."""
    base = yaml.safe_load((REPO / "search_spaces/resnet20_cifar10.yaml").read_text())
    # Budget 80 % of dense: comfortably reachable whatever the fast profile measures.
    base.update(
        model="resnet8",
        profile=str(tmp_path / "profile.json"),
        profile_grid_points=3,
        budget="0.8",
    )
    base["dataset"].update(val_size=64, train_limit=256)
    base["search"].update(trials=trials, parallel=parallel, startup_trials=2)
    base["short_finetune"].update(steps=steps, batch_size=32)
    base["fidelity"] = {"min_steps": None}  # one rung of `steps`
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(base))
    ws = build_workspace(load_config(path))
    ws.measure_profile(repeats=5, min_time_s=0.02, channel_sweep=False).save(
        tmp_path / "profile.json"
    )
    return path


def _records(run_dir: Path) -> list[dict]:
    path = run_dir / "trials.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait(pred, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_driver_sigkill_then_resume_loses_and_repeats_nothing(tmp_path: Path) -> None:
    cfg = _config(tmp_path, trials=6, steps=40, parallel=1)
    run = tmp_path / "run"
    cmd = [str(BIN / "autoprune"), "search", "-c", str(cfg), "--run-dir", str(run)]
    log = (tmp_path / "driver.log").open("w")
    proc = subprocess.Popen(cmd, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: len(_records(run)) >= 2 or proc.poll() is not None, 240, "two trials")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = _records(run)
    assert 2 <= len(before) < 6, (tmp_path / "driver.log").read_text()[-2000:]
    done = subprocess.run([*cmd, "--resume"], env=ENV, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr
    after = _records(run)
    assert after[: len(before)] == before  # nothing finished was lost or rewritten
    assert len(after) == 6 and all(r["state"] == "COMPLETE" for r in after)
    trials = [r["trial"] for r in after]
    assert len(set(trials)) == 6
    # The study agrees: 6 complete trials, no parameter set evaluated twice.
    import optuna

    study = optuna.load_study(study_name="autoprune", storage=f"sqlite:///{run / 'study.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 6
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ray"), *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
    )


def _processes() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, command line) of every process, read from /proc."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out[int(d.name)] = (ppid, cmd)
    return out


def _cluster_processes(temp_dir: str) -> dict[int, str]:
    """This test's own Ray processes: those started with its temp dir, and their descendants
    (the workers rename themselves, so they are found through their parents). Never another
    Ray on the machine, e.g. a benchmark running beside the tests."""
    procs = _processes()
    found = {pid: cmd for pid, (_, cmd) in procs.items() if temp_dir in cmd}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, cmd) in procs.items():
            if ppid in found and pid not in found:
                found[pid], grew = cmd, True
    return found


def _evaluation_pids(temp_dir: str) -> list[int]:
    return [p for p, cmd in _cluster_processes(temp_dir).items() if "ray::_evaluate_task" in cmd]


def _stop_cluster(temp_dir: str) -> None:
    for pid in _cluster_processes(temp_dir):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("pgrep") is None, reason="needs pgrep")
def test_two_node_cluster_worker_killed_mid_trial_is_retried(tmp_path: Path) -> None:
    import ray

    if ray.is_initialized():  # this test drives its own cluster through the CLI
        ray.shutdown()
    cfg = _config(tmp_path, trials=4, steps=60, parallel=2)  # the kill lands in its first second
    run = tmp_path / "run"
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="apray", dir="/tmp")  # short: Ray's socket paths
    _ray(
        "start",
        "--head",
        f"--temp-dir={temp_dir}",
        f"--port={port}",
        "--num-cpus=1",
        "--include-dashboard=false",
        "--node-ip-address=127.0.0.1",
    )
    try:
        _ray("start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--node-ip-address=127.0.0.1")
        cmd = [
            str(BIN / "autoprune"),
            "search",
            "-c",
            str(cfg),
            "--run-dir",
            str(run),
            "--address",
            f"127.0.0.1:{port}",
            "--max-retries",
            "2",
        ]
        proc = subprocess.Popen(
            cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        _wait(
            lambda: bool(_evaluation_pids(temp_dir)) or proc.poll() is not None,
            180,
            "an evaluation task to start",
        )
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(1.0)
        victim = _evaluation_pids(temp_dir)[0]
        os.kill(victim, signal.SIGKILL)
        _out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err
        recs = _records(run)
        assert len(recs) == 4 and all(r["state"] == "COMPLETE" for r in recs), recs
        assert len({r["trial"] for r in recs}) == 4
    finally:
        _stop_cluster(temp_dir)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_keeps_finished_trials(tmp_path: Path) -> None:
    cfg = _config(tmp_path, trials=6, steps=40, parallel=1)
    run = tmp_path / "run"
    cmd = [str(BIN / "autoprune"), "search", "-c", str(cfg), "--run-dir", str(run)]
    proc = subprocess.Popen(
        cmd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A shell running the suite in the background passes SIGINT on as ignored; Python only
        # turns SIGINT into KeyboardInterrupt when it starts with the default disposition.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _wait(lambda: len(_records(run)) >= 1 or proc.poll() is not None, 240, "a finished trial")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "interrupted" in out
    before = _records(run)
    assert 1 <= len(before) < 6 and all(r["state"] == "COMPLETE" for r in before)
    assert (run / "best_policy.json").is_file()
    done = subprocess.run([*cmd, "--resume"], env=ENV, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr
    after = _records(run)
    assert after[: len(before)] == before and len({r["trial"] for r in after}) == 6
