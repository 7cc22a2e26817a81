"""One trainer for every method: the paper's Equation 1.

    g = E_{tau ~ q} [ sum_t  -grad log pi_th(a_t | s_t) * Rhat_t  +  grad l(s_t) ],   Rhat_t = sum_{i>=t} rhat_i

A method (``distillcli.methods.Method``) supplies q, l and rhat; this module collects a segment with q,
turns rhat into pseudo-returns and advantages (discount ``gamma``, a baseline, optional GAE), and descends
the surrogate whose gradient is g. With one epoch and one minibatch the surrogate's gradient is exactly
Eq. 1's estimate; further epochs reuse the segment with PPO's clipped probability ratio on the score term
(equal to Eq. 1 at the first step, where the ratio is 1). Nothing here knows a method's name.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import Tensor

from distillcli.choices import Baseline, Control, EpisodeEnds
from distillcli.distributions import ActionDist
from distillcli.methods import Method
from distillcli.objectives import ObjectiveOptions, Terms
from distillcli.rollout import Collector, PolicyFn, Rollout, masked


class Optimizer(Protocol):
    """What the loop needs of an optimiser: ``torch.optim`` ones, or the student's flat Adam."""

    def zero_grad(self, set_to_none: bool = ...) -> None: ...
    def step(self) -> object: ...


@dataclass(frozen=True)
class Schedule:
    """A value that moves linearly from ``start`` to ``end`` over training ("0.5" or "1.0:0.0")."""

    start: float
    end: float

    @classmethod
    def parse(cls, text: str | float) -> Schedule:
        if isinstance(text, int | float):
            return cls(float(text), float(text))
        parts = text.split(":")
        if len(parts) not in (1, 2):
            raise ValueError(f"expected a number or START:END, got {text!r}")
        values = [float(p) for p in parts]
        return cls(values[0], values[-1])

    def __call__(self, progress: float) -> float:
        return self.start + (self.end - self.start) * min(max(progress, 0.0), 1.0)

    def __str__(self) -> str:
        return f"{self.start:g}" if self.start == self.end else f"{self.start:g}:{self.end:g}"


@dataclass(frozen=True)
class UpdateOptions:
    gae_lambda: float = 0.5
    baseline: Baseline = "critic"
    epochs: int = 4
    minibatch_size: int = 256
    max_grad_norm: float = 0.5
    value_coef: float = 0.5
    # A pure per-state loss stops passing over a segment once its excess loss (the loss less its per-state minimum:
    # the KL to the teacher, for the distillation cross-entropy) is below this many nats: the student already
    # matches the teacher there, and further passes would only cost time. 0: every epoch.
    converged: float = 0.0
    # How pseudo-returns treat an episode's end: "absorb" (Table 1 literally: nothing after the end counts),
    # "continue" (the reset state follows, as in one continuing process), or "auto": continue for methods
    # without environment reward, absorb for those with it. Under "absorb" a sum of per-state losses is
    # smallest for the shortest episode, which pays a student to fail in environments like CartPole.
    episode_ends: EpisodeEnds = "auto"


# --- Eq. 1, as pure functions (also used by the exact-gradient tests) -------------------------------------

_GAE_MATRIX_LIMIT = 1 << 20  # elements of the [T, T, N] matrix below which GAE is computed in one pass


def discounted_advantages(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    episode_ends: Tensor,
    gamma: float,
    lam: float,
) -> Tensor:
    """GAE(lambda) over a [T, N] segment; lambda = 1 gives the Monte-Carlo return minus ``values``.

    ``next_values`` is the bootstrap value of s_{t+1} (zeroed here where the episode terminated); the
    recursion stops at every episode end, so a truncated episode bootstraps from its real last state.
    """
    alive = 1.0 - terminated.float()
    carry = (1.0 - episode_ends.float()) * (gamma * lam)
    deltas = rewards + gamma * alive * next_values - values
    steps = rewards.shape[0]
    if steps * steps * deltas[0].numel() <= _GAE_MATRIX_LIMIT:
        # A_t = sum_{k>=t} (prod_{t<=j<k} carry_j) delta_k, all t at once: a short segment's recursion would
        # cost more ops (T of them) than the whole [T, T, N] product matrix.
        upper = torch.ones(steps, steps, dtype=torch.bool, device=rewards.device).triu()
        shape = (steps, steps, *([1] * (rewards.dim() - 1)))
        factors = torch.where(upper.view(shape), carry.unsqueeze(0), torch.ones_like(carry).unsqueeze(0))
        products = torch.cumprod(factors, dim=1)  # [t, j] = prod_{t<=i<=j} carry_i for j >= t
        weights = torch.cat([torch.ones_like(products[:, :1]), products[:, :-1]], dim=1) * upper.view(shape)
        return (weights * deltas.unsqueeze(0)).sum(dim=1)
    advantages = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(steps)):
        running = torch.addcmul(deltas[t], carry[t], running, out=advantages[t])  # one op per step
    return advantages


@dataclass
class Targets:
    """What a segment contributes to every minibatch: fixed before the student moves."""

    old_log_probs: Tensor  # [T, N]
    pseudo_rewards: Tensor | None  # rhat, [T, N]
    advantages: Tensor | None  # Rhat_t minus the baseline, [T, N]
    value_targets: Tensor | None  # what the critic regresses to, [T, N]
    kl_teacher_student: float  # mean KL(pi || pi_th) over the segment's states, before the update


def reward_terms(rollout: Rollout, student: PolicyFn, options: ObjectiveOptions) -> tuple[Terms, Tensor, Tensor]:
    """Terms at s_t with their next-state terms, from the (current, detached) student; plus V_th(s_t), V_th(s_{t+1})."""
    steps, n_envs = rollout.shape
    with torch.no_grad():  # one forward over the segment's states and the episodes' final states
        states = rollout.obs.reshape(-1, *rollout.obs.shape[2:])
        dist_flat, values_flat = student(torch.cat([states, rollout.final_obs]))
        assert values_flat is not None
        rows = states.shape[0]
        dist_all = dist_flat[:rows].map(lambda p: p.reshape(steps + 1, n_envs, *p.shape[1:]))
        dist_final, values_final = dist_flat[rows:], values_flat[rows:]
        values_all = values_flat[:rows].reshape(steps + 1, n_envs)
    # A Gaussian's log_std is a parameter held by reference, not computed: detach so no target keeps a graph.
    dist_all, dist_final = masked(dist_all, rollout.masks).detach(), dist_final.detach()
    next_actions = torch.cat([rollout.actions[1:], rollout.actions[-1:]])  # last row is never used
    zeros = torch.zeros_like(rollout.env_rewards)
    teacher_next_values = (
        rollout.next_state(rollout.teacher_values, rollout.teacher_final_values)
        if rollout.teacher_values is not None and rollout.teacher_final_values is not None
        else None
    )
    student_next_values = rollout.next_state(values_all, values_final)
    nxt = Terms(
        student=dist_all.map2(dist_final, rollout.next_state),
        teacher=rollout.teacher.map2(rollout.teacher_final, rollout.next_state),
        actions=next_actions,
        env_rewards=zeros,
        log_ratio=zeros,
        student_values=student_next_values,
        teacher_values=teacher_next_values,
        options=options,
    )
    terms = Terms(
        student=dist_all[:steps],
        teacher=rollout.teacher[:steps],
        actions=rollout.actions,
        env_rewards=rollout.env_rewards,
        log_ratio=zeros,
        student_values=values_all[:steps],
        teacher_values=None if rollout.teacher_values is None else rollout.teacher_values[:steps],
        options=options,
        next=nxt,
        ended=rollout.terminated,
        next_action_known=rollout.next_action_known,
    )
    return terms, values_all[:steps], student_next_values


def segment_targets(
    method: Method,
    rollout: Rollout,
    student: PolicyFn,
    options: ObjectiveOptions,
    update: UpdateOptions,
) -> Targets:
    """Pseudo-rewards rhat, pseudo-returns Rhat and advantages for one segment (no gradient)."""
    mode = update.episode_ends
    if mode == "continue" or (mode == "auto" and not method.uses_env_reward):
        rollout = rollout.as_continuing()
    terms, values, next_values = reward_terms(rollout, student, options)
    old_log_probs = terms.student.log_prob(rollout.actions)
    kl = float(terms.teacher.kl(terms.student).mean())
    if method.reward is None:
        return Targets(old_log_probs, None, None, None, kl)
    with torch.no_grad():
        rewards = method.reward(terms)
        baseline = values
        if method.bootstrap == "teacher-value":
            # Prop. 3's TD error uses the teacher's value on both sides: r + gamma V_pi(s') - V_pi(s) is the
            # teacher's advantage, so the update is useful from the first step (a fresh critic is not).
            assert terms.next is not None and terms.next.teacher_values is not None
            assert terms.teacher_values is not None
            next_values, baseline = terms.next.teacher_values, terms.teacher_values
        ends = rollout.episode_ends

        def advantage(lam: float) -> Tensor:
            return discounted_advantages(rewards, baseline, next_values, rollout.terminated, ends, options.gamma, lam)

        if method.returns == "td":
            advantages = advantage(0.0)  # one-step target r_t + gamma V(s_{t+1})
            value_targets = advantages + baseline
        elif update.baseline == "critic":
            advantages = advantage(update.gae_lambda)
            value_targets = advantages + baseline
        else:
            value_targets = advantage(1.0) + baseline  # Monte-Carlo Rhat, bootstrapped at segment cuts
            advantages = value_targets - value_targets.mean() if update.baseline == "mean" else value_targets
    return Targets(old_log_probs, rewards, advantages, value_targets, kl)


def eq1_surrogate(
    method: Method,
    terms: Terms,
    advantages: Tensor | None,
    value_targets: Tensor | None,
    value_coef: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-sample surrogate whose gradient is Eq. 1's: score-function term + per-state loss (+ critic loss)."""
    zeros = torch.zeros_like(terms.log_ratio)
    per_state_loss = method.loss(terms) if method.loss is not None else zeros
    score = zeros
    value_loss = zeros
    if method.reward is not None:
        assert advantages is not None and value_targets is not None
        ratio = terms.log_ratio.exp()
        eps = terms.options.clip_range
        # -grad log pi_th * Rhat at ratio 1; PPO's clip keeps later epochs on the same segment honest.
        score = -torch.min(ratio * advantages, ratio.clamp(1.0 - eps, 1.0 + eps) * advantages)
        value_loss = 0.5 * (terms.student_values - value_targets).pow(2)
    total = score + per_state_loss + value_coef * value_loss
    return total, {"loss": per_state_loss, "score": score, "value_loss": value_loss}


@dataclass
class SegmentInputs:
    """Eq. 1's per-step inputs of one segment, flattened to its T * N states: what every minibatch (and the plain
    one-epoch estimator) takes its rows from. Built once per segment, by :meth:`of`, for ``update`` and for
    ``segment_surrogate`` alike, so the studies and the exact tests run the same code as ``distill run``."""

    obs: Tensor
    teacher: ActionDist
    actions: Tensor
    env_rewards: Tensor
    teacher_values: Tensor | None
    masks: Tensor | None
    old_log_probs: Tensor
    advantages: Tensor | None
    value_targets: Tensor | None

    @classmethod
    def of(cls, rollout: Rollout, targets: Targets) -> SegmentInputs:
        steps, n = rollout.shape

        def flat(x: Tensor) -> Tensor:
            return x[:steps].reshape(steps * n, *x.shape[2:])

        return cls(
            obs=flat(rollout.obs),
            teacher=rollout.teacher[:steps].map(lambda p: p.reshape(steps * n, *p.shape[2:])),
            actions=flat(rollout.actions),
            env_rewards=rollout.env_rewards.reshape(-1),
            teacher_values=None if rollout.teacher_values is None else flat(rollout.teacher_values),
            masks=None if rollout.masks is None else flat(rollout.masks),
            old_log_probs=targets.old_log_probs.reshape(-1),
            advantages=None if targets.advantages is None else targets.advantages.reshape(-1),
            value_targets=None if targets.value_targets is None else targets.value_targets.reshape(-1),
        )

    def __len__(self) -> int:
        return int(self.env_rewards.shape[0])

    def rows(self, index: Tensor | None, scored: bool = True) -> SegmentInputs:
        """A minibatch (None: the whole segment, as it is). Without a score term (``scored=False``) only what a
        per-state loss reads is gathered: the states, the teacher and the masks."""
        if index is None:
            return self

        def pick(x: Tensor | None) -> Tensor | None:
            return None if x is None else x[index]

        return SegmentInputs(
            obs=self.obs[index],
            teacher=self.teacher[index],
            actions=self.actions[index] if scored else self.actions,
            env_rewards=self.env_rewards[index] if scored else self.env_rewards,
            teacher_values=pick(self.teacher_values),
            masks=pick(self.masks),
            old_log_probs=self.old_log_probs[index] if scored else self.old_log_probs,
            advantages=pick(self.advantages),
            value_targets=pick(self.value_targets),
        )

    def surrogate(
        self, method: Method, dist: ActionDist, values: Tensor | None, options: ObjectiveOptions, value_coef: float
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. 1's per-sample surrogate on these rows, given the student's ``dist`` and ``values`` on ``obs``
        (``values`` may be None for a method without a score term: no critic is trained then)."""
        if self.masks is not None:
            dist = masked(dist, self.masks)
        if method.reward is None:
            # A pure per-state loss: Eq. 1 is grad l(s_t) alone. It reads the states' two policies (and, for the
            # hard-label loss, the teacher's mode), never the actions taken or a value.
            assert method.loss is not None
            zero = torch.zeros((), device=self.obs.device)
            terms = Terms(dist, self.teacher, self.actions, self.env_rewards, zero, zero, self.teacher_values, options)
            loss = method.loss(terms)
            return loss, {"loss": loss}
        assert values is not None
        terms = Terms(
            student=dist,
            teacher=self.teacher,
            actions=self.actions,
            env_rewards=self.env_rewards,
            log_ratio=dist.log_prob(self.actions) - self.old_log_probs,
            student_values=values,
            teacher_values=self.teacher_values,
            options=options,
        )
        return eq1_surrogate(method, terms, self.advantages, self.value_targets, value_coef)


def segment_surrogate(
    method: Method,
    rollout: Rollout,
    targets: Targets,
    dist: ActionDist,
    values: Tensor,
    options: ObjectiveOptions,
    value_coef: float,
) -> Tensor:
    """Eq. 1's per-step surrogate over a whole segment at once, [T, N] (one epoch, no minibatches: the plain
    estimator). ``dist`` and ``values`` are the student's on the segment's T * N states, with gradients."""
    steps, n = rollout.shape
    total, _ = SegmentInputs.of(rollout, targets).surrogate(method, dist, values, options, value_coef)
    return total.view(steps, n)


def clip_grad_norm(parameters: list[torch.nn.Parameter], max_norm: float) -> None:
    """``clip_grad_norm_``; for the student's one flat tensor, in three ops instead of eight."""
    if len(parameters) != 1 or parameters[0].grad is None:
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        return
    grad = parameters[0].grad
    grad.mul_((max_norm / (torch.linalg.vector_norm(grad) + 1e-6)).clamp_(max=1.0))


# --- the loop -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvSchedule:
    """How many environments collect each segment: ``start``, doubled every ``every`` segments up to ``final``.

    Early on the number of updates matters, not the env steps: a student that starts from scratch improves with
    every update, and 8 environments give an update every 8 x n_steps env steps where 64 give one every 64 x n_steps.
    Once the student is close, many environments share each network call (throughput). The count is a function of
    the env steps done, so a resumed run continues with the count it stopped at.
    """

    start: int
    final: int
    every: int
    n_steps: int

    def envs_at(self, steps: int) -> int:
        if self.start <= 0 or self.every <= 0:
            return self.final
        n, done = min(self.start, self.final), 0
        while n < self.final:
            done += self.every * n * self.n_steps
            if steps < done:
                return n
            n = min(2 * n, self.final)
        return self.final


@dataclass
class LoopSettings:
    total_steps: int
    n_steps: int  # segment length per environment
    control: Control
    teacher_share: Schedule  # probability of acting with the teacher under control "mix"
    reward_weight: Schedule
    objective: ObjectiveOptions
    update: UpdateOptions
    envs: EnvSchedule | None = None  # None: the collector's environments throughout
    lr: Schedule | None = None  # the optimiser's step size along the budget (None: left as it is)


def set_lr(optimizer: Optimizer, lr: float) -> None:
    """The step size of the student's flat Adam (``lr``) or of a torch optimiser (its parameter groups)."""
    groups = getattr(optimizer, "param_groups", None)
    if groups is not None:
        for group in groups:
            group["lr"] = lr
    else:
        optimizer.lr = lr  # type: ignore[attr-defined]


class Diverged(RuntimeError):
    """A loss or a parameter became NaN or infinite; ``steps`` is how far the last good student got."""

    def __init__(self, message: str, steps: int = 0) -> None:
        super().__init__(message)
        self.steps = steps


def train(
    method: Method,
    collector: Collector,
    student: PolicyFn,
    parameters: list[torch.nn.Parameter],
    optimizer: Optimizer,
    settings: LoopSettings,
    on_update: Callable[[dict[str, float]], None],
    start_steps: int = 0,
) -> int:
    """Run Eq. 1 updates until ``settings.total_steps`` env steps; return the env steps taken."""
    steps = start_steps
    recent_returns: deque[float] = deque(maxlen=20)
    started = time.perf_counter()
    while steps < settings.total_steps:
        if settings.envs is not None:
            collector.grow_to(settings.envs.envs_at(steps))
        progress = steps / settings.total_steps
        if settings.lr is not None:
            set_lr(optimizer, settings.lr(progress))
        options = replace(settings.objective, reward_weight=settings.reward_weight(progress))
        share = settings.teacher_share(progress)
        rollout = collector.collect(settings.n_steps, settings.control, student, share)
        per_segment = rollout.env_rewards.numel()
        steps += per_segment
        recent_returns.extend(rollout.episode_returns)
        last_good = [parameter.detach().clone() for parameter in parameters]
        try:
            metrics = update(method, rollout, student, parameters, optimizer, options, settings.update)
        except Diverged as error:
            # Keep the last good student: the caller saves it and reports where training broke.
            with torch.no_grad():
                for parameter, good in zip(parameters, last_good, strict=True):
                    parameter.copy_(good)
            raise Diverged(f"{error} in the update ending at env step {steps}", steps - per_segment) from None
        metrics.update(
            env_steps=float(steps),
            wall_seconds=time.perf_counter() - started,
            episode_return=float(sum(recent_returns) / len(recent_returns)) if recent_returns else math.nan,
            teacher_share=share if settings.control == "mix" else math.nan,
            reward_weight=options.reward_weight,
        )
        on_update(metrics)
    return steps


def segment_floor(method: Method, inputs: SegmentInputs, options: ObjectiveOptions) -> float:
    """The mean over the segment's states of the per-state loss's minimum (the teacher's entropy for Hx(pi||pi_th);
    0 for a loss without a known minimum): what the loss would be were the student the teacher."""
    if method.loss is None or method.loss.minimum is None:
        return 0.0
    # A minimum reads only the teacher (and the options); the teacher stands in for the student it does not read.
    zero = torch.zeros(())
    teacher = inputs.teacher
    terms = Terms(teacher, teacher, inputs.actions, inputs.env_rewards, zero, zero, inputs.teacher_values, options)
    return float(method.loss.minimum(terms).mean())


def update(
    method: Method,
    rollout: Rollout,
    student: PolicyFn,
    parameters: list[torch.nn.Parameter],
    optimizer: Optimizer,
    options: ObjectiveOptions,
    settings: UpdateOptions,
) -> dict[str, float]:
    """One Eq. 1 update (several epochs of minibatches) on a segment; returns the segment's metrics."""
    targets = segment_targets(method, rollout, student, options, settings)
    inputs = SegmentInputs.of(rollout, targets)
    scored = method.reward is not None
    actor: Callable[[Tensor], ActionDist] | None = getattr(student, "actor", None)
    batch = len(inputs)
    minibatch = min(settings.minibatch_size, batch)
    # Summed as tensors and read once at the end: a float() per minibatch costs more than a small model's step.
    sums: Tensor | None = None
    keys: list[str] = []
    n_minibatches = 0
    floor = segment_floor(method, inputs, options) if settings.converged > 0 and not scored else None
    epochs, per_epoch = 0, math.ceil(batch / minibatch)
    for epochs in range(1, settings.epochs + 1):  # noqa: B007 (the passes taken are reported)
        epoch_loss = torch.zeros((), device=inputs.obs.device) if floor is not None else None
        # One minibatch per epoch takes the segment as it is: gathering rows in a new order would change nothing.
        order = torch.randperm(batch, device=inputs.obs.device) if minibatch < batch else None
        for begin in range(0, batch, minibatch):
            rows = inputs.rows(None if order is None else order[begin : begin + minibatch], scored)
            if actor is not None and not scored:
                dist, values = actor(rows.obs), None  # no critic to train: the actor's forward alone
            else:
                dist, values = student(rows.obs)
            total, parts = rows.surrogate(method, dist, values, options, settings.value_coef)
            loss = total.mean()
            optimizer.zero_grad(set_to_none=False)  # in place: a student's gradients are views of one buffer
            loss.backward()  # type: ignore[no-untyped-call]
            clip_grad_norm(parameters, settings.max_grad_norm)
            optimizer.step()
            n_minibatches += 1
            keys = list(parts)
            part_means = torch.stack([value.detach().mean() for value in parts.values()])
            sums = part_means if sums is None else sums + part_means
            if epoch_loss is not None:
                epoch_loss += loss.detach()
        # One read per epoch: the mean loss over the epoch's minibatches covers every state of the segment once.
        if floor is not None and epoch_loss is not None and float(epoch_loss) / per_epoch - floor < settings.converged:
            break
    # A NaN loss makes NaN gradients and parameters: checked once per segment (train() then restores the last
    # good student), not with a synchronising check per minibatch.
    totals = [] if sums is None else sums.tolist()
    means = {key: value / max(n_minibatches, 1) for key, value in zip(keys, totals, strict=True)}
    if not all(math.isfinite(value) for value in means.values()):
        raise Diverged("the loss became NaN or infinite")
    if not all(bool(torch.isfinite(parameter).all()) for parameter in parameters):
        raise Diverged("a student parameter became NaN or infinite")
    metrics = {key: means.get(key, 0.0) for key in ("loss", "score", "value_loss")}
    metrics["kl_teacher_student"] = targets.kl_teacher_student
    metrics["epochs"] = float(epochs)
    if targets.pseudo_rewards is not None:
        metrics["pseudo_reward"] = float(targets.pseudo_rewards.mean())
    return metrics
