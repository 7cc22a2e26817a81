"""What an export starts from: the student (read without unpickling, as every checkpoint in distill), the env it acts
in, its run directory's records; and the loops that step that env with numpy policies, which see each observation
twice: raw (what an exported graph takes) and normalised (what SB3's ``predict`` takes)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack, VecNormalize

from distillcli.envs import EnvStack
from distillcli.errors import DistillError, short
from distillcli.metrics import read_bounded
from distillcli.run.evaluate import MAX_EVAL_STEPS
from distillcli.run.rundir import CONFIG, STUDENT, SUMMARY
from distillcli.sb3.checkpoint import Checkpoint
from distillcli.sb3.families import Family
from distillcli.sb3.teacher import Teacher, check_spaces, load_teacher

EXPORTABLE = ("actor-critic", "masked actor-critic")  # the families whose policies are distill students (PPO's)
CPU = torch.device("cpu")

# A numpy policy: (raw observations, normalised observations, flat action masks or None) -> env actions.
Policy = Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]


MAX_RECORD_BYTES = 1 << 20  # a config.json or summary.json is a few KB


def read_json(path: Path) -> dict[str, Any]:
    """A run directory's JSON record, or {} where it is missing, unreadable, not a regular file or too large (it
    only adds to a card)."""
    try:
        data = json.loads(read_bounded(path, MAX_RECORD_BYTES, "run record"))
    except (DistillError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class Source:
    """A student to export or evaluate: its zip, policy (CPU, eval mode), env stack and run records."""

    zip_path: Path
    checkpoint: Checkpoint
    student: Teacher  # the policy rebuilt from the zip's weights (the same modules and weights as PPO.load)
    stack: EnvStack
    raw_space: gym.Space  # observations as the env gives them to an exported graph: not normalised, not transposed
    summary: dict[str, Any] = field(default_factory=dict)  # summary.json beside the zip, if it is a run directory
    config: dict[str, Any] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)

    @property
    def policy(self) -> Any:
        return self.student.policy

    @property
    def family(self) -> Family:
        return self.student.family

    @property
    def masked(self) -> bool:
        return self.family.masked

    @property
    def transpose(self) -> bool:
        """The stack's VecTransposeImage: the policy sees channel-first frames, the env gives channel-last ones."""
        return tuple(self.raw_space.shape or ()) != tuple(self.policy.observation_space.shape or ())

    def predict(self) -> Policy:
        """SB3's ``predict(obs, deterministic=True)`` (with ``action_masks`` for MaskablePPO) on normalised obs."""
        policy = self.policy

        def act(raw: np.ndarray, normalised: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
            if masks is not None:
                return policy.predict(normalised, deterministic=True, action_masks=masks)[0]  # type: ignore[no-any-return]
            return policy.predict(normalised, deterministic=True)[0]  # type: ignore[no-any-return]

        return act


def student_zip(model: Path) -> Path:
    """A run directory means its student.zip; anything else is passed on as it is."""
    if model.is_dir() and (model / SUMMARY).is_file():
        if not (model / STUDENT).is_file():
            raise DistillError(f"{short(model)} is a run directory without a {STUDENT} (did the run finish?)")
        return model / STUDENT
    return model


def load_source(model: Path, env: str | None, trust: bool) -> Source:
    """The student at ``model`` (a run directory, a zip, an rl-zoo folder) and its env; one line if it is no
    student export can take."""
    from distillcli.run.setup import model_stack

    if not model.exists():
        raise DistillError(f"model not found: {short(model)}")
    zip_path, checkpoint, stack, notices = model_stack(student_zip(model), env, trust)
    source = source_for(zip_path, checkpoint, stack, trust)
    source.notices = notices
    return source


def source_for(zip_path: Path, checkpoint: Checkpoint, stack: EnvStack, trust: bool, exportable: bool = True) -> Source:
    """The :class:`Source` of a checkpoint whose env is known; ``exportable``: refuse a policy that is not a
    distill student's kind (an SB3 actor-critic)."""
    from distillcli.export.graph import check_observations

    probe = stack.make(1, 0)
    try:
        if exportable:
            check_observations(probe.observation_space, stack.env_id)
        check_spaces(checkpoint, probe.observation_space, probe.action_space, stack.env_id)
        student = load_teacher(checkpoint, probe.observation_space, probe.action_space, CPU, trust=trust)
    finally:
        probe.close()
    if exportable and student.family.name not in EXPORTABLE:
        raise DistillError(
            f"{short(zip_path.name, 80)} holds a {student.algo} policy ({student.family.name}); export takes a "
            "distill student, an SB3 actor-critic (PPO, A2C, TRPO or MaskablePPO)"
        )
    raw = open_env(stack, 1, 0)
    try:
        raw_space = raw.observation_space
    finally:
        raw.close()
    run_dir = zip_path.parent
    summary = read_json(run_dir / SUMMARY) if (run_dir / CONFIG).is_file() else {}
    config = read_json(run_dir / CONFIG) if summary else {}
    return Source(zip_path, checkpoint, student, stack, raw_space, summary, config)


def open_env(stack: EnvStack, n_envs: int, seed: int, *, render: bool = False) -> VecEnv:
    """The stack's env, channel-last (no VecTransposeImage: SB3's predict and the graph both transpose), with the
    frozen VecNormalize on top where there is no frame stack above it, so the raw observations stay readable.
    ``render``: frames in ``rgb_array`` mode, for videos."""
    kwargs = {**stack.env_kwargs, "render_mode": "rgb_array"} if render else stack.env_kwargs
    base = replace(stack, env_kwargs=kwargs, normalization=None, frame_stack=0)
    venv = base.make(n_envs, seed, transpose=False)
    if stack.normalization is not None:
        venv = stack.normalization.apply(venv)
    if stack.frame_stack:
        venv = VecFrameStack(venv, stack.frame_stack)
    return venv


def views(venv: VecEnv, obs: Any) -> tuple[np.ndarray, np.ndarray]:
    """(raw, normalised) of the observations ``venv`` just returned."""
    if isinstance(venv, VecNormalize):
        return np.asarray(venv.get_original_obs()), np.asarray(obs)
    return np.asarray(obs), np.asarray(obs)


def env_masks(venv: VecEnv) -> np.ndarray:
    """Each env's flat ``action_masks()`` (what MaskablePPO's predict and the graph's mask input take)."""
    try:
        raw = venv.env_method("action_masks")
    except AttributeError:
        raise DistillError("a MaskablePPO policy needs an environment with an action_masks() method") from None
    return np.stack([np.asarray(m, dtype=bool).reshape(-1) for m in raw])


def episodes_returns(
    stack: EnvStack, policy: Policy, episodes: int, seed: int, masked: bool, max_envs: int = 16
) -> list[float]:
    """The protocol of :func:`distillcli.run.evaluate.evaluate` (each env a fixed share of the episodes, Monitor's
    returns) for a numpy policy."""
    n_envs = max(1, min(episodes, max_envs))
    venv = open_env(stack, n_envs, seed)
    targets = np.array([(episodes + i) // n_envs for i in range(n_envs)])
    counts = np.zeros(n_envs, dtype=int)
    returns: list[float] = []
    steps = 0
    try:
        obs = venv.reset()
        while (counts < targets).any():
            steps += n_envs
            if steps > MAX_EVAL_STEPS:
                raise DistillError(f"{episodes} evaluation episodes did not end within {MAX_EVAL_STEPS:,} env steps")
            raw, normalised = views(venv, obs)
            actions = policy(raw, normalised, env_masks(venv) if masked else None)
            obs, _, dones, infos = venv.step(actions)
            for i in np.flatnonzero(dones):
                if counts[i] < targets[i] and "episode" in infos[i]:
                    returns.append(float(infos[i]["episode"]["r"]))
                    counts[i] += 1
    finally:
        venv.close()
    return returns


@dataclass
class Observations:
    """Observations from the env, both views, and the masks the env gave with them."""

    raw: np.ndarray
    normalised: np.ndarray
    masks: np.ndarray | None


def collect(source: Source, count: int, seed: int, n_envs: int = 8, explore: float = 0.25) -> Observations:
    """``count`` observations from the env, along the student's own trajectories with a share ``explore`` of
    random actions (so the states are varied); masked envs follow the student's valid actions only."""
    venv = open_env(source.stack, n_envs, seed)
    rng = np.random.default_rng(seed)
    space = venv.action_space
    space.seed(seed)
    raws: list[np.ndarray] = []
    normals: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    act = source.predict()
    try:
        obs = venv.reset()
        while len(raws) * n_envs < count:
            raw, normalised = views(venv, obs)
            mask = env_masks(venv) if source.masked else None
            raws.append(raw.copy())
            normals.append(normalised.copy())
            if mask is not None:
                masks.append(mask)
            actions = np.asarray(act(raw, normalised, mask))
            if mask is None:
                for i in np.flatnonzero(rng.random(n_envs) < explore):
                    actions[i] = space.sample()
            obs, *_ = venv.step(actions)
    finally:
        venv.close()
    return Observations(
        np.concatenate(raws)[:count],
        np.concatenate(normals)[:count],
        np.concatenate(masks)[:count] if masks else None,
    )
