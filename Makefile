# Two entry points; each sets up .venv by itself on a fresh clone (see scripts/setup_env.sh).
.PHONY: quickstart test test-slow lint setup

setup:
	bash scripts/setup_env.sh

## The main job: synthetic data -> train -> evaluate -> render a prediction video (CPU, < 15 min).
quickstart: setup
	.venv/bin/vidseg quickstart $(ARGS)

## The test suite CI runs: lint + fast tests + the short end-to-end runs (slow tests excluded).
test: setup
	bash scripts/run_tests.sh

## Slow tests too (training to convergence, large shapes).
test-slow: setup
	.venv/bin/python -m pytest -m "slow" -q

lint: setup
	.venv/bin/ruff check vidseg tests benchmarks
	.venv/bin/python scripts/check_docstrings.py vidseg tests benchmarks
