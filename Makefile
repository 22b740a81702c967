# `make run`: set up .venv and reproduce the pipeline on the embedded synthetic competition.
# `make test`: the test suite (what CI runs); `make test-fast`: the tests not marked slow; `make lint`: ruff.
# `make distribute`: `dvc repro` with the tuning and training runs on a Ray cluster (docs/distribute.md).
VENV ?= .venv
PY := $(VENV)/bin/python
FER2013 ?= ../shared/data/fer2013.zip

.PHONY: setup setup-ray run distribute test test-fast lint fer2013 fer2013-cpu fer2013-gpu benchmark

$(VENV)/.installed: requirements.txt requirements-nodeps.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $@

setup: $(VENV)/.installed

$(VENV)/.installed-ray: $(VENV)/.installed requirements-ray.txt
	$(PY) -m pip install --quiet -r requirements-ray.txt
	touch $@

setup-ray: $(VENV)/.installed-ray

run: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m dvc repro

distribute: setup-ray
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pipeline distribute $(ARGS)

test: setup-ray
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q --durations=15 tests

test-fast: setup-ray
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q -m "not slow" --durations=15 tests

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fer2013: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m dvc exp run -S data.source=$(FER2013) $(ARGS)

# Presets: presets/fer2013-<name>.yaml written into params.yaml, then `dvc exp run` with figures printed.
fer2013-cpu fer2013-gpu: fer2013-%: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) benchmarks/fer2013.py --preset presets/fer2013-$*.yaml --source $(FER2013) $(ARGS)

benchmark: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) benchmarks/throughput.py
