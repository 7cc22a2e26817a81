"""Make the teacher's environment as a vectorised env, with errors a user can act on."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from distillcli.errors import DistillError
from distillcli.tabular.gridworld import register as register_grid_world

# Environment families that need an optional extra of distillcli (gymnasium extra, our extra).
_EXTRAS = {"box2d": "box2d", "mujoco": "mujoco", "ale_py": "atari", "ALE": "atari"}


def make_env(env_id: str, n_envs: int, seed: int, env_kwargs: dict[str, Any] | None = None) -> VecEnv:
    """A DummyVecEnv of ``n_envs`` Monitor-wrapped copies of ``env_id``, seeded ``seed, seed + 1, ...``."""
    register_grid_world()  # the paper's grid worlds: distillcli/GridWorld-v0
    if env_id not in gym.registry and env_id.startswith("ALE/"):
        try:  # ale-py registers the ALE/ namespace when imported
            import ale_py

            gym.register_envs(ale_py)
        except ImportError:
            raise DistillError(
                f"environment {env_id} needs an optional dependency: pip install 'distillcli[atari]'"
            ) from None
    if env_id not in gym.registry:
        close = [name for name in gym.registry if name.lower().startswith(env_id.lower().split("-")[0])][:3]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise DistillError(f"unknown environment id {env_id!r}{hint}")
    try:
        return make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs, vec_env_cls=DummyVecEnv)
    except gym.error.DependencyNotInstalled as error:
        extra = next((e for key, e in _EXTRAS.items() if key in str(error) or key in env_id), None)
        hint = f"pip install 'distillcli[{extra}]'" if extra else str(error).splitlines()[0]
        raise DistillError(f"environment {env_id} needs an optional dependency: {hint}") from None
    except (gym.error.Error, TypeError) as error:
        raise DistillError(f"cannot make environment {env_id}: {str(error).splitlines()[0]}") from None
