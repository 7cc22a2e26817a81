"""``distill run`` in named stages: :mod:`~distillcli.run.setup` (teacher + env), :mod:`~distillcli.run.rundir`
(files, summary, resume, interrupt guard), :mod:`~distillcli.run.evaluate` (returns, score, ``distill eval``) and
:mod:`~distillcli.run.pipeline` (``run()``, which reads like the pipeline)."""

from distillcli.run.evaluate import EVAL_SEED_OFFSET, evaluate, evaluate_model
from distillcli.run.pipeline import parse_schedule, run, versions, with_method_defaults
from distillcli.run.rundir import Summary, load_resume_state
from distillcli.run.setup import Setup, bundled_teacher, prepare, prepare_run

__all__ = [
    "EVAL_SEED_OFFSET",
    "Setup",
    "Summary",
    "bundled_teacher",
    "evaluate",
    "evaluate_model",
    "load_resume_state",
    "parse_schedule",
    "prepare",
    "prepare_run",
    "run",
    "versions",
    "with_method_defaults",
]
