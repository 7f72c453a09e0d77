"""Worker processes sharing one study: the app object, one worker, and a supervisor of N.

Workers share nothing but the storage, the way Optuna's distributed optimization works: every
worker opens the same study (``load_if_exists``) and runs Optuna's ``optimize`` loop on it.
Start as many as you like, on as many hosts as reach the database (SQLite: one host only).

Define an :class:`App` in your module, naming what a worker needs::

    # mypkg/agent.py
    import trace_optuna as to

    from trace_optuna.workers import App

    app = App(
        agent=make_agent,            # builds a fresh agent; each process calls it once
        evaluate=evaluate,           # evaluate(agent) -> to.Evaluation
        llm="openai/gpt-4o-mini",    # or a to.LLM(...)
        strategies=["optoprime", "genetic"],
    )

then run workers from a shell::

    trace-optuna worker --storage postgresql://db/optuna --study mine --app mypkg.agent:app \\
        --trials 50
    trace-optuna workers --processes 4 --storage ... --study mine --app mypkg.agent:app \\
        --trials 200

or from Python: ``run_worker(app, storage=..., study_name=..., n_trials=...)``.

Faults (see :mod:`trace_optuna.coordination` and :mod:`trace_optuna.storage`): a worker killed
mid-trial leaves a trial that another worker marks FAIL after the grace period and runs again
with the same strategy, settings and parents; storage calls are retried while the database
restarts; an LLM that keeps failing fails its trial with the reason and the worker goes on.

Stopping: the first Ctrl-C (SIGINT) or SIGTERM lets each worker finish its running trial and
exit; a second one interrupts the trial (it is recorded FAIL). :func:`run_workers` starts its
processes with the ``spawn`` method (Trace keeps process-wide graph state, so never threads),
forwards the signals to them, and restarts a worker that dies without being asked to.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
import dataclasses
import importlib
import logging
import os
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING
from typing import Any

import optuna

from trace_optuna.config import Config
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.storage import redact

if TYPE_CHECKING:
    import multiprocessing
    from multiprocessing.sharedctypes import Synchronized

    from optuna.storages import BaseStorage
    from optuna.study import Study
    from optuna.trial import FrozenTrial

    from trace_optuna.study import TraceStudy

_logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIGURATION = 2
EXIT_INTERRUPTED = 130


@dataclasses.dataclass(frozen=True, kw_only=True)
class App(Config):
    """What a worker process needs to run a study's trials. Define one in your module.

    An ``App`` is a :class:`~trace_optuna.Config` (every option of a study, with the same names,
    checked when the App is made) that can open its study. Every worker process imports your
    module and opens the study with these options, so they must be the same in every process
    (the study refuses another strategy list or agent). Give ``sampler`` as a function
    returning a sampler when each process should build its own.

    Example:
        >>> from trace_optuna import demo
        >>> app = App(agent=demo.make_agent, evaluate=demo.evaluate, llm=demo.DEMO_LLM)
        >>> study = app.study(study_name="doc", storage="sqlite:///:memory:")
        >>> study.optimize(n_trials=2)
        >>> len(study.trials)
        2
    """

    def study(self, *, study_name: str, storage: str | BaseStorage | None) -> TraceStudy:
        """Open the study (creating it on first use) as every worker does.

        Raises:
            ConfigurationError: If the stored study has another agent or strategy list.
        """
        from trace_optuna.study import create_study

        return create_study(
            study_name=study_name, storage=storage, load_if_exists=True, config=self
        )


def load_app(reference: str) -> App:
    """Import ``"package.module:name"`` and return the :class:`App` it names.

    ``name`` may be dotted, and may name a function returning an App. The working directory
    is importable, as with ``python -m``.

    Raises:
        ConfigurationError: If the reference is malformed, the module or name is missing, or it
            is not an App.
    """
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"--app must look like 'package.module:app', got {reference!r}.")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise ConfigurationError(
                f"Cannot import {module_name!r} for --app {reference!r}: {error}. Run from the "
                "directory that holds it, or install it."
            ) from None
        raise
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigurationError(
                f"Module {module_name!r} has no {attribute!r} (for --app {reference!r})."
            ) from None
    if not isinstance(target, App) and callable(target):
        target = target()
    if not isinstance(target, App):
        raise ConfigurationError(
            f"{reference!r} is a {type(target).__name__}, not a trace_optuna.App (or a function "
            "returning one)."
        )
    return target


class _StopOnSignal:
    """SIGINT/SIGTERM: the first lets the running trial finish, the second interrupts it."""

    def __init__(self, study: Study) -> None:
        self._study = study
        self.signals = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals > 1:
            raise KeyboardInterrupt  # Optuna records the running trial as FAIL
        _logger.warning(
            "%s: finishing the running trial, then stopping (send it again to stop now).",
            signal.Signals(number).name,
        )
        try:
            self._study.stop()
        except RuntimeError:  # not inside optimize() yet: nothing runs, stop now
            raise KeyboardInterrupt from None


def run_worker(
    app: App,
    *,
    study_name: str,
    storage: str | BaseStorage | None,
    n_trials: int | None = None,
    timeout: float | None = None,
    callbacks: Iterable[Callable[[Study, FrozenTrial], None]] = (),
    parent_pid: int | None = None,
) -> int:
    """Run trials of a shared study in this process until ``n_trials`` or ``timeout``.

    Args:
        app: What to run.
        study_name: The study; created on first use.
        storage: Its storage URL or object.
        n_trials: Trials for this worker to run (None: until the timeout or a signal).
        timeout: Stop starting trials after this many seconds.
        callbacks: Optuna callbacks called after each trial.
        parent_pid: Stop (after the running trial) once this process is gone; the supervisor
            passes its own pid so that its workers do not outlive it.

    Returns:
        How many trials this worker finished.

    Raises:
        ConfigurationError: If the app does not fit the stored study.
        KeyboardInterrupt: On a second SIGINT/SIGTERM.
    """
    study = app.study(study_name=study_name, storage=storage)
    finished = 0

    def count(study: Study, trial: FrozenTrial) -> None:
        nonlocal finished
        finished += 1
        if parent_pid is not None and os.getppid() != parent_pid:
            _logger.warning("The supervisor (pid %d) is gone; stopping.", parent_pid)
            study.stop()

    _logger.info(
        "Worker pid %d runs %s trials of study %r.",
        os.getpid(),
        "unlimited" if n_trials is None else n_trials,
        study_name,
    )
    with _StopOnSignal(study.optuna):
        study.optimize(n_trials=n_trials, timeout=timeout, callbacks=[count, *callbacks])
    return finished


# -- the supervisor ------------------------------------------------------------------------


@dataclasses.dataclass
class _Child:
    index: int
    quota: int | None
    done: Synchronized[int]
    process: multiprocessing.process.BaseProcess
    restarts: int = 0

    def remaining(self) -> int | None:
        return None if self.quota is None else self.quota - self.done.value


def _child_main(
    index: int,
    app_reference: str,
    study_name: str,
    storage: str | None,
    n_trials: int | None,
    timeout: float | None,
    overrides: dict[str, Any],
    done: Synchronized[int],
    parent_pid: int,
    log_level: int,
) -> None:
    os.setsid()  # Ctrl-C in the terminal reaches the supervisor only; it forwards it
    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s worker-{index} pid %(process)d %(levelname)s %(name)s: %(message)s",
    )
    optuna.logging.set_verbosity(log_level)

    def count(study: Study, trial: FrozenTrial) -> None:
        with done.get_lock():
            done.value += 1

    try:
        app = dataclasses.replace(load_app(app_reference), **overrides)
        run_worker(
            app,
            study_name=study_name,
            storage=storage,
            n_trials=n_trials,
            timeout=timeout,
            callbacks=[count],
            parent_pid=parent_pid,
        )
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_CONFIGURATION)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


def run_workers(
    app_reference: str,
    *,
    processes: int,
    study_name: str,
    storage: str | None,
    n_trials: int | None = None,
    timeout: float | None = None,
    overrides: dict[str, Any] | None = None,
    max_restarts: int = 3,
    log_level: int = logging.WARNING,
) -> int:
    """Start ``processes`` workers on one study and supervise them until they are done.

    The ``n_trials`` are split between the workers. A worker that dies without being asked
    to (killed, crashed) is started again for the trials it had left, up to ``max_restarts``
    times; the trial it was running is failed and re-run through the heartbeat. The first
    SIGINT/SIGTERM asks every worker to finish its trial and stop, the second to stop now.

    Args:
        app_reference: ``"package.module:app"``; each worker imports it.
        processes: How many worker processes.
        study_name: The study.
        storage: Its storage URL (each worker opens its own connection).
        n_trials: Trials to run in all (None: until the timeout or a signal).
        timeout: Each worker stops starting trials after this many seconds.
        overrides: :class:`App` fields to change in every worker (e.g. ``heartbeat_interval``).
        max_restarts: Restarts allowed per worker slot.
        log_level: Logging level of the workers.

    Returns:
        The exit status: 0 when every worker finished, 2 for a configuration error (the app
        does not fit the study), 130 when stopped by a signal, 1 otherwise.
    """
    if processes < 1:
        raise ConfigurationError(f"processes must be at least 1, got {processes}.")
    if n_trials is not None and n_trials < 0:
        raise ConfigurationError(f"n_trials must be >= 0 or None, got {n_trials}.")
    import multiprocessing  # here: only the supervisor needs it, not every importer

    context = multiprocessing.get_context("spawn")
    quotas: list[int | None] = (
        [None] * processes
        if n_trials is None
        else [
            n_trials // processes + (1 if i < n_trials % processes else 0)
            for i in range(processes)
        ]
    )

    def start(index: int, quota: int | None, done: Synchronized[int] | None = None) -> _Child:
        counter = done if done is not None else context.Value("i", 0)
        left = None if quota is None else quota - counter.value
        process = context.Process(
            target=_child_main,
            args=(
                index,
                app_reference,
                study_name,
                storage,
                left,
                timeout,
                dict(overrides or {}),
                counter,
                os.getpid(),
                log_level,
            ),
            name=f"trace-optuna-worker-{index}",
        )
        process.start()
        _logger.info("Started worker %d (pid %s).", index, process.pid)
        return _Child(index, quota, counter, process)

    signalled = 0
    misfit = False  # a worker found that the app does not fit the study

    def stop_all(kill: bool = False) -> None:
        for child in alive():
            try:
                os.kill(child.process.pid or 0, signal.SIGKILL if kill else signal.SIGTERM)
            except ProcessLookupError:
                pass

    def on_signal(number: int, frame: FrameType | None) -> None:
        nonlocal signalled
        signalled += 1
        if signalled <= 2:
            how = "finish their running trials and stop (again to stop now)"
            print(
                f"{signal.Signals(number).name}: asking {len(alive())} workers to "
                + (how if signalled == 1 else "stop now."),
                file=sys.stderr,
            )
        stop_all(kill=signalled > 2)

    children = [start(index, quota) for index, quota in enumerate(quotas) if quota != 0]

    def alive() -> list[_Child]:
        return [child for child in children if child.process.is_alive()]

    previous = {
        number: signal.signal(number, on_signal) for number in (signal.SIGINT, signal.SIGTERM)
    }
    print(
        f"Supervising {len(children)} worker processes on study {study_name!r} "
        f"({redact(storage) if storage else 'default storage'}); Ctrl-C stops them.",
        file=sys.stderr,
    )
    failed = False
    try:
        pending = list(children)
        while pending:
            for child in list(pending):
                child.process.join(timeout=0.2)
                code = child.process.exitcode
                if code is None:
                    continue
                pending.remove(child)
                if code == EXIT_OK or signalled or misfit:
                    continue
                if code == EXIT_CONFIGURATION:
                    misfit = True
                    _logger.error(
                        "Worker %d: the app does not fit the study; stopping all.", child.index
                    )
                    stop_all()
                    continue
                left = child.remaining()
                reason = (
                    f"killed by {signal.Signals(-code).name}"
                    if code < 0
                    else f"exit status {code}"
                )
                if child.restarts >= max_restarts:
                    print(
                        f"Worker {child.index} died ({reason}) too often; not restarting it.",
                        file=sys.stderr,
                    )
                    failed = True
                elif left is None or left > 0:
                    print(
                        f"Worker {child.index} (pid {child.process.pid}) died ({reason}); "
                        f"starting it again for {'its' if left is None else left} "
                        "remaining trials.",
                        file=sys.stderr,
                    )
                    replacement = start(child.index, child.quota, child.done)
                    replacement.restarts = child.restarts + 1
                    children[children.index(child)] = replacement
                    pending.append(replacement)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for child in alive():  # only on an error in the supervisor itself
            child.process.kill()
    done = sum(child.done.value for child in children)
    print(f"Workers finished {done} trials.", file=sys.stderr)
    if misfit:
        return EXIT_CONFIGURATION
    if signalled:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if failed else EXIT_OK
