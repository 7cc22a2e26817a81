"""Interruption, numerical failure, determinism and --force: a run never leaves a broken or half-written result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from stable_baselines3 import PPO

from distillcli.config import DEFAULT_METHOD, RunConfig
from distillcli.methods import get_method
from distillcli.trainer import EnvSchedule
from tests.conftest import CLI

SEGMENT = RunConfig.n_envs * RunConfig.n_steps  # env steps per update at the defaults, once the envs have grown
START = get_method(DEFAULT_METHOD).start_envs or RunConfig.n_envs  # the default method's
SCHEDULE = EnvSchedule(START, RunConfig.n_envs, RunConfig.grow_every, RunConfig.n_steps)


def segment_ends(budget: int) -> list[int]:
    """The env steps at the end of each update of a default run with this budget (the envs grow at the start)."""
    ends = [0]
    while ends[-1] < budget:
        ends.append(ends[-1] + SCHEDULE.envs_at(ends[-1]) * RunConfig.n_steps)
    return ends[1:]


def _metrics_without_time(run_dir: Path) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in rows]


def test_same_seed_gives_the_same_metrics(cli: CLI, tmp_path: Path) -> None:
    for name in ("a", "b"):
        result = cli("run", "--steps", "6144", "--seed", "7", "--eval-every", "2048", "--out", tmp_path / name, "-q")
        assert result.code == 0, result.stderr
    first, second = _metrics_without_time(tmp_path / "a"), _metrics_without_time(tmp_path / "b")
    assert len(first) > 6 and first == second
    other = cli("run", "--steps", "6144", "--seed", "8", "--eval-every", "2048", "--out", tmp_path / "c", "-q")
    assert other.code == 0 and _metrics_without_time(tmp_path / "c") != first


def test_divergence_stops_with_the_step_and_keeps_the_last_good_student(cli: CLI, tmp_path: Path) -> None:
    # An absurd learning rate drives the student's logits to infinity within the first update.
    # expected-entropy's score term makes NaN of it within the first update (a pure loss stays finite).
    result = cli(
        "run", "-m", "expected-entropy", "--lr", "1e30", "--steps", "4096", "--out", tmp_path / "run", "--quiet"
    )
    assert result.code != 0
    assert "NaN or infinite" in result.stderr and f"env step {SEGMENT}" in result.stderr  # no growth with a score term
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


def _terminate_after_first_update(out: Path, steps: int) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("distill")
    command = [str(exe), "run", "--steps", str(steps), "--out", str(out), "--quiet", "--eval-episodes", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        metrics = out / "metrics.jsonl"
        if metrics.exists() and '"kind": "train"' in metrics.read_text():
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_sigterm_saves_a_loadable_student_and_resume_finishes_the_budget(cli: CLI, tmp_path: Path) -> None:
    out, budget = tmp_path / "run", 15 * SEGMENT
    stopped = _terminate_after_first_update(out, budget)
    assert stopped.returncode != 0
    assert "interrupted" in stopped.stderr and "--resume" in stopped.stderr and "Traceback" not in stopped.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 0 < summary["env_steps"] < budget
    PPO.load(out / "student.zip", device="cpu").predict(torch.zeros(4).numpy(), deterministic=True)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]

    resumed = cli("run", "--resume", out, "--json")
    assert resumed.code == 0, resumed.stderr
    final = resumed.json()
    assert final["status"] == "finished" and final["env_steps"] == segment_ends(budget)[-1]
    assert final["kl_start"] == summary["kl_start"]  # the run's own start, not the resumed student's
    train_steps = [r["env_steps"] for r in _metrics_without_time(out) if r["kind"] == "train"]
    assert train_steps == segment_ends(budget)  # no segment lost or repeated, across the interrupt
    assert final["score"] >= 0.95
    again = cli("run", "--resume", out)
    assert again.code != 0 and "already finished" in again.stderr


def test_force_replaces_an_earlier_run_but_keeps_other_files(cli: CLI, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli("run", "--steps", str(SEGMENT), "--out", out, "-q").code == 0
    (out / "notes.txt").write_text("mine")
    assert cli("run", "--steps", str(2 * SEGMENT), "--out", out, "-q", "--force").code == 0
    rows = _metrics_without_time(out)
    assert [row["env_steps"] for row in rows if row["kind"] == "train"] == segment_ends(2 * SEGMENT)
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_refuses_what_it_cannot_continue(cli: CLI, tmp_path: Path) -> None:
    cases = [
        (("run", "--resume", tmp_path / "missing"), "is not a run directory"),
        (("run", "--resume", tmp_path), "has no config.json"),
        (("run", "--resume", tmp_path, "--out", tmp_path / "x"), "drop --config and --out"),
    ]
    for args, says in cases:
        result = cli(*args)
        assert result.code == 2 and says in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_missing_optional_dependency_names_the_extra(cli: CLI, tmp_path: Path) -> None:
    import importlib.util

    cases = [("Ant-v5", "mujoco", "mujoco"), ("ALE/Pong-v5", "ale_py", "atari")]
    checked = 0
    for env_id, module, extra in cases:
        if importlib.util.find_spec(module) is not None:
            continue  # installed here: nothing is missing
        result = cli("run", "--env", env_id, "--out", tmp_path / "run")
        assert result.code == 2 and f"distillcli[{extra}]" in result.stderr, result.stderr
        assert not (tmp_path / "run").exists()
        checked += 1
    if checked == 0:
        pytest.skip("every optional family is installed on this machine")


def test_an_interrupt_while_the_run_is_being_saved_waits_for_the_summary() -> None:
    import os
    import signal

    from distillcli.run.rundir import deferred_interrupts as _deferred_interrupts

    with _deferred_interrupts() as received:
        os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt here without the deferral
        os.kill(os.getpid(), signal.SIGTERM)
        wrote_summary = True
    assert wrote_summary and received == [signal.SIGINT, signal.SIGTERM]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored afterwards
