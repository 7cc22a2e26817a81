"""The agents rl-baselines3-zoo publishes (trained by others, 2020-2022, SB3 0.x-1.x and gym): every one loads
without unpickling anything, acts as SB3's own load of it acts, and finds its env (retired ids mapped).

The folders are in ../shared/teachers/rl-trained-agents; these tests skip cleanly where it is absent.
"""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from distillcli.config import RunConfig
from distillcli.run import prepare

SHARED = Path(__file__).resolve().parents[2] / "shared" / "teachers" / "rl-trained-agents"
FOLDERS = {
    "a2c-pendulum": "a2c/Pendulum-v1_1",
    "ars-pendulum": "ars/Pendulum-v1_1",
    "ddpg-mountaincar": "ddpg/MountainCarContinuous-v0_1",
    "dqn-cartpole": "dqn/CartPole-v1_1",
    "ppo-lunarlander": "ppo/LunarLander-v2_1",
    "ppo-pendulum": "ppo/Pendulum-v1_1",
    "qrdqn-acrobot": "qrdqn/Acrobot-v1_1",
    "sac-pendulum": "sac/Pendulum-v1_1",
    "tqc-pendulum": "tqc/Pendulum-v1_1",
    "trpo-cartpole": "trpo/CartPole-v1_1",
    "trpo-hopper": "trpo/Hopper-v3_1",
}
SB3_CLASSES = {
    "A2C": "stable_baselines3:A2C",
    "PPO": "stable_baselines3:PPO",
    "DQN": "stable_baselines3:DQN",
    "SAC": "stable_baselines3:SAC",
    "DDPG": "stable_baselines3:DDPG",
    "TD3": "stable_baselines3:TD3",
    "ARS": "sb3_contrib:ARS",
    "QRDQN": "sb3_contrib:QRDQN",
    "TQC": "sb3_contrib:TQC",
    "TRPO": "sb3_contrib:TRPO",
}
NEEDS = {"trpo-hopper": "mujoco", "ppo-lunarlander": "Box2D"}


def folder(name: str) -> Path:
    path = SHARED / FOLDERS[name]
    if not path.is_dir():
        pytest.skip(f"{path} is not here (the shared rl-trained-agents folders)")
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    if name.split("-")[0] in ("ars", "qrdqn", "tqc", "trpo"):
        pytest.importorskip("sb3_contrib")
    return path


def _sb3_load(algo: str, zip_path: Path, observation_space: object, action_space: object) -> object | None:
    """SB3's (or sb3-contrib's) own load of the zip, where the installed version still can: the spaces and
    schedules are given, since the old pickles name gym, which is not installed."""
    module, _, name = SB3_CLASSES[algo].partition(":")
    cls = getattr(importlib.import_module(module), name)
    custom = {
        "observation_space": observation_space,
        "action_space": action_space,
        "lr_schedule": lambda _: 0.0,
        "learning_rate": 0.0,
        "exploration_schedule": lambda _: 0.0,
        "clip_range": lambda _: 0.2,
        "delta_std_schedule": lambda _: 0.0,
        "train_freq": 1,
        "replay_buffer_class": None,
        "rollout_buffer_class": None,
        "action_noise": None,
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls.load(zip_path, device="cpu", custom_objects=custom)
    except Exception:  # an old layout this SB3 cannot open any more: nothing to compare against
        return None


@pytest.mark.parametrize("name", list(FOLDERS))
def test_published_agent_loads_safely_and_acts_as_sb3s_own_load(name: str) -> None:
    setup = prepare(str(folder(name)), None, "cpu")  # no --trust-checkpoint: nothing is unpickled
    teacher = setup.teacher
    assert teacher.algo in SB3_CLASSES and teacher.n_params > 0
    venv = setup.make_env(4, 0)
    observations = [venv.reset()]
    for _ in range(24):
        actions = np.stack([venv.action_space.sample() for _ in range(4)])
        observations.append(venv.step(actions)[0])
    venv.close()
    obs = np.concatenate(observations)
    ours = teacher(torch.as_tensor(obs))[0].mode().numpy()
    if hasattr(venv.action_space, "low"):  # SB3 predict clips Box actions to the bounds
        ours = np.clip(ours, venv.action_space.low, venv.action_space.high)
    model = _sb3_load(teacher.algo, setup.checkpoint.path, setup.observation_space, venv.action_space)
    if model is None:
        pytest.skip(f"SB3 {teacher.algo}.load cannot open this old checkpoint: nothing to compare against")
    theirs, _ = model.predict(obs, deterministic=True)  # type: ignore[attr-defined]
    np.testing.assert_allclose(ours.reshape(theirs.shape), theirs, rtol=1e-5, atol=1e-5)


def test_retired_env_ids_are_mapped_to_their_successor_and_said_once() -> None:
    setup = prepare(str(folder("ppo-lunarlander")), None, "cpu")
    assert setup.env_id == "LunarLander-v3" and setup.stack.mapped_from == "LunarLander-v2"
    assert setup.notices == ["LunarLander-v2 is retired in gymnasium " + __import__("gymnasium").__version__
                             + "; using LunarLander-v3, which has the same spaces"]  # fmt: skip


def hub_cache(root: Path, repo: str, run_folder: Path, algo: str) -> Path:
    """A Hugging Face cache holding ``repo`` as rl-zoo's push_to_hub lays an agent out, built from an rl-zoo run
    folder, in the hub cache's own layout: blobs, a snapshot of links to them, and refs/main."""
    import hashlib

    env_name = run_folder.name.rsplit("_", 1)[0]
    files = {
        f"{algo}-{env_name}.zip": run_folder / f"{env_name}.zip",
        "config.yml": run_folder / env_name / "config.yml",
        "args.yml": run_folder / env_name / "args.yml",
    }
    if (run_folder / env_name / "vecnormalize.pkl").is_file():
        files["vec_normalize.pkl"] = run_folder / env_name / "vecnormalize.pkl"
    cache = root / "hub" / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(repo.encode()).hexdigest()
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text(commit)
    snapshot = cache / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (cache / "blobs").mkdir()
    for name, source in files.items():
        data = source.read_bytes()
        blob = cache / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    return root


def test_hf_teacher_is_read_from_the_hub_cache_offline(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("huggingface_hub")
    source = folder("a2c-pendulum")  # VecNormalize statistics: the hub's vec_normalize.pkl must be found
    home = hub_cache(tmp_path / "hf", "sb3/a2c-Pendulum-v1", source, "a2c")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DISTILL_SMOKE", "1")
    result = cli("run", "--teacher", "hf:sb3/a2c-Pendulum-v1", "--out", tmp_path / "run", "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["env_id"] == "Pendulum-v1" and summary["teacher_algo"] == "A2C"
    assert (tmp_path / "run" / "vecnormalize.pkl").is_file()  # the statistics were used, and copied for the student
    # The same teacher read from the rl-zoo folder: the same return, so the same env stack and normalisation.
    direct = prepare(str(source), None, "cpu")
    assert direct.stack.normalization is not None

    missing = cli("run", "--teacher", "hf:sb3/ppo-NoSuchEnv-v0", "--out", tmp_path / "other")
    assert missing.code == 2 and missing.stderr.count("\n") == 1
    assert "not in the Hugging Face cache" in missing.stderr and not (tmp_path / "other").exists()
    bad = cli("run", "--teacher", "hf:not a repo", "--out", tmp_path / "other")
    assert bad.code == 2 and "expected hf:ORG/REPO" in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FOLDERS))
def test_the_default_command_copies_each_published_agent(cli, tmp_path: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    """Issue 16's bar: `distill run --teacher <folder>` and nothing else reaches score >= 0.9 at the default
    budget (50k env steps; 200k for MuJoCo), with no traceback and no --trust-checkpoint. About 10 s a folder on
    one core, 1-2 minutes for Hopper; bench/corpus.py runs the same command over a whole rl-zoo clone."""
    result = cli("run", "--teacher", folder(name), "--out", tmp_path / "run", "--json", "-q")
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary = result.json()
    assert summary["score"] >= 0.9, (summary["score"], summary["student_return"], summary["teacher_return"])
    # A retired env id: one stderr line, and the mapping recorded in summary.json and config.json (a record that
    # a replay with --config skips).
    mapped = {"ppo-lunarlander": "LunarLander-v2", "trpo-hopper": "Hopper-v3"}.get(name)
    assert summary["env_mapped_from"] == mapped
    assert ("is retired in gymnasium" in result.stderr) == (mapped is not None)
    config = tmp_path / "run" / "config.json"
    assert json.loads(config.read_text()).get("env_mapped_from") == mapped
    assert RunConfig.from_file(config)["env"] == summary["env_id"]
