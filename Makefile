# The quick start: `make demo` runs the offline demo, `make test` runs the tests.
# Each creates .venv and installs trace-optuna into it first (once, or when pyproject.toml changes).

PYTHON ?= python3
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: demo test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/trace-optuna demo

test: $(VENV)/.installed
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy trace_optuna

clean:
	rm -rf $(VENV) trace_optuna_demo.db
