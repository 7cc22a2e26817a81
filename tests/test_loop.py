"""The loop's schedule: environments that grow from few to many without cutting episodes, and passes over a segment
that stop once the student matches the teacher there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from distillcli.envs import ConcatVecEnv, make_env
from distillcli.methods import get_method
from distillcli.objectives import ObjectiveOptions
from distillcli.rollout import Collector
from distillcli.sb3.checkpoint import read_checkpoint
from distillcli.sb3.teacher import load_teacher
from distillcli.trainer import EnvSchedule, UpdateOptions, update
from tests.conftest import CLI


def test_env_schedule_doubles_every_few_segments_up_to_the_final_count() -> None:
    schedule = EnvSchedule(start=8, final=64, every=4, n_steps=32)
    steps, counts = 0, []
    while steps < 12_000:
        counts.append(schedule.envs_at(steps))
        steps += counts[-1] * 32
    assert counts[:13] == [8] * 4 + [16] * 4 + [32] * 4 + [64]
    assert schedule.envs_at(7168) == 64 and schedule.envs_at(7167) == 32  # 4 x (256 + 512 + 1024) steps
    assert EnvSchedule(0, 64, 4, 32).envs_at(0) == 64 and EnvSchedule(64, 64, 4, 32).envs_at(0) == 64


def test_growing_keeps_the_running_episodes_and_adds_fresh_ones(teacher_zip: Path) -> None:
    venv = ConcatVecEnv([make_env("CartPole-v1", 2, seed=0)])
    reference = make_env("CartPole-v1", 2, seed=0)  # what the first two envs would do without growing
    teacher = load_teacher(read_checkpoint(teacher_zip), venv.observation_space, venv.action_space, torch.device("cpu"))
    collector = Collector(
        venv, teacher, torch.device("cpu"), more_envs=lambda n, index: make_env("CartPole-v1", n, index)
    )
    reference.reset()
    first = collector.collect(5, "teacher", None)
    collector.grow_to(6)
    assert venv.num_envs == 6 and collector._obs.shape[0] == 6
    second = collector.collect(5, "teacher", None)
    assert second.obs.shape[:2] == (6, 6) and first.obs.shape[:2] == (6, 2)
    # The first two envs carried on from where they were: their first observation now is their last one before.
    torch.testing.assert_close(second.obs[0, :2], first.obs[-1])
    assert np.array_equal(venv.get_attr("render_mode", [0, 5]), [None, None])
    assert len(venv.env_method("reset", indices=[3])) == 1


def test_a_pure_loss_stops_passing_over_a_segment_the_student_already_matches(teacher_zip: Path) -> None:
    """A student that is the teacher (KL 0) needs one pass, not eight; with --converged 0 it gets all of them."""
    venv = make_env("CartPole-v1", 8, seed=0)
    checkpoint = read_checkpoint(teacher_zip)
    teacher = load_teacher(checkpoint, venv.observation_space, venv.action_space, torch.device("cpu"))
    twin = load_teacher(checkpoint, venv.observation_space, venv.action_space, torch.device("cpu"))
    parameters = [p.requires_grad_(True) for p in twin.policy.parameters()]
    optimizer = torch.optim.SGD(parameters, lr=0.0)  # the twin stays the teacher: only the epochs are counted
    rollout = Collector(venv, teacher, torch.device("cpu")).collect(32, "student", twin)
    method = get_method("on-policy-distill")

    def student(obs: torch.Tensor):  # type: ignore[no-untyped-def]
        from distillcli.sb3.policies import actor_critic_outputs

        return actor_critic_outputs(twin.policy, obs)

    for converged, epochs in ((0.01, 1.0), (0.0, 8.0)):
        settings = UpdateOptions(epochs=8, minibatch_size=64, converged=converged)
        metrics = update(method, rollout, student, parameters, optimizer, ObjectiveOptions(), settings)
        assert metrics["epochs"] == epochs


def test_default_run_grows_its_envs_and_logs_its_epochs(cli: CLI, tmp_path: Path) -> None:
    result = cli("run", "--steps", "8192", "--out", tmp_path / "run", "-q")
    assert result.code == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    sizes = np.diff([0] + [r["env_steps"] for r in train])
    assert list(sizes[:12]) == [256] * 4 + [512] * 4 + [1024] * 4 and sizes[12] == 2048
    assert all(1 <= r["epochs"] <= 8 for r in train) and train[0]["epochs"] == 8  # a fresh student uses every pass
