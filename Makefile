# The README's two commands (`make demo`, `make test`) and the developer targets.
# Each target installs what it needs into .venv itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
PROTOS := $(wildcard protos/ucadi/v1/*.proto)

.PHONY: demo test bench chaos protos protos-check lint clean venv

venv: $(VENV)/.stamp-dev

# torch is installed first and pinned: an unpinned torch would pull a multi-GB CUDA build.
# TORCH_INDEX empty (the default) uses pip's configured indexes: on this project's machines a
# local CPU wheel; on a plain Linux machine PyPI's torch==2.13.0 is the CUDA build (several GB
# with its nvidia-* wheels). `make venv TORCH_INDEX=https://download.pytorch.org/whl/cpu` takes
# the CPU build instead (the Dockerfile's index).
TORCH_INDEX ?=
MIN_PYTHON := 3.11

$(VENV)/.stamp-base: pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info; ok = v >= tuple(map(int, "$(MIN_PYTHON)".split("."))); ok or sys.exit(f"ucadi needs Python $(MIN_PYTHON) or newer; $(PYTHON) is {v.major}.{v.minor} (make PYTHON=python3.11 ...)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.13.0
	$(PIP) install -e .
	touch $@

$(VENV)/.stamp-dev: $(VENV)/.stamp-base
	$(PIP) install -e '.[dev,deploy]'
	touch $@

# Flower pins protobuf < 7, which the project's gRPC stack cannot use: it gets its own venv.
$(VENV)/.stamp-bench: $(VENV)/.stamp-dev
	$(PIP) install -e '.[bench]'
	test -x .venv-flower/bin/python || $(PYTHON) -m venv .venv-flower
	.venv-flower/bin/python -m pip --disable-pip-version-check -q install flwr==1.41.0
	touch $@

demo: $(VENV)/.stamp-base
	$(VENV)/bin/ucadi demo $(DEMO_ARGS)

# make test spreads the tests over TEST_WORKERS processes (pytest-xdist); TEST_WORKERS=0 runs
# them in this one process (e.g. to debug with -x or pdb).
TEST_WORKERS ?= 2
test: $(VENV)/.stamp-dev protos-check
	$(PY) -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist worksteal) $(PYTEST_ARGS)

bench: $(VENV)/.stamp-bench
	$(PY) -m bench $(BENCH_ARGS)

# Issue 18's chaos checks: DICOM mutation fuzzing, protocol fuzzing of every RPC, kill -9 of
# the services over 20 rounds; one table of what was tried and what held (README). Bounded:
# each part has a time limit. `make test` runs each part's quick version.
chaos: $(VENV)/.stamp-dev
	$(PY) -m chaos $(CHAOS_ARGS)

# Regenerate the checked-in gRPC/protobuf stubs (ucadi/v1/) from protos/.
protos: $(VENV)/.stamp-dev
	$(PY) scripts/gen_protos.py

# CI: the checked-in stubs must be exactly what protos/ generates.
protos-check: $(VENV)/.stamp-dev
	$(PY) scripts/gen_protos.py --check

lint: $(VENV)/.stamp-dev
	$(PY) -m ruff check ucadi services tests bench chaos

clean:
	rm -rf $(VENV) reports runs
