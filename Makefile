# The README's two commands: `make demo` and `make test`. Each creates .venv when missing.
# `make test-fast`: tests/unit only (nothing started, under a minute); `make test`: all of tests/.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck bench soak clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel on local disk, so nothing pulls a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,examples]'
	@# perf_analyzer (shipped in tritonclient) needs Debian's libb64.
	@ldconfig -p | grep -q libb64.so.0d || { \
		if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq libb64-0d) >/dev/null; \
		else echo "note: install Debian's libb64-0d for perf_analyzer (sudo apt-get install libb64-0d)"; fi; }
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tritongen.examples.demo

test: $(STAMP)
	$(PY) -m pytest --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check tritongen templates tests benchmarks
	$(VENV)/bin/ruff format --check tritongen templates tests benchmarks
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .venv-ma build *.egg-info .pytest_cache .mypy_cache .ruff_cache examples/digits/models
