# One virtual environment in .venv; every target uses it.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Where no NVIDIA GPU is present, install this CPU build of torch first (a plain `torch` requirement would
# resolve to a multi-GB CUDA build). Override, e.g. TORCH_CPU="torch --index-url <your CPU wheel index>".
TORCH_CPU ?= torch==2.13.0
RUN_DIR ?= runs/quickstart

.PHONY: quickstart install run test check-install lint format bench bench-full bench-startup bench-corpus bench-latency docs clean

quickstart: install run  ## install, then distill the bundled CartPole teacher with the default method

$(VENV)/bin/activate:
	python3 -m venv $(VENV)

install: $(VENV)/bin/activate  ## install distillcli with its dev, box2d, ray, contrib, atari, mujoco, hub and export extras into .venv
	$(PIP) install -q --upgrade pip
	@if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(PY) -c "import torch" >/dev/null 2>&1; then \
		echo "no GPU found: installing $(TORCH_CPU) (CPU build)"; $(PIP) install -q $(TORCH_CPU); fi
	$(PIP) install -q -e ".[dev,box2d,ray,contrib,atari,mujoco,hub,export]"

run:  ## distill the bundled teacher (expected-entropy, default budget) and print the summary
	$(VENV)/bin/distill run --out $(RUN_DIR) --force --quiet

test:  ## the test suite (slow studies at a small scale)
	$(PY) -m pytest -q

check-install:  ## build the wheel and sdist, install the wheel (not editable) in a fresh venv, run distill from there
	PY="$(PY)" TORCH_CPU="$(TORCH_CPU)" bash scripts/check_install.sh

lint:  ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check distillcli tests scripts bench
	$(VENV)/bin/ruff format --check distillcli tests scripts bench
	$(VENV)/bin/mypy

format:
	$(VENV)/bin/ruff format distillcli tests scripts bench
	$(VENV)/bin/ruff check --fix distillcli tests scripts bench

bench:  ## CartPole + LunarLander: methods x 2 seeds, PPO from scratch, throughput, latency (about 10 min); bench/results/
	$(PY) bench/bench.py
	$(PY) bench/latency.py

bench-latency:  ## a 32x32 student's latency in SB3 predict, torch, TorchScript, onnxruntime (float, int8); bench/results/
	$(PY) bench/latency.py

bench-full:  ## every method x 5 seeds, PPO from scratch x 3 seeds to 1.5M steps (hours)
	$(PY) bench/bench.py --full --out bench/results/bench-full.json

CORPUS ?= ../shared/teachers/rl-trained-agents
bench-corpus:  ## the default command on every rl-zoo run folder under CORPUS; table in bench/results/corpus/
	$(PY) bench/corpus.py $(CORPUS) --out bench/results/corpus

bench-startup:  ## start-up time of the installed distill per command, and its slowest imports; bench/results/
	$(PY) bench/cli_startup.py

docs:  ## the CLI reference in docs/cli.md, from the commands' own help
	$(PY) scripts/cli_reference.py > docs/cli.md

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
