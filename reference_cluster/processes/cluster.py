"""A cluster of broker and server processes on one host, for ``shoplist cluster up``, the
demo and the tests.

:class:`LocalCluster` starts each broker and server as a child process (``python -m
reference_cluster.processes.broker`` / ``.server``), waits for each one's ``READY`` line and then
until every broker holds every server live, and stops them by pid (SIGTERM, then SIGKILL)
when closed, also when the caller fails. Children run with ``--watch-parent``, so none
outlives a parent killed without the chance to clean up.

With ``proxies=True`` every link between two processes goes through its own
:class:`~reference_cluster.processes.linkproxy.LinkProxy` (server to broker, server to server, and
client to broker for the clients it hands end points to), so :meth:`LocalCluster.partition`
can cut links without privileges. Status probes (:func:`probe`) go straight to the
processes and are never cut.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import attrs
import zmq

from reference_cluster.cores.backoff import backoff_delay
from reference_cluster.cores.quorum import write_quorum as check_quorum
from reference_cluster.errors import InvalidEndpoint, MalformedMessage
from reference_cluster.processes.config import (
    LocalLayout,
    Timing,
    broker_argv,
    broker_key_argv,
    exit_text,
    read_ready,
    require_endpoint,
    server_argv,
)
from reference_cluster.processes.linkproxy import LinkProxy
from reference_cluster.processes.reachability import close_monitored
from reference_cluster.processes.security import (
    ADMIN,
    Operator,
    Security,
    client_keys,
    ensure_keys,
)
from reference_cluster.protocol.messages import (
    BrokerStatus,
    MembershipUpdate,
    Message,
    ServerStatus,
    Status,
    decode,
    encode,
)
from reference_cluster.protocol.placement import DEFAULT_REPLICAS, Membership
from reference_cluster.storage.sqlite import make_private_folder

__all__ = [
    "AgentError",
    "ClientAgent",
    "LocalCluster",
    "Timing",
    "free_base_port",
    "probe",
    "running_cluster",
    "stop_process",
]

_START_TIMEOUT = 30.0
_ZMQ_ADDR = re.compile(r"\(addr='([^']*)'\)")  # pyzmq's "Address already in use (addr='...')"
_STOP_TIMEOUT = 5.0
_RESTART_BASE = 0.5  # seconds before the first restart of a child that died
_RESTART_CAP = 30.0  # the longest wait between restarts of a child that keeps dying
_RESTART_STABLE = 60.0  # a child that served this long starts its back-off afresh
_RESTART_TIMEOUT = 15.0  # how long a restarted child may take to print its ready line


def free_base_port(host: str = "127.0.0.1", *, brokers: int = 2, servers: int = 3) -> int:
    """A base port whose whole :class:`LocalLayout` is free right now (a later bind may
    still race with another program; the processes then fail to start, loudly).

    Raises:
        RuntimeError: no free layout found after 50 tries.
    """
    rng = random.Random()
    for _ in range(50):
        base = rng.randrange(20000, 60000, 10)
        if all(_port_free(host, p) for p in LocalLayout(host, base, brokers, servers).ports):
            return base
    raise RuntimeError("no free range of ports found")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def _index(server: str) -> int:
    """``j`` of server ``sj``."""
    return int(server[1:])


def probe(
    endpoint: str,
    message: Message,
    *,
    timeout: float = 2.0,
    ctx: zmq.Context[Any] | None = None,
    secure: Callable[[zmq.Socket[Any]], None] | None = None,
) -> Message | None:
    """Send one message to ``endpoint`` from a fresh DEALER and return the first reply,
    or None if none came within ``timeout`` (or it did not decode), or at once if the
    connection was refused (nobody listens there). ``secure(socket)`` sets its CURVE keys
    before it connects (for example ``Security.dial_broker``); without it the link is
    in clear, and a secure process does not answer.

    Raises:
        InvalidEndpoint: ``endpoint`` is not a ZeroMQ endpoint (nothing is left open).
    """
    require_endpoint(endpoint, "bad endpoint")
    context = ctx or zmq.Context.instance()
    sock: zmq.Socket[Any] = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    refused: zmq.Socket[Any] | None = None
    try:
        refused = sock.get_monitor_socket(zmq.EVENT_CONNECT_RETRIED)
        refused.setsockopt(zmq.LINGER, 0)
        if secure is not None:
            secure(sock)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise InvalidEndpoint(f"bad endpoint {endpoint!r}: {exc.strerror}") from None
        sock.send(encode(message))
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(refused, zmq.POLLIN)
        if sock not in dict(poller.poll(int(timeout * 1000))):
            return None  # no answer in time, or the connection attempt failed
        try:
            return decode(sock.recv())
        except MalformedMessage:
            return None
    finally:
        close_monitored(sock, refused)


def _make_folder(folder: Path) -> None:
    """Make ``folder`` (and its parents), each new one with mode 0700.

    Raises:
        NotADirectoryError: it, or a folder above it, is a file (the message says which).
    """
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                what = "it" if path == folder else str(path)
                raise NotADirectoryError(
                    f"cannot keep the cluster's data in {folder}: {what} is a file"
                )
            break
    make_private_folder(folder)  # 0700: it holds stores, keys and logs


def stop_process(proc: subprocess.Popen[Any], timeout: float = _STOP_TIMEOUT) -> int:
    """Stop a child by pid: SIGTERM, then SIGKILL after ``timeout``; return its status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    return proc.returncode


@attrs.define
class _Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    ready: dict[str, Any] = attrs.field(factory=dict)


@attrs.define
class _Supervision:
    """What :meth:`LocalCluster.supervise` remembers: per child, how many restarts in a
    row (its back-off attempt), when the next one is due, and when it last started."""

    rng: random.Random = attrs.field(factory=random.Random)
    attempts: dict[str, int] = attrs.field(factory=dict)
    due: dict[str, float] = attrs.field(factory=dict)
    since: dict[str, float] = attrs.field(factory=dict)


class LocalCluster:
    """Brokers ``b0..`` and servers ``s1..`` as child processes on one host.

    Args:
        data_dir: the servers' stores go here (``s1.sqlite`` ...); logs too, if
            ``log_dir`` is not given and ``quiet`` is set.
        layout: host, ports and counts.
        timing: the processes' timing.
        replicas: how many of the servers hold each list, given to every server and
            broker as ``--replicas`` (at least the number of servers means every server
            holds every list). The brokers are also given every server as a member
            (``--member``), so they route a list's requests to its holders only.
        write_quorum: how many servers hold an edit durably before it is acknowledged,
            given to every server as ``--write-quorum`` (None: the servers' default, 2,
            or 1 where each list has one holder).
        proxies: route every link through a :class:`LinkProxy` (see the module notes).
        insecure: run without CURVE keys (experiments only; each child warns). By
            default :meth:`start` makes the key folder ``DATA_DIR/keys`` (keeping keys
            that exist; see :mod:`reference_cluster.processes.security`), and clients need
            :attr:`broker_key`.
        quiet: send the children's logs to ``LOG_DIR/NAME.log`` instead of this
            process's standard error.
        log_level: the children's ``--log-level``.
        python: the interpreter to run them with.

    Raises:
        ValueError: ``replicas`` below 1; a write quorum outside 1 to the holders of a list.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        layout: LocalLayout,
        timing: Timing | None = None,
        replicas: int = DEFAULT_REPLICAS,
        write_quorum: int | None = None,
        proxies: bool = False,
        insecure: bool = False,
        quiet: bool = True,
        log_dir: Path | None = None,
        log_level: str = "INFO",
        python: str = sys.executable,
    ) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {replicas}")
        self.data_dir = Path(data_dir)
        self.layout = layout
        self.replicas = replicas
        copies = min(replicas, len(layout.server_ids))
        self.write_quorum = None if write_quorum is None else check_quorum(write_quorum, copies)
        self.timing = timing or Timing()
        self.quiet = quiet
        self.log_dir = log_dir or self.data_dir / "logs"
        self.log_level = log_level
        self.python = python
        self.links: dict[tuple[str, str], LinkProxy] = {}
        self._proxies = proxies
        self._ctx: zmq.Context[Any] = zmq.Context()
        self.children: dict[str, _Child] = {}
        self._closed = False
        self.brokers = [f"b{i}" for i in range(layout.brokers)]
        self.servers = layout.server_ids
        """Every server started (members and servers that left)."""
        self.members = list(layout.server_ids)
        """The member servers, in the order they joined."""
        self.epoch = 0
        self.keys: Path | None = None if insecure else self.data_dir / "keys"
        self.broker_key: bytes | None = None
        """The brokers' front-end public key, which clients pin (None: insecure)."""
        self._operator = Operator.from_keys(None)

    @property
    def membership(self) -> Membership:
        """The member servers at :attr:`epoch` (every server of the layout at 0; see
        :meth:`add_server` and :meth:`remove_server`)."""
        return Membership(self.members, self.epoch)

    # -- links ----------------------------------------------------------------------------

    def _link(self, src: str, dst: str, target: str) -> str:
        """The end point ``src`` dials to reach ``target`` (a proxy if proxies are on)."""
        if not self._proxies:
            return target
        proxy = self.links.get((src, dst))
        if proxy is None:
            proxy = self.links[(src, dst)] = LinkProxy(_port(target), host=self.layout.host)
        return f"tcp://{self.layout.host}:{proxy.port}"

    def client_brokers(self, client: str) -> list[str]:
        """The brokers' front ends as client ``client`` should dial them."""
        return [self._link(client, b, self.layout.frontend(i)) for i, b in enumerate(self.brokers)]

    def partition(self, groups: Sequence[Iterable[str]]) -> None:
        """Cut every proxied link between members of different groups (both ways), and
        heal every other link. Names are ``b0``, ``s1``, client names ..."""
        side = {name: i for i, group in enumerate(groups) for name in group}
        for (src, dst), proxy in self.links.items():
            cut = src in side and dst in side and side[src] != side[dst]
            if cut and not proxy.is_cut:
                proxy.cut()
            elif not cut and proxy.is_cut:
                proxy.heal()

    def isolate(self, name: str) -> None:
        """Cut every link of ``name``, keeping other cuts."""
        for (src, dst), proxy in self.links.items():
            if name in (src, dst):
                proxy.cut()

    def heal(self) -> None:
        """Heal every link."""
        for proxy in self.links.values():
            proxy.heal()

    # -- processes ------------------------------------------------------------------------

    def _broker_argv(self, i: int) -> list[str]:
        return broker_argv(
            self.brokers[i],
            frontend=self.layout.frontend(i),
            backend=self.layout.backend(i),
            timing=self.timing,
            log_level=self.log_level,
            keys=self.keys,
            python=self.python,
            members=self.members,
            replicas=self.replicas,
        )

    def _server_argv(self, j: int) -> list[str]:
        sid = self.servers[j]
        return server_argv(
            sid,
            store=self.data_dir / f"{sid}.sqlite",
            bind=self._peer_endpoint(sid),
            brokers={
                b: self._link(sid, b, self.layout.backend(i)) for i, b in enumerate(self.brokers)
            },
            peers=self._peers_of(sid),
            timing=self.timing,
            log_level=self.log_level,
            keys=self.keys,
            python=self.python,
            replicas=self.replicas,
            write_quorum=self.write_quorum,
        )

    def _peer_endpoint(self, server: str) -> str:
        return self.layout.peer(_index(server))

    def _peers_of(self, sid: str) -> dict[str, str]:
        """``{member: end point}`` as ``sid`` dials them (through its proxies)."""
        return {
            other: self._link(sid, other, self._peer_endpoint(other))
            for other in self.members
            if other != sid
        }

    # -- membership changes ---------------------------------------------------------------

    def add_server(self, name: str | None = None, timeout: float = _START_TIMEOUT) -> str:
        """Start a new server (``name``, default the next ``sN``) and make it a member
        at the next epoch: the servers hand it the lists it now holds (Rule 13 of the
        server core). Returns its name.

        Raises:
            ValueError: a name in use or not ``sN``; no room in the layout (16 servers at
                most, or ports past 65535).
            RuntimeError, TimeoutError: the server did not start, or the members did not
                all take the new membership within ``timeout``.
        """
        name = name or f"s{max(_index(s) for s in self.servers) + 1}"
        self.change_membership([*self.members, name], timeout)
        return name

    def remove_server(self, name: str, timeout: float = _START_TIMEOUT) -> None:
        """Take ``name`` out of the members at the next epoch; it keeps running and
        hands its lists to their holders (:meth:`wait_handed_over`, then
        :meth:`retire`).

        Raises:
            ValueError: ``name`` is not a member, or the last one.
            TimeoutError: the servers did not all take the membership within ``timeout``.
        """
        if name not in self.members or len(self.members) == 1:
            raise ValueError(f"{name} is not a member that can leave ({self.members})")
        self.change_membership([m for m in self.members if m != name], timeout)

    def change_membership(
        self, members: Sequence[str], timeout: float = _START_TIMEOUT, *, epoch: int | None = None
    ) -> None:
        """Make ``members`` the membership at ``epoch`` (default, and at least: the
        next), start the members that are new servers (``sN``), and tell every running
        server of the old and the new membership (:meth:`announce`).

        Raises:
            ValueError: a new member is not named ``sN`` with N up to 16, or is a server
                that ran before; no room in the layout (ports past 65535).
            RuntimeError, TimeoutError: a new server did not start, or the servers did not
                all take the membership within ``timeout``.
        """
        start = [m for m in members if m not in self.members]
        for name in start:
            if name in self.servers or not name.startswith("s") or not name[1:].isdigit():
                raise ValueError(f"a new server is named sN and not in use: {name!r}")
        if start:
            top = max(self.layout.servers, *(_index(s) for s in start))
            self.layout = attrs.evolve(self.layout, servers=top)
            self.servers = [*self.servers, *start]
        told = [m for m in dict.fromkeys([*self.members, *members]) if m not in start]
        self.members = list(members)
        self.epoch = self.epoch + 1 if epoch is None else max(epoch, self.epoch + 1)
        if start and self.keys is not None:
            ensure_keys(self.keys, start)
            self._operator = Operator.from_keys(self.keys)  # trusts the new keys
        # The running servers first, so that they trust the new servers' keys before
        # these dial them (and tell the brokers, in their next heartbeats).
        self.announce(timeout, [m for m in told if m in self.children and self.alive(m)])
        for name in start:
            child = self.children[name] = _Child(name, self._server_argv(self.servers.index(name)))
            self._spawn(child)
            self._await_ready(child, time.monotonic() + timeout)
        if start:
            self.announce(timeout, start)

    def retire(self, name: str) -> int:
        """Stop a server that left the membership for good (it is not restarted);
        return its exit status."""
        status = self.stop(name)
        self.children.pop(name, None)
        return status

    def announce(self, timeout: float = _START_TIMEOUT, names: Iterable[str] | None = None) -> None:
        """Tell servers ``names`` (default: every member) the membership at
        :attr:`epoch`, as an operator does, until each answers that it follows it.

        Raises:
            TimeoutError: a server did not take it within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        pending = list(self.members if names is None else names)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"servers {pending} did not take membership epoch {self.epoch} in {timeout:g}s"
                )
            name = pending[0]
            update = MembershipUpdate(
                "operator",
                self.epoch,
                {m: self._link(name, m, self._peer_endpoint(m)) for m in sorted(self.members)},
            )
            reply = probe(
                self._peer_endpoint(name),
                update,
                timeout=min(1.0, left),
                ctx=self._ctx,
                secure=self.dialer(name),
            )
            if isinstance(reply, ServerStatus) and reply.epoch >= self.epoch:
                pending.pop(0)
            else:
                time.sleep(min(0.1, max(0.0, left)))

    def wait_handed_over(self, name: str, timeout: float = 30.0) -> None:
        """Poll until server ``name`` has nothing left to hand over (lists and hints).

        Raises:
            TimeoutError: not within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            status = self.server_status(name, timeout=0.5)
            if status is not None and status.handing == 0 and status.epoch >= self.epoch:
                return
            time.sleep(0.1)
        left = "no answer" if status is None else f"{status.handing} left"
        raise TimeoutError(f"{name} did not hand everything over in {timeout:g}s ({left})")

    @property
    def client_security(self) -> Security:
        """What a client of this cluster pins (insecure if the cluster is)."""
        return client_keys(self.broker_key)

    def dialer(self, name: str) -> Callable[[zmq.Socket[Any]], None]:
        """What secures a socket (before it connects) to talk to ``name``: a broker's front
        end as a client does, or a server's peer end point with the admin member key."""
        return self._operator.dialer(name, broker=name in self.brokers)

    def _make_keys(self) -> None:
        if self.keys is None:
            return
        ensure_keys(self.keys, [*self.brokers, *self.servers, ADMIN])
        self._operator = Operator.from_keys(self.keys)
        self.broker_key = self._operator.client.frontend_public

    def start(self, timeout: float = _START_TIMEOUT) -> None:
        """Start every broker and server, and wait until every broker holds every server
        live.

        Raises:
            RuntimeError: a process exited first; the one line names it, how it ended
                and the last line of its log (``broker b0 exited with status 1 before
                it was ready: Address already in use ...``).
            TimeoutError: a process was not ready, or the brokers did not see every
                server, within ``timeout``.
            NotADirectoryError: ``data_dir``, or a folder above it, is a file.
            OSError: ``data_dir`` cannot be made.
            Call :meth:`close` (``with`` does) to stop the others.
        """
        for folder in (self.data_dir, *([self.log_dir] if self.quiet else [])):
            _make_folder(folder)
        self._make_keys()
        for i, name in enumerate(self.brokers):
            self.children[name] = _Child(name, self._broker_argv(i))
        for j, name in enumerate(self.servers):
            self.children[name] = _Child(name, self._server_argv(j))
        for child in self.children.values():
            self._spawn(child)
        deadline = time.monotonic() + timeout
        for child in self.children.values():
            self._await_ready(child, deadline)
        self._settle(self.servers, self.brokers, max(1.0, deadline - time.monotonic()), watch=True)

    def _role(self, name: str) -> str:
        return "broker" if name in self.brokers else "server"

    def _check_running(self, when: str) -> None:
        """Raise RuntimeError naming the first child that has exited."""
        for name, child in self.children.items():
            if child.proc is not None and child.proc.poll() is not None:
                raise RuntimeError(
                    f"{self._role(name)} {name} {exit_text(child.proc.returncode)} {when}"
                    f"{self._last_words(name)}"
                )

    def _spawn(self, child: _Child) -> None:
        stderr: Any = None
        if self.quiet:
            child.log = open(self.log_dir / f"{child.name}.log", "ab")  # noqa: SIM115 - kept open for the child
            stderr = child.log
        child.proc = subprocess.Popen(
            child.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            # Its own process group, so a terminal's Ctrl-C reaches only us and we stop
            # it by pid; the same session, so the scheduler groups it with us (a new
            # session is a new autogroup: on a busy machine each hop then waits longer).
            process_group=0,
        )

    def _await_ready(self, child: _Child, deadline: float) -> None:
        assert child.proc is not None
        try:
            child.ready = read_ready(child.proc, max(0.1, deadline - time.monotonic()))
        except RuntimeError:
            if child.proc.poll() is None:
                raise
            raise RuntimeError(
                f"{self._role(child.name)} {child.name} {exit_text(child.proc.returncode)} "
                f"before it was ready{self._last_words(child.name)}"
            ) from None
        except TimeoutError as exc:
            raise TimeoutError(
                f"{self._role(child.name)} {child.name}: {exc}{self._last_words(child.name)}"
            ) from None

    def _last_words(self, name: str) -> str:
        """``: `` and the last line of the child's log, without its ``error: broker b0:``
        prefix; or, when its log is this process's standard error, a pointer to it."""
        if not self.quiet:
            return " (its log is above)"
        path = self.log_dir / f"{name}.log"
        lines = path.read_text("utf-8", "replace").splitlines() if path.exists() else []
        last = next((line.strip() for line in reversed(lines) if line.strip()), "")
        if not last:
            return ""
        prefix = f"error: {self._role(name)} {name}: "
        return ": " + _ZMQ_ADDR.sub(r"(\1)", last.removeprefix(prefix))

    def pid(self, name: str) -> int:
        """The pid of a running child."""
        proc = self.children[name].proc
        assert proc is not None
        return proc.pid

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` (SIGKILL by default) to one child by pid and reap it."""
        child = self.children[name]
        assert child.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.proc.pid, sig)
        return stop_process(child.proc)

    def restart(self, name: str, timeout: float = _START_TIMEOUT) -> None:
        """Start a stopped (or killed) child again and wait for its ready line."""
        child = self.children[name]
        if child.proc is not None and child.proc.poll() is None:
            raise RuntimeError(f"{name} is still running")
        if child.log is not None:
            child.log.close()
        self._spawn(child)
        self._await_ready(child, time.monotonic() + timeout)

    def alive(self, name: str) -> bool:
        """Whether the child's process is running."""
        proc = self.children[name].proc
        return proc is not None and proc.poll() is None

    # -- supervision ----------------------------------------------------------------------

    _supervision: _Supervision | None = None

    def supervise(self, now: float | None = None) -> list[str]:
        """Restart every child that has died, each after its own exponential back-off, and
        say so: call it every fraction of a second while the cluster runs (``shoplist
        cluster up`` does).

        A child found dead is restarted ``backoff_delay(n)`` seconds later
        (:func:`~reference_cluster.cores.backoff.backoff_delay`: 0.5 s for the first
        restart, doubling up to 30 s while it keeps dying, with jitter); one that then
        serves for a minute starts afresh. A restart that fails (the child exits before it
        is ready, or is not ready within 15 s, and is then stopped by pid) counts as
        another death.

        Returns:
            One line per event: ``server s2 (pid 4242) was killed by SIGKILL; restarting
            it in 0.5 s``, then ``server s2 restarted (pid 4300)``.
        """
        sup = self._supervision = self._supervision or _Supervision()
        lines: list[str] = []
        for name, child in self.children.items():
            proc = child.proc
            if proc is None or self._closed:
                continue
            clock = time.monotonic() if now is None else now
            role = self._role(name)
            due = sup.due.get(name)
            if due is None:
                if proc.poll() is None:
                    if clock - sup.since.get(name, clock) >= _RESTART_STABLE:
                        sup.attempts.pop(name, None)
                    continue
                attempt = sup.attempts.get(name, 0)
                delay = backoff_delay(
                    attempt, base=_RESTART_BASE, cap=_RESTART_CAP, jitter=sup.rng.random()
                )
                sup.attempts[name] = attempt + 1
                sup.due[name] = clock + delay
                stop_process(proc)  # reaped: its pipes are closed
                lines.append(
                    f"{role} {name} (pid {proc.pid}) {exit_text(proc.returncode)}; "
                    f"restarting it in {delay:.1f} s"
                )
            elif clock >= due:
                del sup.due[name]
                try:
                    self.restart(name, timeout=_RESTART_TIMEOUT)
                except (RuntimeError, TimeoutError) as exc:
                    self.stop(name)  # by pid, if it hangs; the next call schedules a retry
                    lines.append(str(exc).splitlines()[0])
                else:
                    sup.since[name] = time.monotonic()
                    lines.append(f"{role} {name} restarted (pid {self.pid(name)})")
        return lines

    # -- status ---------------------------------------------------------------------------

    def broker_status(self, name: str, timeout: float = 1.0) -> BrokerStatus | None:
        """What broker ``name`` answers to a status request (None: no answer)."""
        i = self.brokers.index(name)
        reply = probe(
            self.layout.frontend(i),
            Status("probe"),
            timeout=timeout,
            ctx=self._ctx,
            secure=self.dialer(name),
        )
        return reply if isinstance(reply, BrokerStatus) else None

    def server_status(
        self, name: str, *, states: bool = False, timeout: float = 1.0
    ) -> ServerStatus | None:
        """What server ``name`` answers on its peer end point (None: no answer)."""
        reply = probe(
            self._peer_endpoint(name),
            Status("probe", states),
            timeout=timeout,
            ctx=self._ctx,
            secure=self.dialer(name),
        )
        return reply if isinstance(reply, ServerStatus) else None

    def wait_for_servers(
        self,
        expected: Iterable[str],
        *,
        brokers: Iterable[str] | None = None,
        timeout: float = 15.0,
    ) -> None:
        """Poll until each of ``brokers`` (default: all) holds exactly ``expected`` live.

        Raises:
            TimeoutError: not within ``timeout``; the message shows what each broker said.
        """
        self._settle(expected, self.brokers if brokers is None else brokers, timeout, watch=False)

    def _settle(
        self, expected: Iterable[str], brokers: Iterable[str], timeout: float, *, watch: bool
    ) -> None:
        """:meth:`wait_for_servers`; with ``watch``, also raise RuntimeError as soon as a
        child has exited (while starting, none should)."""
        want = tuple(sorted(expected))
        names = list(brokers)
        deadline = time.monotonic() + timeout
        seen: dict[str, tuple[str, ...] | None] = {}
        while time.monotonic() < deadline:
            if watch:
                self._check_running("after it was ready")
            for name in names:
                status = self.broker_status(name, timeout=0.5)
                seen[name] = None if status is None else status.servers
            if all(seen.get(n) == want for n in names):
                return
            time.sleep(0.1)
        raise TimeoutError(f"brokers did not settle on {list(want)} in {timeout:g}s: {seen}")

    # -- teardown -------------------------------------------------------------------------

    def stop(self, name: str) -> int:
        """Stop one child (SIGTERM, then SIGKILL) and return its exit status."""
        child = self.children[name]
        status = 0 if child.proc is None else stop_process(child.proc)
        if child.log is not None:
            child.log.close()
            child.log = None
        return status

    def close(self) -> None:
        """Stop every child by pid (servers first) and close every proxy (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            for name in [*self.servers, *self.brokers]:
                if name in self.children:
                    self.stop(name)
        finally:
            for proxy in self.links.values():
                proxy.close()
            self._ctx.term()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def running_cluster(data_dir: Path, **kwargs: Any) -> Iterator[LocalCluster]:
    """A started :class:`LocalCluster`, closed on exit (also when start fails)."""
    cluster = LocalCluster(data_dir, **kwargs)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


class AgentError(RuntimeError):
    """A client agent refused a command or did not answer in time."""


class JsonLines:
    """Commands to a child process as JSON lines on its stdin; answers, matched by ``id``,
    read from its stdout. :meth:`begin` sends, :meth:`answer` waits for one answer, so
    several children can work at once."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.proc = proc
        self._buf = b""
        self._answers: dict[int, dict[str, Any]] = {}
        self._next = 0

    def begin(self, op: str, **fields: Any) -> int:
        """Send a command; return its id for :meth:`answer`.

        Raises:
            AgentError: the child's stdin is closed (it exited).
        """
        self._next += 1
        line = json.dumps({"op": op, "id": self._next, **fields}) + "\n"
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
        except OSError as exc:
            raise AgentError(f"{self.name} is gone: {exc}") from None
        return self._next

    def answer(self, command_id: int, timeout: float = 30.0) -> dict[str, Any]:
        """The answer to command ``command_id``, whatever it says.

        Raises:
            AgentError: no answer within ``timeout``, or the child exited.
        """
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while command_id not in self._answers:
                while b"\n" in self._buf:
                    line, _, self._buf = self._buf.partition(b"\n")
                    with contextlib.suppress(ValueError):
                        answer = json.loads(line)
                        if isinstance(answer, dict) and isinstance(answer.get("id"), int):
                            self._answers[answer["id"]] = answer
                if command_id in self._answers:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AgentError(f"{self.name}: no answer to #{command_id} in {timeout:g}s")
                if sel.select(timeout=min(left, 0.5)):
                    chunk = os.read(fd, 1 << 20)
                    if not chunk:
                        raise AgentError(f"{self.name} exited ({self.proc.poll()})")
                    self._buf += chunk
        return self._answers.pop(command_id)


class ClientAgent:
    """A client agent process (``python -m reference_cluster.processes.agent``) driven by JSON
    lines: :meth:`call` sends a command and waits for its answer; :meth:`begin` and
    :meth:`wait` let several agents work at once. Stopped by pid in :meth:`stop`.

    Args:
        name: the agent's name (logs).
        store: its client store file.
        brokers: the front ends it dials.
        broker_key: their public key (:attr:`LocalCluster.broker_key`); None: insecure.
        log: where its standard error goes (None: inherit).
        sync_interval, request_timeout: its client timing.
    """

    def __init__(
        self,
        name: str,
        store: Path,
        brokers: Sequence[str],
        *,
        broker_key: bytes | None,
        log: Path | None = None,
        sync_interval: float = 1.0,
        request_timeout: float = 0.5,
        zmq_heartbeat: float = 1.0,
        log_level: str = "INFO",
        python: str = sys.executable,
        timeout: float = _START_TIMEOUT,
    ) -> None:
        self.name = name
        argv = [
            python,
            "-m",
            "reference_cluster.processes.agent",
            "--store",
            str(store),
            "--name",
            name,
            "--sync-interval",
            str(sync_interval),
            "--request-timeout",
            str(request_timeout),
            "--zmq-heartbeat",
            str(zmq_heartbeat),
            "--log-level",
            log_level,
            "--watch-parent",
        ]
        for b in brokers:
            argv += ["--broker", b]
        argv += broker_key_argv(broker_key)
        self._log = open(log, "ab") if log is not None else None  # noqa: SIM115 - the child's
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            # Its own process group, so a terminal's Ctrl-C reaches only us and we stop
            # it by pid; the same session, so the scheduler groups it with us (a new
            # session is a new autogroup: on a busy machine each hop then waits longer).
            process_group=0,
        )
        self._lines = JsonLines(f"agent {name}", self.proc)
        try:
            self.ready = read_ready(self.proc, timeout)
        except BaseException:
            self.stop()
            raise

    def begin(self, op: str, **fields: Any) -> int:
        """Send a command; return its id for :meth:`wait`."""
        return self._lines.begin(op, **fields)

    def wait(self, command_id: int, timeout: float = 30.0) -> dict[str, Any]:
        """The answer to command ``command_id``.

        Raises:
            AgentError: the command failed (``ok`` false), or no answer within ``timeout``.
        """
        answer = self._lines.answer(command_id, timeout)
        if not answer.get("ok"):
            raise AgentError(f"agent {self.name}: {answer.get('error')}")
        return answer

    def call(self, op: str, *, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        """Send a command and wait for its answer (see :meth:`wait`)."""
        return self.wait(self.begin(op, **fields), timeout)

    def stop(self) -> int:
        """Stop the agent by pid (SIGTERM, then SIGKILL) and return its exit status."""
        status = stop_process(self.proc)
        if self._log is not None:
            self._log.close()
        return status
