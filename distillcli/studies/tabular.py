"""Tabular softmax students on a batch of grid worlds, trained by the same Eq. 1 code as ``distill run``.

The student is a table of logits ``theta[s]`` (and a table of values for its critic), one row per state of every
MDP in the batch, so one :class:`~distillcli.rollout.Rollout` carries all MDPs at once and the trainer's own
``segment_targets`` and ``segment_surrogate`` turn it into the update. Nothing here knows a method's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from distillcli.distributions import ActionDist, Categorical
from distillcli.gridworld import GridBatch
from distillcli.methods import Control, Method
from distillcli.objectives import ObjectiveOptions
from distillcli.rollout import Rollout
from distillcli.trainer import UpdateOptions, segment_surrogate, segment_targets

Estimator = Literal["monte-carlo", "td"]


@dataclass(frozen=True)
class TabularSettings:
    iterations: int
    envs: int = 2  # environments per MDP
    segment: int = 32  # steps per environment per iteration (one update each)
    lr: float = 0.05  # step on the policy table (the loss is a per-step mean within each MDP)
    critic_lr: float = 0.05  # step on the critic table
    optimizer: Literal["sgd", "adam"] = "adam"  # adam: lazy (sparse) Adam, moments of visited rows only
    estimator: Estimator = "td"  # Rhat: the critic's one-step TD target, or the Monte-Carlo return
    reward_weight: float = 1.0
    gamma: float = 0.99
    episode_ends: Literal["auto", "continue", "absorb"] = "auto"  # as `distill run --episode-ends`
    log_prob_floor: float = -20.0
    evaluations: int = 30  # exact evaluations along training (curve points)
    seed: int = 0

    def update_options(self) -> UpdateOptions:
        lam = 1.0 if self.estimator == "monte-carlo" else 0.0
        return UpdateOptions(gae_lambda=lam, baseline="critic", epochs=1, episode_ends=self.episode_ends)

    def objective(self) -> ObjectiveOptions:
        return ObjectiveOptions(gamma=self.gamma, reward_weight=self.reward_weight)


class TabularTeacher:
    """A fixed tabular policy (probabilities per flat state) with its exact value function."""

    def __init__(self, batch: GridBatch, probabilities: Tensor, settings: TabularSettings) -> None:
        self.probabilities = probabilities
        log_probs = probabilities.clamp_min(1e-30).log()
        self.log_probs = Categorical.from_logits(log_probs, settings.log_prob_floor).logits
        # V_pi on the student's own discount: gamma per step on top of the resets (Prop. 2 and 3 compare
        # the teacher's value with the student's critic and bootstrap from it).
        self.values = batch.evaluate(probabilities, gamma=settings.gamma).to(probabilities.dtype)

    def __call__(self, obs: Tensor) -> tuple[ActionDist, Tensor | None]:
        return Categorical(self.log_probs[obs]), self.values[obs]


class TabularStudent:
    """softmax(theta[s]) with a tabular critic V_th(s); both start at zero (uniform policy).

    Rows are looked up as sparse embeddings, so an update touches only the states of its segment (the tables
    of the action-space study hold millions of logits).
    """

    def __init__(self, n_rows: int, n_actions: int, device: torch.device) -> None:
        self.logits = torch.zeros(n_rows, n_actions, device=device, requires_grad=True)
        self.values = torch.zeros(n_rows, 1, device=device, requires_grad=True)

    def __call__(self, obs: Tensor) -> tuple[ActionDist, Tensor | None]:
        index = obs.long()
        logits = F.embedding(index, self.logits, sparse=True)
        return Categorical.from_logits(logits), F.embedding(index, self.values, sparse=True).squeeze(-1)

    def probabilities(self) -> Tensor:
        return torch.softmax(self.logits.detach(), -1)


class TabularCollector:
    """``envs`` copies of every MDP in the batch, stepped together; column ``b * envs + e``."""

    def __init__(self, batch: GridBatch, teacher: TabularTeacher, envs: int, generator: torch.Generator) -> None:
        self.batch = batch
        self.teacher = teacher
        self.generator = generator
        self.starts = batch.start.repeat_interleave(envs)
        self.states = self.starts.clone()
        self.n_actions = batch.options.n_actions

    @torch.no_grad()
    def collect(self, steps: int, control: Control, student: TabularStudent) -> Rollout:
        obs, actions, rewards, ended = [self.states], [], [], []
        final_obs, final_index = [], []
        n = self.states.shape[0]
        for t in range(steps):
            action = self._act(control, student)
            nxt, reward, done = self.batch.step(self.states, action, self.generator)
            actions.append(action)
            rewards.append(reward)
            ended.append(done)
            final_obs.append(nxt[done])
            final_index.append(t * n + torch.nonzero(done).squeeze(-1))
            self.states = torch.where(done, self.starts, nxt)
            obs.append(self.states)
        obs_t = torch.stack(obs)
        final = torch.cat(final_obs)
        teacher_dist, teacher_values = self.teacher(obs_t)
        teacher_final, teacher_final_values = self.teacher(final)
        terminated = torch.stack(ended)
        return Rollout(
            obs=obs_t,
            actions=torch.stack(actions),
            env_rewards=torch.stack(rewards),
            terminated=terminated,
            truncated=torch.zeros_like(terminated),
            final_obs=final,
            final_index=torch.cat(final_index),
            teacher=teacher_dist,
            teacher_values=teacher_values,
            teacher_final=teacher_final,
            teacher_final_values=teacher_final_values,
        )

    def _act(self, control: Control, student: TabularStudent) -> Tensor:
        if control == "uniform":
            return torch.randint(
                0, self.n_actions, self.states.shape, generator=self.generator, device=self.states.device
            )
        if control == "teacher":
            probs = self.teacher.probabilities[self.states]
        else:
            probs = torch.softmax(student.logits.detach()[self.states], -1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)


def update(
    method: Method,
    rollout: Rollout,
    student: TabularStudent,
    optimizer: torch.optim.Optimizer,
    settings: TabularSettings,
) -> None:
    """One Eq. 1 step on the tables: the trainer's pseudo-returns and surrogate over the segment."""
    options = settings.objective()
    targets = segment_targets(method, rollout, student, options, settings.update_options())
    steps = rollout.shape[0]
    dist, values = student(rollout.obs[:steps].reshape(-1))
    assert values is not None
    total = segment_surrogate(method, rollout, targets, dist, values, options, value_coef=1.0)
    optimizer.zero_grad(set_to_none=True)
    # Mean over the segment's steps of each MDP (MDPs have disjoint rows, so they do not interact).
    (total.sum() / (settings.envs * steps)).backward()  # type: ignore[no-untyped-call]
    optimizer.step()


Evaluation = Callable[[int, Tensor], None]  # (iteration, student probabilities [B*S, A]) -> record


def train_tabular(
    method: Method,
    batch: GridBatch,
    teacher: TabularTeacher,
    settings: TabularSettings,
    evaluate: Evaluation,
    control: Control | None = None,
) -> TabularStudent:
    """Train one tabular student per MDP of ``batch``; ``evaluate`` sees the policy at evenly spaced iterations."""
    generator = torch.Generator(device=batch.device).manual_seed(settings.seed)
    student = TabularStudent(batch.reward.shape[0], batch.options.n_actions, batch.device)
    collector = TabularCollector(batch, teacher, settings.envs, generator)
    groups = [{"params": [student.logits], "lr": settings.lr}, {"params": [student.values], "lr": settings.critic_lr}]
    optimizer: torch.optim.Optimizer = (
        torch.optim.SGD(groups) if settings.optimizer == "sgd" else torch.optim.SparseAdam(groups)
    )
    method = replace(method, control=control or method.control)
    marks = set(torch.linspace(0, settings.iterations, settings.evaluations).round().long().tolist())
    for iteration in range(settings.iterations + 1):
        if iteration in marks:
            evaluate(iteration, student.probabilities())
        if iteration == settings.iterations:
            break
        rollout = collector.collect(settings.segment, method.control, student)
        update(method, rollout, student, optimizer, settings)
    return student
