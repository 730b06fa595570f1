"""Real network partitions for tests: a network namespace, hosts on its loopback, and
iptables rules that drop the traffic between groups of hosts.

Theory of operation
-------------------
Rule 1 (one namespace per test). :class:`Namespace` creates a fresh network namespace
(``ip netns add``) with a unique name and brings its loopback up. Every process a test
starts through it runs inside (``ip netns exec``), so all traffic stays on that loopback
and nothing the test does is visible outside it. :meth:`Namespace.close` stops every
process it started (SIGTERM, then SIGKILL, by pid), then every process still inside the
namespace (``ip netns pids``: children of those processes), then deletes the namespace
and with it every rule. It runs on ``with`` exit, so also when a test fails.

Rule 2 (a host is a loopback address). A TCP packet on loopback does not say which
process sent it: a connecting socket has a random source port. So each simulated host gets
its own address, ``127.0.0.2``, ``127.0.0.3``, ... (all of ``127.0.0.0/8`` is local),
and a process listens on ``host.address`` and connects *from* it: ZeroMQ takes the source
in the endpoint (:meth:`Host.connect_endpoint`, ``tcp://SRC:0;DST:PORT``), a plain socket
binds ``(host.address, 0)`` before connecting. ``127.0.0.1`` belongs to no host: traffic
from it is never cut (the test driver's own probes use it).

Rule 3 (a partition is a set of cut host pairs). :meth:`Namespace.partition` takes groups
of hosts, or of ports that processes on those hosts listen on (declared to
:meth:`Namespace.spawn`), and cuts every pair of hosts in different groups; hosts in no
group keep all their links. A cut pair is two DROP rules (A to B and B to A) in a chain
``PARTITION`` hooked into ``OUTPUT -o lo``. The chain is rewritten whole, atomically, with
``iptables-restore --noflush``, so a test never sees a half-applied partition. Packets are
dropped, not rejected: peers see silence, as in a real partition.

Rule 4 (skip, do not fail, where it cannot work). Without Linux, the ``ip`` command, an
iptables that works inside a namespace (``iptables-nft`` is tried first, then
``iptables-legacy``; ``NETNS_IPTABLES=iptables-legacy`` forces one), or CAP_NET_ADMIN,
:class:`NetnsUnavailable` says which is missing; :func:`namespace_or_skip` turns that into
a pytest skip with the reason.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import attrs

from reference_cluster.processes.cluster import stop_process

__all__ = [
    "Host",
    "Namespace",
    "NetnsUnavailable",
    "namespace_or_skip",
    "remove_stale",
    "unavailable_reason",
]

_CHAIN = "PARTITION"
_BACKENDS = ("iptables-nft", "iptables-legacy", "iptables")
_CAP_NET_ADMIN = 12
_MAX_HOSTS = 253
_COMMAND_TIMEOUT = 30.0


class NetnsUnavailable(RuntimeError):
    """This machine (or this user) cannot run real-partition tests; the message says why."""


@attrs.frozen
class Host:
    """A simulated host: a name for messages and its own loopback address."""

    name: str
    address: str

    def endpoint(self, port: int) -> str:
        """The ZeroMQ endpoint to bind (or to connect to) on this host."""
        return f"tcp://{self.address}:{port}"

    def connect_endpoint(self, target: Host, port: int) -> str:
        """The ZeroMQ endpoint for connecting *from* this host to ``target:port``, so the
        connection belongs to this host and partitions apply to it."""
        return f"tcp://{self.address}:0;{target.address}:{port}"


def _has_net_admin() -> bool:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_NET_ADMIN & 1)
    except (OSError, ValueError):
        return False
    return False


def unavailable_reason() -> str | None:
    """Why real-partition tests cannot run here, or None if the obvious needs are met.

    The last word belongs to :class:`Namespace`, which tries the real thing.
    """
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux, this is {sys.platform}"
    if shutil.which("ip") is None:
        return "the 'ip' command is missing (Debian package iproute2)"
    if not any(shutil.which(b) for b in _BACKENDS):
        return "iptables is missing (Debian package iptables; .ci/run installs it)"
    if not _has_net_admin():
        return "creating a network namespace needs CAP_NET_ADMIN (run the tests as root)"
    return None


def remove_stale(prefix: str) -> list[str]:
    """Delete namespaces named ``PREFIX-PID-HEX`` whose creating process is gone and that
    hold no process (left by a test run that was killed); return their names. Nothing is
    killed here."""
    listed = _run(["ip", "netns", "list"])
    removed = []
    for line in listed.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        rest = name.removeprefix(f"{prefix}-")
        pid, _, tag = rest.partition("-")
        if rest == name or not pid.isdigit() or len(tag) != 6 or Path(f"/proc/{pid}").exists():
            continue
        if _run(["ip", "netns", "pids", name]).stdout.split():
            continue
        if _run(["ip", "netns", "delete", name]).returncode == 0:
            removed.append(name)
    return removed


def _run(argv: Sequence[str], *, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        input=input_text,
        capture_output=True,
        text=True,
        timeout=_COMMAND_TIMEOUT,
        check=False,
    )


class Namespace:
    """A network namespace for one test, with hosts, processes and partitions.

    Use it as a context manager; leaving the block stops every process and deletes the
    namespace.

    Args:
        prefix: the start of the namespace's name (the rest is the pid and random hex).

    Raises:
        NetnsUnavailable: the namespace or its iptables chain cannot be made here.
    """

    def __init__(self, prefix: str = "rc") -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise NetnsUnavailable(reason)
        self.name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
        self._procs: list[subprocess.Popen[Any]] = []
        self._hosts: dict[str, Host] = {}
        self._ports: dict[int, Host] = {}
        self._cuts: set[frozenset[str]] = set()
        self._closed = False
        remove_stale(prefix)
        made = _run(["ip", "netns", "add", self.name])
        if made.returncode != 0:
            raise NetnsUnavailable(f"'ip netns add' failed: {made.stderr.strip()[:300]}")
        try:
            self.run(["ip", "link", "set", "lo", "up"])
            self.iptables = self._pick_iptables()
        except BaseException:
            self._delete()
            raise

    # -- setup ---------------------------------------------------------------------------

    def _pick_iptables(self) -> str:
        errors: list[str] = []
        forced = os.environ.get("NETNS_IPTABLES")
        for backend in (forced,) if forced else _BACKENDS:
            if shutil.which(backend) is None or shutil.which(f"{backend}-restore") is None:
                errors.append(f"{backend}: the command or {backend}-restore is not installed")
                continue
            made = _run(self.exec_argv([backend, "-w", "5", "-N", _CHAIN]))
            if made.returncode == 0:
                hooked = _run(
                    self.exec_argv(
                        [backend, "-w", "5", "-I", "OUTPUT", "1", "-o", "lo", "-j", _CHAIN]
                    )
                )
                if hooked.returncode == 0:
                    return backend
                errors.append(f"{backend}: {hooked.stderr.strip()[:200]}")
            else:
                errors.append(f"{backend}: {made.stderr.strip()[:200]}")
        raise NetnsUnavailable(
            "no iptables works inside a network namespace here: " + "; ".join(errors)
        )

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], *, input_text: str | None = None) -> str:
        """Run a short command inside the namespace and return its output.

        Raises:
            RuntimeError: it exited non-zero (the message has its stderr).
        """
        done = _run(self.exec_argv(argv), input_text=input_text)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)!r} in {self.name} exited {done.returncode}: "
                f"{done.stderr.strip()[:500]}"
            )
        return done.stdout

    # -- hosts and processes -------------------------------------------------------------

    def host(self, name: str) -> Host:
        """The host called ``name``, given the next free loopback address on first use."""
        if name not in self._hosts:
            if len(self._hosts) >= _MAX_HOSTS:
                raise ValueError(f"a namespace has at most {_MAX_HOSTS} hosts")
            self._hosts[name] = Host(name, f"127.0.0.{len(self._hosts) + 2}")
        return self._hosts[name]

    def spawn(
        self,
        argv: Sequence[str],
        *,
        host: Host | None = None,
        ports: Iterable[int] = (),
        **popen: Any,
    ) -> subprocess.Popen[Any]:
        """Start a process inside the namespace; it is stopped by :meth:`close`.

        Args:
            argv: the command.
            host: the host the process plays (it must listen and connect on
                ``host.address`` itself: the harness cannot do that for it).
            ports: the ports it listens on, so partitions can name them.
            popen: passed to :class:`subprocess.Popen` (``stdin``, ``stdout``, ``env``...).
        """
        if self._closed:
            raise RuntimeError(f"namespace {self.name} is closed")
        ports = list(ports)
        if ports and host is None:
            raise ValueError("listening ports belong to a host; pass host=")
        for port in ports:
            owner = self._ports.get(port)
            if owner is not None and owner != host:
                raise ValueError(f"port {port} is already declared for host {owner.name}")
        proc = subprocess.Popen(self.exec_argv(argv), **popen)
        self._procs.append(proc)
        for port in ports:
            assert host is not None
            self._ports[port] = host
        return proc

    def owner_of(self, port: int) -> Host:
        """The host whose process listens on ``port``.

        Raises:
            KeyError: no spawned process declared that port.
        """
        try:
            return self._ports[port]
        except KeyError:
            raise KeyError(f"no process in {self.name} declared port {port}") from None

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 5.0) -> int:
        """Stop one process started here (SIGTERM, then SIGKILL after ``timeout``), by pid;
        return its exit status."""
        return stop_process(proc, timeout)

    # -- partitions ----------------------------------------------------------------------

    def _resolve(self, member: Host | int) -> Host:
        if isinstance(member, Host):
            if self._hosts.get(member.name) != member:
                raise ValueError(f"host {member.name} does not belong to namespace {self.name}")
            return member
        if isinstance(member, int) and not isinstance(member, bool):
            return self.owner_of(member)
        raise TypeError(f"a partition group holds hosts or ports, got {member!r}")

    def partition(self, groups: Sequence[Iterable[Host | int]]) -> None:
        """Cut every link between hosts of different groups (both directions), replacing
        all earlier cuts. Hosts in no group keep all their links.

        Raises:
            ValueError: a host is in two groups, or does not belong here.
            KeyError: a port no spawned process declared.
        """
        resolved = [{self._resolve(m) for m in group} for group in groups]
        seen: set[Host] = set()
        for group in resolved:
            if group & seen:
                raise ValueError(f"hosts in two groups: {sorted(h.name for h in group & seen)}")
            seen |= group
        cuts = {
            frozenset((a.address, b.address))
            for i, group in enumerate(resolved)
            for other in resolved[i + 1 :]
            for a in group
            for b in other
        }
        self._apply(cuts)

    def cut(self, a: Host | int, b: Host | int) -> None:
        """Cut the link between two hosts (both directions), keeping other cuts."""
        ha, hb = self._resolve(a), self._resolve(b)
        if ha == hb:
            raise ValueError(f"cannot cut host {ha.name} from itself")
        self._apply(self._cuts | {frozenset((ha.address, hb.address))})

    def heal(self) -> None:
        """Remove every cut."""
        self._apply(set())

    @property
    def cuts(self) -> frozenset[frozenset[str]]:
        """The cut links, as pairs of host names."""
        by_address = {h.address: h.name for h in self._hosts.values()}
        return frozenset(frozenset(by_address[a] for a in pair) for pair in self._cuts)

    def _apply(self, cuts: set[frozenset[str]]) -> None:
        lines = ["*filter", f"-F {_CHAIN}"]
        for pair in sorted(sorted(p) for p in cuts):
            a, b = pair
            lines.append(f"-A {_CHAIN} -s {a}/32 -d {b}/32 -j DROP")
            lines.append(f"-A {_CHAIN} -s {b}/32 -d {a}/32 -j DROP")
        lines.append("COMMIT")
        self.run([f"{self.iptables}-restore", "--noflush"], input_text="\n".join(lines) + "\n")
        self._cuts = set(cuts)

    def rules(self) -> list[str]:
        """The rules of the partition chain as ``iptables -S`` prints them."""
        out = self.run([self.iptables, "-w", "5", "-S", _CHAIN])
        return [line for line in out.splitlines() if line.startswith("-A")]

    # -- teardown ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process started here and everything left inside the namespace, by
        pid, then delete the namespace (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            for proc in reversed(self._procs):
                self.stop(proc)
            self._kill_leftovers()
        finally:
            self._delete()

    def _kill_leftovers(self) -> None:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            listed = _run(["ip", "netns", "pids", self.name])
            pids = [int(p) for p in listed.stdout.split() if p.isdigit()]
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            # Reaped by their own parents (gone with the processes we stopped) or by init;
            # ip netns pids stops listing them once they have exited.
            time.sleep(0.05)

    def _delete(self) -> None:
        _run(["ip", "netns", "delete", self.name])

    def exists(self) -> bool:
        """Whether the namespace is still there (False after :meth:`close`)."""
        return self.name in _run(["ip", "netns", "list"]).stdout.split()

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
def namespace_or_skip(prefix: str = "rc") -> Iterator[Namespace]:
    """A :class:`Namespace` for a pytest test, or a skip that says what is missing."""
    import pytest

    try:
        ns = Namespace(prefix)
    except NetnsUnavailable as exc:
        pytest.skip(f"real-partition test skipped: {exc}")
    with ns:
        yield ns
