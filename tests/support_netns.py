"""Hosts on a network, on one machine: network namespaces joined by veth pairs to the root
namespace, where a throwaway PostgreSQL cluster listens on the veth addresses.

Each :class:`Host` is a network namespace behind its own "switch" namespace, joined by veth
pairs to the root namespace, where PostgreSQL listens on the root's end. A process started with
:meth:`Host.popen` reaches the database only through the switch, so what is done there is what
a worker on another machine would see:

* :meth:`Host.cut` drops every packet the switch forwards, both ways (blackhole routes), as a
  failed link or a lost host does: nothing is refused, a sender's data stays unacknowledged
  and its kernel retransmits, a new connection's SYN goes unanswered. :meth:`Host.heal`
  removes the routes.
* :meth:`Host.close` removes the namespaces (their veth pairs go with them).

* :meth:`Host.delay` holds every forwarded packet for a while and drops a share at random
  (tests/support_delayer.py, a netlink NFQUEUE program behind an iptables rule in the switch:
  this kernel has no ``netem``). Needs ``iptables``.

Needs root (namespaces, routes) and ``ip``; :func:`unavailable` says why not when it cannot
work. The cluster is made with ``initdb`` in a temporary directory (run as the ``postgres`` user
when this process is root), so the shared server on 127.0.0.1 is left as it is.
"""

from __future__ import annotations

import contextlib
import glob
import os
from pathlib import Path
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

_SUBNET_OCTET = 231


class CommandFailed(RuntimeError):
    """A command of the harness failed; the message holds its output."""


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise CommandFailed(
            f"{' '.join(command)} exited with {done.returncode}: {done.stderr or done.stdout}"
        )
    return done


def postgres_bin() -> Path | None:
    """The directory of the newest installed PostgreSQL server binaries, if any."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    return Path(found[-1]).parent if found else None


def unavailable() -> str | None:
    """Why hosts cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if postgres_bin() is None:
        return "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
    name = f"trace-optuna-probe-{os.getpid()}"
    try:
        _run("ip", "netns", "add", name)
    except (CommandFailed, OSError) as error:
        return f"cannot create a network namespace: {error}"
    _run("ip", "netns", "delete", name)
    return None


class Host:
    """A host: a network namespace behind a switch (a second namespace) on the root namespace.

    ``host ns <-veth-> switch ns <-veth-> root ns``: the switch forwards between the two, and
    a cut drops packets there, in the middle, as a failed link does: the host's kernel and the
    server's see nothing but silence (a drop at either end would fail the sender's own calls at
    once, EINVAL or EPERM, which is not what a lost network looks like).

    Args:
        index: 1-30, distinct per host of a :class:`Network`.
        block: The third octet of the addresses (one per test process).
    """

    def __init__(self, index: int, block: int) -> None:
        tag = f"{os.getpid() % 100000}"
        self.name = f"trace-optuna-{tag}-{index}"
        self.switch = f"{self.name}-switch"
        self._root_link = f"to{tag}r{index}"  # interface names hold at most 15 characters
        prefix, base = f"10.{_SUBNET_OCTET}.{block}.", 8 * index
        self.server_address = prefix + str(base + 1)  # where PostgreSQL listens
        switch_outer, switch_inner = prefix + str(base + 2), prefix + str(base + 5)
        self.address = prefix + str(base + 6)
        self.is_cut = False
        _run("ip", "netns", "add", self.name)
        try:
            _run("ip", "netns", "add", self.switch)
            _run(
                "ip",
                "link",
                "add",
                self._root_link,
                "type",
                "veth",
                "peer",
                "name",
                "uplink",
                "netns",
                self.switch,
            )
            _run(
                "ip",
                "-n",
                self.switch,
                "link",
                "add",
                "downlink",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                self.name,
            )
            _run("ip", "addr", "add", f"{self.server_address}/30", "dev", self._root_link)
            _run("ip", "link", "set", self._root_link, "up")
            _run("ip", "route", "add", f"{self.address}/32", "via", switch_outer)
            self._switch("addr", "add", f"{switch_outer}/30", "dev", "uplink")
            self._switch("addr", "add", f"{switch_inner}/30", "dev", "downlink")
            for link in ("uplink", "downlink", "lo"):
                self._switch("link", "set", link, "up")
            _run("ip", "netns", "exec", self.switch, "sysctl", "-q", "net.ipv4.ip_forward=1")
            self.ip("addr", "add", f"{self.address}/30", "dev", "eth0")
            self.ip("link", "set", "eth0", "up")
            self.ip("link", "set", "lo", "up")
            self.ip("route", "add", "default", "via", switch_inner)
        except BaseException:
            self.close()
            raise

    def ip(self, *arguments: str) -> None:
        """Run ``ip`` inside this host."""
        _run("ip", "-n", self.name, *arguments)

    def _switch(self, *arguments: str) -> None:
        _run("ip", "-n", self.switch, *arguments)

    def cut(self) -> None:
        """Drop every packet between this host and the server, both ways, from now on."""
        self._switch("route", "add", "blackhole", f"{self.server_address}/32")
        self._switch("route", "add", "blackhole", f"{self.address}/32")
        self.is_cut = True

    def heal(self) -> None:
        """Let packets through again."""
        self._switch("route", "del", "blackhole", f"{self.server_address}/32")
        self._switch("route", "del", "blackhole", f"{self.address}/32")
        self.is_cut = False

    def delay(self, milliseconds: float, jitter: float = 0.0, loss: float = 0.0) -> None:
        """Hold every packet the switch forwards for ``milliseconds`` +- ``jitter`` (each way,
        so the round trip takes twice that), and drop the share ``loss`` of them at random:
        tests/support_delayer.py behind iptables' NFQUEUE, as this kernel has no netem.
        Needs ``iptables``; :meth:`close` ends it."""
        delayer = Path(__file__).with_name("support_delayer.py")
        command = ["ip", "netns", "exec", self.switch, sys.executable, str(delayer), "0"]
        self._delayer = subprocess.Popen(
            [*command, str(milliseconds), str(jitter), str(loss)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._delayer.stdout is not None
        if self._delayer.stdout.readline().strip() != "ready":
            raise CommandFailed(f"the delayer in {self.switch} did not start")
        _run("ip", "netns", "exec", self.switch, "iptables", "-A", "FORWARD", "-j", "NFQUEUE",
             "--queue-num", "0")  # fmt: skip

    def popen(self, command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``command`` inside this host (``ip netns exec`` execs it: the pid is its own)."""
        return subprocess.Popen(["ip", "netns", "exec", self.name, *command], **kwargs)

    def close(self) -> None:
        """Remove the host: both namespaces and their veth pairs (the root's route goes with
        its link)."""
        delayer = getattr(self, "_delayer", None)
        if delayer is not None and delayer.poll() is None:
            delayer.kill()
            delayer.wait(timeout=30)
        for namespace in (self.name, self.switch):
            with contextlib.suppress(CommandFailed):
                _run("ip", "netns", "delete", namespace)
        with contextlib.suppress(CommandFailed):
            _run("ip", "link", "delete", self._root_link)


class PostgresCluster:
    """A throwaway PostgreSQL cluster listening on ``addresses``, trusting 10.231.0.0/16.

    Its files live in a new directory under the system's temporary directory (pytest's own is
    private to root, and the server runs as ``postgres``), removed by :meth:`stop`.

    Args:
        addresses: The addresses to listen on.
    """

    def __init__(self, addresses: list[str]) -> None:
        bin_dir = postgres_bin()
        assert bin_dir is not None
        self.bin = bin_dir
        directory = Path(tempfile.mkdtemp(prefix="trace-optuna-pg-"))
        self.directory = directory
        self.data = directory / "data"
        self.port = _free_port()
        user = None
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            user = pwd.getpwnam("postgres")
            os.chown(directory, user.pw_uid, user.pw_gid)
        self._as = ["runuser", "-u", "postgres", "--"] if user else []
        _run(
            *self._as,
            str(bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{','.join(addresses)}'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{directory}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 100\nshared_buffers = 32MB\n"
                "log_min_messages = warning\n"
            )
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all 10.{_SUBNET_OCTET}.0.0/16 trust\n")
        _run(
            *self._as,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(directory / "server.log"),
            "-w",
            "-t",
            "30",
            "start",
        )
        self.address = addresses[0]

    def url(self, address: str | None = None, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@{address or self.address}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(
            host=self.address, port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return name

    def peak_sessions(self, database: str, seconds: float) -> dict[str, int]:
        """The most sessions each client address held at once on ``database``, sampled every
        50 ms for ``seconds``."""
        import psycopg

        peak: dict[str, int] = {}
        with psycopg.connect(
            host=self.address, port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as connection:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                rows = connection.execute(
                    "SELECT host(client_addr), count(*) FROM pg_stat_activity "
                    "WHERE datname = %s GROUP BY 1",
                    (database,),
                ).fetchall()
                for address, count in rows:
                    peak[str(address)] = max(peak.get(str(address), 0), int(count))
                time.sleep(0.05)  # samples the server's view of other processes
        return peak

    def stop(self) -> None:
        with contextlib.suppress(CommandFailed):
            _run(
                *self._as,
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "-w",
                "stop",
            )
        shutil.rmtree(self.directory, ignore_errors=True)


class Network:
    """``hosts`` hosts around one throwaway PostgreSQL cluster.

    Args:
        hosts: How many hosts.
    """

    def __init__(self, hosts: int) -> None:
        block = os.getpid() % 250 + 1
        self.hosts: list[Host] = []
        self.cluster: PostgresCluster | None = None
        try:
            for index in range(1, hosts + 1):
                self.hosts.append(Host(index, block))
            self.cluster = PostgresCluster([h.server_address for h in self.hosts])
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        for host in self.hosts:
            host.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Any, what: str, timeout: float = 60.0, every: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(every)  # polls what other processes stored
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
