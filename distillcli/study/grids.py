"""The studies of ``distill study`` as data: one grid per paper figure, and the teacher conditions they use.

A cell is one ``distill run``: env, teacher condition, method (with its options), student net, seed. Its name is a
function of its config alone, so two studies that need the same run share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product
from typing import Any

from distillcli.config import RunConfig
from distillcli.gridworld import WINDOW_ENV_ID
from distillcli.methods import get_method

LUNAR = "LunarLander-v3"
GRID = WINDOW_ENV_ID  # distillcli/GridWorldWindow-v0: the paper's grid world, seen through a 5 x 5 window
SHORT = {LUNAR: "lunar", GRID: "grid"}


# Teacher conditions (docs/study.md), by their bundled names, so that a study's runs (whose config.json records the
# teacher) are found again by a distillcli installed elsewhere. "strong" is the bench teacher; "earlyN" a checkpoint
# at N% of a rerun of its training recipe (bench/study_teachers.py, returns in bench/results/study-teachers.json);
# "corruptN" the strong teacher made uniform on N% of states (--teacher-corrupt); "adversarial" a PPO trained on
# the negated reward.
TEACHERS: dict[tuple[str, str], dict[str, Any]] = {
    (LUNAR, "strong"): {"teacher": "bundled:ppo-LunarLander-v3"},
    (LUNAR, "early25"): {"teacher": "bundled:study/ppo-LunarLander-v3-early25"},
    (LUNAR, "early50"): {"teacher": "bundled:study/ppo-LunarLander-v3-early50"},
    (LUNAR, "early75"): {"teacher": "bundled:study/ppo-LunarLander-v3-early75"},
    (LUNAR, "corrupt15"): {"teacher": "bundled:ppo-LunarLander-v3", "teacher_corrupt": 0.15},
    (LUNAR, "corrupt25"): {"teacher": "bundled:ppo-LunarLander-v3", "teacher_corrupt": 0.25},
    (LUNAR, "adversarial"): {"teacher": "bundled:study/ppo-LunarLander-v3-adversarial"},
    (GRID, "strong"): {"teacher": "bundled:study/ppo-GridWorldWindow-v0"},
    (GRID, "corrupt15"): {"teacher": "bundled:study/ppo-GridWorldWindow-v0", "teacher_corrupt": 0.15},
    (GRID, "corrupt25"): {"teacher": "bundled:study/ppo-GridWorldWindow-v0", "teacher_corrupt": 0.25},
}


@dataclass(frozen=True)
class Scale:
    seeds: tuple[int, ...]
    steps: int  # env steps per run
    eval_every: int
    eval_episodes: int
    measure_steps: int  # env steps of each extra rollout that measures a finished student (KL under q, SNR)
    full_grid: bool  # small: each study's reduced grid


SCALES = {
    "small": Scale(seeds=(0,), steps=4096, eval_every=2048, eval_episodes=3, measure_steps=256, full_grid=False),
    "full": Scale(
        seeds=(0, 1, 2, 3, 4), steps=50_000, eval_every=5000, eval_episodes=10, measure_steps=4096, full_grid=True
    ),
}


@dataclass(frozen=True)
class Variant:
    """A method and the options it runs with in a study; its label names the run."""

    method: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        return self.method + "".join(f".{key.replace('_', '-')}={value}" for key, value in self.options)


def variant(method: str, **options: Any) -> Variant:
    """``options`` without those equal to the method's defaults (so the same run has one name)."""
    record = get_method(method)
    kept = {k: v for k, v in options.items() if not (k == "control" and v == record.control) and v not in ("", None)}
    return Variant(method, tuple(sorted(kept.items())))


@dataclass(frozen=True)
class Cell:
    env: str
    condition: str
    variant: Variant
    net: str
    seed: int

    @property
    def name(self) -> str:
        net = "auto" if self.net == "auto" else self.net.replace(",", "x")
        return f"{SHORT[self.env]}.{self.condition}.{self.variant.label}.{net}.s{self.seed}".replace(":", "-")

    @property
    def setting(self) -> str:
        """What the study compares across: everything but the seed."""
        return self.name.rsplit(".s", 1)[0]


@dataclass(frozen=True)
class Grid:
    """One study: a title, the paper's claim, and its grid (``small_*`` replace the full grid at the small scale)."""

    title: str
    figure: str
    claim: str
    envs: dict[str, tuple[str, ...]]  # env -> teacher conditions
    variants: tuple[Variant, ...]
    nets: tuple[str, ...] = ("auto",)
    small_envs: dict[str, tuple[str, ...]] | None = None
    small_variants: tuple[Variant, ...] | None = None
    small_nets: tuple[str, ...] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


COPYING = ("on-policy-distill", "n-distill", "expected-entropy")
WITH_REWARD = (
    "on-policy-distill+r",
    "n-distill+r",
    "expected-entropy+r",
    "+r+v-cond",
    "teacher-v-reward",
    "td+v-teacher",
    "rl",
    "proximal",
)
# LunarLander's rewards (shaping of tens per step, +-100 at the end) dwarf a pseudo-reward of a nat or so: the +r
# methods also run with lambda_r = 0.01, the env reward brought to the distillation terms' scale.
SCALED = tuple(variant(m, reward_weight="0.01") for m in ("on-policy-distill+r", "n-distill+r", "expected-entropy+r"))
IMPERFECT = (*(variant(m) for m in (*COPYING, *WITH_REWARD)), *SCALED)
IMPERFECT_SMALL = tuple(variant(m) for m in ("on-policy-distill", "expected-entropy+r", "rl", "proximal"))
EXTRA = ("", "10:repeat", "100:repeat", "10:noop", "100:noop")  # K = 1, 10, 100 in both forms ("": K = 1)
CONTROLS = tuple(variant("on-policy-distill", control=c) for c in ("student", "teacher", "uniform", "mix"))
ACTION_METHODS = ("entropy-regularised", "expected-entropy", "on-policy-distill", "rl")

STUDIES: dict[str, Grid] = {
    "control-policy": Grid(
        "Control policy",
        "Fig. 3",
        "Acting with the student (on-policy) copies the teacher better on the student's own states than acting with "
        "the teacher (teacher-distill, BC) or a uniform policy; DAgger's mixture sits between.",
        {LUNAR: ("strong",), GRID: ("strong",)},
        (*CONTROLS, variant("bc"), variant("dagger")),
        small_envs={LUNAR: ("strong",), GRID: ("strong",)},
        small_variants=(*CONTROLS[:3], variant("bc")),
    ),
    "action-space": Grid(
        "Action space",
        "Fig. 4",
        "Reward-only (score-function) distillation (entropy-regularised) degrades as the action space grows, while "
        "methods with a per-state loss over every action (expected-entropy, on-policy-distill) do not; the "
        "gradient's signal-to-noise ratio is the mechanism.",
        {LUNAR: ("strong",)},
        tuple(variant(m, extra_actions=e) for m, e in product(ACTION_METHODS, EXTRA)),
        small_variants=tuple(variant(m, extra_actions=e) for m, e in product(ACTION_METHODS, ("", "100:repeat"))),
    ),
    "imperfect-teacher": Grid(
        "Imperfect teacher",
        "Fig. 5",
        "With a weak teacher, methods that add the env reward (+r, +r+v-cond, teacher-v-reward, td+v-teacher, "
        "proximal) can end above the teacher, pure copying cannot, and the teacher still speeds learning over RL "
        "from scratch.",
        {LUNAR: ("early25", "early50", "early75", "corrupt15", "corrupt25"), GRID: ("corrupt25",)},
        IMPERFECT,
        small_envs={LUNAR: ("early25", "corrupt25")},
        small_variants=IMPERFECT_SMALL,
    ),
    "adversarial-teacher": Grid(
        "Adversarial teacher",
        "Fig. 6",
        "With a teacher trained to do badly, methods with the env reward recover (return > 0) while pure copying "
        "follows the teacher down.",
        {LUNAR: ("adversarial",)},
        IMPERFECT,
        small_variants=IMPERFECT_SMALL,
    ),
    "capacity": Grid(
        "Student capacity",
        "no paper figure",
        "The methods the paper recommends for copying (teacher-distill on the teacher's states; expected-entropy, "
        "n-distill on the student's) keep their standing against on-policy-distill from 8x8 to 64x64 students.",
        {LUNAR: ("strong",), GRID: ("strong",)},
        tuple(variant(m) for m in ("teacher-distill", "expected-entropy", "n-distill", "on-policy-distill")),
        nets=("8,8", "32,32", "64,64"),
        small_envs={LUNAR: ("strong",)},
        small_nets=("8,8", "64,64"),
    ),
}


def cells_of(name: str, scale: Scale) -> list[Cell]:
    grid = STUDIES[name]
    full = scale.full_grid
    envs = grid.envs if full or grid.small_envs is None else grid.small_envs
    variants = grid.variants if full or grid.small_variants is None else grid.small_variants
    nets = grid.nets if full or grid.small_nets is None else grid.small_nets
    return [
        Cell(env, condition, v, net, seed)
        for env, conditions in envs.items()
        for condition in conditions
        for v in variants
        for net in nets
        for seed in scale.seeds
    ]


def run_config(cell: Cell, scale: Scale) -> RunConfig:
    """The cell's ``distill run`` options: its teacher condition's, its variant's, the scale's budget."""
    options: dict[str, Any] = {
        **TEACHERS[(cell.env, cell.condition)],
        "env": cell.env,
        "method": cell.variant.method,
        "student_net": cell.net,
        "seed": cell.seed,
        "steps": scale.steps,
        "eval_every": scale.eval_every,
        "eval_episodes": scale.eval_episodes,
        **dict(cell.variant.options),
    }
    return RunConfig(**options)
