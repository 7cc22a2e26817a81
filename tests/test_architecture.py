"""The package's shape, checked from its own source: one-way imports, families and methods as data, one config.

docs/architecture.md describes the layout these tests hold in place.
"""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

import distillcli
from distillcli.config import RunConfig

PACKAGE = Path(distillcli.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, module: str, top_level_only: bool) -> set[str]:
    """The distillcli modules a module imports (at import time only, or anywhere in it)."""
    found: set[str] = set()
    nodes: list[ast.AST] = list(ast.iter_child_nodes(tree)) if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if top_level_only and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("distillcli"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("distillcli"):
            found.add(node.module)
            # `from distillcli.run import rundir` imports the submodule distillcli.run.rundir
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    known = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in found if name in known and name != module}


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    return {
        _module_name(path): _imports(ast.parse(path.read_text()), _module_name(path), top_level_only)
        for path in PACKAGE.rglob("*.py")
    }


def test_no_import_cycles() -> None:
    graph = _graph(top_level_only=True)
    # A package imports its own modules to re-export them; a cycle through that face is not a real one.
    for name in graph:
        graph[name] = {other for other in graph[name] if not name.startswith(other + ".")}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, [*path, nxt]):
                return True
        state[node] = 2
        return False

    for node in sorted(graph):
        if state.get(node) is None and visit(node, [node]):
            break
    assert not cycle, " -> ".join(cycle)


CORE = ("distillcli.sb3", "distillcli.envs", "distillcli.zoo", "distillcli.gridworld", "distillcli.trainer")
CORE += ("distillcli.objectives", "distillcli.methods", "distillcli.distributions", "distillcli.rollout")
CORE += ("distillcli.conditions",)
OUTER = ("distillcli.studies", "distillcli.study", "distillcli.sweep", "distillcli.report", "distillcli.cli")


def test_core_modules_never_import_the_outer_layers() -> None:
    graph = _graph(top_level_only=False)  # lazy imports inside functions count too
    wrong = [
        f"{module} imports {other}"
        for module, imports in graph.items()
        if module.startswith(CORE)
        for other in imports
        if other.startswith(OUTER)
    ]
    assert not wrong


def test_no_isinstance_on_sb3_policy_or_algorithm_classes_outside_sb3() -> None:
    """SB3 families are data (distillcli/sb3/families.py): code elsewhere dispatches on the record, not the class."""
    sb3_names = {"ActorCriticPolicy", "DQNPolicy", "SACPolicy", "TD3Policy", "BasePolicy", "PPO", "A2C", "DQN"}
    sb3_names |= {"SAC", "TD3", "MaskablePPO", "RecurrentPPO", "QRDQN", "TQC", "ARS", "TRPO", "BaseAlgorithm"}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "sb3":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("isinstance", "issubclass"):
                classes = ast.unparse(node.args[1]) if len(node.args) > 1 else ""
                if any(name in classes for name in sb3_names) or "sb3_contrib" in classes:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
    assert not found


def test_run_reads_like_the_pipeline_it_is() -> None:
    from distillcli.run.pipeline import run

    assert len(inspect.getsource(run).splitlines()) < 100


def test_families_the_code_dispatches_on_are_the_ones_distill_methods_prints(cli) -> None:  # type: ignore[no-untyped-def]
    from distillcli.sb3.families import families

    result = cli("methods")
    assert result.code == 0
    for family in families():
        for algo in family.algos:
            assert algo in result.stdout
    algos = {algo for family in families() for algo in family.algos}
    assert {"PPO", "A2C", "TRPO", "DQN", "QRDQN", "SAC", "TQC", "TD3", "DDPG", "ARS"} <= algos
    assert {"RecurrentPPO", "MaskablePPO"} <= algos
    classes = [name for family in families() for name in family.policy_classes]
    assert len(classes) == len(set(classes)), "a policy class belongs to one family"


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_every_config_field_is_a_flag_with_the_configs_default(command: str) -> None:
    """The commands' options are made from RunConfig: one flag per field, unset unless typed (so the config's
    default applies), and its help is the config's, default included."""
    import typer.main

    from distillcli.cli import app

    group = typer.main.get_command(app)
    params = {p.name: p for p in group.commands[command].params}  # type: ignore[attr-defined]
    skip = {"method", "seed", "student_net", "out"} if command == "sweep" else set()
    for f in fields(RunConfig):
        if f.name in skip:
            continue
        param = params[f.name]
        assert f"--{f.name.replace('_', '-')}" in param.opts
        assert param.default is None  # not typed: RunConfig's default (or --config's value) applies
        assert param.help == RunConfig.help(f.name)
        if f.default is not None and not isinstance(f.default, bool):
            assert f"(default: {f.default})" in param.help


def test_cli_help_imports_nothing_heavy() -> None:
    """``distill --help``, ``methods`` and ``recommend`` answer without torch, SB3, Ray or matplotlib."""
    code = (
        "import sys; from distillcli.cli import app\n"
        "for argv in (['--help'], ['run', '--help'], ['methods'], ['recommend', '--improve']):\n"
        "    try: app(argv, standalone_mode=False)\n"
        "    except SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'stable_baselines3', 'ray', 'matplotlib', 'gymnasium') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY []"
