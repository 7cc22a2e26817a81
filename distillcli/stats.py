"""The numbers every comparison uses, defined once: the normalised score, the return ratio, "reached the
teacher", and the mean with its 95% Student-t interval."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

REACHED = 0.95  # "reached the teacher": a normalised score of at least this

# t(0.975, df), two-sided 95%; between rows the smaller df is used (a slightly wider, conservative interval).
_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
    11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
    20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
    29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980,
}  # fmt: skip


def t975(df: int) -> float:
    """Student-t quantile t(0.975, df) from the table above (1.96 beyond df = 120)."""
    if df < 1:
        raise ValueError("a confidence interval needs at least two values")
    return _T975[max(d for d in _T975 if d <= df)] if df <= 120 else 1.960


def mean_ci(values: Iterable[float]) -> tuple[float | None, float | None]:
    """(mean, half-width of the 95% t interval) over the finite values; (None, None) without any, (mean, None)
    for one. ``fmean`` and ``stdev`` are taken on values scaled into range, so 1e308s do not overflow."""
    data = [float(v) for v in values if math.isfinite(v)]
    if not data:
        return None, None
    scale = max(abs(v) for v in data) or 1.0
    scaled = [v / scale for v in data]
    mean = statistics.fmean(scaled) * scale
    if len(data) == 1:
        return mean, None
    return mean, t975(len(data) - 1) * statistics.stdev(scaled) * scale / math.sqrt(len(data))


def score(student: float, teacher: float, random: float) -> float:
    """The normalised score ``(student - random) / (teacher - random)``: 0 is a uniform-random policy, 1 the
    teacher, whatever the sign or scale of the env's returns; NaN where the teacher is no better than random."""
    if not all(math.isfinite(v) for v in (student, teacher, random)) or teacher <= random:
        return math.nan
    return (student - random) / (teacher - random)


def return_ratio(student: float, teacher: float) -> float:
    """student / teacher, only where that means something: a positive teacher return (else NaN)."""
    if not (math.isfinite(student) and math.isfinite(teacher)) or teacher <= 0:
        return math.nan
    return student / teacher


def progress(student: float, teacher: float, random: float) -> float:
    """How far the student is towards the teacher: the score, or where no random return is known (summaries of
    earlier versions) the return ratio."""
    value = score(student, teacher, random)
    return value if math.isfinite(random) else return_ratio(student, teacher)


def reached(student: float, teacher: float, random: float, threshold: float = REACHED) -> bool:
    """The student is at ``threshold`` of the teacher (:func:`progress`), or at least as good as the teacher."""
    value = progress(student, teacher, random)
    return student >= teacher or (math.isfinite(value) and value >= threshold)


def first_reaching(series: Sequence[tuple[float, float]], target: float) -> float | None:
    """The first x of (x, y) points whose y is at least ``target``; None if none is."""
    return next((x for x, y in series if y >= target), None)
