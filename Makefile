# voxprint: `make demo` runs a real verification with the bundled model; `make test` runs the tests.
# Both create or refresh the virtual environment in .venv from pyproject.toml.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
VOXPRINT := $(VENV)/bin/voxprint
STAMP := $(VENV)/.installed
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
export VOXPRINT_DATA ?= $(abspath ../shared/data)
DEV := $(VOXPRINT_DATA)/speechocean762/dev

.PHONY: demo test bench bench-env default-model

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Enroll a dev speaker (never seen in training) with two recordings, then test a third recording of
# the same speaker and one of another speaker.
demo: $(STAMP)
	@echo "== same speaker (expect accept)"
	$(VOXPRINT) verify --enroll $(DEV)/SPEAKER0024/000240031.flac --enroll $(DEV)/SPEAKER0024/000240071.flac \
		--test $(DEV)/SPEAKER0024/000240115.flac
	@echo "== different speaker (expect reject)"
	$(VOXPRINT) verify --enroll $(DEV)/SPEAKER0024/000240031.flac --enroll $(DEV)/SPEAKER0024/000240071.flac \
		--test $(DEV)/SPEAKER0044/000440032.flac

test: $(STAMP)
	$(PY) -m pytest

$(BENCH_STAMP):
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q "setuptools<81" torch==2.13.0 resemblyzer soundfile soxr numpy threadpoolctl
	touch $(BENCH_STAMP)

bench-env: $(BENCH_STAMP)

bench: $(STAMP) $(BENCH_STAMP)
	$(PY) bench/verification.py
	$(PY) bench/leaderboard.py
	$(PY) bench/augmentation.py

# Retrain the bundled default model from scratch on CPU (time: docs/benchmarks.md).
default-model: $(STAMP)
	bash recipes/default/run.sh
