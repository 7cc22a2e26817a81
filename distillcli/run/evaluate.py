"""Stage 3 of a run, and ``distill eval``: returns, the normalised score, agreement and KL against the teacher,
parameter counts and inference latency, and loading a model to evaluate on its own."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import VecEnv
from torch import Tensor

from distillcli.distributions import gumbel_max
from distillcli.envs import EnvStack
from distillcli.errors import DistillError
from distillcli.export import SUFFIXES
from distillcli.rollout import PolicyFn, masked, open_session, read_masks, to_env_actions, uniform_actions, uses_masks
from distillcli.sb3.teacher import check_spaces, load_teacher
from distillcli.stats import return_ratio, score

EVAL_SEED_OFFSET = 10_000  # evaluation episodes never share seeds with training environments
MAX_EVAL_STEPS = 10_000_000  # env steps of one evaluation: an env whose episodes never end is refused, not awaited


@dataclass
class EvalResult:
    returns: list[float]
    kl_teacher_student: float  # mean KL(pi || pi_th) over the evaluated policy's own states
    kl_student_teacher: float  # mean KL(pi_th || pi) over the same states
    agreement: float  # fraction of those states where the deterministic actions coincide

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))


@torch.inference_mode()
def evaluate(
    policy: PolicyFn,
    make_env: Callable[[int], VecEnv],
    episodes: int,
    device: torch.device,
    *,
    teacher: PolicyFn | None = None,
    deterministic: bool = True,
    max_envs: int = 16,
) -> EvalResult:
    """Run ``episodes`` episodes of ``policy``, batched over up to ``max_envs`` environments.

    Each environment runs a fixed share of the episodes (as SB3's ``evaluate_policy``), so short episodes are
    not over-counted. Returns come from the Monitor wrapper, i.e. the unnormalised environment reward.
    A recurrent policy or teacher carries its state per environment; a masked one acts on the valid actions,
    and agreement and KL then compare the masked distributions.
    """
    n_envs = max(1, min(episodes, max_envs))
    venv = make_env(n_envs)
    targets = np.array([(episodes + i) // n_envs for i in range(n_envs)])
    counts = np.zeros(n_envs, dtype=int)
    returns: list[float] = []
    kl_ts: list[Tensor] = []
    kl_st: list[Tensor] = []
    agree: list[Tensor] = []
    obs = venv.reset()
    steps = 0
    use_masks = uses_masks(policy) or uses_masks(teacher)
    policy_session = open_session(policy, n_envs)
    teacher_session = None if teacher is None else open_session(teacher, n_envs)
    starts = torch.ones(n_envs, device=device)  # 1.0 where an episode starts: a recurrent state is zeroed
    try:
        while (counts < targets).any():
            steps += n_envs
            if steps > MAX_EVAL_STEPS:
                raise DistillError(f"{episodes} evaluation episodes did not end within {MAX_EVAL_STEPS:,} env steps")
            obs_tensor = torch.as_tensor(obs, device=device)
            masks = read_masks(venv, device) if use_masks else None
            dist, _ = policy(obs_tensor) if policy_session is None else policy_session.step(obs_tensor, starts)
            dist = masked(dist, masks)
            action = dist.mode() if deterministic else dist.sample()
            active = torch.as_tensor(counts < targets)
            if teacher is not None:
                if teacher_session is None:
                    teacher_dist, _ = teacher(obs_tensor)
                else:
                    teacher_dist, _ = teacher_session.step(obs_tensor, starts)
                teacher_dist = masked(teacher_dist, masks)
                dist_cpu = dist.map(lambda p: p.cpu())
                teacher_cpu = teacher_dist.map(lambda p: p.cpu())
                kl_ts.append(teacher_cpu.kl(dist_cpu)[active])
                kl_st.append(dist_cpu.kl(teacher_cpu)[active])
                same = (teacher_cpu.mode() == dist_cpu.mode()).reshape(n_envs, -1).all(-1)
                agree.append(same[active].float())
            obs, _, dones, infos = venv.step(to_env_actions(action, venv.action_space))
            starts = torch.as_tensor(dones, dtype=torch.float32, device=device)
            for i in np.flatnonzero(dones):
                if counts[i] < targets[i] and "episode" in infos[i]:
                    returns.append(float(infos[i]["episode"]["r"]))
                    counts[i] += 1
    finally:
        venv.close()

    def mean_of(chunks: list[Tensor]) -> float:
        return float(torch.cat(chunks).mean()) if chunks else float("nan")

    return EvalResult(returns, mean_of(kl_ts), mean_of(kl_st), mean_of(agree))


def latency_us(policy: BasePolicy, observation: np.ndarray, repeats: int = 200) -> float:
    """Median wall time of one ``policy.predict`` on a single observation, in microseconds (NaN where predict
    fails, as it does on a policy whose outputs are not finite: a measurement is never worth a lost run)."""
    times = []
    try:
        policy.predict(observation, deterministic=True)
        for _ in range(repeats):
            start = time.perf_counter()
            policy.predict(observation, deterministic=True)
            times.append(time.perf_counter() - start)
    except Exception:
        return math.nan
    return statistics.median(times) * 1e6


@torch.inference_mode()
def random_returns(make_env: Callable[[int], VecEnv], episodes: int, seed: int, max_envs: int = 16) -> list[float]:
    """Episode returns of a uniform-random policy (over the valid actions, where the env has masks) under the same
    protocol as :func:`evaluate`: the zero of the normalised score. The global random state is left as it was."""
    n_envs = max(1, min(episodes, max_envs))
    venv = make_env(n_envs)
    targets = np.array([(episodes + i) // n_envs for i in range(n_envs)])
    counts = np.zeros(n_envs, dtype=int)
    returns: list[float] = []
    steps = 0
    cpu = torch.device("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            venv.reset()
            masked_env = _has_masks(venv)
            while (counts < targets).any():
                steps += n_envs
                if steps > MAX_EVAL_STEPS:
                    raise DistillError(
                        f"a random policy's {episodes} episodes did not end within {MAX_EVAL_STEPS:,} steps"
                    )
                if masked_env:
                    valid = read_masks(venv, cpu)
                    logits = torch.zeros(valid.shape).masked_fill(~valid, -1e9)
                    actions = gumbel_max(logits)  # one valid action per row (per dimension if MultiDiscrete)
                else:
                    actions = uniform_actions(venv.action_space, n_envs, cpu)
                _, _, dones, infos = venv.step(to_env_actions(actions, venv.action_space))
                for i in np.flatnonzero(dones):
                    if counts[i] < targets[i] and "episode" in infos[i]:
                        returns.append(float(infos[i]["episode"]["r"]))
                        counts[i] += 1
        finally:
            venv.close()
    return returns


def _has_masks(venv: VecEnv) -> bool:
    try:
        venv.env_method("action_masks", indices=[0])
    except AttributeError:
        return False
    return True


_RANDOM_RETURNS: dict[tuple[str, int, int], float] = {}


def random_return(stack: EnvStack, episodes: int, seed: int) -> float:
    """The uniform-random policy's mean return on this env stack, episodes and evaluation seed; computed once per
    process for each (stack, episodes, seed): a sweep or the corpus benchmark asks many times."""
    key = (json.dumps(stack.describe(), sort_keys=True, default=str), episodes, seed)
    if key not in _RANDOM_RETURNS:
        _RANDOM_RETURNS[key] = float(np.mean(random_returns(lambda n: stack.make(n, seed), episodes, seed)))
    return _RANDOM_RETURNS[key]


def evaluate_model(
    model_path: str,
    teacher_path: str | None,
    env: str | None,
    episodes: int,
    stochastic: bool,
    device_name: str,
    seed: int,
    trust: bool = False,
    *,
    load_best: bool = False,
    load_checkpoint: int = 0,
    latency: bool = False,
    video: Path | None = None,
    video_episodes: int = 1,
) -> dict[str, Any]:
    """``distill eval``: the model's return and score and, with a teacher, how close it is to the teacher.

    The environment is the teacher's with ``--teacher``; otherwise the one the model's run directory, rl-zoo
    folder or file name says (:func:`distillcli.run.setup.model_stack`). An exported file (``.onnx``, ``.pt``)
    is evaluated beside its student.zip (:mod:`distillcli.export.evaluate`); ``latency`` adds the latency table of
    every runtime, ``video`` records ``video_episodes`` episodes (the teacher beside the student, with one).
    """
    from distillcli.run.setup import model_stack, prepare, resolve_device, say

    if episodes <= 0 or episodes > 100_000:
        raise DistillError(f"--episodes must be between 1 and 100000, got {episodes}")
    if teacher_path is None and (load_best or load_checkpoint):
        raise DistillError("--load-best and --load-checkpoint pick the teacher's model: give --teacher too")
    path = Path(model_path)
    if video is not None:
        from distillcli.export.video import check_video_path, prepare_rendering

        check_video_path(video, video_episodes)
        prepare_rendering()  # before any env (MuJoCo reads MUJOCO_GL when it is first imported)
    extras: dict[str, Any] = {"latency": latency, "video": video, "video_episodes": video_episodes}
    if path.suffix.lower() in SUFFIXES.values():  # an exported file: evaluated beside its student.zip
        from distillcli.export.evaluate import evaluate_exported

        if load_best or load_checkpoint:
            raise DistillError("--load-best and --load-checkpoint pick an SB3 model, not an exported file")
        return evaluate_exported(path, teacher_path, env, episodes, seed, trust, device_name=device_name, **extras)
    model, student_checkpoint, stack, notices = model_stack(path, env, trust)
    setup = None
    if teacher_path is not None:
        setup = prepare(
            teacher_path, env, device_name, trust=trust, load_best=load_best, load_checkpoint=load_checkpoint
        )
        stack, device, notices = setup.stack, setup.device, setup.notices
    else:
        device = resolve_device(device_name)
    say(notices)
    env_id = stack.env_id
    probe = stack.make(1, 0)
    try:
        check_spaces(student_checkpoint, probe.observation_space, probe.action_space, env_id)
        student = load_teacher(student_checkpoint, probe.observation_space, probe.action_space, device, trust=trust)
        observation = np.asarray(probe.observation_space.sample())
    finally:
        probe.close()

    def eval_env(n: int) -> VecEnv:
        return stack.make(n, seed + EVAL_SEED_OFFSET)

    deterministic = not stochastic
    teacher = setup.teacher if setup is not None else None
    result = evaluate(student, eval_env, episodes, device, teacher=teacher, deterministic=deterministic)
    random = random_return(stack, episodes, seed + EVAL_SEED_OFFSET)
    report: dict[str, Any] = {
        "model": str(model),
        "env_id": env_id,
        "env_mapped_from": stack.mapped_from,
        "episodes": episodes,
        "deterministic": deterministic,
        "return_mean": result.mean,
        "return_std": result.std,
        "random_return": random,
        "student_params": student.n_params,
        "student_latency_us": latency_us(student.policy, observation),
    }
    if setup is not None and teacher is not None:
        teacher_result = evaluate(teacher, eval_env, episodes, device, deterministic=deterministic)
        report.update(
            teacher=str(setup.checkpoint.path),
            teacher_return_mean=teacher_result.mean,
            teacher_return_std=teacher_result.std,
            score=score(result.mean, teacher_result.mean, random),
            return_ratio=return_ratio(result.mean, teacher_result.mean),
            agreement=result.agreement,
            kl_teacher_student=result.kl_teacher_student,
            kl_student_teacher=result.kl_student_teacher,
            teacher_params=teacher.n_params,
            param_ratio=student.n_params / teacher.n_params,
            teacher_latency_us=latency_us(teacher.policy, observation),
        )
    if latency or video is not None:
        from distillcli.export.evaluate import zip_extras

        report.update(zip_extras(model, student_checkpoint, stack, teacher, trust, seed=seed, **extras))
    return report
