# make demo  -- create .venv if missing and run the two_moons example (CPU, a few minutes)
# make test  -- create .venv if missing and run the default test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-slow test-all bench lint format clean env

$(STAMP): pyproject.toml
	@if [ ! -x "$(PY)" ]; then \
	  PYTHON=$$(sh scripts/find-python.sh) || exit 1; \
	  echo "creating $(VENV) with $$PYTHON"; \
	  "$$PYTHON" -m venv $(VENV) || exit 1; \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,bench]"
	@touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(PY) examples/two_moons.py --out out

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

test-all: $(STAMP)
	$(PY) -m pytest -m "slow or not slow"

bench: $(STAMP)
	$(PY) -m pymc_sbi.benchmarks run --task two_moons --method nle --simulations 10000 --seed 0 --sampler numpyro,nutpie,pymc

lint: $(STAMP)
	$(VENV)/bin/ruff check pymc_sbi tests examples
	$(VENV)/bin/ruff format --check pymc_sbi tests examples
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format pymc_sbi tests examples
	$(VENV)/bin/ruff check --fix pymc_sbi tests examples

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
