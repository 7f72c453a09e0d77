"""A SIMULATED model for demos, tests and benchmarks. It is not a language model.

``simulated/feedback-follower`` is a litellm custom provider: once
:func:`register_simulated_provider` has run (``LLM("simulated/...")`` runs it),
``litellm.completion(model="simulated/feedback-follower", messages=...)`` answers offline, and
litellm's usage and cost accounting work exactly as for a real model. Token usage is reported as
about ``len(text) / 4``; the prices registered with litellm are MADE UP ($0.15 per million input
tokens, $0.60 per million output tokens) so that ``litellm.completion_cost`` returns a number.
It is a test double, like ``httpx.MockTransport``: importing this package does not import
litellm; registering the provider does.

What it does: it reads the problem that Trace's ``OptoPrime`` sends (the ``#Variables`` and
``#Feedback`` sections), follows a small feedback grammar mechanically (numbers move the way
the feedback says, by ``N`` or a random step short of values that overshot before; quoted text
is mentioned, added, removed or replaced; a named exception's ``raise`` lines are deleted), and
answers in OptoPrime's JSON format ``{"reasoning": ..., "answer": "", "suggestion": {py_name:
value}}``. If the feedback says the output is correct or perfect and nothing is wrong
(batched feedback where one example passes and another fails is not), or holds no instruction it
understands, the answer is ``TERMINATE`` (OptoPrime then proposes nothing). An instruction
repeated across examples is applied once, and a number already rejected (shown in the prompt's
memory with feedback asking for a change, or already suggested for the same prompt) is not
proposed again. The grammar is spelled out in ``_feedback``.

Options, passed as completion keyword arguments (litellm hands unknown keyword arguments to a
custom provider in ``optional_params``)::

    LLM("simulated/feedback-follower", simulated_noise=0.2, simulated_seed=0,
        simulated_latency=0.0)

* ``simulated_noise``: probability that an answer which would change something is replaced by a
  wrong or useless one: a number moved the wrong way, an irrelevant sentence appended to a
  string, or a function's intended new code with ``raise RuntimeError("simulated bug")``
  inserted as its first body line (so the ``ExecutionError`` path gets exercised, and a repair
  that deletes the line keeps the intended change). ``TERMINATE`` is never noisy.
* ``simulated_seed``: the random seed.
* ``simulated_latency``: seconds to sleep per call (benchmarks use it).
* ``temperature`` (the usual argument) scales the randomness of step sizes; 0 makes them fixed.

Determinism: each answer draws from a ``random.Random`` seeded by (seed, sha256 of the prompt
with object addresses like ``0x7f3a...`` blanked, the temperature, how many times this handler
has seen that seed and prompt), so identical prompts sent repeatedly get different samples
(never a number already suggested for that prompt, except at temperature 0, where the answer
repeats) while a rerun of the same sequence of calls in a fresh process (or after
:func:`reset_simulated_model`) gives the same answers.

One private module per protocol it answers, each recognising its prompt by the markers that
the strategy writing it defines (imported from there, not copied):

==================  ===========================================================================
``_optoprime``      Trace's OptoPrime prompt (:func:`answer_optoprime`)
``_stop``           STOP's "improve this solution" and "improve this improver"
                    (:func:`answer_stop_solution`, :func:`answer_stop_improver`)
``_genetic``        the genetic strategy's crossover (:func:`answer_crossover`)
``_judge``          the pairwise judge of ``selector="llm"`` (:func:`answer_judge`)
``_opro``           Trace's OPRO prompt (:func:`answer_opro`), recognised by Trace's own
                    template, imported when such a prompt comes in
``_textgrad``       Trace's TextGrad prompts: gradients, their summary, the improved
                    variable (:func:`answer_textgrad`), read with Trace's own templates
``_respond``        which answerer answers; any other prompt gets a valid, empty answer
                    ``{"reasoning": ..., "suggestion": {}}`` (:func:`answer_generic`); it never
                    raises on odd input
==================  ===========================================================================

shared by ``_core`` (name, prices, options, text helpers) and ``_feedback`` (the grammar), with
``_provider`` (registration) and ``_handler`` (the litellm handler, which imports litellm).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from trace_optuna.testing.simulated._core import INPUT_COST_PER_TOKEN
from trace_optuna.testing.simulated._core import MODELS
from trace_optuna.testing.simulated._core import OPTION_PREFIX
from trace_optuna.testing.simulated._core import OUTPUT_COST_PER_TOKEN
from trace_optuna.testing.simulated._core import PROVIDER
from trace_optuna.testing.simulated._core import SimulatedOptions
from trace_optuna.testing.simulated._core import approximate_tokens
from trace_optuna.testing.simulated._feedback import OptoPrimeProblem
from trace_optuna.testing.simulated._feedback import Variable
from trace_optuna.testing.simulated._genetic import answer_crossover
from trace_optuna.testing.simulated._judge import answer_judge
from trace_optuna.testing.simulated._opro import answer_opro
from trace_optuna.testing.simulated._optoprime import answer_optoprime
from trace_optuna.testing.simulated._optoprime import parse_optoprime_problem
from trace_optuna.testing.simulated._provider import register_simulated_provider
from trace_optuna.testing.simulated._provider import reset_simulated_model
from trace_optuna.testing.simulated._respond import answer_generic
from trace_optuna.testing.simulated._respond import respond
from trace_optuna.testing.simulated._stop import answer_stop_improver
from trace_optuna.testing.simulated._stop import answer_stop_solution
from trace_optuna.testing.simulated._textgrad import answer_textgrad

if TYPE_CHECKING:
    from trace_optuna.testing.simulated._handler import SimulatedLLM

__all__ = [
    "INPUT_COST_PER_TOKEN",
    "MODELS",
    "OPTION_PREFIX",
    "OUTPUT_COST_PER_TOKEN",
    "OptoPrimeProblem",
    "PROVIDER",
    "SimulatedLLM",
    "SimulatedOptions",
    "Variable",
    "answer_crossover",
    "answer_generic",
    "answer_judge",
    "answer_optoprime",
    "answer_opro",
    "answer_stop_improver",
    "answer_stop_solution",
    "answer_textgrad",
    "approximate_tokens",
    "parse_optoprime_problem",
    "register_simulated_provider",
    "reset_simulated_model",
    "respond",
]


def __getattr__(name: str) -> Any:
    # The handler subclasses litellm.CustomLLM: importing it imports litellm (seconds).
    if name == "SimulatedLLM":
        from trace_optuna.testing.simulated._handler import SimulatedLLM

        return SimulatedLLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
