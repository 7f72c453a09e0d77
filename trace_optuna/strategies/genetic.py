"""Genetic: tournament selection of two parents, LLM crossover, then OptoPrime mutation.

1. Two parents are drawn from the stored population by tournaments of
   ``genetic.tournament_size`` candidates each (the best of each draw wins). In a dataset
   study (``trainset=``) the second parent complements the first instead: of the validation
   examples where the first is not best, the candidate that leads on the most
   (:meth:`~trace_optuna.population.Population.example_leaders`; ties go to the better
   candidate, the newer among equal scores). When no candidate leads where the first does
   not (the first leads everywhere), the second is drawn by tournament as usual.
2. An LLM crossover prompt shows both parents' values, scores and feedback (and the study's
   objective, if its optimizer settings give one) and asks for a child, one value per
   parameter (:data:`CROSSOVER_MARKER` opens the prompt).
3. With probability ``genetic.mutation_rate``, the child is evaluated and one OptoPrime step
   from its feedback mutates it.

Both parents are recorded (``trace:parents``: the better one first); ``trace:genetic`` says
which trials were drawn, by which rule (``selection``: ``"tournament"``, or ``"complement"``
with ``complement_examples``, how many validation examples the second parent leads where the
first is not best) and whether the child was mutated. In a multi-objective study the
tournaments rank by Pareto layer (newest first within one), "the better one" is the parent
that dominates the other (the newer when neither does), and the crossover prompt shows each
parent's list of scores with the study's directions.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING
from typing import Any

from trace_optuna.exceptions import LLMError
from trace_optuna.exceptions import SuggestionError
from trace_optuna.population import score_of
from trace_optuna.strategies.base import Proposal
from trace_optuna.strategies.base import StepContext
from trace_optuna.strategies.base import Strategy
from trace_optuna.strategies.base import check_int
from trace_optuna.strategies.base import check_number
from trace_optuna.strategies.base import register
from trace_optuna.strategies.optoprime import OptoPrimeStrategy
from trace_optuna.strategies.optoprime import cast_suggestion
from trace_optuna.strategies.optoprime import optoprime_update

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from trace_optuna.population import Population

CROSSOVER_MARKER = "#Crossover"
PARENTS_MARKER = "#Parents"

CROSSOVER_SYSTEM_PROMPT = (
    "You are the crossover operator of a genetic algorithm that optimizes the parameters of a "
    "program (prompts, code, numbers). You see two parent solutions with their scores and the "
    "feedback each received. Write one child that combines the strengths of both: for each "
    "parameter, take the better parent's value, or merge the two when each fixes something "
    "the other does not. Keep every parameter's type; keep code valid Python with the same "
    "function name and signature. Answer with JSON only: "
    '{"reasoning": "<short>", "child": {"<parameter>": <value>, ...}}'
)


@register
class GeneticStrategy(Strategy):
    """Crossover of two tournament-selected parents, then an optional OptoPrime mutation.

    Each setting is either fixed here (the same in every trial; no Optuna parameter) or, when
    None, sampled by Optuna in every trial under the parameter name given below, so the
    study's sampler tunes it and importance analysis sees it.

    Args:
        tournament_size: Candidates drawn per tournament, an int >= 1 (1 draws a parent at
            random; a tournament larger than the population draws all of it). None: sampled
            as ``genetic.tournament_size`` in [2, 4].
        mutation_rate: Probability of mutating the child, a number in [0, 1]. None: sampled
            as ``genetic.mutation_rate`` in [0, 1].

    Raises:
        ConfigurationError: If a setting is of the wrong type or out of its range.
    """

    name = "genetic"

    def __init__(
        self, tournament_size: int | None = None, mutation_rate: float | None = None
    ) -> None:
        check_int("GeneticStrategy", "tournament_size", tournament_size, 1, sampled=True)
        check_number("GeneticStrategy", "mutation_rate", mutation_rate, 0.0, 1.0, sampled=True)
        self.tournament_size = tournament_size
        self.mutation_rate = None if mutation_rate is None else float(mutation_rate)

    def suggest_settings(self, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "tournament_size": self.tournament_size
            if self.tournament_size is not None
            else trial.suggest_int("genetic.tournament_size", 2, 4),
            "mutation_rate": self.mutation_rate
            if self.mutation_rate is not None
            else trial.suggest_float("genetic.mutation_rate", 0.0, 1.0),
        }

    def propose(self, context: StepContext) -> Proposal:
        population, rng = context.population, context.rng
        size = int(context.settings["tournament_size"])
        first = population.tournament(size, rng)
        selection: dict[str, Any] = {"selection": "tournament"}
        second = None
        if first is not None and population.dataset:
            second, led = complement(population, first)
            if second is not None:
                selection = {"selection": "complement", "complement_examples": led}
        if first is not None and second is None:
            second = population.tournament(size, rng, exclude={first.number})
        if first is None or second is None:
            # One candidate is no population: step greedily until there are two.
            context.attrs["trace:genetic"] = {"fallback": "fewer than two candidates"}
            return OptoPrimeStrategy(temperature=0.0, memory_size=0).propose(context)
        better, other = population.top_k_of([first, second], 2)
        child = self._crossover(context, better, other)
        mutated = rng.random() < float(context.settings["mutation_rate"])
        if mutated:
            child = self._mutate(context, child)
        context.attrs["trace:genetic"] = {
            "parents": [better.number, other.number],
            **selection,
            "mutated": mutated,
        }
        return Proposal(
            snapshot=child,
            parents=[better.number, other.number],
            parent_score=score_of(better),
            parent_feedback=population.feedback(better.number),
        )

    def _crossover(
        self, context: StepContext, better: FrozenTrial, other: FrozenTrial
    ) -> dict[str, Any]:
        population = context.population
        parents = [
            {
                "trial": trial.number,
                "score": score_of(trial),
                "feedback": population.feedback(trial.number),
                "values": population.snapshot(trial.number),
            }
            for trial in (better, other)
        ]
        directions = [d.name.lower() for d in context.trial.study.directions]
        if len(directions) == 1:
            header: dict[str, Any] = {"direction": directions[0]}
            goal = f"Scores are to be {directions[0]}d."
        else:  # each score is a list: one number per objective
            header = {"directions": directions}
            goal = f"Each score lists {len(directions)} objectives, to {', '.join(directions)}."
        objective = context.optimizer.objective_section()
        user = "\n".join(
            [
                CROSSOVER_MARKER,
                f"{goal} Combine the two parents into one child.",
                *([objective] if objective else []),
                PARENTS_MARKER,
                json.dumps({**header, "parents": parents}, indent=2),
            ]
        )
        text = context.llm.complete(
            [
                {"role": "system", "content": CROSSOVER_SYSTEM_PROMPT},
                {"role": "user", "content": user},
            ],
            response_format={"type": "json_object"},
            **context.optimizer.call_options(),
        )
        return parse_child(
            text,
            population.snapshot(better.number),
            strict=not context.optimizer.ignore_extraction_error,
        )

    def _mutate(self, context: StepContext, child: dict[str, Any]) -> dict[str, Any]:
        result = context.evaluate(child)
        feedback, output = result.feedback, result.output
        if result.reused_from is not None:
            # An identical candidate is stored: re-run it to get a live graph to mutate.
            live = context.evaluate_parent(result.reused_from)
            feedback, output = live.feedback, live.output
        return {**child, **optoprime_update(context, feedback, output)}


def complement(population: Population, first: FrozenTrial) -> tuple[FrozenTrial | None, int]:
    """The candidate that best complements ``first`` in a dataset study, and on how many
    validation examples it leads where ``first`` is not best.

    Among the candidates leading on at least one validation example where ``first`` is not
    best (its score is worse than the leaders', or it has none), the one leading on the most
    such examples; ties go to the better candidate (:meth:`Population.top_k_of`). ``(None, 0)``
    when there is none: ``first`` leads on every example, or the study has no rows.
    """
    first_scores = population.example_scores(first.number)
    counts: dict[int, int] = {}
    for example_id, numbers in population.example_leaders("val").items():
        mine = first_scores.get(example_id)
        best = population.example_scores(numbers[0]).get(example_id)
        if mine is not None and best is not None and not population.better(best, mine):
            continue  # first leads there (or ties the leaders)
        for number in numbers:
            counts[number] = counts.get(number, 0) + 1
    if not counts:
        return None, 0
    most = max(counts.values())
    tied = [population.trial(number) for number, led in counts.items() if led == most]
    return population.top_k_of(tied, 1)[0], most


def parse_child(text: str, template: dict[str, Any], *, strict: bool = False) -> dict[str, Any]:
    """Read the child from a crossover answer, typed like ``template`` (the better parent).

    Parameters the answer leaves out keep the better parent's value; so do those it gives a
    value of the wrong type, unless ``strict`` (the optimizer settings'
    ``ignore_extraction_error=False``).

    Raises:
        LLMError: If the answer holds no ``child`` object, or, with ``strict``, a value that
            cannot be converted to its parameter's type.
    """
    child = None
    for candidate in (text, *re.findall(r"\{.*\}", text, re.DOTALL)):
        try:
            child = json.loads(candidate).get("child")
        except (json.JSONDecodeError, AttributeError):
            continue
        if isinstance(child, dict):
            break
    if not isinstance(child, dict):
        raise LLMError("The crossover answer holds no child object.", response=text)
    result = dict(template)
    rejected = {}
    for path, current in template.items():
        if path in child:
            try:
                result[path] = cast_suggestion(current, child[path])
            except SuggestionError as error:
                rejected[path] = str(error)  # the better parent's value stays
    if rejected and strict:
        reason = "; ".join(f"{path}: {error}" for path, error in rejected.items())
        raise LLMError(
            f"The crossover's child could not be used ({reason}), and the optimizer settings "
            "say ignore_extraction_error=False.",
            response=text,
        )
    return result
