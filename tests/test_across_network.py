"""Workers on other hosts: packets dropped, hosts lost, and the study goes on.

Each worker process runs in its own network namespace (tests/support_netns.py) and reaches a
throwaway PostgreSQL cluster through a veth pair; a cut drops every packet of that pair both
ways, as a failed link or a vanished host does (nothing is refused: the kernel retransmits into
the void). Workers run with short bounds (tests/support_netns_worker.py: heartbeat 2 s, grace
6 s, lock 3 s, idle in transaction 4 s, network 4 s), and every cut lasts far longer than any of
them, so a wait the library did not bound shows as a worker that made no progress for the
length of the cut. Each scenario checks:

* no worker went without progress (a trial finished, or the study opened) for longer than
  the bounds allow: :data:`HEALTHY_STALL_S` for a worker that was never cut, and for a cut one
  :data:`RESUME_S` after the heal;
* nothing lost: nothing RUNNING or WAITING at the end, every FAIL trial retried, every
  COMPLETE trial's record readable through trace_optuna's record reader;
* no candidate evaluated twice by COMPLETE trials (a retry replaces a FAIL trial).

Namespaces need root and ``ip``; elsewhere the tests are skipped saying so (CI runs as root
and fails on a skipped ``network`` test).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
import itertools
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any
import uuid

from optuna.trial import FrozenTrial
from optuna.trial import TrialState
import pytest
import support_netns
from support_netns import Host
from support_netns import Network
from support_netns import wait_until
import support_netns_worker
import support_workers

from trace_optuna import records
from trace_optuna.storage import resolve_storage

TESTS = Path(__file__).parent
_WHY_NOT = support_netns.unavailable()
pytestmark = [
    pytest.mark.network,
    pytest.mark.slow,
    pytest.mark.skipif(_WHY_NOT is not None, reason=f"needs network namespaces: {_WHY_NOT}"),
]

_BOUNDS = support_netns_worker.TIMEOUTS
# A worker that was never cut waits at most for a cut-off session's locks: until the server
# ends that session (idle in transaction, or its unacknowledged data: network), then its own
# lock wait and the retry's backoff (up to 7.5 s between attempts). Margins are generous: a
# cut lasts CUT_S, well beyond.
HEALTHY_STALL_S = _BOUNDS["idle_in_transaction"] + _BOUNDS["network"] + _BOUNDS["lock"] + 8
# A cut-off worker goes on after the heal within its socket's bound (network) and the next
# retry (backoff up to 7.5 s), plus a trial.
RESUME_S = _BOUNDS["network"] + 8 + 5
CUT_S = 30.0
LATENCY_S = 0.3  # per simulated LLM call


# -- workers ------------------------------------------------------------------------------


class Worker:
    """A worker process on ``host``, writing its progress to ``events`` and its log to ``log``."""

    def __init__(
        self, host: Host, url: str, study_name: str, directory: Path, seconds: float, *flags: str
    ) -> None:
        self.host = host
        self.events_path = directory / f"{host.name}-{uuid.uuid4().hex[:6]}.jsonl"
        self.log_path = self.events_path.with_suffix(".log")
        env = dict(os.environ)
        env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")])),
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            TRACE_OPTUNA_TEST_LATENCY=str(LATENCY_S),
        )
        env.pop("TRACE_OPTUNA_TEST_BARRIER", None)
        command = [
            sys.executable,
            str(TESTS / "support_netns_worker.py"),
            url,
            study_name,
            str(self.events_path),
            str(seconds),
            *flags,
        ]
        with self.log_path.open("w") as log:
            self.process = host.popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines() if line]

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(
                f"worker on {self.host.name} still running after {timeout} s:\n{self.log()}"
            ) from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)


def stalls(events: list[dict[str, Any]], since: float = 0.0) -> float:
    """The longest time between two successive events at or after ``since`` (and ``since``
    itself, when given): how long the worker went without progress."""
    times = sorted(event["t"] for event in events if event["t"] >= since)
    if since:
        times.insert(0, since)
    return max((later - earlier for earlier, later in itertools.pairwise(times)), default=0.0)


# -- the network and the study ------------------------------------------------------------


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    made = Network(hosts=2)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def hosts(network: Network) -> Iterator[list[Host]]:
    yield network.hosts
    for host in network.hosts:
        if host.is_cut:
            host.heal()


@pytest.fixture
def database(network: Network) -> str:
    assert network.cluster is not None
    return network.cluster.create_database(f"study_{uuid.uuid4().hex[:8]}")


def url_from(network: Network, host: Host, database: str) -> str:
    assert network.cluster is not None
    return network.cluster.url(host.server_address, database)


def trials_of(network: Network, database: str, study_name: str) -> list[FrozenTrial]:
    import optuna

    url = url_from(network, network.hosts[0], database)  # from the root namespace: never cut
    storage = resolve_storage(url, heartbeat_interval=None)
    return optuna.load_study(study_name=study_name, storage=storage).get_trials()


def running_step_of(network: Network, database: str, study_name: str, pid: int) -> int | None:
    """The number of a trial of worker ``pid`` that is inside its optimizer step."""
    try:
        trials = trials_of(network, database, study_name)
    except KeyError:  # not created yet
        return None
    for trial in trials:
        worker = trial.user_attrs.get(records.WORKER)
        if (
            trial.state == TrialState.RUNNING
            and worker
            and int(worker["pid"]) == pid
            and "strategy" in trial.params
        ):
            return trial.number
    return None


def check_nothing_lost(network: Network, database: str, study_name: str) -> list[FrozenTrial]:
    """Nothing RUNNING or WAITING, every FAIL retried, no candidate evaluated twice, every
    COMPLETE record readable. Returns the trials."""
    trials = trials_of(network, database, study_name)
    states = Counter(trial.state for trial in trials)
    assert states[TrialState.RUNNING] == 0 and states[TrialState.WAITING] == 0, states
    retried = {trial.system_attrs.get("failed_trial") for trial in trials}
    for trial in trials:
        if trial.state == TrialState.FAIL:
            assert trial.number in retried, f"Trial#{trial.number} FAIL and never retried"
    evaluated = Counter(
        trial.user_attrs[records.SNAPSHOT_HASH]
        for trial in trials
        if trial.state == TrialState.COMPLETE and records.DUPLICATE_OF not in trial.user_attrs
    )
    assert [h for h, n in evaluated.items() if n > 1] == [], "a candidate evaluated twice"
    url = url_from(network, network.hosts[0], database)
    study = support_workers.app.study(study_name=study_name, storage=url)
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            record = study.record(trial.number)
            assert record.value == trial.value
            assert isinstance(record.snapshot["x"], int)
    return trials


def report(name: str, **numbers: float) -> None:
    """Write a scenario's measured numbers to the terminal (``pytest -s``) and the log."""
    shown = ", ".join(
        f"{key}={value:.1f}" if isinstance(value, float) else f"{key}={value}"
        for key, value in numbers.items()
    )
    sys.stderr.write(f"\n[across-network] {name}: {shown}\n")


# -- scenarios ----------------------------------------------------------------------------


def test_a_cut_mid_trial_then_healed(
    network: Network, hosts: list[Host], database: str, tmp_path: Path
) -> None:
    study_name = "cut-mid-trial"
    cut_host, other_host = hosts
    run_s = CUT_S + 30
    cut_worker = Worker(
        cut_host, url_from(network, cut_host, database), study_name, tmp_path, run_s
    )
    other = Worker(
        other_host, url_from(network, other_host, database), study_name, tmp_path, run_s
    )
    try:
        trial = wait_until(
            lambda: running_step_of(network, database, study_name, cut_worker.pid),
            "a trial of the worker to cut inside its step",
            timeout=60,
        )
        cut_host.cut()
        cut_at = time.time()
        time.sleep(CUT_S)  # the outage
        cut_host.heal()
        healed_at = time.time()
        assert cut_worker.wait(timeout=run_s + 60) == 0, cut_worker.log()
        assert other.wait(timeout=run_s + 60) == 0, other.log()
    finally:
        cut_worker.kill()
        other.kill()
    trials = check_nothing_lost(network, database, study_name)
    by_number = {t.number: t for t in trials}
    assert by_number[trial].state == TrialState.FAIL  # stale after the grace period: retried
    healthy_stall = stalls(other.events())
    resumed = stalls(cut_worker.events(), since=healed_at)
    after_heal = [e for e in cut_worker.events() if e["event"] == "trial" and e["t"] > healed_at]
    report(
        "cut mid-trial",
        healthy_longest_stall_s=healthy_stall,
        cut_worker_resumed_after_s=resumed,
        cut_worker_trials_after_heal=len(after_heal),
        fail=sum(t.state == TrialState.FAIL for t in trials),
        complete=sum(t.state == TrialState.COMPLETE for t in trials),
        cut_s=healed_at - cut_at,
    )
    assert healthy_stall < HEALTHY_STALL_S, other.log()
    assert after_heal, cut_worker.log()
    assert resumed < RESUME_S, cut_worker.log()
