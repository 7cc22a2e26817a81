"""Tabular teachers for the grid worlds: Q-learning, softmax(Q / T), noisy and adversarial teachers.

A teacher is a table [B * S, N_EFFECTS]: the probability of *one* action of each effect (move, stay, random
move) in every state. Actions with the same effect have the same Q and so the same probability, so this is
the whole policy however many actions there are; the |A| = 4000 teacher is never a dense [B * S, 4000] table.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from distillcli.gridworld import N_EFFECTS, RANDOM_MOVE, STAY, GridBatch


def q_learning(
    batch: GridBatch, steps: int, actors: int = 8, epsilon: float = 0.1, lr: float = 0.1, seed: int = 0
) -> Tensor:
    """Q(s, m) for the four moves by epsilon-greedy Q-learning, ``actors`` learners per MDP in parallel.

    Each learner restarts at a uniformly random free cell after every episode end (exploring starts) so that
    every reachable cell gets visited; the reset state is folded into the target as the discount 1 - reset.
    """
    generator = torch.Generator(device=batch.device).manual_seed(seed)
    n_mdps, n_states = batch.n_mdps, batch.n_states
    q = torch.zeros(n_mdps * n_states, 4, device=batch.device)
    # Each MDP's free, non-terminal cells first (a stable sort), so a uniform start is one index per learner.
    startable = (batch.free & ~batch.terminal).view(n_mdps, n_states)
    cells = torch.argsort((~startable).to(torch.int8), dim=-1, stable=True)
    counts = startable.sum(-1, keepdim=True)
    offsets = (torch.arange(n_mdps, device=batch.device) * n_states).unsqueeze(-1)

    def random_starts() -> Tensor:
        pick = (torch.rand(n_mdps, actors, generator=generator, device=batch.device) * counts).long()
        return cells.gather(1, pick) + offsets

    states = random_starts()
    discount = 1.0 - batch.options.reset
    for _ in range(steps):
        greedy = (q[states] + 1e-6 * torch.rand((*states.shape, 4), generator=generator, device=q.device)).argmax(-1)
        explore = torch.rand(states.shape, generator=generator, device=q.device) < epsilon
        moves = torch.where(explore, torch.randint(0, 4, states.shape, generator=generator, device=q.device), greedy)
        nxt, rewards, ended = batch.step(states, moves, generator, reset=False)
        target = rewards + discount * (~ended).float() * q[nxt].max(-1).values
        index = states * 4 + moves
        q.view(-1).index_add_(0, index.reshape(-1), (lr * (target - q.view(-1)[index])).reshape(-1))
        states = torch.where(ended, random_starts(), nxt)
    return q


def effect_counts(batch: GridBatch) -> Tensor:
    """[B * S, N_EFFECTS] float: how many actions have each effect, per state (the same for a whole MDP)."""
    per_mdp = torch.nn.functional.one_hot(batch.effects, N_EFFECTS).sum(1).float()  # [B, E]
    return per_mdp.repeat_interleave(batch.n_states, dim=0)


def effect_values(batch: GridBatch, q_moves: Tensor) -> Tensor:
    """Q of an action of each effect [B * S, N_EFFECTS], from Q over the four moves: staying puts the agent
    back on its own cell (the noise still moves it), a random move is worth the mean of the four."""
    values = q_moves.max(-1).values
    stay = batch.reward + (1.0 - batch.options.reset) * (~batch.terminal).float() * values
    eta = batch.options.noise
    mean = q_moves.mean(-1)
    q_stay = (1.0 - eta) * stay + eta * mean  # noise: a uniformly random move, valued by Q
    out = torch.empty(q_moves.shape[0], N_EFFECTS, dtype=q_moves.dtype, device=q_moves.device)
    out[:, :4] = q_moves
    out[:, STAY] = q_stay
    out[:, RANDOM_MOVE] = mean
    return out


def softmax_policy(batch: GridBatch, q: Tensor, temperature: float) -> Tensor:
    """softmax(Q / T) over all actions, as the probability of one action of each effect [B * S, N_EFFECTS];
    T = 0 is greedy, ties (equivalent actions) sharing the mass. ``q`` is per effect (:func:`effect_values`)."""
    counts = effect_counts(batch).to(q.dtype)
    present = counts > 0
    if temperature == 0:
        best_value = q.masked_fill(~present, -torch.inf).max(-1, keepdim=True).values
        best = ((q >= best_value - 1e-6) & present).to(q.dtype)
        return best / (best * counts).sum(-1, keepdim=True)
    logits = (q / temperature).masked_fill(~present, -torch.inf)
    norm = torch.logsumexp(logits + counts.clamp_min(1).log(), -1, keepdim=True)
    return torch.where(present, (logits - norm).exp(), torch.zeros_like(q))


def uniform_policy(batch: GridBatch) -> Tensor:
    return torch.full((batch.n_mdps * batch.n_states, N_EFFECTS), 1.0 / batch.n_actions, device=batch.device)


def noisy_policy(policy: Tensor, share: float, seed: int, n_actions: int) -> Tensor:
    """Replace the teacher's distribution by uniform on a random ``share`` of each MDP's states."""
    if share <= 0:
        return policy
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    replaced = torch.rand(policy.shape[0], generator=generator, device=policy.device) < share
    return torch.where(replaced.unsqueeze(-1), torch.full_like(policy, 1.0 / n_actions), policy)


def adversarial_q(batch: GridBatch) -> Tensor:
    """Q* of the task with rewards negated: greedy on it is the policy that minimises return (Fig. 6's adversary)."""
    return replace(batch, reward=-batch.reward).optimal_q()
