"""Teachers: the safe loader matches SB3's own load exactly, never runs a checkpoint's pickled code, and each
teacher family of the run/eval issue (PPO, A2C with Discrete and Box actions, DQN) distills."""

from __future__ import annotations

import base64
import contextlib
import json
import pickle
import zipfile
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm

from distillcli.sb3.checkpoint import read_checkpoint
from distillcli.sb3.teacher import load_teacher
from tests.conftest import CLI


def _fresh(algo: type[BaseAlgorithm], env_id: str, path: Path) -> Path:
    """A freshly initialised teacher, made confident so that its distribution is a non-trivial target.

    SB3 initialises the action head near zero, which makes a fresh teacher almost identical to a fresh student
    (and near-uniform, where the mode-seeking default method rightly prefers the argmax to the distribution).
    """
    model = algo("MlpPolicy", env_id, seed=0, device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if isinstance(model, DQN):
            head = model.policy.q_net.q_net[-1]
            head.weight.mul_(30.0)
            model.policy.q_net_target.load_state_dict(model.policy.q_net.state_dict())
        else:
            head = model.policy.action_net
            head.weight.copy_(torch.randn(head.weight.shape, generator=generator))
            if hasattr(model.policy, "log_std"):
                model.policy.log_std.fill_(-1.0)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory, teacher_zip: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("teachers")
    return {
        "ppo-discrete": teacher_zip,
        "a2c-box": _fresh(A2C, "Pendulum-v1", root / "a2c-Pendulum-v1.zip"),
        "ppo-box": _fresh(PPO, "Pendulum-v1", root / "ppo-Pendulum-v1.zip"),
        "dqn": _fresh(DQN, "CartPole-v1", root / "dqn-CartPole-v1.zip"),
    }


SB3_CLASS = {"ppo-discrete": PPO, "a2c-box": A2C, "ppo-box": PPO, "dqn": DQN}


@pytest.mark.parametrize("name", list(SB3_CLASS))
def test_safe_load_is_bit_identical_to_sb3_load(teachers: dict[str, Path], name: str) -> None:
    path = teachers[name]
    reference = SB3_CLASS[name].load(path, device="cpu").policy
    ours = load_teacher(read_checkpoint(path), reference.observation_space, reference.action_space, torch.device("cpu"))
    theirs_state, our_state = reference.state_dict(), ours.policy.state_dict()
    assert theirs_state.keys() == our_state.keys()
    for key, tensor in theirs_state.items():
        assert torch.equal(tensor, our_state[key]), key
    assert type(ours.policy) is type(reference)
    obs = torch.as_tensor(reference.observation_space.sample()[None])
    with torch.no_grad():
        assert torch.equal(ours.policy._predict(obs, deterministic=True), reference._predict(obs, deterministic=True))


def _with_pickled_entry(source: Path, target: Path, key: str, payload: bytes) -> Path:
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(members["data"])
    data[key] = {":type:": "<class 'type'>", ":serialized:": base64.b64encode(payload).decode()}
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return target


class _CreatesFile:
    """Unpickling this runs `open(marker, "w")`: the shape of any code-execution payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("key", ["policy_class", "policy_kwargs"])
def test_malicious_checkpoint_never_runs_its_code(cli: CLI, tmp_path: Path, teacher_zip: Path, key: str) -> None:
    marker = tmp_path / "pwned"
    evil = _with_pickled_entry(teacher_zip, tmp_path / "ppo-CartPole-v1.zip", key, pickle.dumps(_CreatesFile(marker)))
    attempts = [
        ("run", "--teacher", evil, "--steps", "512", "--out", tmp_path / "run"),
        ("eval", evil, "--episodes", "1"),
        ("eval", teacher_zip, "--teacher", evil, "--episodes", "1"),
    ]
    for args in attempts:
        result = cli(*args)
        assert result.code != 0, args
        assert not marker.exists(), f"checkpoint code ran during {args}"
        assert "--trust-checkpoint" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    # The payload is real: SB3's own load (what --trust-checkpoint opts in to) does run it.
    with contextlib.suppress(Exception):
        PPO.load(evil, device="cpu")
    assert marker.exists()


@pytest.mark.parametrize("name", ["a2c-box", "ppo-box", "dqn"])
def test_teacher_family_distills(cli: CLI, tmp_path: Path, teachers: dict[str, Path], name: str) -> None:
    result = cli("run", "--teacher", teachers[name], "--steps", "32768", "--out", tmp_path / "run", "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["kl_end"] <= 0.5 * summary["kl_start"], summary
    student = PPO.load(summary["student_path"], device="cpu")
    env = gym.make(summary["env_id"])
    action, _ = student.predict(env.observation_space.sample(), deterministic=True)
    assert env.action_space.contains(action.astype(env.action_space.dtype))


def test_dqn_temperature_sharpens_the_target(tmp_path: Path, teachers: dict[str, Path]) -> None:
    checkpoint = read_checkpoint(teachers["dqn"])
    env = gym.make("CartPole-v1")
    obs = torch.as_tensor(env.observation_space.sample()[None])
    entropies = []
    for temperature in (10.0, 1.0, 0.1):
        teacher = load_teacher(
            checkpoint, env.observation_space, env.action_space, torch.device("cpu"), temperature=temperature
        )
        dist, value = teacher(obs)
        assert value is not None
        entropies.append(float(dist.entropy()))
    assert entropies[0] > entropies[1] > entropies[2]


def _pickle_calling(module: str, dotted_name: str, argument: str) -> bytes:
    """A protocol-4 pickle calling ``module.dotted_name(argument)``: STACK_GLOBAL follows dots as attributes."""

    def text(value: str) -> bytes:
        raw = value.encode()
        return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE

    return b"\x80\x04" + text(module) + text(dotted_name) + b"\x93" + text(argument) + b"\x85R."


def test_allow_listed_module_cannot_reach_other_code_through_attributes(
    cli: CLI, tmp_path: Path, teacher_zip: Path
) -> None:
    # torch.nn.modules.activation is allow-listed for policy_kwargs, and it imports torch, which imports os.
    marker = tmp_path / "pwned"
    payload = _pickle_calling("torch.nn.modules.activation", "torch.os.mkdir", str(marker))
    evil = _with_pickled_entry(teacher_zip, tmp_path / "ppo-CartPole-v1.zip", "policy_kwargs", payload)
    result = cli("run", "--teacher", evil, "--steps", "512", "--out", tmp_path / "run")
    assert result.code != 0 and "--trust-checkpoint" in result.stderr
    assert not marker.exists()
    pickle.loads(payload)  # the payload is real: a plain unpickler runs it
    assert marker.exists()
