"""Interruption, numerical failure, determinism and --force: a run never leaves a broken or half-written result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from stable_baselines3 import PPO

from tests.conftest import CLI


def _metrics_without_time(run_dir: Path) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in rows]


def test_same_seed_gives_the_same_metrics(cli: CLI, tmp_path: Path) -> None:
    for name in ("a", "b"):
        result = cli("run", "--steps", "3072", "--seed", "7", "--eval-every", "1024", "--out", tmp_path / name, "-q")
        assert result.code == 0, result.stderr
    first, second = _metrics_without_time(tmp_path / "a"), _metrics_without_time(tmp_path / "b")
    assert len(first) > 6 and first == second
    other = cli("run", "--steps", "3072", "--seed", "8", "--eval-every", "1024", "--out", tmp_path / "c", "-q")
    assert other.code == 0 and _metrics_without_time(tmp_path / "c") != first


def test_divergence_stops_with_the_step_and_keeps_the_last_good_student(cli: CLI, tmp_path: Path) -> None:
    # An absurd learning rate drives the student's logits to infinity within the first update.
    result = cli("run", "--lr", "1e30", "--steps", "4096", "--out", tmp_path / "run", "--quiet")
    assert result.code != 0
    assert "NaN or infinite" in result.stderr and "env step 512" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged"
    student = PPO.load(tmp_path / "run" / "student.zip", device="cpu")
    assert all(torch.isfinite(parameter).all() for parameter in student.policy.parameters())


def test_teacher_with_nan_weights_is_refused(cli: CLI, tmp_path: Path, teacher_zip: Path) -> None:
    model = PPO.load(teacher_zip, device="cpu")
    with torch.no_grad():
        model.policy.action_net.weight[0, 0] = float("nan")
    model.save(tmp_path / "ppo-CartPole-v1.zip")
    result = cli("run", "--teacher", tmp_path / "ppo-CartPole-v1.zip", "--out", tmp_path / "run")
    assert result.code != 0 and "NaN" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_sigterm_saves_a_loadable_student_and_exits_non_zero(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("distill")
    out = tmp_path / "run"
    command = [str(exe), "run", "--steps", "10000000", "--out", str(out), "--quiet", "--eval-episodes", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        metrics = out / "metrics.jsonl"
        if metrics.exists() and '"kind": "train"' in metrics.read_text():
            break
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "interrupted" in stderr and "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 0 < summary["env_steps"] < 10_000_000
    PPO.load(out / "student.zip", device="cpu").predict(torch.zeros(4).numpy(), deterministic=True)
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_force_replaces_an_earlier_run_but_keeps_other_files(cli: CLI, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli("run", "--steps", "1024", "--out", out, "-q").code == 0
    (out / "notes.txt").write_text("mine")
    assert cli("run", "--steps", "2048", "--out", out, "-q", "--force").code == 0
    rows = _metrics_without_time(out)
    assert [row["env_steps"] for row in rows if row["kind"] == "train"] == [512.0, 1024.0, 1536.0, 2048.0]
    assert (out / "notes.txt").read_text() == "mine"
