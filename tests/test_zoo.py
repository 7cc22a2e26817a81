"""rl-baselines3-zoo run folders: the teacher's env is rebuilt as rl-zoo's enjoy does (wrappers, frozen
VecNormalize statistics, frame stacking), model selection works like rl-zoo's, and nothing in the folder runs
without --trust-checkpoint."""

from __future__ import annotations

import json
import pickle
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecFrameStack, VecNormalize

from distillcli.run.evaluate import evaluate
from distillcli.sb3.policies import actor_critic_outputs
from distillcli.zoo import read_vecnormalize, read_yaml
from tests.conftest import CLI

EVAL_SEED = 10_000  # distill evaluates on seed + 10000 (run.EVAL_SEED_OFFSET)


def _confident(model: PPO, seed: int) -> PPO:
    """A fresh teacher with a non-trivial action distribution (see tests/test_teachers.py `_fresh`)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head = model.policy.action_net
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator))
        model.policy.log_std.fill_(-1.0)
    return model


def _dump(path: Path, options: dict[str, Any]) -> None:
    """As rl-zoo's ExperimentManager writes config.yml and args.yml: yaml.dump of a sorted OrderedDict."""
    with path.open("w") as handle:
        yaml.dump(OrderedDict(sorted(options.items())), handle)


def make_zoo_folder(
    root: Path,
    env_id: str = "Pendulum-v1",
    *,
    normalize: bool = True,
    config: dict[str, Any] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    wrapper_class: Any = None,
    frame_stack: int = 0,
) -> Path:
    """``logs/ppo/<EnvName>_1`` as rl-zoo's train writes it (the env stack built by hand, as rl-zoo does)."""
    name = env_id.replace("/", "-")
    folder = root / "logs" / "ppo" / f"{name}_1"
    stats = folder / name
    stats.mkdir(parents=True)
    venv: VecEnv = make_vec_env(env_id, n_envs=2, seed=0, wrapper_class=wrapper_class, vec_env_cls=DummyVecEnv)
    if normalize:
        venv = VecNormalize(venv, gamma=0.98)
    if frame_stack:
        venv = VecFrameStack(venv, frame_stack)
    if normalize:  # statistics that differ from (0, 1), as after training
        venv.reset()
        for _ in range(300):
            venv.step(np.stack([venv.action_space.sample() for _ in range(venv.num_envs)]))
    for seed, file in ((0, name), (1, "best_model"), (2, "rl_model_1000_steps")):
        _confident(PPO("MlpPolicy", venv, seed=seed, device="cpu"), seed).save(folder / file)
    if normalize:
        vec_normalize = venv.venv if isinstance(venv, VecFrameStack) else venv
        assert isinstance(vec_normalize, VecNormalize)
        vec_normalize.save(str(stats / "vecnormalize.pkl"))
    hyperparams = {"n_envs": 2, "n_timesteps": 1000, "policy": "MlpPolicy", "policy_kwargs": "dict(log_std_init=-1)"}
    if normalize:
        hyperparams["normalize"] = "{'norm_obs': True, 'norm_reward': False}"
    if frame_stack:
        hyperparams["frame_stack"] = frame_stack
    hyperparams.update(config or {})
    _dump(stats / "config.yml", hyperparams)
    _dump(stats / "args.yml", {"algo": "ppo", "env": env_id, "env_kwargs": env_kwargs, "gym_packages": [], "seed": 0})
    return folder


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_zoo_folder(tmp_path_factory.mktemp("zoo"))


def _evaluate_by_hand(model_zip: Path, stats: Path | None, episodes: int) -> float:
    """The teacher's deterministic return in the env built by hand the way rl-zoo's create_test_env does."""

    def env(n: int) -> VecEnv:
        venv: VecEnv = make_vec_env("Pendulum-v1", n_envs=n, seed=EVAL_SEED, vec_env_cls=DummyVecEnv)
        if stats is None:
            return venv
        normalized = VecNormalize.load(str(stats), venv)
        normalized.training, normalized.norm_reward = False, False
        return normalized

    model = PPO.load(model_zip, device="cpu")
    result = evaluate(lambda obs: actor_critic_outputs(model.policy, obs), env, episodes, torch.device("cpu"))
    return result.mean


def test_the_folder_is_read_as_rl_zoo_writes_it(pendulum: Path) -> None:
    config = read_yaml(pendulum / "Pendulum-v1" / "config.yml")
    assert config["normalize"] == "{'norm_obs': True, 'norm_reward': False}" and config["n_envs"] == 2
    assert "!!python/object/apply:collections.OrderedDict" in (pendulum / "Pendulum-v1" / "config.yml").read_text()
    stats = read_vecnormalize(pendulum / "Pendulum-v1" / "vecnormalize.pkl", trust=False)
    saved = VecNormalize.load(str(pendulum / "Pendulum-v1" / "vecnormalize.pkl"), make_vec_env("Pendulum-v1", 1))
    np.testing.assert_array_equal(stats.mean, saved.obs_rms.mean)
    np.testing.assert_array_equal(stats.var, saved.obs_rms.var)
    assert stats.count == saved.obs_rms.count and stats.gamma == 0.98 and stats.clip_obs == saved.clip_obs
    assert np.abs(stats.mean).max() > 0.05 and np.abs(stats.var - 1).max() > 0.05  # not the identity


def test_zoo_folder_distills_in_the_normalised_env(cli: CLI, tmp_path: Path, pendulum: Path) -> None:
    out = tmp_path / "run"
    result = cli("run", "--teacher", pendulum, "--steps", "32768", "--eval-episodes", "2", "--out", out, "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["kl_end"] <= 0.5 * summary["kl_start"], summary
    assert summary["env_id"] == "Pendulum-v1" and summary["teacher"].endswith("Pendulum-v1_1/Pendulum-v1.zip")

    # The teacher's return is the one in rl-zoo's own env (VecNormalize.load, frozen, rewards unnormalised) ...
    stats = pendulum / "Pendulum-v1" / "vecnormalize.pkl"
    by_hand = _evaluate_by_hand(pendulum / "Pendulum-v1.zip", stats, 2)
    assert summary["teacher_return"] == pytest.approx(by_hand, rel=1e-5)
    # ... and the statistics matter: without them the same teacher does something else.
    assert abs(_evaluate_by_hand(pendulum / "Pendulum-v1.zip", None, 2) - by_hand) > 1.0

    # The run directory carries what deployment needs; distill eval rebuilds the same env from it.
    assert (out / "vecnormalize.pkl").read_bytes() == stats.read_bytes()
    described = json.loads((out / "env.json").read_text())
    assert described["env_id"] == "Pendulum-v1" and described["normalize"] == "vecnormalize.pkl"
    again = cli("eval", out / "student.zip", "--episodes", "2", "--json")
    assert again.code == 0, again.stderr
    assert again.json()["return_mean"] == pytest.approx(summary["student_return"], rel=1e-5)

    student = PPO.load(out / "student.zip", device="cpu")
    deployed = VecNormalize.load(str(out / "vecnormalize.pkl"), make_vec_env("Pendulum-v1", 1))
    deployed.training = False
    action, _ = student.predict(deployed.reset(), deterministic=True)
    assert action.shape == (1, 1) and gym.make("Pendulum-v1").action_space.contains(action[0])


def test_load_best_and_load_checkpoint(cli: CLI, tmp_path: Path, pendulum: Path) -> None:
    out = tmp_path / "best"
    result = cli(
        "run", "--teacher", pendulum, "--load-best", "--steps", "512", "--eval-every", "0",
        "--eval-episodes", "1", "--out", out, "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert result.json()["teacher"].endswith("best_model.zip")
    config = json.loads((out / "config.json").read_text())
    assert config["load_best"] is True and config["teacher"].endswith("best_model.zip")
    assert (out / "vecnormalize.pkl").is_file()  # a checkpoint of the folder still gets the folder's env

    report = cli(
        "eval", out / "student.zip", "--teacher", pendulum / "Pendulum-v1.zip", "--load-checkpoint", "1000",
        "--episodes", "1", "--json",
    )  # fmt: skip
    assert report.code == 0, report.stderr
    assert report.json()["teacher"].endswith("rl_model_1000_steps.zip")
    by_hand = _evaluate_by_hand(pendulum / "rl_model_1000_steps.zip", pendulum / "Pendulum-v1" / "vecnormalize.pkl", 1)
    assert report.json()["teacher_return_mean"] == pytest.approx(by_hand, rel=1e-5)


def test_frame_stack_and_env_wrappers(cli: CLI, tmp_path: Path) -> None:
    limit = {"gymnasium.wrappers.TimeLimit": {"max_episode_steps": 50}}
    folder = make_zoo_folder(
        tmp_path,
        normalize=False,
        config={"env_wrapper": [limit]},
        wrapper_class=lambda env: gym.wrappers.TimeLimit(env, max_episode_steps=50),
        frame_stack=3,
    )
    assert PPO.load(folder / "Pendulum-v1.zip", device="cpu").observation_space.shape == (9,)  # 3 x 3 stacked
    out = tmp_path / "run"
    result = cli("run", "--teacher", folder, "--steps", "4096", "--eval-episodes", "2", "--out", out, "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["kl_end"] < summary["kl_start"]
    assert summary["teacher_return"] > -16.3 * 50  # 50-step episodes: the TimeLimit wrapper is on
    described = json.loads((out / "env.json").read_text())
    assert described["frame_stack"] == 3 and described["env_wrapper"] == [limit] and described["normalize"] is None
    assert not (out / "vecnormalize.pkl").exists()
    student = PPO.load(out / "student.zip", device="cpu")
    action, _ = student.predict(np.zeros(9, dtype=np.float32), deterministic=True)
    assert action.shape == (1,)


class _CreatesFile:
    """Unpickling this runs ``open(marker, "w")``: the shape of any code-execution payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _broken(kind: str, folder: Path, marker: Path) -> list[str]:
    """Damage a copy of the folder; return the extra options the failing command takes."""
    stats = folder / "Pendulum-v1"
    if kind == "no-final-zip":
        (folder / "Pendulum-v1.zip").unlink()
    elif kind == "missing-checkpoint":
        return ["--load-checkpoint", "5"]
    elif kind == "missing-best":
        (folder / "best_model.zip").unlink()
        return ["--load-best"]
    elif kind == "unsafe-pickle":
        (stats / "vecnormalize.pkl").write_bytes(pickle.dumps(_CreatesFile(marker)))
    elif kind == "unsafe-yaml":
        text = (stats / "args.yml").read_text()
        payload = f"- - env_kwargs\n    - !!python/object/apply:builtins.open ['{marker}', 'w']"
        assert "- - env_kwargs\n    - null" in text
        (stats / "args.yml").write_text(text.replace("- - env_kwargs\n    - null", payload))
    elif kind == "unsafe-wrapper":
        _dump(stats / "config.yml", {"env_wrapper": "pathlib.Path", "normalize": True})
    elif kind == "missing-stats":
        (stats / "vecnormalize.pkl").unlink()
    elif kind == "wrong-stats":
        venv = VecNormalize(make_vec_env("CartPole-v1", 1))
        venv.save(str(stats / "vecnormalize.pkl"))
    elif kind == "bad-normalize":
        _dump(stats / "config.yml", {"normalize": "__import__('os')"})
    elif kind == "not-zoo":
        shutil.rmtree(stats)
    return []


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("no-final-zip", "has no final model Pendulum-v1.zip"),
        ("missing-checkpoint", "checkpoints saved: 1000"),
        ("missing-best", "no best_model.zip"),
        ("unsafe-pickle", "--trust-checkpoint"),
        ("unsafe-yaml", "--trust-checkpoint"),
        ("unsafe-wrapper", "--trust-checkpoint"),
        ("missing-stats", "vecnormalize.pkl is missing"),
        ("wrong-stats", "statistics are for observations of shape (4,)"),
        ("bad-normalize", "normalize"),
        ("not-zoo", "not an rl-zoo run folder"),
    ],
)
def test_bad_folders_fail_in_one_line(cli: CLI, tmp_path: Path, pendulum: Path, kind: str, expected: str) -> None:
    folder = tmp_path / "Pendulum-v1_1"
    shutil.copytree(pendulum, folder)
    marker = tmp_path / "pwned"
    extra = _broken(kind, folder, marker)
    out = tmp_path / "run"
    result = cli("run", "--teacher", folder, *extra, "--steps", "512", "--out", out)
    assert result.code != 0
    assert expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not out.exists() and not marker.exists()
    if kind == "unsafe-pickle":  # the payloads are real: rl-zoo's own loaders (what trust opts in to) run them
        with pytest.raises(Exception):  # noqa: B017 - the payload's object is not a VecNormalize
            VecNormalize.load(str(folder / "Pendulum-v1" / "vecnormalize.pkl"), make_vec_env("Pendulum-v1", 1))
        assert marker.exists()
    if kind == "unsafe-yaml":
        yaml.load((folder / "Pendulum-v1" / "args.yml").read_text(), Loader=yaml.UnsafeLoader)
        assert marker.exists()


def test_trust_checkpoint_opens_an_unlisted_wrapper(cli: CLI, tmp_path: Path, pendulum: Path) -> None:
    folder = tmp_path / "Pendulum-v1_1"
    shutil.copytree(pendulum, folder)
    config = read_yaml(folder / "Pendulum-v1" / "config.yml")
    # A wrapper outside the allow-list (here a gymnasium class reached through another module) needs trust.
    config["env_wrapper"] = "gymnasium.core.Wrapper"
    _dump(folder / "Pendulum-v1" / "config.yml", config)
    refused = cli("eval", folder, "--episodes", "1")
    assert refused.code != 0 and "gymnasium.core.Wrapper" in refused.stderr and "--trust-checkpoint" in refused.stderr
    trusted = cli("eval", folder, "--episodes", "1", "--trust-checkpoint", "--json")
    assert trusted.code == 0, trusted.stderr
