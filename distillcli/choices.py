"""The named choices of Eq. 1's knobs, shared by the config, the method records, the objectives and the trainer."""

from __future__ import annotations

from typing import Literal

Control = Literal["teacher", "student", "uniform", "mix"]  # q: who acts while trajectories are collected
KLDirection = Literal["teacher-student", "student-teacher"]  # Hx(pi || pi_th), or the mode-seeking Hx(pi_th || pi)
LossOffset = Literal["min", "none"]  # pseudo-rewards from a loss subtract its per-state minimum, or not
EpisodeEnds = Literal["auto", "continue", "absorb"]  # what pseudo-returns do at an episode's end
Baseline = Literal["critic", "mean", "none"]  # the score-function term's baseline
Returns = Literal["monte-carlo", "td"]  # how Rhat_t is estimated
