""":class:`HumanFeedback`: an ``evaluate`` answered by a person in optuna-dashboard's form."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
import datetime
import logging
import math
import threading
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from trace_optuna import records
from trace_optuna import snapshots
from trace_optuna.dashboard._hooks import _RUNNING
from trace_optuna.dashboard._imports import _optuna_dashboard
from trace_optuna.dashboard._notes import _fenced
from trace_optuna.dashboard._notes import trial_note
from trace_optuna.dashboard._notes import write_note
from trace_optuna.evaluation import Evaluation
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import HumanFeedbackTimeout

_logger = logging.getLogger(__name__)


class HumanFeedback:
    """An ``evaluate`` answered by a person in optuna-dashboard: the feedback they type becomes
    Trace feedback for the next step.

    Each trial runs the candidate with ``run(agent)``, shows the output in the trial's note
    (with the diff against the parent and the feedback that drove the step), and waits until a
    person submits the trial's form in optuna-dashboard: a score (a slider from ``low`` to
    ``high``, or the given ``choices``) and the feedback text. The trial then completes with
    that score, the text is the candidate's feedback (``trace:feedback``), and the next step
    starts from it. The form is optuna-dashboard's user-attribute form
    (``register_user_attr_form_widgets``), writing ``trace:human_score`` and
    ``trace:human_feedback`` on the running trial; the objective form is not used because it
    would finish the trial before its record is written.

    A candidate the study already judged (the parent, evaluated again to rebuild its Trace
    graph in a new process) is not asked again: its stored score and feedback are reused.

    After ``timeout`` seconds without an answer the trial FAILs with
    :class:`HumanFeedbackTimeout`; the candidate stays in its record (``trace:snapshot``,
    ``trace:diff``, ``trace:human_output``) and the note says so. Use it with the
    ``optoprime`` strategy (one candidate per trial); strategies that evaluate several
    candidates in one trial are refused at their second candidate.

    Args:
        run: ``run(agent) -> Node``: runs the agent and returns the Trace node of its output.
        low: The lowest score of the slider.
        high: The highest score of the slider.
        step: The slider's step.
        choices: Instead of a slider, ``{label: score}`` radio buttons.
        question: What the form asks.
        timeout: Seconds to wait for an answer; None waits forever.
        poll_interval: Seconds between reads of the trial while waiting.
        render: ``render(output) -> str``: the output shown to the person (default: its data).

    Raises:
        ConfigurationError: On invalid arguments.

    Example:
        >>> import trace_optuna as to
        >>> from trace_optuna import demo
        >>> from trace_optuna.dashboard import HumanFeedback
        >>> evaluate = HumanFeedback(lambda agent: agent.reply(demo.QUESTION), timeout=3600)
        >>> # to.create_study(agent=demo.make_agent, evaluate=evaluate, llm=..., storage=...)
    """

    def __init__(
        self,
        run: Callable[[Any], Any],
        *,
        low: float = 0.0,
        high: float = 1.0,
        step: float | None = 0.1,
        choices: Mapping[str, float] | None = None,
        question: str = "Score the candidate's output shown in the note",
        timeout: float | None = 3600.0,
        poll_interval: float = 1.0,
        render: Callable[[Any], str] | None = None,
    ) -> None:
        if not callable(run):
            raise ConfigurationError(
                f"HumanFeedback needs run(agent) -> Trace node, got {type(run).__name__}."
            )
        if choices is not None and (
            not choices or not all(isinstance(v, (int, float)) for v in choices.values())
        ):
            raise ConfigurationError(
                f"HumanFeedback choices must map labels to numbers, got {choices!r}."
            )
        if not low < high:
            raise ConfigurationError(f"HumanFeedback needs low < high, got {low} and {high}.")
        if timeout is not None and timeout <= 0:
            raise ConfigurationError(f"HumanFeedback timeout must be > 0 or None, got {timeout}.")
        if poll_interval <= 0:
            raise ConfigurationError(f"poll_interval must be > 0, got {poll_interval}.")
        self.run = run
        self.low, self.high, self.step = float(low), float(high), step
        self.choices = dict(choices) if choices is not None else None
        self.question = question
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.render = render or (lambda output: str(getattr(output, "data", output)))
        self._registered: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def describe(self) -> str:
        """What the study's ``trace:evaluation`` attribute says about this evaluation."""
        target = getattr(self.run, "__qualname__", type(self.run).__qualname__)
        scale = (
            ", ".join(f"{label}={value:g}" for label, value in self.choices.items())
            if self.choices
            else f"{self.low:g}..{self.high:g}"
        )
        return (
            f"HumanFeedback: a person scores ({scale}) the output of {target} and types the "
            "feedback in optuna-dashboard"
        )

    def widgets(self) -> list[Any]:
        """The optuna-dashboard form widgets: the score and the feedback text."""
        module = _optuna_dashboard()
        if self.choices is not None:
            score_widget = module.ChoiceWidget(
                choices=list(self.choices),
                values=[float(value) for value in self.choices.values()],
                description=self.question,
                user_attr_key=records.HUMAN_SCORE,
            )
        else:
            score_widget = module.SliderWidget(
                min=self.low,
                max=self.high,
                step=self.step,
                description=self.question,
                user_attr_key=records.HUMAN_SCORE,
            )
        feedback_widget = module.TextInputWidget(
            description="Feedback for the optimizer: what should change, and why",
            user_attr_key=records.HUMAN_FEEDBACK,
        )
        return [score_widget, feedback_widget]

    def register(self, study: optuna.Study) -> None:
        """Register the form on the study (done by the first trial that asks)."""
        module = _optuna_dashboard()
        key = (study.study_name, repr(self.widgets()))
        with self._lock:
            if key in self._registered:
                return
            module.register_user_attr_form_widgets(study, self.widgets())
            self._registered.add(key)

    def __call__(self, agent: Any) -> Evaluation:
        running = _RUNNING.get()
        if running is None or running.trial.study is None:
            raise ConfigurationError(
                "HumanFeedback is an evaluate for trace_optuna studies: it asks in the running "
                "trial's dashboard form, so call it through study.optimize()."
            )
        trial = running.trial
        output = self.run(agent)
        known = self._judged(trial.study, snapshots.snapshot_hash(snapshots.snapshot(agent)))
        if known is not None:
            score, feedback = known
            return Evaluation(
                score=score, feedback=feedback, output=output, details={"human": True}
            )
        if running.asked:
            raise ConfigurationError(
                f"Trial#{trial.number}'s strategy evaluated a second candidate; HumanFeedback "
                "asks one question per trial. Use it with strategies=['optoprime']."
            )
        running.asked = True
        _optuna_dashboard()  # fails here, naming the extra, when it is missing
        self.register(trial.study)
        shown = self.render(output)
        asked_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        records.write(
            trial.set_user_attr,
            {
                records.HUMAN_OUTPUT: shown,
                records.HUMAN: {
                    "status": "waiting",
                    "asked_at": asked_at,
                    "timeout_s": self.timeout,
                },
            },
        )
        write_note(trial, self._waiting_note(trial.number, running.attrs, shown))
        answer = self._wait(trial)
        if answer is None:
            trial.set_user_attr(
                records.HUMAN,
                {"status": "timed out", "asked_at": asked_at, "timeout_s": self.timeout},
            )
            raise HumanFeedbackTimeout(
                f"Nobody scored Trial#{trial.number} in optuna-dashboard within {self.timeout} s; "
                "the trial fails and keeps its candidate (trace:snapshot, trace:diff, "
                "trace:human_output)."
            )
        score, feedback = answer
        trial.set_user_attr(
            records.HUMAN, {"status": "answered", "asked_at": asked_at, "timeout_s": self.timeout}
        )
        return Evaluation(score=score, feedback=feedback, output=output, details={"human": True})

    def _judged(self, study: optuna.Study, snapshot_hash: str) -> tuple[float, str] | None:
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if (
                frozen.user_attrs.get(records.SNAPSHOT_HASH) == snapshot_hash
                and frozen.value is not None
            ):
                return frozen.value, records.decode(frozen.user_attrs, records.FEEDBACK) or ""
        return None

    def _wait(self, trial: optuna.Trial) -> tuple[float, str] | None:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            attrs = _fresh_attrs(trial)
            if records.HUMAN_SCORE in attrs and records.HUMAN_FEEDBACK in attrs:
                score = _as_score(attrs[records.HUMAN_SCORE])
                if score is not None:
                    return score, str(attrs[records.HUMAN_FEEDBACK])
                _logger.warning(
                    "Trial#%d: the form's score %r is not a number; waiting for another.",
                    trial.number,
                    attrs[records.HUMAN_SCORE],
                )
            if deadline is not None and time.monotonic() >= deadline:
                return None
            remaining = self.poll_interval if deadline is None else deadline - time.monotonic()
            time.sleep(max(0.0, min(self.poll_interval, remaining)))

    def _waiting_note(self, number: int, attrs: Mapping[str, Any], shown: str) -> str:
        scale = (
            " / ".join(f"{label} ({value:g})" for label, value in (self.choices or {}).items())
            or f"from {self.low:g} to {self.high:g}"
        )
        until = "" if self.timeout is None else f" (the trial waits {self.timeout:g} s)"
        body = trial_note(number, attrs, {})
        head, _, rest = body.partition("\n")
        return "\n".join(
            [
                f"## Trial {number}: waiting for your score and feedback",
                "",
                f"Read the candidate's output below, then use the **Set User Attributes Form** "
                f"at the bottom of this page: a score {scale}, and feedback telling the "
                f"optimizer what to change{until}.",
                "",
                "### The candidate's output",
                "",
                _fenced(shown, "text"),
                "",
                rest.strip(),
                "",
            ]
        )


def _fresh_attrs(trial: optuna.Trial) -> dict[str, Any]:
    """The running trial's user attributes as stored now (``Trial.user_attrs`` is a copy taken
    when the trial started; the dashboard's form writes to the storage)."""
    for frozen in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if frozen.number == trial.number:
            return dict(frozen.user_attrs)
    return {}


def _as_score(value: Any) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if math.isfinite(score) else None
