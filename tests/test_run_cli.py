"""`distill run` and `distill eval` end to end on the bundled CartPole teacher, through the real entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from distillcli.config import DEFAULT_METHOD
from distillcli.envs import make_env
from distillcli.methods import METHODS
from distillcli.run.evaluate import evaluate
from distillcli.sb3.student import Student, StudentNet
from tests.conftest import CLI

SUMMARY_FIELDS = {
    "teacher_return",
    "student_return",
    "return_ratio",
    "env_steps",
    "wall_seconds",
    "student_params",
    "teacher_params",
    "kl_start",
    "kl_end",
    "method",
    "env_id",
    "device",
    "versions",
}


def deterministic_return(student_zip: Path, episodes: int = 10) -> float:
    """The student's mean return over `episodes` deterministic episodes, measured with SB3's own loader."""
    model = PPO.load(student_zip, device="cpu")
    returns = []
    env = gym.make("CartPole-v1")
    for episode in range(episodes):
        obs, _ = env.reset(seed=1000 + episode)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(int(action))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def test_default_run_writes_a_loadable_student_that_matches_the_teacher(distilled: Path) -> None:
    summary = json.loads((distilled / "summary.json").read_text())
    assert summary.keys() >= SUMMARY_FIELDS
    assert summary["method"] == DEFAULT_METHOD and summary["env_id"] == "CartPole-v1"
    assert summary["student_params"] <= summary["teacher_params"] / 2
    assert summary["kl_end"] < 0.5 * summary["kl_start"]
    assert deterministic_return(distilled / "student.zip") >= 0.95 * summary["teacher_return"]


def test_run_dir_holds_metrics_config_and_tensorboard(distilled: Path) -> None:
    lines = [json.loads(line) for line in (distilled / "metrics.jsonl").read_text().splitlines()]
    updates = [line for line in lines if line["kind"] == "train"]
    assert len(updates) >= 10
    for key in ("env_steps", "wall_seconds", "kl_teacher_student", "episode_return"):
        assert all(key in line for line in updates), key
    assert [u["env_steps"] for u in updates] == sorted(u["env_steps"] for u in updates)
    assert any(line["kind"] == "eval" for line in lines)
    events = list((distilled / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    config = json.loads((distilled / "config.json").read_text())
    assert config["method"] == DEFAULT_METHOD and config["env"] == "CartPole-v1"


def test_tensorboard_events_hold_the_training_scalars(distilled: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(next((distilled / "tensorboard").rglob("events.out.tfevents.*")).parent))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert {"train/kl_teacher_student", "eval/kl_teacher_student", "eval/student_return"} <= set(tags)
    kl = [event.value for event in accumulator.Scalars("train/kl_teacher_student")]
    assert len(kl) >= 10 and kl[-1] < kl[0]


@pytest.mark.parametrize("method", ["expected-entropy", "on-policy-distill"])
def test_student_reaches_95_percent_of_the_teacher(cli: CLI, tmp_path: Path, method: str) -> None:
    result = cli("run", "--method", method, "--steps", "30000", "--out", tmp_path / "run", "--json", "--seed", "1")
    assert result.code == 0, result.stderr
    summary = result.json()  # --json: stdout is exactly one JSON document
    assert summary["method"] == method
    assert deterministic_return(Path(summary["student_path"]), episodes=10) >= 0.95 * summary["teacher_return"]


def test_config_file_replays_the_run(cli: CLI, distilled: Path, tmp_path: Path) -> None:
    result = cli("run", "--config", distilled / "config.json", "--steps", "2048", "--out", tmp_path / "again", "--json")
    assert result.code == 0, result.stderr
    replayed = json.loads((tmp_path / "again" / "config.json").read_text())
    original = json.loads((distilled / "config.json").read_text())
    differing = {k for k in original if original[k] != replayed[k]}
    assert differing == {"steps"}
    # Neither the run directory nor --force is stored: replaying a run's config can never overwrite that run.
    assert original["out"] is None and "force" not in original and "trust_checkpoint" not in original


def test_eval_reports_student_against_teacher(cli: CLI, distilled: Path, teacher_zip: Path) -> None:
    result = cli("eval", distilled / "student.zip", "--teacher", teacher_zip, "--episodes", "10", "--json")
    assert result.code == 0, result.stderr
    report = result.json()
    for key in (
        "return_mean",
        "return_std",
        "teacher_return_mean",
        "teacher_return_std",
        "return_ratio",
        "agreement",
        "kl_teacher_student",
        "kl_student_teacher",
        "student_params",
        "teacher_params",
        "student_latency_us",
        "teacher_latency_us",
    ):
        assert isinstance(report[key], float | int), key
    assert report["env_id"] == "CartPole-v1" and report["deterministic"] is True
    assert 0.0 <= report["agreement"] <= 1.0 and report["agreement"] > 0.7
    assert report["kl_teacher_student"] >= 0.0 and report["kl_student_teacher"] >= 0.0
    assert report["return_ratio"] == pytest.approx(report["return_mean"] / report["teacher_return_mean"])


def test_eval_without_teacher_finds_the_env_in_the_run_dir(cli: CLI, distilled: Path) -> None:
    result = cli("eval", distilled / "student.zip", "--episodes", "3", "--stochastic", "--json")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["env_id"] == "CartPole-v1" and report["deterministic"] is False
    assert "teacher_return_mean" not in report


def test_eval_of_the_teacher_against_itself_agrees_fully(cli: CLI, teacher_zip: Path) -> None:
    report = cli("eval", teacher_zip, "--teacher", teacher_zip, "--episodes", "3", "--json").json()
    assert report["agreement"] == 1.0
    assert report["kl_teacher_student"] == pytest.approx(0.0, abs=1e-6)
    assert report["return_ratio"] == pytest.approx(1.0)


def test_student_is_worse_than_teacher_before_training() -> None:
    """The eval machinery tells a fresh network from the teacher, so the bars above mean something."""
    cpu = torch.device("cpu")
    venv = make_env("CartPole-v1", 2, 0)
    fresh = Student.build(
        venv,
        StudentNet([32, 32]),
        torch.nn.Tanh,
        learning_rate=1e-3,
        n_steps=64,
        minibatch_size=64,
        epochs=1,
        gamma=0.99,
        gae_lambda=0.5,
        device=cpu,
        seed=0,
    )
    result = evaluate(fresh, lambda n: make_env("CartPole-v1", n, 5), 5, cpu)
    assert result.mean < 200


def test_human_output_and_progress(cli: CLI, tmp_path: Path) -> None:
    result = cli("run", "--steps", "2048", "--out", tmp_path / "run", "--eval-episodes", "2")
    assert result.code == 0, result.stderr
    assert "score" in result.stdout and "student.zip" in result.stdout


def test_console_script_runs_as_installed(tmp_path: Path) -> None:
    """The `distill` executable a user gets from `pip install` (not just the in-process entry point)."""
    exe = Path(sys.executable).with_name("distill")
    if not exe.exists():
        pytest.skip("console script not installed next to this interpreter")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([exe, "methods", "--json"], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0 and len(json.loads(done.stdout)) == len(METHODS)
    bad = subprocess.run([exe, "run", "--method", "nope"], capture_output=True, text=True, env=env, check=False)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and bad.stderr.startswith("error:")
