from __future__ import annotations

import trace_optuna as to


def test_exported_names_are_pinned() -> None:
    assert sorted(to.__all__) == sorted(
        [
            "App",
            "Config",
            "ConfigurationError",
            "Evaluation",
            "EvaluationTimeout",
            "HumanFeedback",
            "LLM",
            "LLMError",
            "ParameterSet",
            "Proposal",
            "RecordError",
            "SnapshotError",
            "StepContext",
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
            "snapshot",
            "strategies",
        ]
    )
    for name in to.__all__:
        assert getattr(to, name) is not None


def test_errors_share_one_base_and_input_errors_are_value_errors() -> None:
    for error in (to.ConfigurationError, to.SnapshotError, to.RecordError, to.LLMError):
        assert issubclass(error, to.TraceOptunaError)
    assert issubclass(to.ConfigurationError, ValueError)
    assert issubclass(to.SnapshotError, ValueError)
