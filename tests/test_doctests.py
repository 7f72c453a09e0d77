"""The docstring examples (``>>>``) of every trace_optuna module run and print what they say.

They run offline (their studies use the simulated model and in-memory or temporary storages),
each in a fresh temporary working directory. A module whose optional dependency is missing is
reported as skipped with the extra to install, never as a collection error.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path
import pkgutil

import pytest

import trace_optuna

# Packages behind the optional extras; a module that needs a missing one is skipped.
OPTIONAL = {"optuna_dashboard", "psycopg", "pymysql", "redis", "kaleido", "selenium"}


def _modules() -> list[str]:
    names = [trace_optuna.__name__]
    for module in pkgutil.walk_packages(trace_optuna.__path__, prefix="trace_optuna."):
        if not module.name.endswith(".__main__"):  # runs the command line when imported
            names.append(module.name)
    return sorted(names)


def _doctests() -> list[object]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    params: list[object] = []
    for name in _modules():
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            if error.name is None or error.name.split(".")[0] not in OPTIONAL:
                raise
            params.append(
                pytest.param(
                    None,
                    id=name,
                    marks=pytest.mark.skip(reason=f"{name} needs {error.name}: {error}"),
                )
            )
            continue
        for test in finder.find(module, name):
            # The finder follows re-exports; each example is run once, where it is written.
            if test.examples and _written_in(test, module):
                params.append(pytest.param(test, id=test.name))
    return params


def _written_in(test: doctest.DocTest, module: object) -> bool:
    return test.filename is not None and Path(test.filename) == Path(module.__file__ or "")


DOCTESTS = _doctests()


def test_doctests_were_found() -> None:
    names = {param.id for param in DOCTESTS}  # type: ignore[attr-defined]
    assert {"trace_optuna", "trace_optuna.study.create_study"} <= names
    assert len(names) >= 15


@pytest.mark.parametrize("example", DOCTESTS)
def test_docstring_example(
    example: doctest.DocTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # an example writing a file writes it here
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    output: list[str] = []
    example.globs = dict(example.globs)  # a fresh namespace per run
    result = runner.run(example, out=output.append, clear_globs=True)
    assert result.failed == 0, "".join(output)
