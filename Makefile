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
# the same speaker and one of another speaker. Both are the median case of their kind on dev (scores
# are log-likelihood ratios; the threshold gives a 1 % false-accept rate).
ENROLL := --enroll $(DEV)/SPEAKER5017/050170101.flac --enroll $(DEV)/SPEAKER5017/050170102.flac
demo: $(STAMP)
	@echo "== same speaker (expect accept)"
	$(VOXPRINT) verify $(ENROLL) --test $(DEV)/SPEAKER5017/050170117.flac
	@echo "== different speaker (expect reject: verify exits 3)"
	$(VOXPRINT) verify $(ENROLL) --test $(DEV)/SPEAKER0306/003060002.flac || [ $$? -eq 3 ]

test: $(STAMP)
	$(PY) -m pytest

$(BENCH_STAMP):
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q "setuptools<81" torch==2.13.0 resemblyzer soundfile soxr numpy threadpoolctl \
		spectralcluster webrtcvad
	touch $(BENCH_STAMP)

bench-env: $(BENCH_STAMP)

bench: $(STAMP) $(BENCH_STAMP)
	$(PY) bench/verification.py
	$(PY) bench/leaderboard.py
	$(PY) bench/augmentation.py
	$(PY) bench/long_audio.py
	$(PY) bench/threads.py
	$(PY) bench/bulk_embedding.py
	$(PY) bench/identification.py --model default
	$(PY) bench/identification.py --model fused
	$(PY) bench/fused.py
	$(PY) bench/diarization.py
	$(PY) bench/voice_separation.py

# Retrain the bundled default model from scratch on CPU (time: docs/benchmarks.md).
default-model: $(STAMP)
	bash recipes/default/run.sh
