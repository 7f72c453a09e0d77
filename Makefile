# The quick start: `make demo` runs the offline demo, `make test` runs the tests.
# Each creates .venv and installs into it first what it needs (once, or when pyproject.toml
# changes): the demo the runtime package alone, the tests the [test] extra, lint the [dev] one.

PYTHON ?= python3
VENV ?= .venv
PYTEST_ARGS ?=
# The quick subset: no test over ~10 s, no browser, nothing that stops a database server.
QUICK ?= not slow and not browser and not destructive

.PHONY: demo dashboard test test-quick lint clean

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	touch $@

$(VENV)/.runtime: pyproject.toml $(VENV)/.created
	$(VENV)/bin/pip install --quiet -e .
	touch $@

$(VENV)/.dashboard: pyproject.toml $(VENV)/.created
	$(VENV)/bin/pip install --quiet -e ".[dashboard]"
	touch $@

$(VENV)/.test: pyproject.toml $(VENV)/.created
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.created
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.runtime
	$(VENV)/bin/trace-optuna demo

# Browse the demo's study in optuna-dashboard (installs the [dashboard] extra first).
dashboard: $(VENV)/.dashboard
	$(VENV)/bin/trace-optuna dashboard --storage sqlite:///trace_optuna_demo.db

test: $(VENV)/.test
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-quick: $(VENV)/.test
	$(VENV)/bin/pytest -m "$(QUICK)" $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy trace_optuna

clean:
	rm -rf $(VENV) trace_optuna_demo.db
