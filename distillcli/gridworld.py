"""The paper's random grid worlds (appendix): generation, a batched tensor form, and a gymnasium environment.

A grid is ``size x size`` cells with one start cell in the centre and four moves (up, down, left, right); a move
off the grid or into a wall stays put. With probability ``1 - noise`` the intended move happens, otherwise one of
the four at random. Rewards belong to cells and are received on arrival; terminal cells end the episode; after
every step the episode also ends with probability ``reset`` (the paper's absorbing reset state), so returns are
finite and a policy's expected return is its value with discount ``1 - reset``.

Extra actions (the action-space study) act like the four moves (``repeat``: action ``a`` is move ``a % 4``, so
the MDP and its optimal value do not change), stay put (``noop``: the optimal value changes only where staying
beats every move) or make a uniformly random move (``random``: the optimal value does not change).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right
ExtraActions = Literal["repeat", "noop", "random"]
WALL, FREE, TERMINAL = 0, 1, 2
STAY, RANDOM_MOVE, N_EFFECTS = 4, 5, 6  # an action's effect: a move 0-3, stay put, or a uniformly random move


@dataclass(frozen=True)
class GridOptions:
    """Generation and dynamics of the random grid worlds; every default is documented in docs/paper.md."""

    size: int = 20
    wall_prob: float = 0.1  # each cell, row by row: a wall ...
    terminal_prob: float = 0.02  # ... or a terminal cell, reward drawn from terminal_rewards ...
    negative_prob: float = 0.04  # ... or an ordinary cell with reward -1 (calibrated: docs/paper.md)
    terminal_rewards: tuple[float, ...] = (-10.0, -5.0, 5.0, 10.0)
    negative_reward: float = -1.0
    noise: float = 0.1  # eta: probability that the move is replaced by a uniformly random one
    reset: float = 0.01  # probability, after each step, of the absorbing reset state (episode end)
    n_actions: int = 4
    extra_actions: ExtraActions = "repeat"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Layout:
    """One grid: cell kinds and rewards, row-major, plus the start cell."""

    rows: int
    cols: int
    kind: np.ndarray  # [rows * cols] of WALL / FREE / TERMINAL
    reward: np.ndarray  # [rows * cols]
    start: int

    @property
    def n_states(self) -> int:
        return self.rows * self.cols


def random_layout(options: GridOptions, rng: np.random.Generator, max_tries: int = 1000) -> Layout:
    """Walk the cells row by row; reject layouts where no positive terminal is reachable from the start."""
    n = options.size
    start = (n // 2) * n + n // 2
    for _ in range(max_tries):
        kind = np.full(n * n, FREE, dtype=np.int64)
        reward = np.zeros(n * n)
        for cell in range(n * n):
            u = rng.random()
            if u < options.wall_prob:
                kind[cell] = WALL
            elif u < options.wall_prob + options.terminal_prob:
                kind[cell] = TERMINAL
                reward[cell] = rng.choice(options.terminal_rewards)
            elif u < options.wall_prob + options.terminal_prob + options.negative_prob:
                reward[cell] = options.negative_reward
        kind[start], reward[start] = FREE, 0.0
        layout = Layout(n, n, kind, reward, start)
        if positive_terminal_reachable(layout):
            return layout
    raise ValueError(f"no layout with a reachable positive terminal in {max_tries} tries; raise terminal_prob")


def _neighbour(layout: Layout, cell: int, move: int) -> int:
    row, col = divmod(cell, layout.cols)
    r, c = row + MOVES[move][0], col + MOVES[move][1]
    if not (0 <= r < layout.rows and 0 <= c < layout.cols) or layout.kind[r * layout.cols + c] == WALL:
        return cell
    return r * layout.cols + c


def positive_terminal_reachable(layout: Layout) -> bool:
    seen, queue = {layout.start}, deque([layout.start])
    while queue:
        cell = queue.popleft()
        if layout.kind[cell] == TERMINAL:
            if layout.reward[cell] > 0:
                return True
            continue  # the episode ends here: nothing beyond is reachable through it
        for move in range(4):
            nxt = _neighbour(layout, cell, move)
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return False


def chain_layout(length: int, reward: float = 1.0, penalty: float = -1.0) -> Layout:
    """The 1-D chain of Fig. 6 as a one-row grid: penalty at the left end, reward at the right end, start in
    the middle; up and down stay put."""
    kind = np.full(length, FREE, dtype=np.int64)
    rewards = np.zeros(length)
    kind[0], kind[-1] = TERMINAL, TERMINAL
    rewards[0], rewards[-1] = penalty, reward
    return Layout(1, length, kind, rewards, length // 2)


def action_effects(n_actions: int, extra: ExtraActions) -> Tensor:
    """What each of ``n_actions`` actions does: a move (0-3), stay put (``STAY``) or a uniformly random move
    (``RANDOM_MOVE``). The first four actions are always the four moves."""
    actions = torch.arange(n_actions)
    if extra == "repeat":
        return actions % 4
    fill = STAY if extra == "noop" else RANDOM_MOVE
    return torch.where(actions < 4, actions, torch.full_like(actions, fill))


@dataclass
class GridBatch:
    """``B`` grid worlds as tensors, stepped together; states are flat indices ``b * S + s`` (one table row each).

    ``successor[b * S + s, m]`` is the flat state that move ``m`` leads to; ``effect[b, a]`` what action ``a``
    does in MDP ``b`` (a move, stay, a random move), so batches with different extra actions can be
    concatenated (:meth:`concat`). Every shape is fixed by the batch: stepping draws its random numbers in one
    call and never indexes by a mask, so nothing here waits on the device.
    """

    successor: Tensor  # [B * S, 4] long
    reward: Tensor  # [B * S]: received on arrival
    terminal: Tensor  # [B * S] bool
    free: Tensor  # [B * S] bool: not a wall (walls are never entered)
    start: Tensor  # [B] flat start states
    n_states: int  # S, per MDP
    options: GridOptions
    layouts: list[Layout] = field(default_factory=list)
    effect: Tensor | None = None  # [B, A] long; None: action_effects(options) for every MDP
    shape: tuple[int, int] = (0, 0)  # (rows, cols) of every layout

    def __post_init__(self) -> None:
        if self.effect is None:
            effects = action_effects(self.options.n_actions, self.options.extra_actions).to(self.reward.device)
            self.effect = effects.expand(self.n_mdps, -1)
        if self.shape == (0, 0):
            self.shape = (self.layouts[0].rows, self.layouts[0].cols) if self.layouts else (1, self.n_states)

    @property
    def n_mdps(self) -> int:
        return int(self.start.shape[0])

    @property
    def n_actions(self) -> int:
        return int(self.effects.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.reward.device

    @property
    def effects(self) -> Tensor:
        assert self.effect is not None
        return self.effect

    @property
    def shared_effect(self) -> Tensor | None:
        """The one effect map [A] when every MDP has the same (an expanded tensor), else None."""
        effect = self.effects
        return effect[0] if effect.stride(0) == 0 or self.n_mdps == 1 else None

    @classmethod
    def from_layouts(cls, layouts: list[Layout], options: GridOptions, device: torch.device | str = "cpu") -> GridBatch:
        n_states = layouts[0].n_states
        successor, reward, kind = [], [], []
        for b, layout in enumerate(layouts):
            if layout.n_states != n_states:
                raise ValueError("every layout of a batch needs the same number of cells")
            table = [[_neighbour(layout, s, m) + b * n_states for m in range(4)] for s in range(n_states)]
            successor.append(torch.tensor(table, dtype=torch.long))
            reward.append(torch.as_tensor(layout.reward, dtype=torch.float32))
            kind.append(torch.as_tensor(layout.kind))
        kinds = torch.cat(kind)
        return cls(
            successor=torch.cat(successor).to(device),
            reward=torch.cat(reward).to(device),
            terminal=(kinds == TERMINAL).to(device),
            free=(kinds != WALL).to(device),
            start=torch.tensor([layout.start + b * n_states for b, layout in enumerate(layouts)], device=device),
            n_states=n_states,
            options=options,
            layouts=layouts,
            shape=(layouts[0].rows, layouts[0].cols),
        )

    @classmethod
    def random(cls, n_mdps: int, options: GridOptions, seed: int, device: torch.device | str = "cpu") -> GridBatch:
        rng = np.random.default_rng(seed)
        return cls.from_layouts([random_layout(options, rng) for _ in range(n_mdps)], options, device)

    @classmethod
    def concat(cls, batches: list[GridBatch]) -> GridBatch:
        """One batch holding every MDP of ``batches`` in order (the same cells and number of actions; the extra
        actions may differ): settings that change only the teacher or the extra actions train as one batch."""
        first = batches[0]
        if any(b.n_states != first.n_states or b.n_actions != first.n_actions for b in batches):
            raise ValueError("concatenated batches need the same number of cells and actions")
        offsets = [0]
        for b in batches[:-1]:
            offsets.append(offsets[-1] + b.n_mdps * b.n_states)
        effects = [b.effects for b in batches]
        shared = all(e.stride(0) == 0 for e in effects) and all(torch.equal(e[0], effects[0][0]) for e in effects)
        n_mdps = sum(b.n_mdps for b in batches)
        return cls(
            successor=torch.cat([b.successor + o for b, o in zip(batches, offsets, strict=True)]),
            reward=torch.cat([b.reward for b in batches]),
            terminal=torch.cat([b.terminal for b in batches]),
            free=torch.cat([b.free for b in batches]),
            start=torch.cat([b.start + o for b, o in zip(batches, offsets, strict=True)]),
            n_states=first.n_states,
            options=first.options,
            layouts=[layout for b in batches for layout in b.layouts],
            effect=effects[0][0].expand(n_mdps, -1) if shared else torch.cat([e.contiguous() for e in effects]),
            shape=first.shape,
        )

    def effect_of(self, states: Tensor, actions: Tensor) -> Tensor:
        """What ``actions`` do in the MDPs of ``states`` (same shape)."""
        shared = self.shared_effect
        if shared is not None:
            return shared[actions]
        return self.effects[torch.div(states, self.n_states, rounding_mode="floor"), actions]

    def step(
        self,
        states: Tensor,
        actions: Tensor,
        generator: torch.Generator | None = None,
        reset: bool = True,
        uniforms: Tensor | None = None,
    ) -> tuple[Tensor, ...]:
        """One step of every environment: (next states, rewards, episode ended); ``reset=False`` leaves the
        reset state out (Q-learning folds it into its discount), so only terminals end an episode.

        ``uniforms`` [3, *states.shape] are the step's random numbers (noise, random move, reset), drawn here
        in one call when not given.
        """
        if uniforms is None:
            uniforms = torch.rand((3, *states.shape), device=states.device, generator=generator)
        noisy, random_move, resets = self.draws(uniforms)
        nxt = self.transition(states, self.effect_of(states, actions), noisy, random_move)
        ended = self.terminal[nxt]
        if reset:
            ended = ended | resets
        return nxt, self.reward[nxt], ended

    def draws(self, uniforms: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Uniforms [3, ...] -> (the noise replaces the move, the random move, the reset state comes): drawn
        for a whole segment at once by the tabular collector."""
        random_move = (uniforms[1] * 4).long().clamp_(max=3)
        return uniforms[0] < self.options.noise, random_move, uniforms[2] < self.options.reset

    def transition(self, states: Tensor, effect: Tensor, noisy: Tensor, random_move: Tensor) -> Tensor:
        """Where ``effect`` takes ``states``, given the step's draws (:meth:`draws`)."""
        move = torch.where(noisy | (effect == RANDOM_MOVE), random_move, effect) if self._random else effect
        if not self._random:
            move = torch.where(noisy, random_move, move)
        if not self._stay:
            return self.successor.view(-1)[states * 4 + move]
        return torch.where(move == STAY, states, self.successor.view(-1)[states * 4 + move.clamp(max=3)])

    @property
    def _stay(self) -> bool:
        """Some action stays put (checked once per batch)."""
        return self._effect_flags()[0]

    @property
    def _random(self) -> bool:
        return self._effect_flags()[1]

    def _effect_flags(self) -> tuple[bool, bool]:
        flags = getattr(self, "_effect_flags_cache", None)
        if flags is None:
            effects = self.effects if self.shared_effect is None else self.shared_effect
            flags = (bool((effects == STAY).any()), bool((effects == RANDOM_MOVE).any()))
            object.__setattr__(self, "_effect_flags_cache", flags)
        return flags  # type: ignore[no-any-return]

    # --- exact quantities of a tabular policy -----------------------------------------------------------

    def effect_probabilities(self, policy: Tensor | None = None, logits: Tensor | None = None) -> Tensor:
        """[B * S, N_EFFECTS] float64: the probability of each effect (move, stay, random move) under a policy
        [B * S, A] given as probabilities or as logits (softmax taken here). Done a few MDPs at a time, so a
        table of millions of logits never gets a float64 (or a second float32) copy."""
        table = policy if policy is not None else logits
        assert table is not None
        n, n_actions = self.n_states, table.shape[-1]
        out = torch.empty(self.n_mdps, n, N_EFFECTS, dtype=torch.float64, device=table.device)
        per_chunk = max(1, (1 << 21) // (n * n_actions))
        shared = self.shared_effect
        for begin in range(0, self.n_mdps, per_chunk):
            end = min(begin + per_chunk, self.n_mdps)
            rows = table[begin * n : end * n].reshape(end - begin, n, n_actions)
            probs = rows.softmax(-1) if policy is None else rows
            effect = shared.expand(end - begin, -1) if shared is not None else self.effects[begin:end]
            onehot = torch.nn.functional.one_hot(effect, N_EFFECTS).to(probs.dtype)  # [b, A, E]
            out[begin:end] = torch.bmm(probs, onehot).double()
        return out.view(-1, N_EFFECTS)

    def realised_moves(self, effect_probs: Tensor) -> Tensor:
        """[..., N_EFFECTS] effect probabilities -> [..., 5] probabilities of the realised move (after the noise;
        4 = stay)."""
        intended = effect_probs[..., :5].clone()
        intended[..., :4] += effect_probs[..., RANDOM_MOVE : RANDOM_MOVE + 1] / 4.0
        eta = self.options.noise
        realised = (1.0 - eta) * intended
        realised[..., :4] += eta / 4.0
        return realised

    def move_probabilities(self, policy: Tensor) -> Tensor:
        """[B * S, A] action probabilities -> [B * S, 5] probabilities of the realised move; 4 = stay."""
        return self.realised_moves(self.effect_probabilities(policy))

    def _block_index(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Where each realised move of each state lands (cached: it depends on the layouts only): its local target
        [B, S, 5], the flat index into [B, R, C, C] of the moves within the row, and masks of the moves that
        reach the row above and below (always the cell straight above or below: a move goes to a neighbour or
        stays)."""
        cached = getattr(self, "_block_index_cache", None)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        cols = self.shape[1]
        n, b = self.n_states, self.n_mdps
        local = self.successor - (torch.arange(b, device=self.device) * n).repeat_interleave(n)[:, None]
        here = torch.arange(n, device=self.device).repeat(b)[:, None]
        targets = torch.cat([local, here], dim=-1).view(b, n, 5)
        cells = torch.arange(n, device=self.device).view(1, n, 1)
        source_row = torch.div(cells, cols, rounding_mode="floor")
        target_row = torch.div(targets, cols, rounding_mode="floor")
        within = target_row == source_row
        flat = (cells * cols + targets % cols) + (torch.arange(b, device=self.device) * n * cols).view(b, 1, 1)
        index = (
            targets,
            torch.where(within, flat, torch.zeros_like(flat)),
            target_row < source_row,
            target_row > source_row,
        )
        object.__setattr__(self, "_block_index_cache", index)
        return index

    def _blocks(self, realised: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The transition matrix of each MDP in block-tridiagonal form, one block per grid row: the moves within
        a row [B, R, C, C] and, as vectors [B, R, C], the probabilities of moving to the cell straight above
        and straight below (the only cells of the neighbouring rows a move reaches); plus the expected reward
        on arrival [B, R, C]."""
        rows, cols = self.shape
        b, n = self.n_mdps, self.n_states
        targets, flat, up, down = self._block_index()
        probs = realised.view(b, n, 5).to(torch.float64)
        within = torch.zeros(b * n * cols, dtype=torch.float64, device=self.device)
        within.index_add_(0, flat.reshape(-1), torch.where(up | down, torch.zeros_like(probs), probs).reshape(-1))
        above = torch.where(up, probs, torch.zeros_like(probs)).sum(-1).view(b, rows, cols)
        below = torch.where(down, probs, torch.zeros_like(probs)).sum(-1).view(b, rows, cols)
        reward = self.reward.double().view(b, n)
        arrival = (probs * reward.gather(1, targets.reshape(b, -1)).view(b, n, 5)).sum(-1)
        return within.view(b, rows, cols, cols), above, below, arrival.view(b, rows, cols)

    def _continuing(self) -> Tensor:
        return ((1.0 - self.options.reset) * (~self.terminal).double()).view(self.n_mdps, *self.shape)

    def evaluate_effects(self, effect_probs: Tensor, gamma: float = 1.0) -> Tensor:
        """V_pi for every state from the policy's effect probabilities [B * S, N_EFFECTS]: V = M (r + gamma C V),
        solved exactly per MDP (float64) as a block-tridiagonal system (a grid row per block)."""
        within, above, below, arrival = self._blocks(self.realised_moves(effect_probs))
        # G[s, s'] = gamma M[s, s'] C(s'): C belongs to the arrival state s' (a column of M).
        scale = gamma * self._continuing()  # [B, R, C]
        eye = torch.eye(self.shape[1], dtype=torch.float64, device=self.device)
        diag = eye - within * scale.unsqueeze(-2)
        lower = -above * torch.roll(scale, 1, dims=1)
        upper = -below * torch.roll(scale, -1, dims=1)
        return block_tridiagonal_solve(lower, diag, upper, arrival).reshape(-1)

    def evaluate(self, policy: Tensor, gamma: float = 1.0) -> Tensor:
        """V_pi for every state, exactly (float64); policy [B * S, A] probabilities.

        ``gamma = 1`` is the expected undiscounted return (the reset state ends episodes); a student that
        discounts its pseudo-returns by ``gamma`` on top of the resets needs its teacher's V_pi with that gamma.
        """
        return self.evaluate_effects(self.effect_probabilities(policy), gamma)

    def optimal_q(self, tol: float = 1e-5, max_iter: int = 5000) -> Tensor:
        """Q*(s, m) for the four moves, by value iteration (the reference the teachers are measured against)."""
        values = torch.zeros_like(self.reward)
        eye = torch.zeros(4, N_EFFECTS, device=self.device)
        eye[:, :4] = torch.eye(4, device=self.device)
        deterministic = self.realised_moves(eye)  # [4, 5]: each intended move under the noise
        for _ in range(max_iter):
            arrival = self.reward + (1.0 - self.options.reset) * (~self.terminal).float() * values
            targets = torch.cat([arrival[self.successor], arrival.unsqueeze(-1)], dim=-1)
            q = targets @ deterministic.T  # [B*S, 4]
            new = q.max(-1).values
            if (new - values).abs().max() < tol:
                return q
            values = new
        return q

    def occupancy_effects(self, effect_probs: Tensor) -> Tensor:
        """Expected visits of each state per episode from the start, exactly: d = e_start + C M^T d."""
        within, above, below, _ = self._blocks(self.realised_moves(effect_probs))
        continuing = self._continuing()  # [B, R, C]: scales the rows of the transposed system
        start = torch.zeros(self.n_mdps * self.n_states, dtype=torch.float64, device=self.device)
        start[self.start] = 1.0
        eye = torch.eye(self.shape[1], dtype=torch.float64, device=self.device)
        diag = eye - continuing.unsqueeze(-1) * within.transpose(-1, -2)
        lower = -continuing * torch.roll(below, 1, dims=1)  # arrivals from the row above, moving down
        upper = -continuing * torch.roll(above, -1, dims=1)  # arrivals from the row below, moving up
        return block_tridiagonal_solve(lower, diag, upper, start.view(self.n_mdps, *self.shape)).reshape(-1)

    def occupancy(self, policy: Tensor) -> Tensor:
        return self.occupancy_effects(self.effect_probabilities(policy))


def block_tridiagonal_solve(lower: Tensor, diag: Tensor, upper: Tensor, rhs: Tensor) -> Tensor:
    """Solve, for every batch element, a block-tridiagonal system whose off-diagonal blocks are diagonal:
    ``diag`` [B, R, C, C], ``lower`` and ``upper`` [B, R, C] (``lower[:, r]`` couples block row r to row r - 1,
    ``upper[:, r]`` to row r + 1; ``lower[:, 0]`` and ``upper[:, -1]`` are ignored), right-hand side [B, R, C].
    Block Gaussian elimination (the block Thomas algorithm): R small batched inverses in sequence instead of
    one dense (R C)^3 solve. The policy systems here are diagonally dominant, so no pivoting across blocks."""
    n_rows = diag.shape[1]
    inverses = [torch.linalg.inv(diag[:, 0])]
    partial = [rhs[:, 0]]
    for r in range(1, n_rows):
        coupling = lower[:, r].unsqueeze(-1) * inverses[-1]  # L_r D'_{r-1}^{-1}
        inverses.append(torch.linalg.inv(diag[:, r] - coupling * upper[:, r - 1].unsqueeze(-2)))
        partial.append(rhs[:, r] - (coupling @ partial[-1].unsqueeze(-1)).squeeze(-1))
    solution = [(inverses[-1] @ partial[-1].unsqueeze(-1)).squeeze(-1)]
    for r in range(n_rows - 2, -1, -1):
        right = partial[r] - upper[:, r] * solution[-1]
        solution.append((inverses[r] @ right.unsqueeze(-1)).squeeze(-1))
    return torch.stack(solution[::-1], dim=1)


# --- gymnasium --------------------------------------------------------------------------------------------


class GridWorldEnv(gym.Env[Any, int]):
    """One random grid world (fixed by ``layout_seed``) for ``distill run`` and SB3.

    ``observation="index"`` gives the state index (fully observable); ``"window"`` a ``window x window`` patch
    around the agent, three numbers per cell: is a wall (or off the grid), reward, is terminal.
    """

    metadata = {"render_modes": ["rgb_array"]}  # noqa: RUF012

    def __init__(
        self,
        layout_seed: int = 0,
        render_mode: str | None = None,
        observation: Literal["index", "window"] = "index",
        window: int = 5,
        **grid: Any,
    ) -> None:
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in grid.items()}
        self.options = GridOptions(**values)
        self.layout = random_layout(self.options, np.random.default_rng(layout_seed))
        self.batch = GridBatch.from_layouts([self.layout], self.options)
        self.observation = observation
        self.window = window
        self.render_mode = render_mode
        self.action_space = gym.spaces.Discrete(self.options.n_actions)  # type: ignore[assignment]
        if observation == "index":
            self.observation_space: gym.Space[Any] = gym.spaces.Discrete(self.layout.n_states)
        elif observation == "window":
            low = min(0.0, *self.options.terminal_rewards, self.options.negative_reward)
            high = max(1.0, *self.options.terminal_rewards)
            self.observation_space = gym.spaces.Box(low, high, (window * window * 3,), dtype=np.float32)
        else:
            raise ValueError(f"observation must be 'index' or 'window', got {observation!r}")
        self._state = self.layout.start

    def _observe(self) -> Any:
        if self.observation == "index":
            return self._state
        rows, n, half = self.layout.rows, self.layout.cols, self.window // 2
        row, col = divmod(self._state, n)
        patch = np.zeros((self.window, self.window, 3), dtype=np.float32)
        for i in range(self.window):
            for j in range(self.window):
                r, c = row + i - half, col + j - half
                if not (0 <= r < rows and 0 <= c < n) or self.layout.kind[r * n + c] == WALL:
                    patch[i, j, 0] = 1.0
                else:
                    patch[i, j, 1] = self.layout.reward[r * n + c]
                    patch[i, j, 2] = float(self.layout.kind[r * n + c] == TERMINAL)
        return patch.reshape(-1)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self._state = self.layout.start
        return self._observe(), {}

    def step(self, action: int) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        move = int(self.batch.effects[0, int(action)])
        if self.np_random.random() < self.options.noise or move == RANDOM_MOVE:
            move = int(self.np_random.integers(4))
        if move < STAY:
            self._state = _neighbour(self.layout, self._state, move)
        reward = float(self.layout.reward[self._state])
        terminated = bool(self.layout.kind[self._state] == TERMINAL) or self.np_random.random() < self.options.reset
        return self._observe(), reward, terminated, False, {}

    def render(self) -> np.ndarray:  # type: ignore[override]
        """The grid as an RGB image: walls black, rewards red/green, the agent blue (8 pixels per cell)."""
        colour = np.ones((self.layout.n_states, 3))
        colour[self.layout.kind == WALL] = 0.0
        scale = max(1.0, float(np.abs(self.layout.reward).max()))
        reward = self.layout.reward / scale
        colour[reward < 0] = np.stack([np.ones_like(reward), 1 + reward, 1 + reward], -1)[reward < 0]
        colour[reward > 0] = np.stack([1 - reward, np.ones_like(reward), 1 - reward], -1)[reward > 0]
        colour[self._state] = (0.2, 0.3, 1.0)
        image = (255 * colour.reshape(self.layout.rows, self.layout.cols, 3)).astype(np.uint8)
        return np.kron(image, np.ones((8, 8, 1), dtype=np.uint8))


ENV_ID = "distillcli/GridWorld-v0"  # fully observable: the state index
WINDOW_ENV_ID = "distillcli/GridWorldWindow-v0"  # partially observable: a 5 x 5 window around the agent


def register() -> None:
    if ENV_ID not in gym.registry:
        gym.register(ENV_ID, entry_point=GridWorldEnv, max_episode_steps=1000)
        gym.register(WINDOW_ENV_ID, entry_point=GridWorldEnv, max_episode_steps=1000, kwargs={"observation": "window"})
