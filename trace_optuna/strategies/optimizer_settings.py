"""``OptimizerSettings``: what a Trace user gives an optimizer, given once for every strategy.

Trace's ``OptoPrime(objective=..., include_example=..., max_tokens=...,
ignore_extraction_error=...)`` configures one optimizer's prompts. A study runs several
strategies, each prompting the LLM its own way, so these settings are the study's
(``Config(optimizer=...)``) and reach every built-in strategy's prompts through
``StepContext.optimizer``:

=============================  ===============================================================
``objective``                  replaces OptoPrime's instruction (``#Instruction``) in the
                               prompts of ``optoprime``, ``optoprime_multi``, ``genetic``'s
                               mutation and ``evolutionary``'s offspring, and OPRO's
                               instruction (``opro``; Trace's TextGrad has no place for it);
                               an ``#Objective`` section of
                               ``genetic``'s crossover prompt; a system message
                               (``#Objective``) before ``stop``'s solution prompts
``max_tokens``                 every LLM call of every strategy (OptoPrime, crossover, STOP,
                               Trace's other optimizers)
``include_example``            OptoPrime's worked example, in every OptoPrime prompt (also
                               ``optoprime_multi``'s)
``ignore_extraction_error``    False: a suggested value that cannot be used fails the step
                               (OptoPrime's suggestions, the crossover's child) instead of
                               being skipped
=============================  ===============================================================

OptoPrime's ``memory_size`` is not one of them: it is a setting of ``OptoPrimeStrategy``, which
Optuna samples per trial unless it is fixed there. ``prompt_symbols`` is not either: the prompts'
section names are what the answers are read by.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import difflib
from typing import Any

from trace_optuna.exceptions import ConfigurationError

OBJECTIVE_SECTION = "#Objective"
"""The header of the objective's section in prompts that are not OptoPrime's."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizerSettings:
    """The optimizer settings of a study, applied to every strategy's prompts.

    Give them once, as ``Config(optimizer=OptimizerSettings(...))`` or as a dict
    (``optimizer={"objective": "..."}``); the module docstring says where each one goes.

    Attributes:
        objective: What the optimizer is to achieve, a non-empty str; it replaces OptoPrime's
            default instruction and is shown in every other strategy's prompt. None keeps
            OptoPrime's default and shows none elsewhere.
        max_tokens: Most output tokens of every strategy's LLM call, an int >= 1. None leaves
            the LLM's own ``max_tokens`` (``LLM(..., max_tokens=...)``), or the provider's
            default.
        include_example: Whether OptoPrime's prompts include its worked example (a bool).
        ignore_extraction_error: True (as in Trace): a suggested value that cannot be
            converted to its parameter's type is skipped (logged) and the rest is used. False:
            the step fails with an ``LLMError`` naming it.

    Raises:
        ConfigurationError: Naming each bad setting and its rule.

    Example:
        >>> OptimizerSettings.coerce({"objective": "Be brief.", "max_tokens": 800})
        OptimizerSettings(objective='Be brief.', max_tokens=800, include_example=False, ignore_extraction_error=True)
        >>> OptimizerSettings.coerce({"objectve": "Be brief."})
        Traceback (most recent call last):
        ...
        trace_optuna.exceptions.ConfigurationError: optimizer has an unknown setting 'objectve' (did you mean 'objective'?); ...
    """  # noqa: E501 (the doctest's output is one line)

    objective: str | None = None
    max_tokens: int | None = None
    include_example: bool = False
    ignore_extraction_error: bool = True

    def __post_init__(self) -> None:
        problems = []
        objective = self.objective
        if objective is not None and (not isinstance(objective, str) or not objective.strip()):
            problems.append(
                "objective must be a non-empty str, or None for OptoPrime's default "
                f"instruction; got {_shown(objective)}"
            )
        max_tokens = self.max_tokens
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            problems.append(
                "max_tokens must be an int >= 1, or None for the LLM's own setting; got "
                f"{_shown(max_tokens)}"
            )
        for name in ("include_example", "ignore_extraction_error"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                problems.append(f"{name} must be True or False; got {_shown(value)}")
        if problems:
            raise ConfigurationError("optimizer: " + "; ".join(problems) + ".")

    @classmethod
    def coerce(cls, value: Any) -> OptimizerSettings:
        """``value`` as settings: an ``OptimizerSettings``, a dict of its fields, or None.

        Raises:
            ConfigurationError: On unknown keys (each with the nearest valid name), a bad value
                (naming each setting and its rule), or anything else than the three forms.
        """
        if value is None:
            return cls()
        if isinstance(value, OptimizerSettings):
            return value
        if not isinstance(value, Mapping):
            raise ConfigurationError(
                "optimizer must be a trace_optuna.OptimizerSettings, a dict of its settings "
                f"({', '.join(cls.names())}), or None; got {_shown(value)}."
            )
        names = cls.names()
        unknown = [key for key in value if key not in names]
        if unknown:
            described = []
            for key in unknown:
                near = difflib.get_close_matches(str(key), names, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                described.append(f"{key!r}{hint}")
            what = "unknown settings" if len(unknown) > 1 else "an unknown setting"
            raise ConfigurationError(
                f"optimizer has {what} {', '.join(described)}; the settings are "
                f"{', '.join(names)}."
            )
        return cls(**value)

    @classmethod
    def names(cls) -> list[str]:
        """The settings' names."""
        return [field.name for field in dataclasses.fields(cls)]

    def call_options(self) -> dict[str, Any]:
        """The keyword arguments of every strategy's LLM call: ``max_tokens`` when set."""
        return {} if self.max_tokens is None else {"max_tokens": self.max_tokens}

    def objective_section(self) -> str | None:
        """The objective as a prompt section (``#Objective`` and the text), or None."""
        if self.objective is None:
            return None
        return f"{OBJECTIVE_SECTION}\n{self.objective}"


def _shown(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"
