"""Pixels: an Atari teacher (AtariWrapper, 4 stacked frames, SB3's channel-first transpose) distills into a
convolutional student (SB3's NatureCNN) that PPO.load opens and that acts on channel-last frames like the
teacher; a bare zip of an ALE teacher gets the same stack by inference."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from stable_baselines3 import PPO

from distillcli.envs import ATARI_WRAPPER
from distillcli.errors import DistillError
from distillcli.run import prepare
from distillcli.sb3.student import resolve_net
from tests.conftest import CLI

ENV_ID = "ALE/Pong-v5"


def _pong_teacher(path: Path) -> Path:
    """A fresh CnnPolicy PPO trained-env-wise like SB3's Atari recipe, with a confident action head."""
    pytest.importorskip("ale_py")
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    venv = VecFrameStack(make_atari_env(ENV_ID, n_envs=1, seed=0), 4)
    model = PPO("CnnPolicy", venv, seed=0, device="cpu", n_steps=16, batch_size=16)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        head = model.policy.action_net
        head.weight.copy_(0.2 * torch.randn(head.weight.shape, generator=generator))
        head.bias.copy_(torch.tensor([4.0, 0.0, 1.0, 0.0, 0.0, 0.0]))  # mostly NOOP: mode and distribution agree
    model.save(path)
    venv.close()
    return path


def _dump(path: Path, options: dict[str, Any]) -> None:
    with path.open("w") as handle:
        yaml.dump(OrderedDict(sorted(options.items())), handle)


@pytest.fixture(scope="module")
def pong_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _pong_teacher(tmp_path_factory.mktemp("atari") / "ppo-ALE-Pong-v5.zip")


@pytest.fixture(scope="module")
def pong_zoo(tmp_path_factory: pytest.TempPathFactory, pong_zip: Path) -> Path:
    """An rl-zoo folder for the same teacher; env_kwargs keep evaluation episodes short (200 ALE steps)."""
    folder = tmp_path_factory.mktemp("zoo") / "logs" / "ppo" / "ALE-Pong-v5_1"
    (folder / "ALE-Pong-v5").mkdir(parents=True)
    (folder / "ALE-Pong-v5.zip").write_bytes(pong_zip.read_bytes())
    config = {"env_wrapper": [ATARI_WRAPPER], "frame_stack": 4, "normalize": False, "policy": "CnnPolicy"}
    _dump(folder / "ALE-Pong-v5" / "config.yml", config)
    args = {"algo": "ppo", "env": ENV_ID, "env_kwargs": {"max_episode_steps": 200}, "gym_packages": [], "seed": 0}
    _dump(folder / "ALE-Pong-v5" / "args.yml", args)
    return folder


def test_atari_teacher_distills_into_a_cnn_student(cli: CLI, tmp_path: Path, pong_zoo: Path) -> None:
    out = tmp_path / "run"
    result = cli(
        "run", "--teacher", pong_zoo, "--student-net", "cnn:64", "--steps", "2048", "--n-envs", "4",
        "--n-steps", "32", "--minibatch-size", "64", "--eval-every", "0", "--eval-episodes", "1",
        "--threads", "1", "--out", out, "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["env_id"] == ENV_ID and summary["student_net"] == "cnn:64"
    assert summary["kl_end"] <= 0.5 * summary["kl_start"], summary
    described = json.loads((out / "env.json").read_text())
    assert described["env_wrapper"] == [{ATARI_WRAPPER: {}}] and described["frame_stack"] == 4

    student = PPO.load(out / "student.zip", device="cpu")
    assert student.observation_space.shape == (4, 84, 84)  # channel-first, as SB3 trains on images
    frames = np.random.default_rng(0).integers(0, 256, size=(84, 84, 4), dtype=np.uint8)  # what the env gives
    action, _ = student.predict(frames, deterministic=True)
    teacher_action, _ = PPO.load(pong_zoo / "ALE-Pong-v5.zip", device="cpu").predict(frames, deterministic=True)
    assert gym.spaces.Discrete(6).contains(int(action)) and np.shape(action) == np.shape(teacher_action)

    again = cli("eval", out / "student.zip", "--episodes", "1", "--json")  # env.json rebuilds the Atari stack
    assert again.code == 0, again.stderr
    assert again.json()["return_mean"] == pytest.approx(summary["student_return"])


def test_bare_atari_zip_gets_the_atari_stack(pong_zip: Path) -> None:
    setup = prepare(str(pong_zip), None, "cpu")
    assert setup.env_id == ENV_ID and setup.stack.source == "atari (inferred)"
    assert [w.path for w in setup.stack.env_wrappers] == [ATARI_WRAPPER] and setup.stack.frame_stack == 4
    assert setup.observation_space.shape == (4, 84, 84) and setup.observation_space.dtype == np.uint8

    # Teacher outputs are SB3's own on the same (transposed, stacked) frames.
    venv = setup.make_env(1, 0)
    obs = venv.reset()
    venv.close()
    model = PPO.load(pong_zip, device="cpu")
    tensor, _ = model.policy.obs_to_tensor(obs)
    expected = model.policy.get_distribution(tensor).distribution.logits
    dist, _ = setup.teacher(torch.as_tensor(obs))
    torch.testing.assert_close(dist.logits, expected)  # type: ignore[attr-defined]

    net = resolve_net("auto", setup.teacher.hidden_widths, setup.teacher.policy, setup.observation_space)
    assert net.features_dim == 256 and net.layers == []  # half the teacher's NatureCNN features
    assert (
        str(resolve_net("cnn:128/64,32", setup.teacher.hidden_widths, setup.teacher.policy, setup.observation_space))
        == "cnn:128/64,32"
    )
    with pytest.raises(DistillError, match="cnn:256"):
        resolve_net("cnn:wide", setup.teacher.hidden_widths, setup.teacher.policy, setup.observation_space)


@pytest.mark.parametrize("spec", ["cnn", "cnn:64/32"])
def test_cnn_student_needs_images(cli: CLI, tmp_path: Path, spec: str) -> None:
    result = cli("run", "--student-net", spec, "--steps", "512", "--out", tmp_path / "run")
    assert result.code != 0 and "a CNN needs image observations" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
