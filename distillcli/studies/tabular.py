"""Tabular softmax students on a batch of grid worlds, trained by the same Eq. 1 code as ``distill run``.

The student is a table of logits ``theta[s]`` (and a table of values for its critic), one row per state of every
MDP in the batch, so one :class:`~distillcli.rollout.Rollout` carries all MDPs at once and the trainer's own
``segment_targets`` and ``segment_surrogate`` turn it into the update. Nothing here knows a method's name.

Settings that change neither the method nor the table's width train as one batch: the batch's MDPs can be
several copies of the same MDPs, each copy with its own teacher (a temperature, a noise level, an adversary),
its own control policy (``controls``, one per column) and its own estimator of Rhat (``estimators``: the
columns are split for ``segment_targets`` only, one call per estimator, and share one surrogate and step).

Every shape is fixed by the batch, and nothing here reads a tensor back to the host during training: the
collector draws a segment's random numbers in one call and samples by inverse CDF, the rollout carries no
per-episode lists, and the step is a lazy Adam written with static shapes (``RowOptimizer``). The one host sync
left per iteration is the trainer's ``float(kl)`` in ``segment_targets`` (see docs/paper.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from distillcli.distributions import ActionDist, Categorical
from distillcli.gridworld import GridBatch
from distillcli.methods import Control, Method
from distillcli.objectives import ObjectiveOptions
from distillcli.rollout import Rollout
from distillcli.studies.teachers import effect_counts
from distillcli.trainer import Targets, UpdateOptions, segment_surrogate, segment_targets

Estimator = Literal["monte-carlo", "td"]


def gather_rows(table: Tensor, index: Tensor) -> Tensor:
    """``table[index]`` for an index of any shape, by ``index_select`` (several times faster than advanced
    indexing on the CPU for these small rows)."""
    return table.index_select(0, index.reshape(-1)).view(*index.shape, *table.shape[1:])


def log_softmax(logits: Tensor) -> Tensor:
    """``log_softmax`` over the last dimension; for a handful of actions composed from elementwise ops, which
    the CPU runs several times faster than its fused kernel on rows of four (the same values up to rounding)."""
    if logits.shape[-1] > 16:
        return torch.log_softmax(logits, -1)
    shifted = logits - logits.detach().amax(-1, keepdim=True)
    return shifted - shifted.exp().sum(-1, keepdim=True).log()


CONTROL_CODES: dict[str, int] = {"student": 0, "teacher": 1, "uniform": 2}


@dataclass(frozen=True)
class TabularSettings:
    iterations: int
    envs: int = 2  # environments per MDP
    segment: int = 32  # steps per environment per iteration (one update each)
    lr: float = 0.05  # step on the policy table (the loss is a per-step mean within each MDP)
    critic_lr: float = 0.05  # step on the critic table
    optimizer: Literal["sgd", "adam"] = "adam"  # adam: lazy Adam, moments of visited rows only
    estimator: Estimator = "td"  # Rhat: the critic's one-step TD target, or the Monte-Carlo return
    reward_weight: float = 1.0
    gamma: float = 0.99
    episode_ends: Literal["auto", "continue", "absorb"] = "auto"  # as `distill run --episode-ends`
    log_prob_floor: float = -20.0
    evaluations: int = 30  # exact evaluations along training (curve points), evenly spaced
    early_evaluations: int = 0  # more, spaced geometrically before the first of those
    seed: int = 0

    def update_options(self, estimator: Estimator | None = None) -> UpdateOptions:
        lam = 1.0 if (estimator or self.estimator) == "monte-carlo" else 0.0
        return UpdateOptions(gae_lambda=lam, baseline="critic", epochs=1, episode_ends=self.episode_ends)

    def objective(self) -> ObjectiveOptions:
        return ObjectiveOptions(gamma=self.gamma, reward_weight=self.reward_weight)

    def marks(self) -> set[int]:
        """The iterations at which the student is evaluated."""
        marks = set(torch.linspace(0, self.iterations, self.evaluations).round().long().tolist())
        if self.early_evaluations > 0 and self.evaluations > 1:
            first = self.iterations / (self.evaluations - 1)
            early = torch.logspace(0, torch.log10(torch.tensor(first)).item(), self.early_evaluations + 1)[:-1]
            marks |= set(early.round().long().tolist())
        return marks


class TabularTeacher:
    """A fixed tabular policy with its exact value function.

    The policy is given per effect ([B * S, N_EFFECTS], the probability of one action of each effect): the
    teacher of |A| = 4000 costs what the four moves cost until a segment asks for its distribution on the
    segment's states, which is built there (a gather) and nowhere else.
    """

    def __init__(self, batch: GridBatch, per_effect: Tensor, settings: TabularSettings) -> None:
        self.batch = batch
        self._shared = batch.shared_effect
        self._moves_only = self._shared is not None and torch.equal(self._shared, torch.arange(4, device=batch.device))
        counts = effect_counts(batch).to(per_effect.device)
        present = counts > 0
        self.per_effect = per_effect.float()
        # Categorical.from_logits(log pi, floor) over all actions, done per effect: clamp each action's
        # log-probability at the floor, then renormalise over every action (counts of each effect).
        floored = per_effect.double().clamp_min(1e-30).log().clamp(min=settings.log_prob_floor)
        weighted = torch.where(present, floored + counts.double().clamp_min(1).log(), -torch.inf)
        log_probs = floored - torch.logsumexp(weighted, -1, keepdim=True)
        self.log_probs = torch.where(present, log_probs, torch.zeros_like(log_probs)).float()
        self._log_probs4 = self.log_probs[:, :4].contiguous()
        self._probs4 = self.per_effect[:, :4].contiguous()
        # V_pi on the student's own discount: gamma per step on top of the resets (Prop. 2 and 3 compare
        # the teacher's value with the student's critic and bootstrap from it).
        self.values = batch.evaluate_effects(per_effect.double() * counts.double(), gamma=settings.gamma).float()

    def _per_action(self, table: Tensor, states: Tensor) -> Tensor:
        """A per-effect table's rows ``states`` as one value per action [..., A]."""
        if self._moves_only:
            return gather_rows(self._probs4 if table is self.per_effect else self._log_probs4, states)
        rows = gather_rows(table, states)
        if self._shared is not None:
            return rows[..., self._shared]
        effect = gather_rows(self.batch.effects, torch.div(states, self.batch.n_states, rounding_mode="floor"))
        return rows.gather(-1, effect)

    def probabilities(self, states: Tensor) -> Tensor:
        """pi(.|s) over all actions for ``states`` [...] -> [..., A]."""
        return self._per_action(self.per_effect, states)

    def log_probabilities(self, states: Tensor) -> Tensor:
        """log pi(.|s) over all actions, floored and renormalised as the students see them: [..., A]."""
        return self._per_action(self.log_probs, states)

    def __call__(self, obs: Tensor) -> tuple[ActionDist, Tensor | None]:
        return Categorical(self.log_probabilities(obs)), gather_rows(self.values, obs)


class TabularStudent:
    """softmax(theta[s]) with a tabular critic V_th(s); both start at zero (uniform policy).

    Training looks rows up by index (an update touches only its segment's states: the tables of the
    action-space study hold millions of logits) and steps them with :class:`RowOptimizer`, which keeps Adam's
    moments beside each table. ``cdf``, when the student acts, holds each row's cumulative action probabilities
    for the collector, refreshed for the rows a step changed, so acting is a lookup, not a softmax per step.
    """

    def __init__(self, n_rows: int, n_actions: int, device: torch.device, acting: bool = True) -> None:
        self.logits = torch.zeros(n_rows, n_actions, device=device)
        self.values = torch.zeros(n_rows, device=device)
        steps = torch.arange(1, n_actions + 1, device=device, dtype=torch.float32) / n_actions
        self.cdf = steps.expand(n_rows, -1).contiguous() if acting else None

    def __call__(self, obs: Tensor) -> tuple[ActionDist, Tensor | None]:
        return Categorical(log_softmax(gather_rows(self.logits, obs))), gather_rows(self.values, obs)

    def probabilities(self) -> Tensor:
        return torch.softmax(self.logits, -1)


class RowOptimizer:
    """Adam (or SGD) on the rows of tables that a step's gradient touches, as ``torch.optim.SparseAdam``
    (``SGD``) computes it on an embedding's sparse gradient: moments of other rows untouched, one step count
    per table for the bias correction. Written with static shapes.

    ``step`` takes each table's gathered rows and the gradient with respect to them; rows may repeat, and
    their gradients are summed, as a coalesced sparse gradient would be. Repeated rows are found by a write
    into a per-row workspace instead of a sort, and every repeat of a row computes the same new row, so no
    shape depends on the data and nothing is read back to the host.
    """

    def __init__(
        self,
        kind: Literal["sgd", "adam"],
        tables: Sequence[Tensor],
        lrs: Sequence[float],
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.kind = kind
        self.tables = list(tables)
        self.lrs = list(lrs)
        self.betas = betas
        self.eps = eps
        adam = kind == "adam"
        self.moments = [(torch.zeros_like(t), torch.zeros_like(t)) if adam else None for t in self.tables]
        self.steps = [0] * len(self.tables)  # per table, as SparseAdam counts steps per parameter
        self._owner = torch.zeros(self.tables[0].shape[0], dtype=torch.long, device=self.tables[0].device)

    @torch.no_grad()
    def step(self, index: Tensor, rows: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
        """Update ``rows[i]`` (= ``tables[i][index]``) in place and write them back; ``grads[i]`` is None
        where table i took no part in the loss (a critic without a reward channel)."""
        beta1, beta2 = self.betas
        size = index.shape[0]
        # One position per row (whichever write lands; every repeat then reads the same one): the row's leader.
        self._owner.index_copy_(0, index, torch.arange(size, device=index.device))
        leader = self._owner.index_select(0, index)
        for i, (table, moments, param, grad, lr) in enumerate(
            zip(self.tables, self.moments, rows, grads, self.lrs, strict=True)
        ):
            if grad is None:
                continue
            self.steps[i] += 1
            flat = grad.reshape(size, -1)
            total = torch.zeros_like(flat).index_add_(0, leader, flat).index_select(0, leader).view_as(param)
            if moments is None:
                param.add_(total, alpha=-lr)
            else:
                avg, avg_sq = moments[0].index_select(0, index), moments[1].index_select(0, index)
                avg.lerp_(total, 1.0 - beta1)
                avg_sq.lerp_(total.square_(), 1.0 - beta2)
                step_size = lr * (1.0 - beta2 ** self.steps[i]) ** 0.5 / (1.0 - beta1 ** self.steps[i])
                param.addcdiv_(avg, avg_sq.sqrt().add_(self.eps), value=-step_size)
                moments[0].index_copy_(0, index, avg)
                moments[1].index_copy_(0, index, avg_sq)
            table.index_copy_(0, index, param)


class TabularCollector:
    """``envs`` copies of every MDP in the batch, stepped together; column ``b * envs + e``.

    ``controls`` gives the control policy q of every column (one name for all, or one per column).
    """

    def __init__(
        self,
        batch: GridBatch,
        teacher: TabularTeacher,
        envs: int,
        generator: torch.Generator,
        controls: Control | Sequence[Control] = "student",
    ) -> None:
        self.batch = batch
        self.teacher = teacher
        self.generator = generator
        self.starts = batch.start.repeat_interleave(envs)
        self.states = self.starts.clone()
        self.n_actions = batch.n_actions
        names = [controls] * self.starts.shape[0] if isinstance(controls, str) else list(controls)
        if len(names) != self.starts.shape[0] or any(c not in CONTROL_CODES for c in names):
            raise ValueError(f"controls: one of {', '.join(CONTROL_CODES)} per column ({self.starts.shape[0]})")
        self.kinds = set(names)
        self.codes = torch.tensor([CONTROL_CODES[c] for c in names], device=batch.device).unsqueeze(-1)
        self.no_final = torch.zeros(0, dtype=torch.long, device=batch.device)
        self._uniform_cdf = torch.arange(1, self.n_actions + 1, device=batch.device) / self.n_actions
        self._arrived = torch.empty(0, self.starts.shape[0], dtype=torch.long, device=batch.device)
        shared = batch.shared_effect
        self._moves_only = shared is not None and torch.equal(shared, torch.arange(4, device=batch.device))

    @torch.no_grad()
    def collect(self, steps: int, student: TabularStudent) -> Rollout:
        n = self.states.shape[0]
        device = self.states.device
        uniforms = torch.rand((4, steps, n), generator=self.generator, device=device)  # action, noise, move, reset
        if self._arrived.shape[0] != steps:
            self._arrived = torch.empty((steps, n), dtype=torch.long, device=device)
        noisy, random_move, resets = self.batch.draws(uniforms[1:])
        obs = torch.empty((steps + 1, n), dtype=torch.long, device=device)
        actions = torch.empty((steps, n), dtype=torch.long, device=device)
        states = self.states
        obs[0] = states
        for t in range(steps):
            action = self._act(states, student, uniforms[0, t])
            effect = action if self._moves_only else self.batch.effect_of(states, action)
            nxt = self.batch.transition(states, effect, noisy[t], random_move[t])
            states = torch.where(self.batch.terminal.index_select(0, nxt) | resets[t], self.starts, nxt)
            actions[t], obs[t + 1] = action, states
            self._arrived[t] = nxt
        self.states = states
        arrived = self._arrived
        ended = gather_rows(self.batch.terminal, arrived) | resets
        rewards = gather_rows(self.batch.reward, arrived)
        teacher_dist, teacher_values = self.teacher(obs)
        assert teacher_values is not None
        # Every episode end here is a termination (a terminal cell or the reset state), after which no method
        # looks at s_{t+1} (its terms are multiplied by 1 - terminated), so the segment carries no final
        # observations: the rows after an end hold the next episode's start, and no shape depends on the data.
        return Rollout(
            obs=obs,
            actions=actions,
            env_rewards=rewards,
            terminated=ended,
            truncated=torch.zeros_like(ended),
            final_obs=self.no_final,
            final_index=self.no_final,
            teacher=teacher_dist,
            teacher_values=teacher_values,
            teacher_final=teacher_dist[0][:0],
            teacher_final_values=teacher_values[0][:0],
        )

    def _act(self, states: Tensor, student: TabularStudent, uniform: Tensor) -> Tensor:
        """One action per column by inverse CDF from ``uniform`` (static shapes, no host sync)."""
        if self.kinds == {"uniform"}:
            return (uniform * self.n_actions).long().clamp_(max=self.n_actions - 1)
        cdf: Tensor | None = None
        if "student" in self.kinds:
            assert student.cdf is not None
            cdf = gather_rows(student.cdf, states)
        if "teacher" in self.kinds:
            teacher = self.teacher.probabilities(states).cumsum(-1)
            cdf = teacher if cdf is None else torch.where(self.codes == CONTROL_CODES["teacher"], teacher, cdf)
        assert cdf is not None
        if "uniform" in self.kinds:
            cdf = torch.where(self.codes == CONTROL_CODES["uniform"], self._uniform_cdf, cdf)
        # the last cumulative probability is 1 up to rounding: scale the uniform by it
        return (cdf < uniform.unsqueeze(-1) * cdf[:, -1:]).sum(-1).clamp_(max=self.n_actions - 1)


def column_targets(
    method: Method,
    rollout: Rollout,
    student: TabularStudent,
    options: ObjectiveOptions,
    groups: Sequence[tuple[slice, UpdateOptions]],
) -> Targets:
    """The trainer's ``segment_targets``, called once per group of columns with that group's options (the
    estimators of the imperfect-teacher study), and joined along the columns."""
    if len(groups) == 1:
        return segment_targets(method, rollout, student, options, groups[0][1])
    parts = [segment_targets(method, _columns(rollout, cols), student, options, update) for cols, update in groups]

    def join(name: str) -> Tensor | None:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values, dim=1)

    widths = [cols.stop - cols.start for cols, _ in groups]
    kl = sum(p.kl_teacher_student * w for p, w in zip(parts, widths, strict=True)) / sum(widths)
    return Targets(join("old_log_probs"), join("pseudo_rewards"), join("advantages"), join("value_targets"), kl)  # type: ignore[arg-type]


def _columns(rollout: Rollout, cols: slice) -> Rollout:
    """The rollout's columns ``cols`` (views; the tabular rollouts carry no final observations)."""
    return replace(
        rollout,
        obs=rollout.obs[:, cols],
        actions=rollout.actions[:, cols],
        env_rewards=rollout.env_rewards[:, cols],
        terminated=rollout.terminated[:, cols],
        truncated=rollout.truncated[:, cols],
        teacher=rollout.teacher[:, cols],
        teacher_values=None if rollout.teacher_values is None else rollout.teacher_values[:, cols],
    )


def update(
    method: Method,
    rollout: Rollout,
    student: TabularStudent,
    optimizer: RowOptimizer,
    settings: TabularSettings,
    groups: Sequence[tuple[slice, UpdateOptions]] | None = None,
) -> None:
    """One Eq. 1 step on the tables: the trainer's pseudo-returns and surrogate over the segment."""
    options = settings.objective()
    n_columns = rollout.shape[1]
    groups = groups or [(slice(0, n_columns), settings.update_options())]
    targets = column_targets(method, rollout, student, options, groups)
    steps = rollout.shape[0]
    index = rollout.obs[:steps].reshape(-1)
    logits = student.logits.index_select(0, index).requires_grad_(True)
    values = student.values.index_select(0, index).requires_grad_(True)
    total = segment_surrogate(method, rollout, targets, Categorical(log_softmax(logits)), values, options, 1.0)
    # Mean over the segment's steps of each MDP (MDPs have disjoint rows, so they do not interact).
    (total.sum() / (settings.envs * steps)).backward()  # type: ignore[no-untyped-call]
    optimizer.step(index, [logits.detach(), values.detach()], [logits.grad, values.grad])
    if student.cdf is not None:
        with torch.no_grad():
            student.cdf.index_copy_(0, index, log_softmax(logits.detach()).exp_().cumsum_(-1))


Evaluation = Callable[[int, TabularStudent], None]  # (iteration, student) -> record


def train_tabular(
    method: Method,
    batch: GridBatch,
    teacher: TabularTeacher,
    settings: TabularSettings,
    evaluate: Evaluation,
    control: Control | Sequence[Control] | None = None,
    estimators: Sequence[Estimator] | None = None,
) -> TabularStudent:
    """Train one tabular student per MDP of ``batch``; ``evaluate`` sees the student at the marked iterations.

    ``control`` overrides the method's control policy (one for all columns, or one per column); ``estimators``
    gives each MDP of the batch its own estimator of Rhat (default: ``settings.estimator`` for all).
    """
    generator = torch.Generator(device=batch.device).manual_seed(settings.seed)
    if isinstance(control, str) or control is None:
        controls: Control | list[Control] = control or method.control
    else:
        controls = [c for c in control for _ in range(settings.envs)]
    acting = "student" in ([controls] if isinstance(controls, str) else controls)
    student = TabularStudent(batch.n_mdps * batch.n_states, batch.n_actions, batch.device, acting)
    collector = TabularCollector(batch, teacher, settings.envs, generator, controls)
    tables, lrs = [student.logits, student.values], [settings.lr, settings.critic_lr]
    optimizer = RowOptimizer(settings.optimizer, tables, lrs)
    groups = None
    if estimators is not None:
        if len(estimators) != batch.n_mdps:
            raise ValueError(f"estimators: one per MDP of the batch ({batch.n_mdps}), got {len(estimators)}")
        groups = _estimator_groups(list(estimators), settings)
    marks = settings.marks()
    for iteration in range(settings.iterations + 1):
        if iteration in marks:
            evaluate(iteration, student)
        if iteration == settings.iterations:
            break
        rollout = collector.collect(settings.segment, student)
        update(method, rollout, student, optimizer, settings, groups)
    return student


def _estimator_groups(estimators: list[Estimator], settings: TabularSettings) -> list[tuple[slice, UpdateOptions]]:
    """Runs of consecutive MDPs with the same estimator, as column slices."""
    groups: list[tuple[slice, UpdateOptions]] = []
    begin = 0
    for index in range(1, len(estimators) + 1):
        if index == len(estimators) or estimators[index] != estimators[begin]:
            cols = slice(begin * settings.envs, index * settings.envs)
            groups.append((cols, settings.update_options(estimators[begin])))
            begin = index
    return groups
