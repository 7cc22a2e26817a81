#!/usr/bin/env bash
# Install distillcli the way a user does, and run it from there (`make check-install`; CI runs it).
#
# `make install` is editable: it imports distillcli from the checkout, so a package or data file that the
# wheel leaves out goes unnoticed there. This script:
#   1. builds the sdist and the wheel from a clean copy of the checkout (`python -m build`, the dev venv's),
#      and fails on any setuptools deprecation warning;
#   2. checks the wheel holds every package, module and bundled teacher that git tracks under distillcli/, and
#      the sdist its tests, docs, README.md, CHANGELOG.md and LICENSE;
#   3. builds a wheel from the sdist, and checks that it holds the same files;
#   4. makes a fresh virtual environment outside the checkout (CPU torch first where there is no GPU, as
#      `make install` does), installs the wheel into it, not editable, with no extras;
#   5. from that directory, runs `distill --version`, `methods`, a short `run`, `eval`, `paper counterexample`
#      and a short `run` of a `distill study` teacher (bundled:study/...).
# Every failure ends with one line naming what failed. KEEP=1 keeps the temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}  # the dev venv: has `build`
if [[ "$PY" == */* && "$PY" != /* ]]; then PY=$ROOT/$PY; fi  # the builds run in other directories
TORCH_CPU=${TORCH_CPU:-torch==2.13.0}
BASE_PYTHON=${BASE_PYTHON:-python3}  # what the fresh venv is made from, as the Makefile's `python3 -m venv`
start=$SECONDS

fail() {
    echo "check-install: FAILED: $*" >&2
    exit 1
}
say() { echo "check-install: $*"; }

"$PY" -c "import build" 2>/dev/null || fail "$PY has no 'build' package: run 'make install' first"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/distill-check-install.XXXXXX")
if [[ "${KEEP:-0}" == 1 ]]; then
    say "keeping $WORK"
else
    trap 'rm -rf "$WORK"' EXIT
fi

# 1. Build the sdist and the wheel, both from a copy of the checkout's files (tracked, or new and not ignored):
# an in-tree build reuses build/ and *.egg-info/SOURCES.txt, whose stale entries can hide a missing package.
say "building the sdist and the wheel"
mkdir "$WORK/src"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' file; do
    if [[ -e "$file" ]]; then printf '%s\0' "$file"; fi  # a file deleted but not yet committed is gone
done | tar --null -T - -cf - | tar -xf - -C "$WORK/src"
if ! (cd "$WORK/src" && "$PY" -m build --sdist --wheel --outdir "$WORK/dist" .) >"$WORK/build.log" 2>&1; then
    cat "$WORK/build.log" >&2
    fail "python -m build failed (log above)"
fi
if grep -n -i -E "deprecat|BuildBackendWarning" "$WORK/build.log" >&2; then
    fail "the build printed a deprecation warning (lines above; full log: python -m build)"
fi
shopt -s nullglob
wheels=("$WORK"/dist/*.whl)
sdists=("$WORK"/dist/*.tar.gz)
shopt -u nullglob
[[ ${#wheels[@]} == 1 && ${#sdists[@]} == 1 ]] || fail "expected one wheel and one sdist in $WORK/dist"
WHEEL=${wheels[0]}
SDIST=${sdists[0]}
say "built $(basename "$SDIST") and $(basename "$WHEEL")"

# 2 and 3. What the wheel and the sdist hold; a wheel built from the sdist holds the same files.
say "building a wheel from the sdist"
if ! "$PY" -m pip wheel --no-deps --quiet "$SDIST" -w "$WORK/from-sdist" >"$WORK/sdist-wheel.log" 2>&1; then
    cat "$WORK/sdist-wheel.log" >&2
    fail "the sdist does not build a wheel (pip wheel $(basename "$SDIST"); log above)"
fi
"$PY" - "$WHEEL" "$SDIST" "$WORK/from-sdist" <<'EOF' || fail "the distributions are missing files (listed above)"
import subprocess
import sys
import tarfile
import zipfile
from fnmatch import fnmatch
from pathlib import Path

wheel, sdist, from_sdist = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
listed = subprocess.run(
    ["git", "ls-files", "--cached", "--others", "--exclude-standard", "distillcli"],
    capture_output=True, text=True, check=True,
).stdout.splitlines()
tracked = [p for p in listed if Path(p).is_file()]  # as copied for the build
if not tracked:  # not a git checkout (e.g. an unpacked sdist): what is on disk
    tracked = [str(p) for p in Path("distillcli").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
packages = sorted(p for p in tracked if p.endswith("__init__.py"))
modules = sorted(p for p in tracked if p.endswith(".py") and p not in packages)
data = sorted(p for p in tracked if fnmatch(p, "distillcli/data/*.zip"))
in_wheel = set(zipfile.ZipFile(wheel).namelist())
problems = []
for kind, expected in (("package", packages), ("module", modules), ("data file", data), ("marker", ["distillcli/py.typed"])):
    problems += [f"the wheel is missing the {kind} {p}" for p in expected if p not in in_wheel]
if not data:
    problems.append("git tracks no distillcli/data/*.zip: the bundled teacher is gone")
root = sdist.name.removesuffix(".tar.gz")
in_sdist = {name.removeprefix(root + "/") for name in tarfile.open(sdist).getnames()}
for name in ("README.md", "CHANGELOG.md", "LICENSE", "pyproject.toml", "tests/conftest.py", "docs/usage.md", *tracked):
    if name not in in_sdist:
        problems.append(f"the sdist is missing {name}")
rebuilt = list(from_sdist.glob("*.whl"))
if len(rebuilt) != 1:
    problems.append(f"expected one wheel built from the sdist, found {len(rebuilt)}")
else:
    def files(w: Path) -> set[str]:
        return {n for n in zipfile.ZipFile(w).namelist() if not n.endswith(".dist-info/RECORD")}

    for name in sorted(files(wheel) ^ files(rebuilt[0])):
        side = "the checkout's wheel" if name in files(wheel) else "the sdist's wheel"
        problems.append(f"only {side} holds {name}")
for problem in problems:
    print(f"check-install: {problem}", file=sys.stderr)
print(f"check-install: checked {len(packages)} packages, {len(modules)} other modules, {len(data)} data files")
sys.exit(1 if problems else 0)
EOF

# 4. A fresh virtual environment outside the checkout; the wheel, not editable.
VENV=$WORK/venv
say "installing $(basename "$WHEEL") into a fresh venv in $WORK"
"$BASE_PYTHON" -m venv "$VENV"
pip_install() {
    if ! env -u PYTHONPATH -u VIRTUAL_ENV "$VENV/bin/python" -m pip install --quiet "$@" >"$WORK/pip.log" 2>&1; then
        cat "$WORK/pip.log" >&2
        fail "pip install $* failed in the fresh venv (log above)"
    fi
}
pip_install --upgrade pip
if ! command -v nvidia-smi >/dev/null 2>&1; then
    say "no GPU found: installing $TORCH_CPU (CPU build) first"
    # shellcheck disable=SC2086  # TORCH_CPU may carry pip options, as in the Makefile
    pip_install $TORCH_CPU
fi
pip_install "$WHEEL"

# 5. Run it from outside the checkout, with only the fresh venv's `distill` on PATH.
cd "$WORK"
export PATH="$VENV/bin:$PATH"
unset PYTHONPATH VIRTUAL_ENV
[[ "$(command -v distill)" == "$VENV/bin/distill" ]] || fail "distill on PATH is $(command -v distill), not the fresh venv's"
# Every module of the installed package must import (an optional extra's library is imported lazily, inside them).
IMPORT_ALL='import importlib, pkgutil, distillcli
for m in pkgutil.walk_packages(distillcli.__path__, "distillcli."):
    importlib.import_module(m.name)
print(distillcli.__file__)'
where=$(python -c "$IMPORT_ALL") || fail "a module of the installed distillcli does not import (see above)"
[[ "$where" == "$VENV"/* ]] || fail "distillcli was imported from $where, not from the fresh venv"
check() {
    say "\$ $*"
    local rc=0
    "$@" || rc=$?
    ((rc == 0)) || fail "'$*' exited $rc (from the installed wheel, in $WORK)"
}
check distill --version
check distill methods
check distill run --steps 2048 --out r --quiet
check distill eval r/student.zip
check distill paper counterexample --scale small --out p
# distill study's teachers ship in the wheel (the grid world's needs no extra; LunarLander's need box2d)
check distill run --teacher bundled:study/ppo-GridWorldWindow-v0 --steps 2048 --out g --quiet
say "OK: the wheel and the sdist are complete, and the installed distill runs ($((SECONDS - start)) s)"
