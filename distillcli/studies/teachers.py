"""Tabular teachers for the grid worlds: Q-learning, softmax(Q / T), noisy and adversarial teachers, exact values."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from distillcli.gridworld import GridBatch


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


def action_values(batch: GridBatch, q_moves: Tensor) -> Tensor:
    """Q over all ``n_actions`` actions from Q over the four moves (extra actions repeat a move or stay put)."""
    n_actions = batch.options.n_actions
    actions = torch.arange(n_actions, device=q_moves.device)
    if batch.options.extra_actions == "repeat" or n_actions == 4:
        return q_moves[:, actions % 4]
    # Staying put: the intended move keeps the agent here, the noise moves it as usual.
    values = q_moves.max(-1).values
    stay = batch.reward + (1.0 - batch.options.reset) * (~batch.terminal).float() * values
    eta = batch.options.noise
    q_stay = (1.0 - eta) * stay + eta * q_moves.mean(-1)  # noise: a uniformly random move, valued by Q
    q_full = q_stay.unsqueeze(-1).expand(-1, n_actions).clone()
    q_full[:, :4] = q_moves
    return q_full


def softmax_policy(q: Tensor, temperature: float) -> Tensor:
    """softmax(Q / T) as probabilities; T = 0 is greedy, ties (equivalent actions) sharing the mass."""
    if temperature == 0:
        best = (q >= q.max(-1, keepdim=True).values - 1e-6).float()
        return best / best.sum(-1, keepdim=True)
    return torch.softmax(q / temperature, -1)


def noisy_policy(policy: Tensor, share: float, seed: int) -> Tensor:
    """Replace the teacher's distribution by uniform on a random ``share`` of each MDP's states."""
    if share <= 0:
        return policy
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    replaced = torch.rand(policy.shape[0], generator=generator, device=policy.device) < share
    uniform = torch.full_like(policy, 1.0 / policy.shape[-1])
    return torch.where(replaced.unsqueeze(-1), uniform, policy)


def adversarial_q(batch: GridBatch) -> Tensor:
    """Q* of the task with rewards negated: greedy on it is the policy that minimises return (Fig. 6's adversary)."""
    return replace(batch, reward=-batch.reward).optimal_q()
