"""The paper's random grid worlds (appendix): generation, a batched tensor form, and a gymnasium environment.

A grid is ``size x size`` cells with one start cell in the centre and four moves (up, down, left, right); a move
off the grid or into a wall stays put. With probability ``1 - noise`` the intended move happens, otherwise one of
the four at random. Rewards belong to cells and are received on arrival; terminal cells end the episode; after
every step the episode also ends with probability ``reset`` (the paper's absorbing reset state), so returns are
finite and a policy's expected return is its value with discount ``1 - reset``.

Extra actions (the action-space study) act like the four moves (``repeat``: action ``a`` is move ``a % 4``, so
the MDP and its optimal value do not change) or stay put (``noop``: the optimal value changes only where
staying beats every move).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right
ExtraActions = Literal["repeat", "noop"]
WALL, FREE, TERMINAL = 0, 1, 2


@dataclass(frozen=True)
class GridOptions:
    """Generation and dynamics of the random grid worlds; every default is documented in docs/paper.md."""

    size: int = 20
    wall_prob: float = 0.1  # each cell, row by row: a wall ...
    terminal_prob: float = 0.02  # ... or a terminal cell, reward drawn from terminal_rewards ...
    negative_prob: float = 0.1  # ... or an ordinary cell with reward -1
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


def chain_layout(length: int, reward: float = 10.0, penalty: float = -10.0) -> Layout:
    """The 1-D chain of Fig. 6 as a one-row grid: penalty at the left end, reward at the right end, start in
    the middle; up and down stay put."""
    kind = np.full(length, FREE, dtype=np.int64)
    rewards = np.zeros(length)
    kind[0], kind[-1] = TERMINAL, TERMINAL
    rewards[0], rewards[-1] = penalty, reward
    return Layout(1, length, kind, rewards, length // 2)


@dataclass
class GridBatch:
    """``B`` grid worlds as tensors, stepped together; states are flat indices ``b * S + s`` (one table row each).

    ``successor[b * S + s, m]`` is the flat state that move ``m`` leads to.
    """

    successor: Tensor  # [B * S, 4] long
    reward: Tensor  # [B * S]: received on arrival
    terminal: Tensor  # [B * S] bool
    free: Tensor  # [B * S] bool: not a wall (walls are never entered)
    start: Tensor  # [B] flat start states
    n_states: int  # S, per MDP
    options: GridOptions
    layouts: list[Layout] = field(default_factory=list)

    @property
    def n_mdps(self) -> int:
        return int(self.start.shape[0])

    @property
    def device(self) -> torch.device:
        return self.reward.device

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
        )

    @classmethod
    def random(cls, n_mdps: int, options: GridOptions, seed: int, device: torch.device | str = "cpu") -> GridBatch:
        rng = np.random.default_rng(seed)
        return cls.from_layouts([random_layout(options, rng) for _ in range(n_mdps)], options, device)

    def moves(self, actions: Tensor) -> Tensor:
        """The move each action makes (extra actions repeat the four moves or stay put, index 4)."""
        if self.options.extra_actions == "repeat":
            return actions % 4
        return torch.where(actions < 4, actions, torch.full_like(actions, 4))

    def move_probabilities(self, policy: Tensor) -> Tensor:
        """[..., A] action probabilities -> [..., 5] probabilities of the realised move (after noise); 4 = stay."""
        n_actions = policy.shape[-1]
        index = self.moves(torch.arange(n_actions, device=policy.device))
        intended = torch.zeros(*policy.shape[:-1], 5, dtype=policy.dtype, device=policy.device)
        intended.index_add_(-1, index, policy)
        eta = self.options.noise
        realised = (1.0 - eta) * intended
        realised[..., :4] += eta / 4.0
        return realised

    def step(
        self, states: Tensor, actions: Tensor, generator: torch.Generator | None = None, reset: bool = True
    ) -> tuple[Tensor, ...]:
        """One step of every environment: (next states, rewards, episode ended); ``reset=False`` leaves the
        reset state out (Q-learning folds it into its discount), so only terminals end an episode."""
        moves = self.moves(actions)
        noisy = torch.rand(states.shape, device=states.device, generator=generator) < self.options.noise
        random_moves = torch.randint(0, 4, states.shape, device=states.device, generator=generator)
        moves = torch.where(noisy, random_moves, moves)
        stay = moves == 4
        nxt = self.successor[states, moves.clamp(max=3)]
        nxt = torch.where(stay, states, nxt)
        if not reset:
            return nxt, self.reward[nxt], self.terminal[nxt]
        sent = torch.rand(states.shape, device=states.device, generator=generator) < self.options.reset
        return nxt, self.reward[nxt], self.terminal[nxt] | sent

    # --- exact quantities of a tabular policy [B * S, A] ---------------------------------------------------

    def _transition_chunks(self, policy: Tensor, rows: int = 64) -> Iterator[tuple[slice, Tensor]]:
        """(MDP slice, M) pieces, M[b, s, s'] = P_pi(s' | s) under the realised moves (stay-put included).

        Exact quantities are dense linear solves per MDP (S is a few hundred), done ``rows`` MDPs at a time.
        """
        n = self.n_states
        move_probs = self.move_probabilities(policy.double()).view(self.n_mdps, n, 5)
        local = self.successor - (torch.arange(self.n_mdps, device=self.device) * n).repeat_interleave(n)[:, None]
        local = local.view(self.n_mdps, n, 4)
        here = torch.arange(n, device=self.device).view(1, n, 1).expand(self.n_mdps, n, 1)
        targets = torch.cat([local, here], dim=-1)  # [B, S, 5]: where each realised move lands
        for begin in range(0, self.n_mdps, rows):
            block = slice(begin, min(begin + rows, self.n_mdps))
            m = torch.zeros(block.stop - block.start, n, n, dtype=torch.float64, device=self.device)
            m.scatter_add_(-1, targets[block], move_probs[block])
            yield block, m

    def _continuing(self) -> Tensor:
        return ((1.0 - self.options.reset) * (~self.terminal).double()).view(self.n_mdps, self.n_states)

    def evaluate(self, policy: Tensor, gamma: float = 1.0) -> Tensor:
        """V_pi for every state, exactly: V = M (r + gamma C V), solved per MDP (float64).

        ``gamma = 1`` is the expected undiscounted return (the reset state ends episodes); a student that
        discounts its pseudo-returns by ``gamma`` on top of the resets needs its teacher's V_pi with that gamma.
        """
        n, continuing = self.n_states, self._continuing()
        reward = self.reward.double().view(self.n_mdps, n)
        values = torch.empty(self.n_mdps, n, dtype=torch.float64, device=self.device)
        eye = torch.eye(n, dtype=torch.float64, device=self.device)
        for block, m in self._transition_chunks(policy):
            system = eye - gamma * m * continuing[block].unsqueeze(1)
            values[block] = torch.linalg.solve(system, (m @ reward[block].unsqueeze(-1))).squeeze(-1)
        return values.view(-1)

    def optimal_q(self, tol: float = 1e-5, max_iter: int = 5000) -> Tensor:
        """Q*(s, m) for the four moves, by value iteration (the reference the teachers are measured against)."""
        values = torch.zeros_like(self.reward)
        eye = torch.eye(4, device=self.device)
        deterministic = self.move_probabilities(eye)  # [4, 5]: each intended move under the noise
        for _ in range(max_iter):
            arrival = self.reward + (1.0 - self.options.reset) * (~self.terminal).float() * values
            targets = torch.cat([arrival[self.successor], arrival.unsqueeze(-1)], dim=-1)
            q = targets @ deterministic.T  # [B*S, 4]
            new = q.max(-1).values
            if (new - values).abs().max() < tol:
                return q
            values = new
        return q

    def occupancy(self, policy: Tensor) -> Tensor:
        """Expected visits of each state per episode from the start, exactly: d = e_start + C M^T d."""
        n, continuing = self.n_states, self._continuing()
        visits = torch.empty(self.n_mdps, n, dtype=torch.float64, device=self.device)
        start = torch.zeros(self.n_mdps, n, dtype=torch.float64, device=self.device)
        start.view(-1)[self.start] = 1.0
        eye = torch.eye(n, dtype=torch.float64, device=self.device)
        for block, m in self._transition_chunks(policy):
            system = eye - continuing[block].unsqueeze(-1) * m.transpose(1, 2)
            visits[block] = torch.linalg.solve(system, start[block].unsqueeze(-1)).squeeze(-1)
        return visits.view(-1)


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
        move = int(self.batch.moves(torch.tensor(int(action))))
        if self.np_random.random() < self.options.noise:
            move = int(self.np_random.integers(4))
        if move < 4:
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
