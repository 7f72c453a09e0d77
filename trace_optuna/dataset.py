"""Datasets: examples with stable ids, splits, and the dataset form of a study's step.

A study given ``trainset=`` optimizes over a dataset. ``evaluate`` then scores one example,
``run(agent, example) -> Evaluation``, and each trial is a step on a minibatch (see the README,
"Datasets"):

1. A seeded minibatch of the training set is drawn (its ids recorded in ``trace:minibatch``).
2. The parent runs on it, every example live, and the examples' outputs and feedback reach the
   strategy as ONE backward pass, batched the Trace way (Trace's ``MinibatchAlgorithm``:
   the outputs joined by a traced :func:`batchify`, the feedback texts by the same format), so
   OptoPrime sees which examples failed and why.
3. The candidate is scored on the same minibatch; only if it is not worse than the parent
   there is it scored on the validation set (GEPA's acceptance rule), in chunks whose running
   mean goes to ``trial.report`` so that the study's pruner can stop it.
4. The trial's value is the validation mean, or the minibatch mean with ``trace:validated``
   False (such a trial is never a parent: :class:`~trace_optuna.population.Population`).

Every (candidate, split, example) result is a row of the study's
:class:`~trace_optuna.example_results.ExampleStore`, the cache every worker reads: a pair run
once is never run again for a score (a parent's minibatch re-run is live, for its graph). The
test set is scored only by :meth:`~trace_optuna.TraceStudy.evaluate_test`, never in a trial.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import math
import numbers
import os
import random
import socket
import time
from typing import TYPE_CHECKING
from typing import Any

from opto import trace
from opto.trace.bundle import ExecutionError
from opto.trace.nodes import Node
from optuna.exceptions import TrialPruned

from trace_optuna.evaluation import Evaluation
from trace_optuna.example_results import OUTPUT_EXCERPT_CHARS
from trace_optuna.example_results import ExampleResult
from trace_optuna.example_results import ExampleStore
from trace_optuna.exceptions import ConfigurationError

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from trace_optuna.population import Population

_logger = logging.getLogger(__name__)

#: The default minibatch size (or the whole training set, when smaller).
DEFAULT_MINIBATCH_SIZE = 8

PARENT_SELECTIONS = ("best", "pareto")


class Dataset:
    """Examples with stable ids.

    Args:
        examples: The examples, any objects ``run(agent, example)`` takes.
        id: ``id(example) -> str`` giving each example's stable id. None: a content hash of
            the example's JSON form (so the example must be JSON-able).

    Raises:
        ConfigurationError: On an empty dataset, two examples with one id, an example that is
            not JSON-able when no ``id`` is given, or an ``id`` that returns no str/int
            (each naming the example).

    Example:
        >>> data = Dataset([{"q": "1+1", "a": "2"}, {"q": "2+2", "a": "4"}], id=lambda e: e["q"])
        >>> data.ids
        ['1+1', '2+2']
        >>> len(data)
        2
    """

    def __init__(self, examples: Sequence[Any], id: Callable[[Any], Any] | None = None) -> None:
        if isinstance(examples, Dataset):
            examples = examples.examples
        if isinstance(examples, (str, bytes)) or not isinstance(examples, Sequence):
            raise ConfigurationError(
                f"Dataset(examples) must be a list of examples, got {type(examples).__name__}."
            )
        if not examples:
            raise ConfigurationError("Dataset(examples) is empty: give at least one example.")
        if id is not None and not callable(id):
            raise ConfigurationError(
                f"Dataset(id=...) must be a function example -> id, got {type(id).__name__}."
            )
        ids = [_example_id(example, index, id) for index, example in enumerate(examples)]
        first: dict[str, int] = {}
        for index, example_id in enumerate(ids):
            if example_id in first:
                raise ConfigurationError(
                    f"Examples #{first[example_id]} and #{index} have the same id "
                    f"{example_id!r}; every example needs its own id"
                    + (" (they may be equal examples)." if id is None else ".")
                )
            first[example_id] = index
        self.examples: list[Any] = list(examples)
        self.ids: list[str] = ids
        self._index = first

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.examples)

    def __repr__(self) -> str:
        return f"Dataset({len(self)} examples)"

    def items(self) -> list[tuple[str, Any]]:
        """``[(example_id, example)]`` in the dataset's order."""
        return list(zip(self.ids, self.examples, strict=True))

    def example(self, example_id: str) -> Any:
        """The example with this id.

        Raises:
            KeyError: If the dataset has none.
        """
        return self.examples[self._index[example_id]]

    def split(self, *fractions: float, seed: int = 0) -> tuple[Dataset, ...]:
        """Split into datasets of these fractions of the examples, shuffled with ``seed``.

        The same examples, fractions and seed give the same splits in every process.

        Args:
            *fractions: Two or more numbers in (0, 1) that sum to 1, e.g. ``0.6, 0.2, 0.2``.
            seed: Seeds the shuffle.

        Returns:
            One dataset per fraction, in order.

        Raises:
            ConfigurationError: On fewer than two fractions, a fraction out of (0, 1), fractions
                not summing to 1, or a split that would be empty.

        Example:
            >>> train, val = Dataset(list(range(10))).split(0.8, 0.2)
            >>> len(train), len(val)
            (8, 2)
        """
        if len(fractions) < 2:
            raise ConfigurationError(
                f"Dataset.split needs two or more fractions (e.g. 0.8, 0.2), got {fractions!r}."
            )
        for index, fraction in enumerate(fractions):
            if (
                isinstance(fraction, bool)
                or not isinstance(fraction, numbers.Real)
                or not 0 < fraction < 1
            ):
                raise ConfigurationError(
                    f"Dataset.split fraction #{index} must be a number in (0, 1), got "
                    f"{fraction!r}."
                )
        if not math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
            raise ConfigurationError(
                f"Dataset.split fractions must sum to 1, got {list(fractions)} (sum "
                f"{sum(fractions):g})."
            )
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        bounds, total = [0], 0.0
        for fraction in fractions:
            total += fraction
            bounds.append(round(total * len(self)))
        parts = []
        for index, (start, end) in enumerate(zip(bounds, bounds[1:], strict=False)):
            if start == end:
                raise ConfigurationError(
                    f"Dataset.split fraction #{index} ({fractions[index]}) of {len(self)} "
                    "examples is empty; use fewer splits or more examples."
                )
            parts.append(self._subset(order[start:end]))
        return tuple(parts)

    def _subset(self, indices: Sequence[int]) -> Dataset:
        part = Dataset.__new__(Dataset)
        part.examples = [self.examples[i] for i in indices]
        part.ids = [self.ids[i] for i in indices]
        part._index = {example_id: i for i, example_id in enumerate(part.ids)}
        return part


def _example_id(example: Any, index: int, id: Callable[[Any], Any] | None) -> str:
    if id is None:
        try:
            text = json.dumps(
                example, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
        except (TypeError, ValueError) as error:
            raise ConfigurationError(
                f"Example #{index} is not JSON-able, so it has no content hash for its id "
                f"({error}); give Dataset(examples, id=lambda example: ...)."
            ) from None
        return hashlib.sha256(text.encode()).hexdigest()[:16]
    value = id(example)
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
        raise ConfigurationError(
            f"Dataset(id=...) must return a str (or an int) for each example; example #{index} "
            f"got {type(value).__name__} {value!r}."
        )
    return str(value)


def coerce(name: str, value: Any) -> Dataset | None:
    """A ``Config`` option given as a :class:`Dataset` or a list of examples, as a Dataset."""
    if value is None or isinstance(value, Dataset):
        return value
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigurationError(
            f"{name} must be a trace_optuna.Dataset (or a list of examples), got "
            f"{type(value).__name__}."
        )
    if not value:
        raise ConfigurationError(f"{name} is empty: give at least one example.")
    return Dataset(value)


def check_splits(splits: dict[str, Dataset | None]) -> None:
    """Refuse two splits that share an example id (naming the splits and an id).

    Raises:
        ConfigurationError: On an overlap.
    """
    seen: dict[str, str] = {}
    for name, dataset in splits.items():
        if dataset is None:
            continue
        for example_id in dataset.ids:
            if example_id in seen:
                raise ConfigurationError(
                    f"{seen[example_id]} and {name} share example {example_id!r}: the splits "
                    "must not overlap (a validation or test score of an example the step "
                    "trained on says nothing)."
                )
            seen[example_id] = name


#: The options a dataset study's splits are given by, in the order ``trace:splits`` lists them.
SPLIT_OPTIONS = ("trainset", "valset", "testset")


def split_fingerprints(splits: dict[str, Dataset | None]) -> dict[str, Any] | None:
    """What ``trace:splits`` records of a study's splits: per option, the example count and a
    hash of the sorted ids (None for a split not given); None for a study without
    ``trainset``.

    Example:
        >>> split_fingerprints({"trainset": Dataset(["a", "b"], id=str), "valset": None})
        {'trainset': {'examples': 2, 'ids_sha256': '0473ef2dc0d324ab'}, 'valset': None}
    """
    if splits.get("trainset") is None:
        return None
    return {
        name: None if dataset is None else _fingerprint(dataset)
        for name, dataset in splits.items()
    }


def _fingerprint(dataset: Dataset) -> dict[str, Any]:
    text = json.dumps(sorted(dataset.ids), separators=(",", ":"), ensure_ascii=False)
    return {"examples": len(dataset), "ids_sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}


def check_same_splits(
    stored: dict[str, Any] | None, current: dict[str, Any] | None, study_name: str
) -> None:
    """Refuse reopening a study with other splits than it recorded (:func:`split_fingerprints`).

    Raises:
        ConfigurationError: Naming the first split that differs and how (a study made with
            or without ``trainset``, a split given or not, its count, or its ids).
    """
    rule = (
        "A study's splits are fixed for its life (its validation means, per-example rows and "
        "test score are about those examples): pass the same examples, ids and split seed, or "
        "use a new study."
    )
    if stored is None and current is None:
        return
    if stored is None or current is None:
        made = "without trainset= (evaluate(agent) scores a whole agent)"
        now = "none"
        if stored is not None:
            made = f"with a trainset of {stored['trainset']['examples']} examples"
        else:
            assert current is not None
            now = f"a trainset of {current['trainset']['examples']} examples"
        raise ConfigurationError(
            f"Study {study_name!r} was created {made}; this objective has {now}. {rule}"
        )
    for name in SPLIT_OPTIONS:
        before, after = stored.get(name), current.get(name)
        if before == after:
            continue
        if before is None or after is None:
            default = " (validation on the training set)" if name == "valset" else ""
            made = f"with a {name} of {before['examples']} examples" if before else "without"
            now = f"a {name} of {after['examples']} examples" if after else f"no {name}"
            if before is None:
                made += f" {name}{default}"
            else:
                now += default
        else:
            made = f"with a {name} of {before['examples']} examples (ids {before['ids_sha256']})"
            if before["examples"] != after["examples"]:
                change = f"{after['examples']} examples (ids {after['ids_sha256']})"
            else:
                change = f"as many examples, other ids ({after['ids_sha256']})"
            now = f"a {name} of {change}"
        raise ConfigurationError(
            f"Study {study_name!r} was created {made}; this objective has {now}. {rule}"
        )


def check_run_signature(run: Any) -> None:
    """Refuse an ``evaluate`` that cannot be called as ``run(agent, example)``.

    Raises:
        ConfigurationError: Naming its signature.
    """
    try:
        signature = inspect.signature(run)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(object(), object())
    except TypeError:
        name = getattr(run, "__name__", repr(run))
        raise ConfigurationError(
            f"With trainset=, evaluate is called as run(agent, example) -> Evaluation for "
            f"each example, but {name!r} has signature {signature}."
        ) from None


@trace.bundle()
def batchify(*items):  # type: ignore[no-untyped-def]
    """Concatenate the items into a single string, each labelled with its position."""
    output = ""
    for index, item in enumerate(items):
        output += f"ID {[index]}: {item}\n"
    return output


def batched_text(texts: Sequence[str]) -> str:
    """The feedback texts of a batch in :func:`batchify`'s format (Trace's batched feedback)."""
    return "".join(f"ID {[index]}: {text}\n" for index, text in enumerate(texts))


@dataclasses.dataclass
class Validation:
    """What validating one candidate did (stored as ``trace:validation``).

    Attributes:
        mean: The mean score over the examples scored (all of them unless pruned).
        scored: How many examples were scored.
        total: How many the validation set has.
        ran: How many of them were run now (the rest were rows already).
        pruned: Whether the study's pruner stopped it.
    """

    mean: float
    scored: int
    total: int
    ran: int
    pruned: bool = False


class DatasetFlow:
    """The dataset form of a study's ``evaluate``, for one process.

    It is the ``evaluate(agent)`` :class:`~trace_optuna.runner.AgentRunner` calls: each call
    scores the agent on the examples :meth:`using` set (the trial's minibatch by default),
    through the study's :class:`~trace_optuna.example_results.ExampleStore`, and returns one
    :class:`~trace_optuna.Evaluation` for them, batched the Trace way.

    Args:
        run: The user's ``run(agent, example) -> Evaluation``.
        trainset, valset, testset: The splits (``valset`` None: the training set validates).
        minibatch_size: Examples per minibatch (None: up to :data:`DEFAULT_MINIBATCH_SIZE`).
        error_score: The score of an example whose run raises (None: the candidate fails).
        parent_selection: ``"best"`` or ``"pareto"``.
        candidate_hash: The snapshot hash of the values the agent holds now.
    """

    def __init__(
        self,
        run: Callable[[Any, Any], Evaluation],
        *,
        trainset: Dataset,
        valset: Dataset | None,
        testset: Dataset | None,
        minibatch_size: int | None,
        error_score: float | None,
        parent_selection: str,
        candidate_hash: Callable[[], str],
    ) -> None:
        self.run = run
        self.trainset = trainset
        self.valset = valset if valset is not None else trainset
        self.testset = testset
        self.minibatch_size = minibatch_size or min(DEFAULT_MINIBATCH_SIZE, len(trainset))
        self.error_score = error_score
        self.parent_selection = parent_selection
        self.candidate_hash = candidate_hash
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.minibatch: list[tuple[str, Any]] = []
        self.trial_number = -1
        self.last: list[ExampleResult] = []  # the rows of the last call, in order
        self.ran: list[str] = []  # the example ids the last call ran (the rest were rows)
        self._split = "train"
        self._examples: list[tuple[str, Any]] | None = None  # None: the minibatch
        self._live = False
        self._store: ExampleStore | None = None
        self._store_key: tuple[int, int] | None = None

    # -- the study's rows ---------------------------------------------------------------

    def store(self, study: optuna.Study) -> ExampleStore:
        """The study's per-example rows."""
        storage, study_id = study._storage, study._study_id  # Optuna has no public handle
        key = (id(storage), study_id)
        if self._store is None or self._store_key != key:
            self._store = ExampleStore(storage, study_id)
            self._store_key = key
        return self._store

    def begin(self, study: optuna.Study, trial_number: int, seed: str) -> list[str]:
        """Draw the trial's minibatch (seeded by ``seed``); return its ids."""
        self.store(study)
        self.trial_number = trial_number
        rng = random.Random(f"{seed}:minibatch")
        self.minibatch = rng.sample(self.trainset.items(), self.minibatch_size)
        return [example_id for example_id, _ in self.minibatch]

    def stored(
        self, candidate: str, split: str, examples: Sequence[tuple[str, Any]]
    ) -> list[ExampleResult]:
        """The stored rows of ``candidate`` on ``examples`` of ``split``, in their order
        (scored earlier in this trial, so every one exists)."""
        assert self._store is not None, "DatasetFlow.begin() was not called"
        found = self._store.get(candidate, split, [example_id for example_id, _ in examples])
        return [found[example_id] for example_id, _ in examples]

    @contextlib.contextmanager
    def using(self, split: str, examples: Sequence[tuple[str, Any]]) -> Iterator[None]:
        """Calls in this block score ``examples`` of ``split`` instead of the minibatch."""
        before = self._split, self._examples
        self._split, self._examples = split, list(examples)
        try:
            yield
        finally:
            self._split, self._examples = before

    @contextlib.contextmanager
    def live(self) -> Iterator[None]:
        """Calls in this block run every example (a parent's re-run needs its Trace graph);
        rows that exist are kept, the missing ones are written."""
        before, self._live = self._live, True
        try:
            yield
        finally:
            self._live = before

    # -- evaluate(agent) -----------------------------------------------------------------

    def __call__(self, agent: Any) -> Evaluation:
        """Score ``agent`` on the current examples: one Evaluation, batched the Trace way."""
        assert self._store is not None, "DatasetFlow.begin() was not called"
        examples = self.minibatch if self._examples is None else self._examples
        split, candidate = self._split, self.candidate_hash()
        outputs: dict[str, Any] = {}

        def run_missing(missing: Sequence[tuple[str, Any]]) -> list[ExampleResult]:
            rows = []
            for example_id, example in missing:
                row, output = self._run_one(agent, split, candidate, example_id, example)
                rows.append(row)
                outputs[example_id] = output
            return rows

        if self._live:
            # The live rows, whatever is stored: their feedback must match this graph.
            rows = run_missing(examples)
            self._store.put(rows)
            self.ran = [example_id for example_id, _ in examples]
        else:
            lookup = self._store.evaluate(
                candidate, split, examples, run_missing, trial_number=self.trial_number
            )
            rows, self.ran = lookup.results, lookup.ran
        self.last = rows
        live = [outputs.get(row.example_id) for row in rows]
        output = None
        if any(node is not None for node in live):
            # Cached examples join as their stored output text: the IDs stay aligned with the
            # feedback, and the graph reaches the parameters through the live ones.
            pairs = zip(rows, live, strict=True)
            items = [row.output if node is None else node for row, node in pairs]
            output = batchify(*items)
        return Evaluation(
            score=sum(row.score for row in rows) / len(rows),
            feedback=batched_text([row.feedback for row in rows]),
            output=output,
            details={"examples": [[row.example_id, row.score] for row in rows]},
        )

    def _run_one(
        self, agent: Any, split: str, candidate: str, example_id: str, example: Any
    ) -> tuple[ExampleResult, Node | None]:
        """Run one example. An error the candidate causes is a row scored ``error_score``
        (without one, it propagates: the candidate fails); a transient one propagates."""
        from trace_optuna.runner import is_transient

        started = time.perf_counter()
        error: str | None = None
        output: Node | None = None
        try:
            evaluation = self.run(agent, example)
        except ExecutionError as raised:
            inner = (raised.exception_node.info or {}).get("output")
            if isinstance(inner, (TrialPruned, ConfigurationError)) or is_transient(inner):
                raise
            if self.error_score is None:
                raise  # the candidate's code raised: the runner makes it a repairable failure
            # Its exception node joins the batch, as Trace's loops backpropagate an error.
            output = raised.exception_node
            text = str(output.data).strip()
            error = f"The candidate's code raised: {text}"
            score, feedback = self.error_score, error
        except ConfigurationError as broken:
            raise ConfigurationError(
                f"run(agent, example) on example {example_id!r}: {broken}"
            ) from None
        except TrialPruned:
            raise
        except Exception as raised:
            if is_transient(raised) or self.error_score is None:
                raised.add_note(f"(while running example {example_id!r})")
                raise
            error = f"run() raised {type(raised).__name__}: {raised}"
            score, feedback, text = self.error_score, error, ""
        else:
            score, feedback, output, text = self._checked(evaluation, example_id)
        return (
            ExampleResult(
                candidate=candidate,
                split=split,
                example_id=example_id,
                score=score,
                feedback=feedback,
                output=text[:OUTPUT_EXCERPT_CHARS],
                seconds=round(time.perf_counter() - started, 6),
                worker=self.worker,
                trial_number=self.trial_number,
                error=error,
            ),
            output,
        )

    @staticmethod
    def _checked(evaluation: Any, example_id: str) -> tuple[float, str, Node | None, str]:
        if not isinstance(evaluation, Evaluation):
            raise ConfigurationError(
                f"run(agent, example) must return trace_optuna.Evaluation; on example "
                f"{example_id!r} it returned {type(evaluation).__name__}."
            )
        score = evaluation.score
        if isinstance(score, list):
            raise ConfigurationError(
                f"run(agent, example) on example {example_id!r} returned the score list "
                f"{score!r}; a dataset study has one objective: give one number."
            )
        output = evaluation.output
        if output is not None and not isinstance(output, Node):
            raise ConfigurationError(
                "Evaluation.output must be the Trace node the agent produced; on example "
                f"{example_id!r} it is {type(output).__name__}."
            )
        text = "" if output is None else str(output.data)
        return score, evaluation.feedback, output, text

    # -- validation, parents, the test set -----------------------------------------------

    def chunks(self) -> list[list[tuple[str, Any]]]:
        """The validation set in the chunks it is scored in: ``minibatch_size`` examples
        each, always in the set's order (so a pruner compares equal steps)."""
        items = self.valset.items()
        size = self.minibatch_size
        return [items[start : start + size] for start in range(0, len(items), size)]

    def pareto_parent(self, population: Population, rng: random.Random) -> FrozenTrial | None:
        """A parent from GEPA's instance front: the candidates best on at least one validation
        example (ties lead together, :meth:`~trace_optuna.population.Population.example_leaders`),
        less those leading only on a strict subset of another's examples, drawn with weights =
        how many examples each leads. None when no validated candidate has rows."""
        led: dict[int, set[str]] = {}
        for example_id, leaders in population.example_leaders("val").items():
            for number in leaders:
                led.setdefault(number, set()).add(example_id)
        # GEPA drops dominated members: one that leads only where another leads too.
        counts = {
            number: len(examples)
            for number, examples in led.items()
            if not any(examples < other for other in led.values())
        }
        if not counts:
            return None
        front = sorted(counts)
        chosen = rng.choices(front, weights=[counts[number] for number in front])[0]
        return population.trial(chosen)


def score_test(
    flow: DatasetFlow,
    run_examples: Callable[[], None],
    study: optuna.Study,
    number: int,
    candidate: str,
) -> dict[str, Any]:
    """Score trial ``number``'s candidate (which the agent must hold) on the test set and
    store it as the study's ``trace:test``; return that record.

    Args:
        flow: The study's dataset flow.
        run_examples: Scores the current examples (through :meth:`DatasetFlow.using`).
        study: The study.
        number: The trial whose candidate is scored.
        candidate: Its snapshot hash.
    """
    from trace_optuna import records

    assert flow.testset is not None
    flow.store(study)
    flow.trial_number = number
    with flow.using("test", flow.testset.items()):
        run_examples()
    rows = flow.last
    record = {
        "trial": number,
        "snapshot_hash": candidate,
        "mean": sum(row.score for row in rows) / len(rows),
        "examples": len(rows),
        "ran": len(flow.ran),
        "at": time.time(),
    }
    study.set_user_attr(records.STUDY_TEST, record)
    return record


def mean(scores: Sequence[float] | None) -> float | None:
    """The mean of ``scores`` (None for None)."""
    return None if scores is None else sum(scores) / len(scores)


def acceptance(
    parent: Sequence[ExampleResult] | None,
    candidate: Sequence[ExampleResult],
    better: Callable[[float, float], bool],
) -> dict[str, Any]:
    """GEPA's acceptance, as record attributes: the candidate is validated unless it is worse
    than its parent on the minibatch (a root candidate, without a parent, always is). A
    rejected candidate's ``trace:improvement`` is on the minibatch. The examples' scores and
    feedback, before and after, are kept for the trial's note.

    Args:
        parent: The parent's rows on the minibatch; None for a root candidate.
        candidate: The candidate's, in the same order.
        better: ``better(a, b)``: score ``a`` is better than ``b`` in the study's direction.
    """
    from trace_optuna import records

    parent_scores = None if parent is None else [row.score for row in parent]
    candidate_scores = [row.score for row in candidate]
    parent_mean, candidate_mean = mean(parent_scores), mean(candidate_scores)
    assert candidate_mean is not None
    accepted = None if parent_mean is None else not better(parent_mean, candidate_mean)
    attrs: dict[str, Any] = {
        records.MINIBATCH_SCORES: {"parent": parent_scores, "candidate": candidate_scores},
        records.MINIBATCH_FEEDBACK: {
            "parent": None if parent is None else [row.feedback for row in parent],
            "candidate": [row.feedback for row in candidate],
        },
        records.MINIBATCH_SCORE: candidate_mean,
        records.PARENT_MINIBATCH_SCORE: parent_mean,
        records.ACCEPTED: accepted,
        records.VALIDATED: accepted is not False,
    }
    if accepted is False:
        assert parent_mean is not None
        attrs[records.IMPROVEMENT] = candidate_mean - parent_mean
    return attrs


def validate(
    flow: DatasetFlow,
    run_chunk: Callable[[list[tuple[str, Any]]], list[float]],
    trial: optuna.Trial,
    *,
    may_prune: bool,
    before_chunk: Callable[[], None],
) -> Validation:
    """Score the candidate the agent holds on the validation set, chunk by chunk.

    After each chunk the running mean goes to ``trial.report`` (step: examples scored so
    far); when ``may_prune`` and the study's pruner says so, it stops (the rows written so far
    stay) and ``pruned`` is set.

    Args:
        flow: The study's dataset flow.
        run_chunk: Scores a chunk (through :meth:`DatasetFlow.using`) and returns its scores
            (``flow.ran`` then names the examples it ran).
        trial: The running trial.
        may_prune: False for a root candidate (nothing to compare it with).
        before_chunk: Called before each chunk (the study-wide budget check).
    """
    scores: list[float] = []
    ran = 0
    chunks = flow.chunks()
    for chunk in chunks:
        before_chunk()
        scores += run_chunk(chunk)
        ran += len(flow.ran)
        mean = sum(scores) / len(scores)
        trial.report(mean, len(scores))
        if may_prune and len(scores) < len(flow.valset) and trial.should_prune():
            return Validation(mean, len(scores), len(flow.valset), ran, pruned=True)
    return Validation(sum(scores) / len(scores), len(scores), len(flow.valset), ran)
