# Set-up, training, tests. Every target creates/updates the virtual environment first.
# torch is installed explicitly as the CPU build 2.13.0 (pyproject.toml leaves torch unpinned so
# GPU users keep their CUDA build): override with `make TORCH_SPEC="torch==2.13.0+cu126" ...`.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
CONFIG ?= configs/halfcheetah_vel.yaml
ARGS ?=

MW_VENV ?= .venv-metaworld
MW_PY := $(MW_VENV)/bin/python

.PHONY: setup train test test-all test-metaworld lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

train: setup
	$(PY) scripts/train.py $(CONFIG) $(ARGS)

test: setup
	$(PY) -m pytest -q

# Meta-World pins mujoco==3.3.0, too old for the Ant families: its own virtual environment.
$(MW_VENV)/.installed: pyproject.toml
	test -x $(MW_PY) || python3 -m venv $(MW_VENV)
	$(MW_PY) -m pip install --quiet --upgrade pip
	$(MW_PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(MW_PY) -m pip install --quiet -e ".[dev,metaworld]"
	touch $@

test-metaworld: $(MW_VENV)/.installed
	$(MW_PY) -m pytest -q tests/test_metaworld.py tests/test_pretrained.py -k "metaworld or ml1"

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/bench_meta_iteration.py
	$(PY) benchmarks/bench_sampler_physics.py

clean:
	rm -rf $(VENV) $(MW_VENV) .pytest_cache .ruff_cache
