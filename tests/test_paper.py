"""`distill paper`: the grid worlds, the tabular teachers, and each study's claim at a small scale.

The studies run in-process with fewer MDPs and iterations than `--scale small`, so each claim below is what the
paper's figure shows, checked on this scale's numbers (docs/paper.md has the `--scale small` numbers).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3 import PPO

from distillcli.distributions import Categorical
from distillcli.gridworld import (
    ENV_ID,
    TERMINAL,
    WALL,
    WINDOW_ENV_ID,
    GridBatch,
    GridOptions,
    Layout,
    positive_terminal_reachable,
    random_layout,
    register,
)
from distillcli.methods import get_method
from distillcli.rollout import Rollout
from distillcli.studies import STUDIES, run_study
from distillcli.studies.common import (
    Curves,
    PaperOptions,
    chunks,
    grid_batch,
    policy_returns,
    q_rows,
    teacher_and_optimal,
)
from distillcli.studies.common import interval as mean_ci
from distillcli.studies.counterexample import Counterexample
from distillcli.studies.tabular import (
    RowOptimizer,
    TabularCollector,
    TabularSettings,
    TabularStudent,
    TabularTeacher,
    column_targets,
)
from distillcli.studies.teachers import effect_values, q_learning, softmax_policy, uniform_policy
from distillcli.trainer import segment_surrogate, segment_targets
from tests.conftest import CLI


def _quiet(_: str) -> None:
    pass


# --- grid worlds ----------------------------------------------------------------------------------------


def test_layouts_keep_the_start_free_and_a_positive_terminal_reachable() -> None:
    options = GridOptions(size=12, wall_prob=0.3, terminal_prob=0.03)
    rng = np.random.default_rng(0)
    for _ in range(20):
        layout = random_layout(options, rng)
        assert layout.kind[layout.start] != WALL and layout.kind[layout.start] != TERMINAL
        assert (layout.reward[layout.kind == TERMINAL] > 0).any()
    kinds = np.concatenate([random_layout(GridOptions(size=20), rng).kind for _ in range(20)])
    assert 0.05 < (kinds == WALL).mean() < 0.15  # wall_prob 0.1


def test_layouts_without_a_reachable_positive_terminal_are_rejected() -> None:
    """A +10 terminal walled off from the start: that layout must be drawn again."""
    kind = np.full(25, 1)
    reward = np.zeros(25)
    kind[[1, 5]] = WALL  # the top-left corner cell 0 is enclosed
    kind[0], reward[0] = TERMINAL, 10.0
    kind[24], reward[24] = TERMINAL, -10.0
    assert not positive_terminal_reachable(Layout(5, 5, kind, reward, 12))
    kind[1] = 1  # open one wall: now reachable
    assert positive_terminal_reachable(Layout(5, 5, kind, reward, 12))


def test_chunking_does_not_change_the_mdps_or_the_teachers() -> None:
    """The action-space study runs large |A| in chunks of MDPs; each |A| must see the same MDPs and teachers."""
    whole = _options(mdps=6, teacher_steps=200)
    chunked = replace(whole, max_table=2 * whole.grid.size**2 * 4)  # chunks of two MDPs
    rows = []
    for options in (whole, chunked):
        parts = list(chunks(options, 4))
        batches = [grid_batch(options, seed, start, size) for seed, _, start, size in parts]
        rows.append(
            (
                torch.cat([b.reward for b in batches]),
                torch.cat([q_rows(options, seed, start, size) for seed, _, start, size in parts]),
            )
        )
    assert len(list(chunks(chunked, 4))) == 3
    torch.testing.assert_close(rows[0][0], rows[1][0])
    torch.testing.assert_close(rows[0][1], rows[1][1])


def test_batched_step_returns_match_the_exact_value() -> None:
    """Episodes sampled with GridBatch.step (what the students train on) against V_pi, with no-op extra actions."""
    options = GridOptions(size=6, noise=0.2, reset=0.05, n_actions=6, extra_actions="noop")
    batch = GridBatch.random(1, options, seed=4)
    exact = float(batch.evaluate(torch.full((batch.n_states, 6), 1 / 6))[batch.start])
    generator = torch.Generator().manual_seed(0)
    states = batch.start.repeat(4000)
    returns = torch.zeros(4000, dtype=torch.float64)
    alive = torch.ones(4000, dtype=torch.bool)
    while alive.any():
        actions = torch.randint(0, 6, states.shape, generator=generator)
        states, rewards, ended = batch.step(states, actions, generator)
        returns += rewards.double() * alive
        alive &= ~ended
    _, low, high = mean_ci(returns)
    assert low - 0.05 <= exact <= high + 0.05, (exact, low, high)


def test_gym_environment_is_registered_and_passes_the_checker() -> None:
    register()
    for observation in ("index", "window"):
        env = gym.make(ENV_ID, observation=observation, size=8, layout_seed=3)
        check_env(env.unwrapped)
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)
    window = gym.make(ENV_ID, observation="window", window=3, size=8).unwrapped
    assert window.observation_space.shape == (27,)


def test_exact_policy_value_matches_monte_carlo_returns_of_the_gym_env() -> None:
    """The batched tensor form and the gym environment are the same MDP: exact V_pi = sampled mean return."""
    register()
    env = gym.make(ENV_ID, size=6, layout_seed=1, noise=0.2, reset=0.05).unwrapped
    batch = GridBatch.from_layouts([env.layout], env.options)
    uniform = torch.full((batch.n_states, 4), 0.25)
    exact = float(batch.evaluate(uniform)[batch.start])
    rng = np.random.default_rng(0)
    returns = []
    for episode in range(3000):
        env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            _, reward, done, _, _ = env.step(int(rng.integers(4)))
            total += reward
        returns.append(total)
    mean, low, high = mean_ci(torch.tensor(returns))
    assert low - 0.05 <= exact <= high + 0.05, (exact, mean, low, high)


def test_batched_step_agrees_with_the_exact_transition_model() -> None:
    batch = GridBatch.random(3, GridOptions(size=6, noise=0.3), seed=0)
    states = batch.start.repeat_interleave(20000)
    actions = torch.full_like(states, 3)  # "right"
    nxt, _, _ = batch.step(states, actions, torch.Generator().manual_seed(0))
    for b in range(3):
        start = int(batch.start[b])
        moves = batch.realised_moves(torch.eye(6, dtype=torch.float64)[3])  # intended: right
        expected: dict[int, float] = {}
        for move, p in enumerate(moves[:4].tolist()):
            target = int(batch.successor[start, move])
            expected[target] = expected.get(target, 0.0) + p
        observed = nxt[b * 20000 : (b + 1) * 20000]
        for target, p in expected.items():
            assert abs(float((observed == target).float().mean()) - p) < 0.02


def test_occupancy_sums_to_the_expected_episode_length() -> None:
    """Visits per episode (the KL weights of the control-policy study) against V_pi of a reward of 1 per step."""
    batch = GridBatch.random(4, GridOptions(size=8), seed=2)
    policy = torch.softmax(torch.randn(batch.reward.shape[0], 4, generator=torch.Generator().manual_seed(0)), -1)
    visits = batch.occupancy(policy).view(4, -1).sum(-1)
    length = replace(batch, reward=torch.ones_like(batch.reward)).evaluate(policy)[batch.start]
    torch.testing.assert_close(visits, length, atol=1e-5, rtol=0)


def test_q_learning_teacher_is_close_to_optimal_and_extra_actions_keep_the_optimum() -> None:
    batch = GridBatch.random(10, GridOptions(size=10), seed=0)
    q = q_learning(batch, 10000, seed=0)
    teacher = policy_returns(batch, softmax_policy(batch, effect_values(batch, q), 0.0))
    optimal = policy_returns(batch, softmax_policy(batch, effect_values(batch, batch.optimal_q()), 0.0))
    uniform = policy_returns(batch, uniform_policy(batch))
    assert (teacher <= optimal + 1e-3).all()
    assert float(((teacher - uniform) / (optimal - uniform)).mean()) > 0.8
    for extra in ("repeat", "noop", "random"):
        wide = GridBatch.from_layouts(batch.layouts, GridOptions(size=10, n_actions=40, extra_actions=extra))  # type: ignore[arg-type]
        greedy = softmax_policy(wide, effect_values(wide, wide.optimal_q()), 0.0)
        torch.testing.assert_close(policy_returns(wide, greedy), optimal, atol=1e-3, rtol=0)


# --- the studies ------------------------------------------------------------------------------------------


def _options(**overrides: object) -> PaperOptions:
    return replace(PaperOptions.at_scale("small"), **overrides)  # type: ignore[arg-type]


def _final(curves: Curves, setting: str, method: str) -> float:
    return curves.final(setting, method)


@pytest.mark.slow
def test_control_policy_student_driven_matches_teacher_driven_return_and_wins_on_its_own_kl() -> None:
    result = run_study("control-policy", _options(mdps=10, iterations=300, temperatures=(0.0,)), _quiet)
    curves = result.curves
    returns = {q: _final(curves, "T=0 return", f"q={q}") for q in ("student", "teacher", "uniform")}
    assert returns["student"] >= returns["teacher"] - 0.05 and returns["student"] > returns["uniform"]
    own_kl = {q: _final(curves, "T=0 KL under student", f"q={q}") for q in ("student", "teacher", "uniform")}
    assert own_kl["student"] < own_kl["teacher"] < own_kl["uniform"]
    # Early on, teacher-driven distillation is ahead where it trains: on the teacher's own states.
    early = sorted({i for s, m, i in curves.values if s == "T=0 KL under teacher" and i > 0})[0]
    teacher_kl = {
        q: float(curves.pooled("T=0 KL under teacher", f"q={q}", early).mean()) for q in ("student", "teacher")
    }
    assert teacher_kl["teacher"] < teacher_kl["student"]


@pytest.mark.slow
def test_action_space_expected_entropy_keeps_learning_where_entropy_regularised_collapses() -> None:
    options = _options(mdps=10, iterations=400, action_sizes=(4, 400), extra_actions=("repeat",))
    curves = run_study("action-space", options, _quiet).curves
    small = {m: _final(curves, "|A|=4", m) for m in ("entropy-regularised", "expected-entropy", "on-policy-distill")}
    teacher = _final(curves, "|A|=4", "teacher")
    assert small["entropy-regularised"] > 0.8 * teacher  # fine with four actions
    wide = "repeat |A|=400"
    large = curves.pooled(wide, "expected-entropy", 400), curves.pooled(wide, "entropy-regularised", 400)
    assert mean_ci(large[0])[1] > mean_ci(large[1])[2]  # clearly above: the 95% intervals do not overlap
    assert _final(curves, wide, "on-policy-distill") > 0.8 * _final(curves, wide, "teacher")


@pytest.mark.slow
def test_imperfect_teacher_copying_settles_at_the_teacher_and_reward_goes_beyond() -> None:
    options = _options(mdps=10, iterations=400, teacher_noise=(0.25,), estimators=("td",))
    curves = run_study("imperfect-teacher", options, _quiet).curves
    setting = "noise=0.25 td"
    teacher = _final(curves, setting, "teacher")
    for name in ("on-policy-distill", "n-distill", "kl-regularised", "entropy-regularised", "expected-entropy"):
        assert _final(curves, setting, name) <= teacher + 0.1, name  # copying a noisy teacher: at or below it
    for name in ("on-policy-distill+r", "n-distill+r", "+r+v-cond", "td+v-teacher"):
        assert _final(curves, setting, name) > teacher, name  # the reward takes them past the teacher
    # teacher-v-reward optimises the environment's return: it goes furthest towards the optimum
    assert _final(curves, setting, "teacher-v-reward") > teacher + 1.0
    assert _final(curves, setting, "teacher-v-reward") <= _final(curves, setting, "optimal") + 1e-3


@pytest.mark.slow
def test_chain_optimal_teacher_is_copied_at_once_and_an_adversary_is_copied_into_the_penalty() -> None:
    """Fig. 6 with ends of +-1: copying (and +r without value gating) follows the adversary into the penalty,
    the methods that value the reward (teacher-v-reward, RL, td+v with either value, +r+v-cond) reach it."""
    curves = run_study("chain", _options(mdps=8, iterations=300), _quiet).curves
    early = sorted({i for s, m, i in curves.values if s == "optimal teacher" and m == "rl" and i > 0})[0]
    for name in ("on-policy-distill", "n-distill", "expected-entropy"):
        copied = float(curves.pooled("optimal teacher", name, early).mean())
        assert copied > float(curves.pooled("optimal teacher", "rl", early).mean()), name  # faster than RL
        assert _final(curves, "optimal teacher", name) > 0.9
    for name in ("on-policy-distill", "n-distill", "expected-entropy", "expected-entropy+r", "on-policy-distill+r"):
        assert _final(curves, "adversarial teacher", name) < -0.9, name  # copied into the penalty end
    for name in ("teacher-v-reward", "rl", "+r+v-cond", "td+v-teacher", "td+v-zero"):
        assert _final(curves, "adversarial teacher", name) > 0.5, name  # found the reward end anyway


def test_counterexample_on_policy_distill_r_cycles_while_n_distill_r_converges() -> None:
    summary = run_study("counterexample", _options(iterations=600), _quiet).summary
    window = summary["on-policy-distill+r"]["late_probability_range"]
    assert min(window) > 0.05, summary  # still going round its orbit over the last fifth of the run
    assert max(summary["n-distill+r"]["late_probability_range"]) < 0.01, summary
    # The non-gradient part is a rotation: under the convex Hx(pi || pi_th) it is damped into a fixed point.
    assert summary["on-policy-distill+r, Hx(pi||pi_th)"]["final_update_norm"] < 1e-6


def test_on_policy_distill_r_update_is_rotational_in_the_counterexample() -> None:
    example = Counterexample()
    method = get_method("on-policy-distill+r")
    theta = torch.zeros(2, dtype=torch.float64)
    jacobian = torch.stack(
        [
            (example.update(method, theta + 1e-5 * e) - example.update(method, theta - 1e-5 * e)) / 2e-5
            for e in torch.eye(2, dtype=torch.float64)
        ],
        dim=1,
    )
    assert float((jacobian - jacobian.T).abs().max()) > 0.1 * float(jacobian.abs().max())


def test_gradient_field_separates_true_gradients_from_on_policy_distillation() -> None:
    summary = run_study("gradient-field", _options(mdps=3), _quiet).summary
    assert summary["on-policy-distill"] > 1e-2 and summary["on-policy-distill+r"] > 1e-2
    for name in ("n-distill", "expected-entropy", "n-distill+r"):
        assert summary[name] < 1e-6


def test_grid_world_teacher_distils_with_distill_run(cli: CLI, tmp_path: Path) -> None:
    """The registered grid world is an ordinary environment for `distill run` (neural students)."""
    register()
    env = gym.make(WINDOW_ENV_ID)
    PPO("MlpPolicy", env, n_steps=512, seed=0, policy_kwargs={"net_arch": [32, 32]}).learn(16384).save(
        tmp_path / "teacher.zip"
    )
    result = cli(
        "run",
        "--teacher",
        tmp_path / "teacher.zip",
        "--env",
        WINDOW_ENV_ID,
        "--steps",
        "20000",
        # Mass-covering KL(pi || pi_th): this short-trained teacher is far from deterministic, and the default
        # method's mode-seeking optimum (its argmax) would raise KL(pi || pi_th) while keeping the return.
        "--method",
        "on-policy-distill",
        "--out",
        tmp_path / "run",
        "--json",
    )
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["kl_end"] <= 0.5 * summary["kl_start"], summary
    student = PPO.load(summary["student_path"], device="cpu")
    action, _ = student.predict(env.observation_space.sample(), deterministic=True)
    assert env.action_space.contains(action)


# --- the command ------------------------------------------------------------------------------------------


def test_paper_command_writes_figure_csv_and_settings(cli: CLI, tmp_path: Path) -> None:
    result = cli("paper", "gradient-field", "--mdps", "2", "--out", tmp_path, "--json")
    assert result.code == 0, result.stderr
    report = result.json()["studies"][0]
    for kind in ("png", "csv", "json"):
        assert Path(report["files"][kind]).is_file()
    assert (tmp_path / "gradient-field.png").read_bytes()[:4] == b"\x89PNG"
    with (tmp_path / "gradient-field.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["study", "setting", "method", "iteration", "mean", "ci_low", "ci_high"]
    assert {r["method"] for r in rows} >= {"on-policy-distill", "n-distill"}
    settings = json.loads((tmp_path / "gradient-field.json").read_text())["settings"]
    assert settings["mdps"] == 2 and settings["scale"] == "small"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["paper", "figure-9"], "unknown study"),
        (["paper", "chain", "--scale", "huge"], "--scale"),
        (["paper", "chain", "--mdps", "0"], "--mdps"),
        (["paper", "chain", "--iterations", "0"], "--iterations"),
        (["paper", "chain", "--threads", "0"], "--threads"),
        (["paper", "chain", "--out", __file__], "cannot write"),
        (["paper", "chain", "--device", "cuda:0" if not torch.cuda.is_available() else "tpu"], "device"),
    ],
)
def test_paper_mistakes_are_one_line(cli: CLI, args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


# --- the tabular students' machinery --------------------------------------------------------------------


def test_row_optimizer_steps_like_sparse_adam_with_repeated_rows() -> None:
    """The static-shape lazy Adam: SparseAdam on an embedding's sparse gradient, rows repeated in the index."""
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(50, 7, generator=generator)
    reference = torch.nn.Parameter(table.clone())
    sparse_adam = torch.optim.SparseAdam([reference], lr=0.05)
    ours = table.clone()
    optimizer = RowOptimizer("adam", [ours], [0.05])
    for _ in range(5):
        index = torch.randint(0, 50, (40,), generator=generator)  # repeats
        grad = torch.randn(40, 7, generator=generator)
        sparse_adam.zero_grad()
        (torch.nn.functional.embedding(index, reference, sparse=True) * grad).sum().backward()
        sparse_adam.step()
        optimizer.step(index, [ours.index_select(0, index)], [grad])
        torch.testing.assert_close(ours, reference.detach(), rtol=1e-5, atol=1e-6)


def _tabular_rollout(method_name: str, final: bool) -> tuple[Rollout, TabularStudent, TabularSettings]:
    """A segment of the collector on small grid worlds, with (``final``) or without the episodes' real last
    states: the tabular rollout leaves them out, because every end there is a termination."""
    options = _options(mdps=3, teacher_steps=300)
    batch = grid_batch(options, 0, 0, 3)
    teacher_probs, _ = teacher_and_optimal(batch, q_rows(options, 0, 0, 3), 0.01)
    settings = options.settings(0)
    teacher = TabularTeacher(batch, teacher_probs, settings)
    student = TabularStudent(batch.n_mdps * batch.n_states, 4, batch.device)
    student.logits.normal_(generator=torch.Generator().manual_seed(1))
    student.values.normal_(generator=torch.Generator().manual_seed(2))
    collector = TabularCollector(batch, teacher, 1, torch.Generator().manual_seed(3), "student")
    rollout = collector.collect(64, student)
    if final:
        ended = rollout.terminated.reshape(-1).nonzero().squeeze(-1)
        arrived = collector._arrived.reshape(-1)[ended]  # where the ending steps arrived: the real last states
        dist, values = teacher(arrived)
        rollout = replace(
            rollout, final_obs=arrived, final_index=ended, teacher_final=dist, teacher_final_values=values
        )
    return rollout, student, settings


@pytest.mark.parametrize(
    "name", ["n-distill", "expected-entropy+r", "teacher-v-reward", "td+v-teacher", "+r+v-cond", "rl", "n-distill+r"]
)
def test_tabular_rollouts_need_no_final_states(name: str) -> None:
    """Eq. 1's targets and surrogate are the same with the real final states as without them."""
    method = get_method(name)
    results = []
    for final in (True, False):
        rollout, student, settings = _tabular_rollout(name, final)
        assert rollout.terminated.any()
        targets = segment_targets(method, rollout, student, settings.objective(), settings.update_options())
        dist, values = student(rollout.obs[:-1].reshape(-1))
        assert values is not None
        surrogate = segment_surrogate(method, rollout, targets, dist, values, settings.objective(), 1.0)
        results.append((targets.advantages, targets.value_targets, surrogate))
    for with_final, without in zip(*results, strict=True):
        torch.testing.assert_close(with_final, without)


def test_estimators_folded_into_one_batch_give_each_block_its_own_targets() -> None:
    rollout, student, settings = _tabular_rollout("rl", final=False)
    method = get_method("rl")
    groups = [(slice(0, 1), settings.update_options("monte-carlo")), (slice(1, 3), settings.update_options("td"))]
    joined = column_targets(method, rollout, student, settings.objective(), groups)
    for cols, update_options in groups:
        part = replace(
            rollout,
            obs=rollout.obs[:, cols],
            actions=rollout.actions[:, cols],
            env_rewards=rollout.env_rewards[:, cols],
            terminated=rollout.terminated[:, cols],
            truncated=rollout.truncated[:, cols],
            teacher=rollout.teacher[:, cols],
            teacher_values=None if rollout.teacher_values is None else rollout.teacher_values[:, cols],
        )
        alone = segment_targets(method, part, student, settings.objective(), update_options)
        assert joined.advantages is not None and alone.advantages is not None
        torch.testing.assert_close(joined.advantages[:, cols], alone.advantages)


def test_per_effect_teacher_is_the_dense_softmax_over_every_action() -> None:
    """|A| = 40 with repeated, staying and random extra actions: the per-effect teacher's distribution on a
    state is Categorical.from_logits(log softmax(Q / T)) over all 40 actions, floored as the students see it."""
    for extra in ("repeat", "noop", "random"):
        batch = GridBatch.random(2, GridOptions(size=6, n_actions=40, extra_actions=extra), seed=0)  # type: ignore[arg-type]
        q = effect_values(batch, q_learning(batch, 500, seed=0))
        for temperature in (0.0, 0.01, 0.1):
            per_effect = softmax_policy(batch, q, temperature)
            teacher = TabularTeacher(batch, per_effect, _options().settings(0))
            rows = torch.arange(batch.n_mdps * batch.n_states)
            q_full = q.gather(1, batch.effects[rows // batch.n_states])
            if temperature == 0:
                best = (q_full >= q_full.max(-1, keepdim=True).values - 1e-6).float()
                dense = best / best.sum(-1, keepdim=True)
            else:
                dense = torch.softmax(q_full / temperature, -1)
            torch.testing.assert_close(teacher.probabilities(rows), dense, rtol=1e-5, atol=1e-6)
            floored = Categorical.from_logits(dense.clamp_min(1e-30).log(), -20.0).logits
            torch.testing.assert_close(teacher.log_probabilities(rows), floored, rtol=1e-5, atol=1e-5)


def test_block_tridiagonal_evaluation_matches_a_dense_solve() -> None:
    batch = GridBatch.random(3, GridOptions(size=7, n_actions=6, extra_actions="noop"), seed=5)
    policy = torch.softmax(
        torch.randn(batch.n_mdps * batch.n_states, 6, generator=torch.Generator().manual_seed(0)), -1
    )
    n = batch.n_states
    moves = batch.move_probabilities(policy).view(3, n, 5)
    local = batch.successor.view(3, n, 4) - (torch.arange(3) * n).view(3, 1, 1)
    targets = torch.cat([local, torch.arange(n).view(1, n, 1).expand(3, n, 1)], -1)
    transition = torch.zeros(3, n, n, dtype=torch.float64).scatter_add_(-1, targets, moves)
    continuing = (0.99 * (~batch.terminal).double()).view(3, 1, n)
    reward = batch.reward.double().view(3, n, 1)
    for gamma in (1.0, 0.99):
        dense = torch.linalg.solve(torch.eye(n) - gamma * transition * continuing, transition @ reward)
        torch.testing.assert_close(batch.evaluate(policy, gamma), dense.reshape(-1))
    start = torch.zeros(3, n, 1, dtype=torch.float64)
    start.view(-1)[batch.start] = 1.0
    visits = torch.linalg.solve(torch.eye(n) - continuing.transpose(1, 2) * transition.transpose(1, 2), start)
    torch.testing.assert_close(batch.occupancy(policy), visits.reshape(-1))


@pytest.mark.slow
def test_paper_all_holds_no_more_memory_than_its_largest_study(tmp_path: Path) -> None:
    """Peak RSS of `distill paper all` in one process against each study alone (tiny scale, DISTILL_SMOKE): a
    study must leave nothing behind that inflates the next (caches, tables, a C heap that never shrinks)."""

    def peak_mb(study: str) -> float:
        command = [sys.executable, "-m", "distillcli", "paper", study, "--out", str(tmp_path / study), "--quiet"]
        process = subprocess.Popen(command, env={**os.environ, "DISTILL_SMOKE": "1"})
        _, status, usage = os.wait4(process.pid, 0)
        assert status == 0, study
        return usage.ru_maxrss / 1024  # KB on Linux

    alone = {study: peak_mb(study) for study in STUDIES}
    together = peak_mb("all")
    assert together <= 1.2 * max(alone.values()), (together, alone)
