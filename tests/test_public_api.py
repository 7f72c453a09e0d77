from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

import trace_optuna as to

EXPORTED = [
    "App",
    "Budget",
    "BudgetExhausted",
    "Config",
    "ConfigurationError",
    "Dataset",
    "Evaluation",
    "EvaluationTimeout",
    "ExampleRow",
    "HumanFeedback",
    "HumanFeedbackTimeout",
    "ImproverFailed",
    "IsolationUnavailable",
    "LLM",
    "LLMError",
    "NoCompletedTrialError",
    "OptimizerSettings",
    "ParameterSet",
    "Proposal",
    "RecordError",
    "SnapshotError",
    "StepContext",
    "SuggestionError",
    "Strategy",
    "TraceObjective",
    "TraceOptunaError",
    "TraceStudy",
    "TrialFailed",
    "TrialRecord",
    "__version__",
    "create_study",
    "load_study",
    "registry_history",
    "restore",
    "samplers",
    "sandbox",
    "snapshot",
    "strategies",
]

# Imported when first used, never by importing the package: each costs from 0.1 s
# (multiprocessing) to seconds (litellm pulls in openai; plotly; optuna-dashboard its web app).
HEAVY = ("litellm", "plotly", "optuna_dashboard", "multiprocessing")

COST_MAP_VARIABLE = "LITELLM_LOCAL_MODEL_COST_MAP"


def run_fresh(code: str, **environment: str) -> dict:
    """Run ``code`` in a fresh interpreter importing this checkout; return what it printed last
    (JSON). The environment is the test's without litellm's cost-map variable, plus
    ``environment``."""
    env = {key: value for key, value in os.environ.items() if key != COST_MAP_VARIABLE}
    root = str(Path(to.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env.update(environment)
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,  # python -c puts the working directory first on sys.path
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_exported_names_are_pinned() -> None:
    assert sorted(to.__all__) == sorted(EXPORTED)
    for name in to.__all__:
        assert getattr(to, name) is not None
    assert set(EXPORTED) <= set(dir(to))


@pytest.mark.parametrize("name", EXPORTED)
def test_every_exported_name_can_be_imported_from_the_package(name: str) -> None:
    namespace: dict = {}
    exec(f"from trace_optuna import {name} as imported", namespace)
    assert namespace["imported"] is getattr(to, name)


def test_an_unknown_name_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="trace_optuna.*NoSuchThing"):
        to.NoSuchThing  # noqa: B018


def test_errors_share_one_base_and_input_errors_are_value_errors() -> None:
    for error in (to.ConfigurationError, to.SnapshotError, to.RecordError, to.LLMError):
        assert issubclass(error, to.TraceOptunaError)
    assert issubclass(to.ConfigurationError, ValueError)
    assert issubclass(to.SnapshotError, ValueError)


def test_importing_the_package_imports_no_heavy_optional_module() -> None:
    code = f"""
import json, sys
import optuna, opto.trace
baseline = [m for m in {HEAVY!r} if m in sys.modules]
import trace_optuna
import trace_optuna.cli, trace_optuna.dashboard, trace_optuna.demo, trace_optuna.llm
import trace_optuna.llm.simulated, trace_optuna.strategies, trace_optuna.testing
import trace_optuna.testing.simulated, trace_optuna.visualization, trace_optuna.workers
print(json.dumps({{"baseline": baseline, "after": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    imported = run_fresh(code)
    # optuna and opto.trace import none of them themselves; if one did, it would be listed here.
    assert imported["baseline"] == []
    assert imported["after"] == []


def test_heavy_modules_are_imported_when_first_used() -> None:
    code = """
import json, sys
import trace_optuna as to
from trace_optuna import visualization
steps = {}
to.HumanFeedback
steps["HumanFeedback"] = "optuna_dashboard" in sys.modules
to.strategies.SafeOptoPrime
steps["SafeOptoPrime"] = "litellm" in sys.modules
visualization._common._plotly()
steps["figure"] = "plotly" in sys.modules
print(json.dumps(steps))
"""
    # HumanFeedback is the class itself: optuna-dashboard is imported when one is made.
    assert run_fresh(code) == {"HumanFeedback": False, "SafeOptoPrime": True, "figure": True}


def test_importing_sets_no_environment_variable_and_the_first_llm_sets_the_cost_map() -> None:
    code = """
import json, os
before = dict(os.environ)
import trace_optuna as to
imported = dict(os.environ)
to.LLM("simulated/feedback-follower").complete([{"role": "user", "content": "Hello"}])
import litellm
changed = {k: v for k, v in os.environ.items() if before.get(k) != v}
print(json.dumps({"on_import": imported == before, "on_use": changed,
                   "quiet": litellm.suppress_debug_info}))
"""
    result = run_fresh(code)
    assert result["on_import"] and result["quiet"]
    # litellm's own import sets more (TIKTOKEN_CACHE_DIR); ours is the cost map alone.
    assert result["on_use"][COST_MAP_VARIABLE] == "True"


def test_a_cost_map_setting_of_the_user_is_kept() -> None:
    code = """
import json, os
import trace_optuna as to
to.LLM("openai/gpt-4o-mini")
print(json.dumps(os.environ["LITELLM_LOCAL_MODEL_COST_MAP"]))
"""
    # Another spelling of true (litellm compares case-insensitively), so no network is tried.
    assert run_fresh(code, **{COST_MAP_VARIABLE: "TRUE"}) == "TRUE"


def test_the_simulated_model_keeps_its_old_addresses() -> None:
    from trace_optuna.llm import register_simulated_provider
    from trace_optuna.llm import simulated as old
    from trace_optuna.testing import simulated

    assert register_simulated_provider is simulated.register_simulated_provider
    assert old.reset_simulated_model is simulated.reset_simulated_model
    assert sorted(old.__all__) == sorted(simulated.__all__)
    assert to.LLM("simulated/feedback-follower").model == "simulated/feedback-follower"


def test_testing_keeps_its_storage_fixtures() -> None:
    from trace_optuna import testing

    assert testing.STORAGE_KINDS == ("sqlite", "postgresql", "mysql", "redis")
    for name in ("ServerDatabase", "ServerUnavailable", "server_url", "databases_required"):
        assert getattr(testing, name) is getattr(testing.storages, name)
