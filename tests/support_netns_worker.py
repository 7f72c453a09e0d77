"""A worker process for the tests across a network (tests/test_across_network.py).

``python support_netns_worker.py URL STUDY EVENTS SECONDS [--die-after-ask]`` runs
:func:`trace_optuna.workers.run_worker` with ``support_workers:app`` for SECONDS seconds on a
storage with short bounds (:data:`TIMEOUTS`, heartbeat every :data:`HEARTBEAT_S` s, dead after
:data:`GRACE_S` s), and appends one JSON line to EVENTS when the study is open, after every trial
and when it is done, with the time (``time.time()``): the test reads how long the worker went
without progress. ``--die-after-ask`` creates one trial with Optuna's ``ask()`` and then kills
the process with SIGKILL before anything else happens. ``--hang-in-creation`` stops the first
trial creation for good right after Optuna locked the study's row (``SELECT ... FROM studies
... FOR UPDATE``, inside the transaction that creates a trial), and says so with a ``locked``
event: the moment at which the issue's lost host stopped every other worker.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import time

HEARTBEAT_S = 2
GRACE_S = 6
# trace_optuna.timeouts.DatabaseTimeouts, in seconds: far shorter than the defaults, so that
# the tests' cuts (tens of seconds) outlast every bound.
TIMEOUTS = {"connect": 2, "lock": 3, "statement": 10, "idle_in_transaction": 4, "network": 4}


def main(argv: list[str]) -> int:
    url, study_name, events_path, seconds = argv[:4]
    die_after_ask = "--die-after-ask" in argv[4:]
    hang_in_creation = "--hang-in-creation" in argv[4:]
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s pid {os.getpid()} %(levelname)s %(name)s: %(message)s",
    )
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import support_workers

    from trace_optuna.storage import resolve_storage
    from trace_optuna.timeouts import DatabaseTimeouts
    from trace_optuna.workers import run_worker

    with open(events_path, "a") as events:

        def event(kind: str, **fields: object) -> None:
            events.write(
                json.dumps({"event": kind, "pid": os.getpid(), "t": time.time(), **fields})
            )
            events.write("\n")
            events.flush()

        app = dataclasses.replace(
            support_workers.app, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
        )
        storage = resolve_storage(
            url,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            timeouts=DatabaseTimeouts(**TIMEOUTS),
        )
        if hang_in_creation:
            import sqlalchemy

            def hang(conn: object, cursor: object, statement: str, *rest: object) -> None:
                if "FROM studies" in statement and "FOR UPDATE" in statement:
                    event("locked")
                    time.sleep(3600)  # the host is lost here, the transaction open

            sqlalchemy.event.listen(storage.engine, "after_cursor_execute", hang)
        if die_after_ask:
            study = app.study(study_name=study_name, storage=storage)
            event("open")
            trial = study.optuna.ask()
            event("asked", number=trial.number)
            os.kill(os.getpid(), signal.SIGKILL)
        event("start")

        def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            event("trial", number=trial.number, state=trial.state.name)

        run_worker(
            app,
            study_name=study_name,
            storage=storage,
            timeout=float(seconds),
            callbacks=[after_trial],
        )
        event("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
