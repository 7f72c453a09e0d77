"""Probes of the sandbox's isolation: what a hostile improver would try, on this machine's servers.

Each probe runs real code in a real isolated child and must be stopped or see nothing. Without
the isolation (``TRACE_OPTUNA_SANDBOX_DISABLE=all`` with ``isolation="none"``) each one gets
through: that was checked by hand, and is not a test, because a probe that gets through writes
files and reaches the databases.
"""

from __future__ import annotations

import os
from pathlib import Path
import socket
import sys
import textwrap
from typing import Any
import uuid

import optuna
from optuna.trial import TrialState
import pytest
import sqlalchemy
from support_agents import CountingEvaluate
from support_agents import make_greeter

import trace_optuna as to
from trace_optuna import cli
from trace_optuna import sandbox
from trace_optuna.strategies.stop import SEED_IMPROVER
from trace_optuna.strategies.stop import StopStrategy
from trace_optuna.strategies.stop import improver_versions

LIMITS = sandbox.SandboxLimits(timeout_s=5.0, memory_bytes=256 * 1024 * 1024)
SERVER_PORTS = {"postgresql": 5432, "mariadb": 3306, "redis": 6379}
UNIX_SOCKETS = ["/var/run/postgresql/.s.PGSQL.5432", "/run/mysqld/mysqld.sock"]


def attempt(body: str, *args: Any) -> Any:
    """Run ``probe(*args)`` isolated; it returns what it reached (None when stopped)."""
    source = "def probe(*args):\n" + textwrap.indent(body, "    ")
    return sandbox.run(source, "probe", list(args), limits=LIMITS).value


def blocked(call: str) -> str:
    """A probe body: ``call``'s result, or None when it raised OSError (stopped)."""
    return f"try:\n    return repr({call})\nexcept (OSError, ValueError):\n    return None\n"


@pytest.mark.parametrize("kind, port", sorted(SERVER_PORTS.items()))
def test_no_database_server_on_the_loopback_is_reachable(kind: str, port: int) -> None:
    with socket.socket() as reachable:  # the server is there for this process
        if reachable.connect_ex(("127.0.0.1", port)) != 0:
            pytest.skip(f"no {kind} server listens on 127.0.0.1:{port}")
    call = f"__import__('socket').create_connection(('127.0.0.1', {port}), timeout=2)"
    assert attempt(blocked(call)) is None


def test_the_parent_listening_on_tcp_is_not_reachable() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        call = f"__import__('socket').create_connection(('127.0.0.1', {port}), timeout=2)"
        assert attempt(blocked(call)) is None
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody came


@pytest.mark.parametrize("path", UNIX_SOCKETS)
def test_database_unix_sockets_are_not_reachable(path: str) -> None:
    if not os.path.exists(path):
        pytest.skip(f"no socket at {path}")
    call = f"__import__('socket').socket(__import__('socket').AF_UNIX).connect({path!r})"
    assert attempt(blocked(call)) is None


def test_no_file_outside_its_temporary_directory_can_be_written(tmp_path: Path) -> None:
    targets = [
        Path.cwd() / f"written-by-improver-{uuid.uuid4().hex[:8]}",
        Path("/tmp") / f"written-by-improver-{uuid.uuid4().hex[:8]}",
        tmp_path / "written-by-improver",
    ]
    for target in targets:
        assert attempt(blocked(f"open({str(target)!r}, 'w').write('x')")) is None
        assert not target.exists()
    # Its own directory is writable.
    assert attempt("open('mine', 'w').write('ok')\nreturn open('mine').read()\n") == "ok"


def test_nothing_of_the_worker_can_be_read(tmp_path: Path) -> None:
    secret = tmp_path / ".pgpass"  # a credentials file of the worker's user
    secret.write_text("127.0.0.1:5432:*:postgres:hunter2\n")
    parent = os.getpid()
    for path in (
        f"/proc/{parent}/environ",
        f"/proc/{parent}/cmdline",
        str(secret),
        __file__,  # the user's script
        "/etc/passwd",
        os.path.expanduser("~/.bashrc"),
    ):
        assert attempt(blocked(f"open({path!r}, 'rb').read()")) is None, path
    assert attempt(blocked("__import__('os').listdir('/proc')")) is None
    assert attempt(blocked("__import__('os').listdir(args[0])"), str(tmp_path)) is None


def test_it_cannot_start_a_process_or_signal_the_worker() -> None:
    assert attempt(blocked("__import__('os').fork()")) is None
    popen = "__import__('subprocess').run([__import__('sys').executable, '-c', 'pass'])"
    assert attempt(blocked(popen)) is None
    assert attempt(blocked(f"__import__('os').kill({os.getpid()}, 0)")) is None
    threads = "import threading\nt = threading.Thread(target=print)\nt.start()\nt.join()\n"
    assert attempt(threads + "return 'threads work'\n") == "threads work"


def test_it_cannot_reenable_networking_remount_or_raise_its_limits() -> None:
    body = textwrap.dedent(
        """
        import ctypes, resource, socket
        libc = ctypes.CDLL(None, use_errno=True)
        reached = []
        if libc.unshare(0x10000000 | 0x40000000) == 0:  # a new user and network namespace
            reached.append("unshare")
        if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0:
            reached.append("mount")
        if libc.mount(None, b"/", None, 0x20 | 0x1000 | 0x4000, None) == 0:  # remount rw
            reached.append("remount")
        try:
            socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # `ip link set lo up`
            reached.append("netlink")
        except OSError:
            pass
        try:
            open("/proc/1/ns/net")  # to setns into the host's network
            reached.append("host namespace")
        except OSError:
            pass
        try:
            resource.setrlimit(resource.RLIMIT_AS, (-1, -1))
            reached.append("rlimit")
        except (OSError, ValueError):
            pass
        return reached
        """
    )
    assert attempt(body) == []


@pytest.mark.parametrize(
    "body, kind",
    [
        ("hog = bytearray(2 * 1024 ** 3)\n", "memory"),
        ("while True:\n    pass\n", "timeout"),
        ("return [llm('x') for _ in range(3)]\n", "budget"),
        ("return 'x' * (9 * 1024 * 1024)\n", "protocol"),  # above max_message_bytes
        ("return {1, 2}\n", "result"),
    ],
)
def test_limits_and_malformed_results_end_the_run(body: str, kind: str) -> None:
    source = "def main():\n" + textwrap.indent(body, "    ")
    limits = sandbox.SandboxLimits(timeout_s=1.0, memory_bytes=256 * 1024 * 1024)
    with pytest.raises(sandbox.ImproverFailed) as caught:
        sandbox.run(source, llm=lambda messages, temperature: "", budget=2, limits=limits)
    assert caught.value.kind == kind
    assert caught.value.layers == list(sandbox.LAYERS)


def test_run_serves_llm_and_utility_and_reports_its_layers() -> None:
    source = "def main(x):\n    return [llm('hi'), utility(x)]\n"
    run = sandbox.run(
        source, args=[3], llm=lambda messages, temperature: "hello", utility=float, budget=1
    )
    assert run.value == ["hello", 3.0] and run.llm_calls == 1 and run.utility_calls == 1
    assert run.layers == list(sandbox.LAYERS) and run.missing == {}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"function": "1x"}, "function must be a function name"),
        ({"args": "abc"}, "args must be a list"),
        ({"budget": -1}, "budget must be an int >= 0"),
        ({"isolation": "partial"}, r"isolation must be one of \['required', 'none'\]"),
    ],
)
def test_run_checks_its_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(to.ConfigurationError, match=match):
        sandbox.run("def main():\n    return 1\n", **kwargs)


# -- where isolation is unavailable: refused, unless opted out ---------------------------------


def test_a_missing_layer_refuses_the_run_before_the_source_is_sent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(sandbox.DISABLE_ENV, "user_namespace")
    marker = tmp_path / "ran"
    source = f"def main():\n    open({str(marker)!r}, 'w')\n"
    with pytest.raises(to.IsolationUnavailable) as caught:
        sandbox.run(source)
    message = str(caught.value)
    assert "user_namespace: disabled by TRACE_OPTUNA_SANDBOX_DISABLE" in message
    assert "Allow unprivileged user namespaces" in message and "stop_isolation='none'" in message
    assert not marker.exists()


def test_opting_out_runs_with_the_layers_there_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sandbox.DISABLE_ENV, "landlock,seccomp")
    run = sandbox.run("def main():\n    return 1\n", isolation="none")
    assert run.value == 1 and run.layers == ["user_namespace", "network_namespace"]
    assert set(run.missing) == {"landlock", "seccomp"}


def test_an_unknown_layer_to_disable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sandbox.DISABLE_ENV, "landlok")
    with pytest.raises(to.ConfigurationError, match=r"unknown layers \['landlok'\]"):
        sandbox.supported_layers()


def test_doctor_prints_the_layers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert all(f"{layer}" in out for layer in sandbox.LAYERS) and "NO" not in out
    monkeypatch.setenv(sandbox.DISABLE_ENV, "seccomp")
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "seccomp            NO: disabled" in out and "stop_isolation='none'" in out


# -- STOP studies -----------------------------------------------------------------------------

HEADER = "def improve(solution, feedback, utility, llm, budget):\n"

# Everything a hostile improver would try at once; it raises with what stopped it (so its trial
# fails with the reasons) and returns a solution carrying the loot if anything got through.
HOSTILE = textwrap.dedent(
    """
    import os, socket
    loot, stopped = [], []
    def attack(name, action):
        try:
            loot.append(f"{name}: {action()!r}"[:200])
        except (OSError, ValueError) as error:
            stopped.append(f"{name}: {type(error).__name__}")
    for port in (5432, 3306, 6379):
        attack(f"tcp {port}", lambda: socket.create_connection(("127.0.0.1", port), 2))
    attack("pg socket", lambda: socket.socket(socket.AF_UNIX).connect(
        "/var/run/postgresql/.s.PGSQL.5432"))
    attack("environ", lambda: open(f"/proc/{os.getppid()}/environ", "rb").read())
    attack("cmdline", lambda: open(f"/proc/{os.getppid()}/cmdline", "rb").read())
    attack("passwd", lambda: open("/etc/passwd").read())
    attack("write /tmp", lambda: open("/tmp/trace-optuna-hostile-improver", "w"))
    attack("fork", os.fork)
    if loot:
        return dict(solution, greeting=" | ".join(loot))
    raise PermissionError("stopped: " + ", ".join(stopped))
    """
)


def seed_then(meta_body: str) -> str:
    """STOP's seed improver on solutions; on its own source, ``meta_body``."""
    return (
        SEED_IMPROVER.replace("def improve(", "def seed_improve(")
        + "\n\n"
        + HEADER
        + "    if isinstance(solution, str):\n"
        + textwrap.indent(meta_body, "        ")
        + "    return seed_improve(solution, feedback, utility, llm, budget)\n"
    )


@pytest.fixture
def scratch_table(storage_url: str) -> Any:
    """A table of our own in the study's PostgreSQL database, and its checksum."""
    engine = sqlalchemy.create_engine(storage_url)
    name = f"issue15_scratch_{uuid.uuid4().hex[:8]}"
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE TABLE {name} (id int primary key, payload text)")
        connection.exec_driver_sql(
            f"INSERT INTO {name} SELECT i, md5(i::text) FROM generate_series(1, 100) i"
        )

    def checksum() -> str:
        with engine.connect() as connection:
            query = f"SELECT md5(string_agg(id || ':' || payload, ',' ORDER BY id)) FROM {name}"
            return str(connection.exec_driver_sql(query).scalar())

    yield checksum
    with engine.begin() as connection:
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
    engine.dispose()


@pytest.mark.slow  # about 10 s here: five STOP trials with sandboxed runs
@pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)
def test_a_hostile_improver_version_fails_is_reverted_and_harms_nothing(
    storage_url: str, study_name: str, scratch_table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSWORD", "parent-secret")
    before = scratch_table()
    strategy = StopStrategy(
        meta_every=1,
        num_candidates=(2, 2),
        meta_budget=1,
        timeout_s=20,
        seed_source=seed_then(f"return {HEADER + textwrap.indent(HOSTILE, '    ')!r}\n"),
    )
    study = to.create_study(
        study_name=study_name,
        storage=storage_url,
        agent=make_greeter,
        evaluate=CountingEvaluate(),
        llm="simulated/feedback-follower",
        strategies=[strategy],
        seed=0,
    )
    study.optimize(n_trials=5)
    states = [trial.state for trial in study.trials]
    assert states == [TrialState.COMPLETE] * 3 + [TrialState.FAIL, TrialState.COMPLETE]
    hostile = study.trials[3]
    assert hostile.user_attrs["trace:stop_version"] == "t2"
    error = study.record(3).error
    assert error.startswith("ImproverFailed: The improver failed (error)")
    for stopped in ("tcp 5432", "tcp 3306", "tcp 6379", "pg socket", "environ", "fork"):
        assert stopped in error
    assert hostile.user_attrs["trace:stop_isolation"] == {
        "option": "required",
        "layers": list(sandbox.LAYERS),
        "missing": [],
    }
    assert improver_versions(study.optuna)["t2"].status == "reverted"
    assert not os.path.exists("/tmp/trace-optuna-hostile-improver")
    # The worker and the database are unharmed.
    assert scratch_table() == before
    reloaded = optuna.load_study(study_name=study_name, storage=storage_url)
    assert len(reloaded.trials) == 5
    assert "parent-secret" not in str([trial.user_attrs for trial in reloaded.trials])


def test_stop_refuses_to_start_where_isolation_is_unavailable(
    sqlite_url: str, study_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sandbox.DISABLE_ENV, "network_namespace")
    options: dict[str, Any] = dict(
        agent=make_greeter,
        evaluate=CountingEvaluate(),
        llm="simulated/feedback-follower",
        strategies=["optoprime", "stop"],
    )
    with pytest.raises(to.IsolationUnavailable, match="Strategy 'stop' runs LLM-written code"):
        to.create_study(study_name=study_name, storage=sqlite_url, **options)
    assert not os.path.exists(sqlite_url.removeprefix("sqlite:///"))  # refused before anything
    with pytest.raises(to.IsolationUnavailable, match="network_namespace"):
        to.App(**options).study(study_name=study_name, storage=sqlite_url)  # a worker
    # Without a sandboxed strategy nothing is checked.
    options["strategies"] = ["optoprime"]
    to.create_study(study_name=study_name, storage=sqlite_url, **options)


def test_the_opt_out_is_recorded_in_the_study_and_each_trial(
    sqlite_url: str, study_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sandbox.DISABLE_ENV, "landlock")
    study = to.create_study(
        study_name=study_name,
        storage=sqlite_url,
        agent=make_greeter,
        evaluate=CountingEvaluate(),
        llm="simulated/feedback-follower",
        strategies=[StopStrategy(num_candidates=(1, 1), timeout_s=20)],
        stop_isolation="none",
    )
    assert study.optuna.user_attrs["trace:stop_isolation"] == {
        "option": "none",
        "layers": ["user_namespace", "network_namespace", "seccomp"],
    }
    study.optimize(n_trials=2)
    record = study.trials[1].user_attrs["trace:stop_isolation"]
    assert record == {
        "option": "none",
        "layers": ["user_namespace", "network_namespace", "seccomp"],
        "missing": ["landlock"],
    }
    from trace_optuna.dashboard._notes import trial_note

    trial = study.trials[1]
    note = trial_note(1, trial.user_attrs, trial.params)
    assert "**opted out** (`stop_isolation='none'`), missing: landlock" in note


def test_stop_isolation_is_checked_by_config() -> None:
    with pytest.raises(to.ConfigurationError, match=r"stop_isolation must be one of"):
        to.Config(stop_isolation="off")


def test_the_interpreter_is_not_the_venvs() -> None:
    run = sandbox.run("def main():\n    import sys\n    return sys.prefix\n")
    assert run.value == sys.base_prefix
