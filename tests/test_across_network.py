"""Workers on other hosts: packets dropped, hosts lost, and the study goes on.

Each worker process runs in its own network namespace behind a "switch" namespace
(tests/support_netns.py) and reaches a throwaway PostgreSQL cluster over veth pairs; a cut
drops every packet in the switch, both ways, as a failed link or a vanished host does (nothing
is refused: the kernels retransmit into the void). Workers run with short bounds
(tests/support_netns_worker.py: heartbeat 2 s, grace 6 s, connect 2 s, lock 3 s, idle in
transaction 4 s, network 4 s), and every cut (CUT_S) lasts longer than any of them, so a wait
the library did not bound shows as a worker that made no progress for the length of the cut.
The scenarios check:

* a worker that was never cut never went longer than :data:`HEALTHY_STALL_S` without
  finishing a trial;
* a cut-off worker's calls ended in the retry path, logged, within :data:`NOTICED_S` of the
  cut, and it finished trials again within :data:`RESUME_S` of the heal;
* nothing lost: nothing RUNNING or WAITING at the end, every FAIL trial retried by a COMPLETE
  one, every COMPLETE trial's record readable through trace_optuna's record reader;
* no candidate evaluated by two COMPLETE trials (a retry replaces a FAIL trial).

One more scenario delays every packet (50 +- 10 ms each way) and drops 1% of them
(tests/support_delayer.py, as this kernel has no netem): trials slow down, none fails.

``pytest -s`` shows each scenario's measured numbers. Namespaces need root and ``ip``;
elsewhere the tests are skipped saying so (CI runs as root and fails on a skipped ``network``
test).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
import itertools
import json
import os
from pathlib import Path
import re
import shutil
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
from support_netns_worker import GRACE_S
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
# lock wait and the retry's backoff. Margins are generous; every cut lasts CUT_S, longer.
HEALTHY_STALL_S = _BOUNDS["idle_in_transaction"] + _BOUNDS["lock"] + 5.0
# A cut-off worker notices within its socket's bound (network, connect) of its next storage
# call and logs it; after the heal it goes on within the retry's backoff (up to 7.5 s between
# attempts) plus one trial.
NOTICED_S = _BOUNDS["network"] + _BOUNDS["connect"] + 4.0
RESUME_S = 7.5 + 5.0
CUT_S = 18.0
LATENCY_S = 0.3  # per simulated LLM call
RUN_LIMIT_S = 240  # a worker's --timeout: the tests stop the workers long before


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
        # Complete lines only: the worker may be writing the last one.
        lines = self.events_path.read_text().split("\n")[:-1]
        return [json.loads(line) for line in lines if line]

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


def check_nothing_lost(
    network: Network, database: str, study_name: str
) -> tuple[list[FrozenTrial], dict[int, FrozenTrial]]:
    """Nothing RUNNING or WAITING, every FAIL trial retried by a COMPLETE one, no candidate
    evaluated twice, every COMPLETE record readable. Returns the trials and, for each FAIL
    trial, its retry."""
    trials = trials_of(network, database, study_name)
    states = Counter(trial.state for trial in trials)
    assert states[TrialState.RUNNING] == 0 and states[TrialState.WAITING] == 0, states
    retries: dict[int, FrozenTrial] = {}
    for trial in trials:
        history = trial.system_attrs.get("retry_history", [])
        if trial.state == TrialState.COMPLETE and history:
            retries[history[-1]] = trial
    for trial in trials:
        if trial.state == TrialState.FAIL:
            assert trial.number in retries, (
                f"Trial#{trial.number} is FAIL and no COMPLETE trial retried it "
                f"({trial.user_attrs.get(records.ERROR)})"
            )
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
    return trials, retries


def first_retry_logged(worker: Worker, since: float) -> float | None:
    """When the worker first logged a storage call failing and being retried, at or after
    ``since`` (None: never)."""
    for line in worker.log().splitlines():
        found = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) pid \d+ WARNING", line)
        if not found or "Storage unreachable or busy during" not in line:
            continue
        moment = time.mktime(time.strptime(found.group(1), "%Y-%m-%d %H:%M:%S"))
        moment += int(found.group(2)) / 1000
        if moment >= since - 0.01:
            return moment
    return None


def report(name: str, **numbers: float) -> None:
    """Write a scenario's measured numbers to the terminal (``pytest -s``)."""
    shown = ", ".join(
        f"{key}={value:.1f}" if isinstance(value, float) else f"{key}={value}"
        for key, value in numbers.items()
    )
    sys.stderr.write(f"\n[across-network] {name}: {shown}\n")


class Run:
    """Workers on the hosts of ``network`` running one study in ``database``."""

    def __init__(self, network: Network, database: str, directory: Path, name: str) -> None:
        self.network, self.database, self.directory = network, database, directory
        self.study_name = name
        self.workers: list[Worker] = []
        self.started = time.time()

    def start(self, host: Host, *flags: str) -> Worker:
        url = url_from(self.network, host, self.database)
        worker = Worker(host, url, self.study_name, self.directory, RUN_LIMIT_S, *flags)
        self.workers.append(worker)
        return worker

    def trials(self) -> list[FrozenTrial]:
        try:
            return trials_of(self.network, self.database, self.study_name)
        except KeyError:  # not created yet
            return []

    def in_step(self, worker: Worker) -> int | None:
        """The number of a RUNNING trial of ``worker`` inside its optimizer step."""
        for trial in self.trials():
            owner = trial.user_attrs.get(records.WORKER)
            if (
                trial.state == TrialState.RUNNING
                and owner
                and int(owner["pid"]) == worker.pid
                and "strategy" in trial.params
            ):
                return trial.number
        return None

    def trial_finished_by(self, worker: Worker, after: float) -> bool:
        return any(e["event"] == "trial" and e["t"] > after for e in worker.events())

    def stop(self, *workers: Worker) -> None:
        """SIGTERM: each finishes its trial and exits; all must exit with status 0."""
        for worker in workers:
            worker.process.send_signal(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(timeout=60) == 0, worker.log()

    def kill_all(self) -> None:
        for worker in self.workers:
            worker.kill()

    def check(self) -> tuple[list[FrozenTrial], dict[int, FrozenTrial]]:
        return check_nothing_lost(self.network, self.database, self.study_name)


@pytest.fixture
def run(
    network: Network, database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Run]:
    made = Run(network, database, tmp_path, request.node.name.removeprefix("test_")[:60])
    try:
        yield made
    finally:
        made.kill_all()


def finished_trials(worker: Worker, after: float = 0.0) -> int:
    return sum(e["event"] == "trial" and e["t"] > after for e in worker.events())


# -- scenarios ----------------------------------------------------------------------------


def test_a_cut_mid_trial_then_healed(run: Run, hosts: list[Host]) -> None:
    cut_host, other_host = hosts
    cut_worker, other = run.start(cut_host), run.start(other_host)
    wait_until(lambda: finished_trials(cut_worker) and finished_trials(other), "first trials")
    assert run.network.cluster is not None
    connections = run.network.cluster.peak_sessions(run.database, 3.0)
    trial = wait_until(lambda: run.in_step(cut_worker), "a trial of the worker to cut in its step")
    cut_host.cut()
    cut_at = time.time()
    time.sleep(CUT_S)  # the outage
    cut_host.heal()
    healed_at = time.time()
    wait_until(lambda: finished_trials(cut_worker, healed_at) >= 2, "trials after the heal", 60)
    run.stop(cut_worker, other)

    trials, retries = run.check()
    states = Counter(t.state for t in trials)
    # Cut for longer than the grace period: the other worker failed the trial and retried it.
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [trial]
    noticed = first_retry_logged(cut_worker, cut_at)
    healthy_stall = stalls(other.events(), since=cut_at)
    resumed = stalls(cut_worker.events(), since=healed_at)
    report(
        "cut mid-trial",
        connections_per_worker=max(connections.values()),
        healthy_longest_stall_s=healthy_stall,
        cut_worker_retry_logged_after_s=(noticed or float("nan")) - cut_at,
        cut_worker_resumed_after_heal_s=resumed,
        fail=states[TrialState.FAIL],
        complete=states[TrialState.COMPLETE],
        runtime_s=time.time() - run.started,
    )
    assert healthy_stall < HEALTHY_STALL_S, other.log()
    assert noticed is not None and noticed - cut_at < NOTICED_S, cut_worker.log()
    assert resumed < RESUME_S, cut_worker.log()
    assert retries[trial].params == trials[trial].params


def test_a_cut_between_trials_then_healed(run: Run, hosts: list[Host]) -> None:
    cut_host, other_host = hosts
    cut_worker, other = run.start(cut_host), run.start(other_host)
    wait_until(lambda: finished_trials(cut_worker) >= 3, "three trials of the worker to cut")
    # Right after a trial: the worker is failing stale trials, asking for the next one and
    # creating it (Optuna's trial creation locks the study's row).
    done = finished_trials(cut_worker)
    wait_until(lambda: finished_trials(cut_worker) > done, "the next trial", every=0.005)
    cut_host.cut()
    cut_at = time.time()
    time.sleep(CUT_S)
    cut_host.heal()
    healed_at = time.time()
    wait_until(lambda: finished_trials(cut_worker, healed_at) >= 2, "trials after the heal", 60)
    run.stop(cut_worker, other)

    trials, retries = run.check()
    states = Counter(t.state for t in trials)
    noticed = first_retry_logged(cut_worker, cut_at)
    healthy_stall = stalls(other.events(), since=cut_at)
    resumed = stalls(cut_worker.events(), since=healed_at)
    report(
        "cut between trials",
        healthy_longest_stall_s=healthy_stall,
        cut_worker_retry_logged_after_s=(noticed or float("nan")) - cut_at,
        cut_worker_resumed_after_heal_s=resumed,
        fail=states[TrialState.FAIL],
        retried=len(retries),
        complete=states[TrialState.COMPLETE],
        runtime_s=time.time() - run.started,
    )
    assert healthy_stall < HEALTHY_STALL_S, other.log()
    assert noticed is not None and noticed - cut_at < NOTICED_S, cut_worker.log()
    assert resumed < RESUME_S, cut_worker.log()


def test_both_workers_cut_then_healed(run: Run, hosts: list[Host]) -> None:
    workers = [run.start(host) for host in hosts]
    for worker in workers:
        wait_until(lambda w=worker: run.in_step(w), "a trial of each worker in its step")
    cut_at = time.time()
    for host in hosts:
        host.cut()
    time.sleep(CUT_S)
    for host in hosts:
        host.heal()
    healed_at = time.time()
    for worker in workers:
        wait_until(lambda w=worker: finished_trials(w, healed_at) >= 2, "trials after the heal")
    run.stop(*workers)

    trials, retries = run.check()
    states = Counter(t.state for t in trials)
    noticed = [first_retry_logged(worker, cut_at) for worker in workers]
    resumed = [stalls(worker.events(), since=healed_at) for worker in workers]
    report(
        "both cut",
        retry_logged_after_s=max((n or float("nan")) - cut_at for n in noticed),
        resumed_after_heal_s=max(resumed),
        fail=states[TrialState.FAIL],
        retried=len(retries),
        complete=states[TrialState.COMPLETE],
        runtime_s=time.time() - run.started,
    )
    for worker, moment, took in zip(workers, noticed, resumed, strict=True):
        assert moment is not None and moment - cut_at < NOTICED_S, worker.log()
        assert took < RESUME_S, worker.log()


def test_a_host_lost_for_good_during_a_trial(run: Run, hosts: list[Host]) -> None:
    lost_host, other_host = hosts
    lost, other = run.start(lost_host), run.start(other_host)
    trial = wait_until(lambda: run.in_step(lost), "a trial of the worker to lose in its step")
    lost_host.cut()  # never healed: the host is gone
    cut_at = time.time()

    def retried() -> bool:
        return any(
            t.state == TrialState.COMPLETE and t.system_attrs.get("failed_trial") == trial
            for t in run.trials()
        )

    wait_until(retried, f"Trial#{trial} failed and retried by the other worker", 60)
    wait_until(lambda: time.time() - cut_at > CUT_S, "the end of the outage")
    run.stop(other)
    lost.kill()  # its host is gone; its process with it

    trials, retries = run.check()
    states = Counter(t.state for t in trials)
    noticed = first_retry_logged(lost, cut_at)
    healthy_stall = stalls(other.events(), since=cut_at)
    report(
        "host lost",
        healthy_longest_stall_s=healthy_stall,
        lost_worker_retry_logged_after_s=(noticed or float("nan")) - cut_at,
        retried_after_s=retries[trial].datetime_start.timestamp() - cut_at,
        fail=states[TrialState.FAIL],
        complete=states[TrialState.COMPLETE],
        runtime_s=time.time() - run.started,
    )
    assert trials[trial].state == TrialState.FAIL
    assert healthy_stall < HEALTHY_STALL_S, other.log()
    # The lost worker's own calls end in the retry path (logged), not in a wait without end.
    assert noticed is not None and noticed - cut_at < NOTICED_S, lost.log()
    # Found stale after the grace period, at the other worker's next trial.
    assert retries[trial].datetime_start.timestamp() - cut_at < GRACE_S + HEALTHY_STALL_S


def test_a_host_lost_inside_trial_creation_holding_the_study_row(
    run: Run, hosts: list[Host]
) -> None:
    lost_host, other_host = hosts
    other = run.start(other_host)
    wait_until(lambda: finished_trials(other) >= 2, "two trials of the other worker")
    # Its first trial creation stops right after Optuna locked the study's row; the host is
    # lost there. Every trial creation, and every note written to the study, needs that row.
    lost = run.start(lost_host, "--hang-in-creation")
    wait_until(lambda: any(e["event"] == "locked" for e in lost.events()), "the lock", 60)
    lost_host.cut()
    cut_at = time.time()
    wait_until(lambda: time.time() - cut_at > CUT_S, "the end of the outage")
    run.stop(other)
    lost.kill()

    trials, retries = run.check()
    healthy_stall = stalls(other.events(), since=cut_at)
    report(
        "host lost inside trial creation",
        healthy_longest_stall_s=healthy_stall,
        healthy_trials_during_outage=finished_trials(other, cut_at),
        fail=sum(t.state == TrialState.FAIL for t in trials),
        complete=sum(t.state == TrialState.COMPLETE for t in trials),
        runtime_s=time.time() - run.started,
    )
    assert healthy_stall < HEALTHY_STALL_S, other.log()
    # The lost worker's trial never existed: its creation was never committed.
    assert all(t.user_attrs.get(records.WORKER, {}).get("pid") != lost.pid for t in trials)


def test_a_worker_killed_right_after_creating_its_trial(run: Run, hosts: list[Host]) -> None:
    dying_host, other_host = hosts
    dying = run.start(dying_host, "--die-after-ask")
    assert dying.process.wait(timeout=120) == -signal.SIGKILL, dying.log()
    asked = [e for e in dying.events() if e["event"] == "asked"]
    assert len(asked) == 1, dying.log()
    trial, killed_at = asked[0]["number"], asked[0]["t"]
    assert run.trials()[trial].state == TrialState.RUNNING  # nothing else happened to it
    other = run.start(other_host)

    def retried() -> bool:
        return any(
            t.state == TrialState.COMPLETE and t.system_attrs.get("failed_trial") == trial
            for t in run.trials()
        )

    wait_until(retried, f"Trial#{trial} failed and retried by the other worker", 60)
    run.stop(other)

    trials, retries = run.check()
    report(
        "killed after ask",
        retried_after_s=retries[trial].datetime_start.timestamp() - killed_at,
        fail=sum(t.state == TrialState.FAIL for t in trials),
        complete=sum(t.state == TrialState.COMPLETE for t in trials),
        runtime_s=time.time() - run.started,
    )
    assert trials[trial].state == TrialState.FAIL


@pytest.mark.skipif(shutil.which("iptables") is None, reason="the delayer needs iptables")
def test_latency_and_loss_slow_trials_down_but_fail_none(run: Run, hosts: list[Host]) -> None:
    """100 ms +- 20 ms round trips and 1% of packets lost on both workers' links: trials take
    longer, and none is failed (heartbeats stay within the grace period), nothing is lost."""
    workers = [run.start(host) for host in hosts]
    for worker in workers:
        wait_until(lambda w=worker: finished_trials(w) >= 2, "two trials of each worker")
    fast_from = time.time()
    time.sleep(6.0)  # a baseline
    fast = sum(finished_trials(w, fast_from) for w in workers) / (time.time() - fast_from)
    for host in hosts:
        host.delay(50, 10, loss=0.01)  # each way
    slow_from = time.time()
    for worker in workers:
        wait_until(lambda w=worker: finished_trials(w, slow_from) >= 1, "a trial at 100 ms", 120)
    slow = sum(finished_trials(w, slow_from) for w in workers) / (time.time() - slow_from)
    run.stop(*workers)

    trials, _ = run.check()
    states = Counter(t.state for t in trials)
    slowest = max(stalls(w.events(), since=slow_from) for w in workers)
    report(
        "latency 100 ms + 1% loss",
        trials_per_min_before=60 * fast,
        trials_per_min_at_100ms=60 * slow,
        longest_stall_at_100ms_s=slowest,
        complete=states[TrialState.COMPLETE],
        runtime_s=time.time() - run.started,
    )
    assert states[TrialState.FAIL] == 0, [t.user_attrs.get(records.ERROR) for t in trials]
